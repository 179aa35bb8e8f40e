"""mmdet 3.x semantic outputs (``pred_sem_seg.sem_seg``) to the canonical form of ``bridge.outputs.semantic``.

``sem_seg`` holds 1×H×W labels (what ``SemSegMetric`` reads; labels outside ``classes``, such as its ignore
index 255, mean no category) or C×H×W scores over ``classes``; labels map to dataset ids through the
annotation file's categories matched by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from bridge.errors import BridgeError
from bridge.outputs.instances import dataset_ids
from bridge.outputs.semantic import CanonicalSemantic, canonical_from_labels, canonical_from_scores
from mmdet_side.instances import label_lookup


def canonical_from_mmdet(
    sem_seg: torch.Tensor, classes: Sequence[str], categories: Sequence[Mapping[str, Any]]
) -> CanonicalSemantic:
    """Convert mmdet's ``pred_sem_seg.sem_seg`` (labels or scores) into a per-pixel dataset category id map."""
    sem_seg = torch.as_tensor(sem_seg)
    lookup = dataset_ids(label_lookup(classes, categories))
    if sem_seg.ndim == 3 and sem_seg.shape[0] > 1:
        return canonical_from_scores(sem_seg, lookup)
    if sem_seg.is_floating_point() and sem_seg.ndim == 3 and len(classes) == 1:
        return canonical_from_scores(sem_seg, lookup)
    if sem_seg.ndim not in (2, 3):
        raise BridgeError(f"mmdet sem_seg must be 1×H×W labels or C×H×W scores, got shape {tuple(sem_seg.shape)}")
    return canonical_from_labels(sem_seg, lookup)


__all__ = ["canonical_from_mmdet", "label_lookup"]
