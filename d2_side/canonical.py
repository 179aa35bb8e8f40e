"""detectron2 predictions in the canonical forms ``bridge.compare`` pairs across frameworks: per image
``panoptic.<image_id>``, ``instances.<image_id>`` and ``semantic.<image_id>`` (kind ``output``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.outputs.instances import record_canonical_instances
from bridge.outputs.semantic import record_canonical_semantic
from bridge.panoptic import record_canonical_panoptic
from bridge.runs import Recorder
from d2_side import instances, panoptic, semantic


def record_canonical_outputs(
    recorder: Recorder, inputs: Sequence[dict], outputs: Sequence[dict], metadata: Any, step: int
) -> None:
    """Record every canonical result in ``outputs`` (one dict per input; kind ``output``): ``panoptic_seg``,
    ``instances`` and ``sem_seg`` with dataset category ids from ``metadata``, named by the input's ``image_id``
    (its position when it has none)."""
    for index, (record, output) in enumerate(zip(inputs, outputs)):
        image_id = record.get("image_id", index)
        if "panoptic_seg" in output:
            c = panoptic.canonical_from_d2(output["panoptic_seg"], metadata)
            record_canonical_panoptic(recorder, image_id, c, step=step)
        if "instances" in output:
            c = instances.canonical_from_d2(output["instances"], metadata)
            record_canonical_instances(recorder, image_id, c, step=step)
        if "sem_seg" in output:
            c = semantic.canonical_from_d2(output["sem_seg"], metadata)
            record_canonical_semantic(recorder, image_id, c, step=step)
