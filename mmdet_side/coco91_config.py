"""Switch a loaded mmdet config to id-slot COCO labels (label = original category id), every piece together.

``apply_coco91(cfg)`` sets, in one call, so that they cannot disagree:

- the datasets: ``CocoDataset`` → ``CocoDataset91`` (91 slots), ``CocoPanopticDataset`` →
  ``CocoPanopticDataset91`` (201 slots: things 0..90, stuff 91..200);
- the metrics: ``CocoMetric`` → ``CocoMetric91``, ``CocoPanopticMetric`` → ``CocoPanopticMetric91``;
- the model's class counts: ``num_classes`` of box / mask heads = 91 thing slots; heads with
  ``num_things_classes`` / ``num_stuff_classes`` get 91 / 110 (panoptic) or 91 / 0 (instances); a
  ``class_weight`` list sized for the old count (Mask2Former's ``[1.0] * num_classes + [0.1]``) is resized;
- ``custom_imports`` gains ``mmdet_side`` (so the types above are registered) and ``custom_hooks`` gains
  ``LabelSpaceCheckHook`` (so a head / dataset mismatch stops training before it starts).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from mmengine.config import Config

from bridge.coco.coco91 import COCO91_SLOT_NAMES
from bridge.errors import BridgeError
from mmdet_side.coco91_panoptic import NUM_STUFF_SLOTS, NUM_THING_SLOTS, panoptic_slot_metainfo

__all__ = ["DATASET_TYPES", "METRIC_TYPES", "CHECK_HOOK", "coco91_config_overrides", "apply_coco91"]

#: stock dataset type → its id-slot replacement
DATASET_TYPES: dict[str, str] = {"CocoDataset": "CocoDataset91", "CocoPanopticDataset": "CocoPanopticDataset91"}
#: stock metric type → its id-slot replacement
METRIC_TYPES: dict[str, str] = {"CocoMetric": "CocoMetric91", "CocoPanopticMetric": "CocoPanopticMetric91"}
CHECK_HOOK = "LabelSpaceCheckHook"
_LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
_EVALUATORS = ("val_evaluator", "test_evaluator")


def coco91_config_overrides(task: str = "instances") -> dict[str, Any]:
    """Return the pieces that must be set together for id-slot labels of ``task`` ('instances' or 'panoptic').

    Keys: ``dataset_type``, ``metric_type``, ``num_classes`` (box / mask heads: the thing slots) and, for
    panoptic, ``num_things_classes`` / ``num_stuff_classes``.
    """
    if task == "instances":
        return {"dataset_type": "CocoDataset91", "metric_type": "CocoMetric91", "num_classes": len(COCO91_SLOT_NAMES)}
    if task == "panoptic":
        return {
            "dataset_type": "CocoPanopticDataset91",
            "metric_type": "CocoPanopticMetric91",
            "num_classes": NUM_THING_SLOTS,
            "num_things_classes": NUM_THING_SLOTS,
            "num_stuff_classes": NUM_STUFF_SLOTS,
        }
    raise BridgeError(f"coco91: unknown task {task!r}; expected 'instances' or 'panoptic'")


def _type_name(value: Any) -> Any:
    return value if isinstance(value, str) else getattr(value, "__name__", value)


def _leaf_datasets(dataset: Any, where: str) -> list[tuple[MutableMapping, str]]:
    """The innermost dataset dicts under ``dataset`` (through ``dataset`` / ``datasets`` wrappers)."""
    if not isinstance(dataset, MutableMapping):
        raise BridgeError(f"{where}: expected a dataset config dict, got {type(dataset).__name__}")
    if "dataset" in dataset:  # RepeatDataset, ClassBalancedDataset, MultiImageMixDataset, ...
        return _leaf_datasets(dataset["dataset"], f"{where}.dataset")
    if "datasets" in dataset:  # ConcatDataset
        return [
            leaf for i, sub in enumerate(dataset["datasets"]) for leaf in _leaf_datasets(sub, f"{where}.datasets[{i}]")
        ]
    return [(dataset, where)]


def _task_of(datasets: list[tuple[MutableMapping, str]]) -> str:
    """'panoptic' or 'instances' from the dataset types; a non-COCO or a mixed set raises."""
    tasks = set()
    for dataset, where in datasets:
        kind = _type_name(dataset.get("type"))
        if kind not in DATASET_TYPES and kind not in DATASET_TYPES.values():
            raise BridgeError(
                f"{where}.type is {kind!r}; only {' and '.join(DATASET_TYPES)} can be switched to category-id labels"
            )
        tasks.add("panoptic" if "Panoptic" in kind else "instances")
    if len(tasks) != 1:
        raise BridgeError(f"apply_coco91: the dataloaders mix instances and panoptic datasets ({sorted(tasks)})")
    return tasks.pop()


def _set_dataset(dataset: MutableMapping, task: str) -> None:
    dataset["type"] = coco91_config_overrides(task)["dataset_type"]
    meta = dataset.get("metainfo")
    if isinstance(meta, MutableMapping) and "classes" in meta:
        slots = panoptic_slot_metainfo() if task == "panoptic" else {"classes": tuple(COCO91_SLOT_NAMES)}
        for key in ("classes", "thing_classes", "stuff_classes", "palette"):
            meta.pop(key, None)
        meta.update({k: v for k, v in slots.items() if k != "palette"})


def _set_metric_type(evaluator: Any) -> None:
    if isinstance(evaluator, MutableMapping):
        if "metrics" in evaluator and "type" not in evaluator:  # Evaluator(metrics=[...])
            _set_metric_type(evaluator["metrics"])
        elif _type_name(evaluator.get("type")) in METRIC_TYPES:
            evaluator["type"] = METRIC_TYPES[_type_name(evaluator["type"])]
    elif isinstance(evaluator, (list, tuple)):
        for item in evaluator:
            _set_metric_type(item)


def _resize_class_weights(node: MutableMapping, old: int, new: int, where: str) -> None:
    """Resize ``class_weight`` lists of the loss dicts directly under ``node`` from ``old`` to ``new`` classes."""
    for key, loss in node.items():
        weights = loss.get("class_weight") if isinstance(loss, Mapping) else None
        if not isinstance(weights, (list, tuple)) or len(weights) not in (old, old + 1):
            continue
        per_class, extra = list(weights[:old]), list(weights[old:])
        if len(set(per_class)) > 1:
            raise BridgeError(
                f"{where}.{key}.class_weight has per-class weights; they cannot be moved to the "
                "category-id slots automatically: set it by hand"
            )
        loss["class_weight"] = per_class[:1] * new + extra


def _set_class_counts(node: Any, counts: Mapping[str, int], where: str) -> int:
    """Set the class counts of every head under ``node``; return how many heads were set."""
    found = 0
    if isinstance(node, MutableMapping):
        if isinstance(node.get("num_things_classes"), int):
            old = node["num_things_classes"] + node.get("num_stuff_classes", 0)
            node["num_things_classes"] = counts["num_things_classes"]
            if "num_stuff_classes" in node:
                node["num_stuff_classes"] = counts["num_stuff_classes"]
            new = node["num_things_classes"] + node.get("num_stuff_classes", 0)
            if isinstance(node.get("num_classes"), int):
                node["num_classes"] = new
            _resize_class_weights(node, old, new, where)
            found += 1
        elif isinstance(node.get("num_classes"), int):
            old, node["num_classes"] = node["num_classes"], counts["num_classes"]
            _resize_class_weights(node, old, counts["num_classes"], where)
            found += 1
        for key, value in node.items():
            found += _set_class_counts(value, counts, f"{where}.{key}")
    elif isinstance(node, (list, tuple)):
        found += sum(_set_class_counts(item, counts, f"{where}[{i}]") for i, item in enumerate(node))
    return found


def _add_import_and_hook(cfg: Config) -> None:
    imports = cfg.get("custom_imports") or {}
    names = list(imports.get("imports", []))
    names += [] if "mmdet_side" in names else ["mmdet_side"]
    cfg.custom_imports = dict(imports, imports=names, allow_failed_imports=imports.get("allow_failed_imports", False))
    hooks = list(cfg.get("custom_hooks") or [])
    if not any(_type_name(hook.get("type")) == CHECK_HOOK for hook in hooks):
        hooks.append(dict(type=CHECK_HOOK))
    cfg.custom_hooks = hooks


def apply_coco91(cfg: Config) -> Config:
    """Switch a loaded mmdet config to category-id labels in place and return it (see the module docstring).

    The task (instances or panoptic) follows the dataloaders' dataset types.  Raises :class:`BridgeError`
    for a non-COCO dataset, a mix of instances and panoptic datasets, a model without class counts, or
    per-class loss weights that cannot be resized.
    """
    datasets = [
        leaf
        for name in _LOADERS
        if cfg.get(name) is not None
        for leaf in _leaf_datasets(cfg[name]["dataset"], f"{name}.dataset")
    ]
    if not datasets:
        raise BridgeError("apply_coco91: the config has no train/val/test dataloader")
    task = _task_of(datasets)
    for dataset, _where in datasets:
        _set_dataset(dataset, task)
    for name in _EVALUATORS:
        if cfg.get(name) is not None:
            _set_metric_type(cfg[name])
    counts = coco91_config_overrides(task)
    counts = dict(
        counts, num_things_classes=counts["num_classes"], num_stuff_classes=counts.get("num_stuff_classes", 0)
    )
    if _set_class_counts(cfg.model, counts, "model") == 0:
        raise BridgeError("apply_coco91: no num_classes / num_things_classes under cfg.model to set")
    for key in ("num_things_classes", "num_stuff_classes"):  # config-level variables (Mask2Former's configs)
        if isinstance(cfg.get(key), int):
            cfg[key] = counts[key]
    if isinstance(cfg.get("num_classes"), int):
        cfg.num_classes = counts["num_things_classes"] + counts["num_stuff_classes"]
    _add_import_and_hook(cfg)
    return cfg
