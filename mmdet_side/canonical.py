"""mmdet predictions in the canonical forms ``bridge.compare`` pairs across frameworks: per image
``panoptic.<img_id>``, ``instances.<img_id>`` and ``semantic.<img_id>`` (kind ``output``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.outputs import instances as canonical_instances
from bridge import panoptic as canonical_panoptic
from bridge.outputs import semantic as canonical_semantic
from bridge.errors import BridgeError
from mmdet_side import instances, panoptic, semantic


def annotation_categories(dataset: Any) -> list[dict]:
    """The ``categories`` of a dataset's annotation file (``dataset.ann_file``), with which labels map to ids."""
    try:
        return json.loads(Path(dataset.ann_file).read_bytes())["categories"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BridgeError(f"cannot read the categories of {getattr(dataset, 'ann_file', dataset)!r}: {exc}") from None


def canonical_records(outputs: Sequence[Any], classes: Sequence[str],
                      categories: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict]]:
    """(record name, value) of every canonical result in ``outputs`` (``DetDataSample`` s): ``pred_panoptic_seg``,
    ``pred_instances`` and ``pred_sem_seg`` with dataset category ids (``classes`` = ``metainfo['classes']``,
    ``categories`` = the annotation file's); named by the sample's ``img_id`` (its position when it has none)."""
    records = []
    for index, sample in enumerate(outputs):
        image_id = sample.get("img_id", index)
        if "pred_panoptic_seg" in sample:
            c = panoptic.canonical_from_mmdet(sample.pred_panoptic_seg.sem_seg, classes, categories)
            records.append((f"{canonical_panoptic.RECORD_PREFIX}{image_id}", canonical_panoptic.to_record(c)))
        if "pred_instances" in sample:
            c = instances.canonical_from_mmdet(sample.pred_instances, classes, categories)
            records.append((f"{canonical_instances.RECORD_PREFIX}{image_id}", canonical_instances.to_record(c)))
        if "pred_sem_seg" in sample:
            c = semantic.canonical_from_mmdet(sample.pred_sem_seg.sem_seg, classes, categories)
            records.append((f"{canonical_semantic.RECORD_PREFIX}{image_id}", canonical_semantic.to_record(c)))
    return records
