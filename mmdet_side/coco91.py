"""91-slot (DETR-style) COCO labels in mmdet: dataset, metric and the label-space check.

Label ``i`` is the original COCO category id ``i`` (slots named by :data:`bridge.coco.coco91.COCO91_SLOT_NAMES`,
``'N/A'`` for ids no category uses, slot 0 included).  Stock mmdet maps the annotation file's categories to
80 contiguous labels *by name*; with the 91 slot names that silently shifts labels (and labels >= 80 raise
``IndexError`` in ``CocoMetric``).  The pieces here keep label == category id everywhere::

    custom_imports = dict(imports=['mmdet_side'], allow_failed_imports=False)
    custom_hooks = [dict(type='LabelSpaceCheckHook')]  # fail before training if head and dataset disagree

``mmdet_side.coco91_config.apply_coco91`` switches a config to these (and the panoptic ones of
``mmdet_side.coco91_panoptic``) in one call.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from mmdet.datasets import CocoDataset
from mmdet.evaluation import CocoMetric
from mmdet.registry import DATASETS, HOOKS, METRICS
from mmengine.fileio import get_local_path
from mmengine.hooks import Hook

from bridge.coco.coco91 import COCO91_SLOT_NAMES, COCO91_TO_80, UNUSED_SLOT, check_slot_layout, coco_panoptic_slot_names
from bridge.errors import BridgeError

NUM_COCO91_CLASSES: int = len(COCO91_SLOT_NAMES)
_UNUSED = UNUSED_SLOT

__all__ = [
    "NUM_COCO91_CLASSES",
    "IdentityLabelsMixin",
    "SlotLayoutMetaMixin",
    "CocoDataset91",
    "CocoMetric91",
    "check_label_space",
    "head_num_classes",
    "LabelSpaceCheckHook",
]


def _coco91_palette() -> list[tuple[int, int, int]]:
    """Stock 80-class palette spread over the 91 slots (black for unused slots)."""
    palette = CocoDataset.METAINFO["palette"]
    return [tuple(palette[c]) if c >= 0 else (0, 0, 0) for c in COCO91_TO_80]


class IdentityLabelsMixin:
    """``load_data_list`` of mmdet's COCO datasets with ``cat2label`` the identity (label = category id).

    Mixed in before ``CocoDataset`` / ``CocoPanopticDataset``: every category of the annotation file must
    have its name in its id's slot of ``metainfo['classes']`` (:func:`bridge.coco.coco91.check_slot_layout`).
    """

    def load_data_list(self) -> list[dict]:
        """Load the annotation file like ``CocoDataset.load_data_list`` with identity ``cat2label``."""
        with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
            self.coco = self.COCOAPI(local_path)
        cat_ids = sorted(self.coco.get_cat_ids())
        check_slot_layout(
            self.metainfo["classes"],
            [(c["id"], c["name"]) for c in self.coco.load_cats(cat_ids)],
            f"{type(self).__name__} on {self.ann_file}",
        )
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
            data_list.append(
                self.parse_data_info({"raw_ann_info": self.coco.load_anns(ann_ids), "raw_img_info": raw_img_info})
            )
        if self.ANN_ID_UNIQUE and len(set(total_ann_ids)) != len(total_ann_ids):
            raise BridgeError(f"Annotation ids in '{self.ann_file}' are not unique")
        del self.coco
        return data_list


@DATASETS.register_module()
class CocoDataset91(IdentityLabelsMixin, CocoDataset):
    """``CocoDataset`` whose labels are the original COCO category ids (0..90, DETR's 91 slots).

    ``cat_ids`` are the annotation file's category ids, ``cat2label`` is the identity on them.  A category
    id outside ``0..len(classes)-1``, or whose name differs from its slot name, raises :class:`BridgeError`.
    """

    METAINFO = {"classes": tuple(COCO91_SLOT_NAMES), "palette": _coco91_palette()}


class SlotLayoutMetaMixin:
    """``dataset_meta`` setter of an id-slot metric: checks the slot layout when the runner sets it.

    With an annotation file, each of its categories must have its name in its id's slot of
    ``dataset_meta['classes']``; without one, each named slot of ``REFERENCE_SLOTS`` must.  So the stock
    80-class (or 133-class) metainfo, whose label ``l`` is not category ``l``, is refused instead of
    scoring the wrong categories.
    """

    REFERENCE_SLOTS: tuple[str, ...] = tuple(COCO91_SLOT_NAMES)

    @property
    def dataset_meta(self) -> dict | None:
        """Meta info of the dataset (checked to have the id-slot layout when set)."""
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: dict | None) -> None:
        if dataset_meta is not None:
            self.check_dataset_meta(dataset_meta)
        self._dataset_meta = dataset_meta

    def _reference_categories(self) -> list[tuple[int, str]]:
        coco_api = getattr(self, "_coco_api", None)
        if coco_api is not None:
            return [(cat["id"], cat["name"]) for cat in coco_api.cats.values()]
        return [(i, name) for i, name in enumerate(self.REFERENCE_SLOTS) if name != _UNUSED]

    def check_dataset_meta(self, dataset_meta: Mapping[str, Any]) -> None:
        """Raise :class:`BridgeError` unless ``dataset_meta['classes']`` has the id-slot layout."""
        where = type(self).__name__
        if "classes" not in dataset_meta:
            raise BridgeError(f"{where}: dataset_meta has no 'classes'")
        check_slot_layout(tuple(dataset_meta["classes"]), self._reference_categories(), where)


@METRICS.register_module()
class CocoMetric91(SlotLayoutMetaMixin, CocoMetric):
    """``CocoMetric`` for 91-slot labels: predicted label ``l`` is written as category id ``l``.

    COCOeval runs over the real category ids of the annotation file (or, without ``ann_file``, of the
    ground truth converted from the dataset, unused ``'N/A'`` slots left out).  ``dataset_meta`` must have
    the slot layout (:class:`SlotLayoutMetaMixin`).
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
                raise BridgeError(
                    f"{type(self).__name__}: predicted label {int(labels.max())} (min "
                    f"{int(labels.min())}) is outside the {num} label slots of dataset_meta"
                )
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


def check_label_space(
    model_num_classes: int, dataset_meta: Mapping[str, Any], max_label: int | None = None, key: str = "classes"
) -> None:
    """Raise :class:`BridgeError` when a head's class count and the dataset's label space disagree.

    ``model_num_classes`` must equal ``len(dataset_meta[key])`` (``key`` 'classes', or 'thing_classes' for the
    box / mask heads of a panoptic model) and every label (``max_label``, when given) must be below it.
    """
    classes = dataset_meta.get(key) if dataset_meta else None
    if classes is None:
        raise BridgeError(f"label space check: dataset_meta has no {key!r}")
    if model_num_classes != len(classes):
        hint = (
            " (use apply_coco91 to set dataset, metric and head together)"
            if {len(classes), model_num_classes} & {NUM_COCO91_CLASSES, len(coco_panoptic_slot_names())}
            else ""
        )
        raise BridgeError(
            f"label space mismatch: the model head has num_classes={model_num_classes} but the "
            f"dataset has {len(classes)} {key.replace('_', ' ')}{hint}"
        )
    if max_label is not None and not 0 <= max_label < model_num_classes:
        raise BridgeError(
            f"label space mismatch: the dataset has label {max_label}, the model head only {model_num_classes} classes"
        )


#: heads whose class count is the dataset's things (of a panoptic dataset) or all its classes
_THING_HEAD_PATHS: tuple[str, ...] = ("bbox_head", "roi_head.bbox_head", "roi_head.mask_head")
#: heads whose class count (things + stuff) is all the dataset's classes
_ALL_CLASS_HEAD_PATHS: tuple[str, ...] = ("panoptic_head", "semantic_head", "panoptic_fusion_head")


def _class_count(head: Any) -> int | None:
    things, stuff = getattr(head, "num_things_classes", None), getattr(head, "num_stuff_classes", None)
    if isinstance(things, int) and isinstance(stuff, int):
        return things + stuff
    num = getattr(head, "num_classes", None)
    return num if isinstance(num, int) else None


def head_num_classes(model: Any) -> dict[str, int]:
    """Return ``{path: class count}`` of the box / mask / panoptic heads found on an mmdet model.

    The count is ``num_things_classes + num_stuff_classes`` where a head has both, else ``num_classes``.
    """
    found: dict[str, int] = {}
    for path in _THING_HEAD_PATHS + _ALL_CLASS_HEAD_PATHS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        heads = obj if isinstance(obj, Sequence) or type(obj).__name__ == "ModuleList" else [obj]
        for i, head in enumerate(heads):
            num = _class_count(head)
            if num is not None:
                found[path if len(heads) == 1 else f"{path}[{i}]"] = num
    return found


def _unwrap_dataset(dataset: Any) -> Any:
    while not hasattr(dataset, "metainfo") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return dataset


@HOOKS.register_module()
class LabelSpaceCheckHook(Hook):
    """Check, before training starts, that the heads' class counts match the train dataset's classes.

    Box / mask heads are compared with ``thing_classes`` on a panoptic dataset, with ``classes`` otherwise;
    panoptic, semantic and fusion heads (things + stuff) with ``classes``.
    """

    priority = "VERY_HIGH"

    def before_train(self, runner: Any) -> None:
        """Run :func:`check_label_space` for every head found; raise :class:`BridgeError` on a mismatch."""
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        dataset = _unwrap_dataset(runner.train_dataloader.dataset)
        meta = dict(getattr(dataset, "metainfo", {}) or {})
        cat2label = getattr(dataset, "cat2label", None)
        max_label = max(cat2label.values()) if cat2label else None
        for path, num in head_num_classes(model).items():
            key = "thing_classes" if "thing_classes" in meta and path.split("[")[0] in _THING_HEAD_PATHS else "classes"
            try:
                check_label_space(num, meta, max_label if key == "classes" else None, key=key)
            except BridgeError as err:
                raise BridgeError(f"{path}: {err}") from None
