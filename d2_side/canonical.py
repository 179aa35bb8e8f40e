"""detectron2 predictions in the canonical forms ``bridge.compare`` pairs across frameworks: per image
``panoptic.<image_id>``, ``instances.<image_id>`` and ``semantic.<image_id>`` (kind ``output``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.outputs import instances as canonical_instances
from bridge import panoptic as canonical_panoptic
from bridge.outputs import semantic as canonical_semantic
from d2_side import instances, panoptic, semantic


def canonical_records(inputs: Sequence[dict], outputs: Sequence[dict], metadata: Any) -> list[tuple[str, dict]]:
    """(record name, value) of every canonical result in ``outputs`` (one dict per input): ``panoptic_seg``,
    ``instances`` and ``sem_seg`` with dataset category ids from ``metadata``; named by the input's
    ``image_id`` (its position when it has none)."""
    records = []
    for index, (record, output) in enumerate(zip(inputs, outputs)):
        image_id = record.get("image_id", index)
        if "panoptic_seg" in output:
            records.append((f"{canonical_panoptic.RECORD_PREFIX}{image_id}",
                            canonical_panoptic.to_record(panoptic.canonical_from_d2(output["panoptic_seg"], metadata))))
        if "instances" in output:
            records.append((f"{canonical_instances.RECORD_PREFIX}{image_id}",
                            canonical_instances.to_record(instances.canonical_from_d2(output["instances"], metadata))))
        if "sem_seg" in output:
            records.append((f"{canonical_semantic.RECORD_PREFIX}{image_id}",
                            canonical_semantic.to_record(semantic.canonical_from_d2(output["sem_seg"], metadata))))
    return records
