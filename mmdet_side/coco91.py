"""91-slot (DETR-style) COCO labels in mmdet, end to end: dataset, metric, config helper and a check.

Label ``i`` is the original COCO category id ``i`` (slots named by :data:`bridge.coco91.COCO91_SLOT_NAMES`,
``'N/A'`` for ids no category uses, slot 0 included).  Stock mmdet maps the annotation file's categories to
80 contiguous labels *by name*; with the 91 slot names that silently shifts labels (and labels >= 80 raise
``IndexError`` in ``CocoMetric``).  The pieces here keep label == category id everywhere::

    custom_imports = dict(imports=['mmdet_side'], allow_failed_imports=False)
    cfg = apply_coco91(Config.fromfile(...))        # dataset type, metric type and num_classes together
    custom_hooks = [dict(type='LabelSpaceCheckHook')]  # fail before training if they disagree
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from mmdet.datasets import CocoDataset
from mmdet.evaluation import CocoMetric
from mmdet.registry import DATASETS, HOOKS, METRICS
from mmengine.config import Config
from mmengine.fileio import get_local_path
from mmengine.hooks import Hook

from bridge.coco91 import COCO91_SLOT_NAMES, COCO91_TO_80
from bridge.errors import BridgeError

NUM_COCO91_CLASSES: int = len(COCO91_SLOT_NAMES)
_UNUSED = "N/A"

__all__ = [
    "NUM_COCO91_CLASSES", "CocoDataset91", "CocoMetric91", "coco91_config_overrides", "apply_coco91",
    "check_label_space", "LabelSpaceCheckHook",
]


def _coco91_palette() -> list[tuple[int, int, int]]:
    """Stock 80-class palette spread over the 91 slots (black for unused slots)."""
    palette = CocoDataset.METAINFO["palette"]
    return [tuple(palette[c]) if c >= 0 else (0, 0, 0) for c in COCO91_TO_80]


@DATASETS.register_module()
class CocoDataset91(CocoDataset):
    """``CocoDataset`` whose labels are the original COCO category ids (0..90, DETR's 91 slots).

    ``cat_ids`` are the annotation file's category ids, ``cat2label`` is the identity on them.  A category
    id outside ``0..len(classes)-1``, or whose name differs from its slot name, raises :class:`BridgeError`.
    """

    METAINFO = {"classes": tuple(COCO91_SLOT_NAMES), "palette": _coco91_palette()}

    def load_data_list(self) -> list[dict]:
        """Load the annotation file like ``CocoDataset.load_data_list`` with identity ``cat2label``."""
        with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
            self.coco = self.COCOAPI(local_path)
        classes = self.metainfo["classes"]
        cat_ids = sorted(self.coco.get_cat_ids())
        for cat_id in cat_ids:
            if not 0 <= cat_id < len(classes):
                raise BridgeError(f"{self.ann_file}: category id {cat_id} is outside the {len(classes)} label "
                                  f"slots of {type(self).__name__}")
            name = self.coco.load_cats([cat_id])[0]["name"]
            if classes[cat_id] == _UNUSED or classes[cat_id] != name:
                raise BridgeError(f"{self.ann_file}: category id {cat_id} is named {name!r} but its slot is "
                                  f"{classes[cat_id]!r}")
        self.cat_ids = cat_ids
        self.cat2label = {cat_id: cat_id for cat_id in cat_ids}
        self.cat_img_map = copy.deepcopy(self.coco.cat_img_map)

        data_list = []
        total_ann_ids: list[int] = []
        for img_id in self.coco.get_img_ids():
            raw_img_info = self.coco.load_imgs([img_id])[0]
            raw_img_info["img_id"] = img_id
            ann_ids = self.coco.get_ann_ids(img_ids=[img_id])
            total_ann_ids.extend(ann_ids)
            data_list.append(self.parse_data_info({"raw_ann_info": self.coco.load_anns(ann_ids),
                                                   "raw_img_info": raw_img_info}))
        if self.ANN_ID_UNIQUE and len(set(total_ann_ids)) != len(total_ann_ids):
            raise BridgeError(f"Annotation ids in '{self.ann_file}' are not unique")
        del self.coco
        return data_list


@METRICS.register_module()
class CocoMetric91(CocoMetric):
    """``CocoMetric`` for 91-slot labels: predicted label ``l`` is written as category id ``l``.

    COCOeval runs over the real category ids of the annotation file (or, without ``ann_file``, of the
    ground truth converted from the dataset, unused ``'N/A'`` slots left out).
    """

    def _num_slots(self) -> int:
        meta = self.dataset_meta or {}
        return len(meta.get("classes", COCO91_SLOT_NAMES))

    def _real_cat_ids(self) -> list[int]:
        return sorted(self._coco_api.get_cat_ids())

    def results2json(self, results: Sequence[dict], outfile_prefix: str) -> dict:
        """Dump predictions with ``category_id = label``; then leave ``cat_ids`` = the real ids for COCOeval."""
        num = self._num_slots()
        for result in results:
            labels = result["labels"]
            if len(labels) and (int(labels.max()) >= num or int(labels.min()) < 0):
                raise BridgeError(f"{type(self).__name__}: predicted label {int(labels.max())} (min "
                                  f"{int(labels.min())}) is outside the {num} label slots of dataset_meta")
        self.cat_ids = list(range(num))
        try:
            return super().results2json(results, outfile_prefix)
        finally:
            self.cat_ids = self._real_cat_ids()

    def gt_to_coco_json(self, gt_dicts: Sequence[dict], outfile_prefix: str) -> str:
        """Like ``CocoMetric.gt_to_coco_json`` (category id = label), without the unused ``'N/A'`` slots."""
        path = super().gt_to_coco_json(gt_dicts, outfile_prefix)
        from mmengine.fileio import dump, load
        coco_json = load(path)
        coco_json["categories"] = [c for c in coco_json["categories"] if c["name"] != _UNUSED]
        dump(coco_json, path)
        return path

    def compute_metrics(self, results: list) -> dict[str, float]:
        """``CocoMetric.compute_metrics`` with identity label mapping (``cat_ids`` never looked up by name)."""
        if self._coco_api is not None:
            self.cat_ids = self._real_cat_ids()
        else:  # set in results2json once the ground truth is converted; keep the name lookup from running
            self.cat_ids = []
        return super().compute_metrics(results)


def coco91_config_overrides() -> dict[str, Any]:
    """Return the pieces that must be set together for 91-slot labels.

    Keys: ``dataset_type`` (train/val/test dataloaders), ``metric_type`` (val/test evaluators),
    ``num_classes`` (every head under ``model``).
    """
    return {"dataset_type": "CocoDataset91", "metric_type": "CocoMetric91", "num_classes": NUM_COCO91_CLASSES}


def _is_type(value: Any, name: str, cls: type) -> bool:
    return value == name or value is cls


def _set_dataset_type(dataset: Any, where: str) -> None:
    if not isinstance(dataset, Mapping):
        raise BridgeError(f"{where}: expected a dataset config dict, got {type(dataset).__name__}")
    if "dataset" in dataset:  # RepeatDataset, ClassBalancedDataset, MultiImageMixDataset, ...
        _set_dataset_type(dataset["dataset"], f"{where}.dataset")
        return
    if "datasets" in dataset:  # ConcatDataset
        for i, sub in enumerate(dataset["datasets"]):
            _set_dataset_type(sub, f"{where}.datasets[{i}]")
        return
    kind = dataset.get("type")
    if not (_is_type(kind, "CocoDataset", CocoDataset) or _is_type(kind, "CocoDataset91", CocoDataset91)):
        raise BridgeError(f"{where}.type is {kind!r}; only CocoDataset can be switched to CocoDataset91")
    dataset["type"] = "CocoDataset91"
    meta = dataset.get("metainfo")
    if isinstance(meta, Mapping) and "classes" in meta:
        meta["classes"] = tuple(COCO91_SLOT_NAMES)
        meta.pop("palette", None)


def _set_metric_type(evaluator: Any, where: str) -> None:
    if isinstance(evaluator, Mapping):
        if "metrics" in evaluator and "type" not in evaluator:  # Evaluator(metrics=[...])
            _set_metric_type(evaluator["metrics"], f"{where}.metrics")
        elif _is_type(evaluator.get("type"), "CocoMetric", CocoMetric) or evaluator.get("type") == "CocoMetric91":
            evaluator["type"] = "CocoMetric91"
    elif isinstance(evaluator, (list, tuple)):
        for i, item in enumerate(evaluator):
            _set_metric_type(item, f"{where}[{i}]")


def _set_num_classes(node: Any, value: int) -> int:
    count = 0
    if isinstance(node, Mapping):
        for key in list(node.keys()):
            if key == "num_classes" and isinstance(node[key], int):
                node[key] = value
                count += 1
            else:
                count += _set_num_classes(node[key], value)
    elif isinstance(node, (list, tuple)):
        count += sum(_set_num_classes(item, value) for item in node)
    return count


def apply_coco91(cfg: Config) -> Config:
    """Switch a loaded mmdet config to 91-slot labels in place and return it.

    Sets the dataset type of the train/val/test dataloaders (through ``dataset``/``datasets`` wrappers)
    to ``CocoDataset91``, every ``CocoMetric`` of the val/test evaluators to ``CocoMetric91`` and every
    ``num_classes`` under ``cfg.model`` to 91.  Raises :class:`BridgeError` for a non-COCO dataset or a
    model without ``num_classes``.
    """
    over = coco91_config_overrides()
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(name)
        if loader is not None:
            _set_dataset_type(loader["dataset"], f"{name}.dataset")
    for name in ("val_evaluator", "test_evaluator"):
        if cfg.get(name) is not None:
            _set_metric_type(cfg[name], name)
    if _set_num_classes(cfg.model, over["num_classes"]) == 0:
        raise BridgeError("apply_coco91: no num_classes under cfg.model to set to 91")
    return cfg


def check_label_space(model_num_classes: int, dataset_meta: Mapping[str, Any], max_label: int | None = None) -> None:
    """Raise :class:`BridgeError` when a head's class count and the dataset's label space disagree.

    ``model_num_classes`` must equal ``len(dataset_meta['classes'])`` and every label (``max_label``, when
    given) must be below it.
    """
    classes = dataset_meta.get("classes") if dataset_meta else None
    if classes is None:
        raise BridgeError("label space check: dataset_meta has no 'classes'")
    if model_num_classes != len(classes):
        hint = " (use apply_coco91 to set dataset, metric and head together)" if NUM_COCO91_CLASSES in (
            model_num_classes, len(classes)) else ""
        raise BridgeError(f"label space mismatch: the model head has num_classes={model_num_classes} but the "
                          f"dataset has {len(classes)} classes{hint}")
    if max_label is not None and not 0 <= max_label < model_num_classes:
        raise BridgeError(f"label space mismatch: the dataset has label {max_label}, the model head only "
                          f"{model_num_classes} classes")


_HEAD_PATHS: tuple[str, ...] = ("bbox_head", "roi_head.bbox_head", "roi_head.mask_head", "panoptic_head")


def head_num_classes(model: Any) -> dict[str, int]:
    """Return ``{path: num_classes}`` of the bbox/mask/panoptic heads found on an mmdet model."""
    found: dict[str, int] = {}
    for path in _HEAD_PATHS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        heads = obj if isinstance(obj, Sequence) or type(obj).__name__ == "ModuleList" else [obj]
        for i, head in enumerate(heads):
            num = getattr(head, "num_classes", None)
            if isinstance(num, int):
                found[path if len(heads) == 1 else f"{path}[{i}]"] = num
    return found


def _unwrap_dataset(dataset: Any) -> Any:
    while not hasattr(dataset, "metainfo") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return dataset


@HOOKS.register_module()
class LabelSpaceCheckHook(Hook):
    """Check, before training starts, that the heads' ``num_classes`` match the train dataset's classes."""

    priority = "VERY_HIGH"

    def before_train(self, runner: Any) -> None:
        """Run :func:`check_label_space` for every head found; raise :class:`BridgeError` on a mismatch."""
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        dataset = _unwrap_dataset(runner.train_dataloader.dataset)
        meta = dict(getattr(dataset, "metainfo", {}) or {})
        cat2label = getattr(dataset, "cat2label", None)
        max_label = max(cat2label.values()) if cat2label else None
        for path, num in head_num_classes(model).items():
            try:
                check_label_space(num, meta, max_label)
            except BridgeError as err:
                raise BridgeError(f"{path}: {err}") from None
