"""mmdet predictions in the canonical forms ``bridge.compare`` pairs across frameworks: per image
``panoptic.<img_id>``, ``instances.<img_id>`` and ``semantic.<img_id>`` (kind ``output``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError
from bridge.outputs.instances import record_canonical_instances
from bridge.outputs.semantic import record_canonical_semantic
from bridge.panoptic import record_canonical_panoptic
from bridge.runs import Recorder
from mmdet_side import instances, panoptic, semantic


def annotation_categories(dataset: Any) -> list[dict]:
    """The ``categories`` of a dataset's annotation file (``dataset.ann_file``), with which labels map to ids."""
    try:
        return json.loads(Path(dataset.ann_file).read_bytes())["categories"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BridgeError(f"cannot read the categories of {getattr(dataset, 'ann_file', dataset)!r}: {exc}") from None


def record_canonical_outputs(
    recorder: Recorder,
    outputs: Sequence[Any],
    classes: Sequence[str],
    categories: Sequence[Mapping[str, Any]],
    step: int,
) -> None:
    """Record every canonical result in ``outputs`` (``DetDataSample`` s; kind ``output``): ``pred_panoptic_seg``,
    ``pred_instances`` and ``pred_sem_seg`` with dataset category ids (``classes`` = ``metainfo['classes']``,
    ``categories`` = the annotation file's), named by the sample's ``img_id`` (its position when it has none)."""
    for index, sample in enumerate(outputs):
        image_id = sample.get("img_id", index)
        if "pred_panoptic_seg" in sample:
            c = panoptic.canonical_from_mmdet(sample.pred_panoptic_seg.sem_seg, classes, categories)
            record_canonical_panoptic(recorder, image_id, c, step=step)
        if "pred_instances" in sample:
            c = instances.canonical_from_mmdet(sample.pred_instances, classes, categories)
            record_canonical_instances(recorder, image_id, c, step=step)
        if "pred_sem_seg" in sample:
            c = semantic.canonical_from_mmdet(sample.pred_sem_seg.sem_seg, classes, categories)
            record_canonical_semantic(recorder, image_id, c, step=step)
