"""mmdet 3.x instance outputs (``pred_instances``) to the canonical form of ``bridge.outputs.instances``.

``labels`` index the dataset's ``metainfo['classes']``; they map to dataset ids through the annotation file's
categories matched by name, as mmdet's ``CocoMetric`` maps them (``get_cat_ids(cat_names=classes)``).
With ``rescale=True`` (the test loop's default) ``bboxes`` and ``masks`` are at the original image's size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bridge.errors import BridgeError
from bridge.outputs.instances import CanonicalInstances, canonical_instances, dataset_ids, map_labels


def label_lookup(classes: Sequence[str], categories: Sequence[Mapping[str, Any]]) -> list[int | None]:
    """Label → dataset id (None for a class no category is named after, e.g. an ``N/A`` slot)."""
    by_name = {str(c["name"]): int(c["id"]) for c in categories}
    return [by_name.get(str(name)) for name in classes]


def _field(instances: Any, name: str) -> Any:
    value = instances.get(name) if hasattr(instances, "get") else None
    if value is not None and hasattr(value, "to_tensor") and hasattr(value, "masks"):  # BitmapMasks
        return value.to_tensor(dtype=bool, device="cpu")
    return value.tensor if value is not None and hasattr(value, "tensor") else value


def canonical_from_mmdet(
    pred_instances: Any, classes: Sequence[str], categories: Sequence[Mapping[str, Any]]
) -> CanonicalInstances:
    """Convert mmdet's ``pred_instances`` (an ``InstanceData`` or dict) into a canonical result with dataset ids.

    ``classes`` is the dataset's ``metainfo['classes']``; ``categories`` the annotation file's list.
    Raises BridgeError for a label outside ``classes`` or missing ``labels`` / ``scores``.
    """
    labels, scores = _field(pred_instances, "labels"), _field(pred_instances, "scores")
    if labels is None or scores is None:
        raise BridgeError("mmdet pred_instances lack 'labels' or 'scores'")
    return canonical_instances(
        map_labels(labels, dataset_ids(label_lookup(classes, categories)), "mmdet labels"),
        scores,
        _field(pred_instances, "bboxes"),
        _field(pred_instances, "masks"),
    )


__all__ = ["canonical_from_mmdet", "label_lookup"]
