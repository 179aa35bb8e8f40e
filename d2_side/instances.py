"""detectron2 instance outputs (``output["instances"]``) to the canonical form of ``bridge.outputs.instances``.

``pred_classes`` are contiguous ids; they map back to dataset ids through the dataset metadata's
``thing_dataset_id_to_contiguous_id``, as detectron2's ``COCOEvaluator`` maps them. ``pred_boxes`` and
``pred_masks`` are at the size the model was asked for (the input's ``height`` × ``width``).
"""

from __future__ import annotations

from typing import Any

from detectron2.structures import Instances

from bridge.errors import BridgeError
from bridge.outputs.instances import CanonicalInstances, canonical_instances, dataset_ids, map_labels
from d2_side.panoptic import _meta_get


def label_lookup(metadata: Any) -> list[int | None]:
    """Contiguous thing id → dataset id (None for an id no category uses) from ``metadata``."""
    things = _meta_get(metadata, "thing_dataset_id_to_contiguous_id") or {}
    if not things:
        raise BridgeError(
            "metadata has no thing_dataset_id_to_contiguous_id: instance classes cannot be mapped to dataset ids"
        )
    table: list[int | None] = [None] * (max(int(c) for c in things.values()) + 1)
    for dataset_id, contiguous in things.items():
        table[int(contiguous)] = int(dataset_id)
    return table


def canonical_from_d2(instances: Instances, metadata: Any) -> CanonicalInstances:
    """Convert detectron2's predicted ``Instances`` into a canonical result with dataset category ids.

    ``metadata`` is a detectron2 ``Metadata`` or a dict holding ``thing_dataset_id_to_contiguous_id``.
    Raises BridgeError for a class outside the map or missing ``pred_classes`` / ``scores``.
    """
    fields = instances.get_fields()
    missing = {"pred_classes", "scores"} - set(fields)
    if missing:
        raise BridgeError(f"detectron2 instances lack {sorted(missing)} (fields: {sorted(fields)})")
    boxes = fields.get("pred_boxes")
    return canonical_instances(
        map_labels(fields["pred_classes"], dataset_ids(label_lookup(metadata)), "detectron2 pred_classes"),
        fields["scores"],
        boxes.tensor if boxes is not None else None,
        fields.get("pred_masks"),
    )


__all__ = ["canonical_from_d2", "label_lookup"]
