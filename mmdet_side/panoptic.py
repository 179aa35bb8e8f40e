"""mmdet 3.x panoptic outputs (``pred_panoptic_seg.sem_seg``) to and from the canonical encoding.

mmdet stores ``label + instance_index * INSTANCE_OFFSET`` (1000) per pixel, void = ``len(classes)``;
labels map to dataset ids through the annotation file's categories matched by name, as
``CocoPanopticMetric`` does (``cat_ids = coco.get_cat_ids(cat_names=classes)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from mmdet.evaluation.functional import INSTANCE_OFFSET

from bridge.errors import BridgeError
from bridge.panoptic import CanonicalPanoptic, canonical_from_segment_map


def _by_name(categories: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {str(c["name"]): c for c in categories}


def canonical_from_mmdet(
    sem_seg: torch.Tensor | np.ndarray, classes: Sequence[str], categories: Sequence[Mapping[str, Any]]
) -> CanonicalPanoptic:
    """Convert mmdet's panoptic map (1×H×W or H×W) into a canonical result with dataset category ids.

    ``classes`` is the dataset's ``metainfo['classes']``; ``categories`` the annotation file's list (with
    ``isthing``). Raises BridgeError for a label whose class name is not among the categories.
    """
    pan = sem_seg.detach().cpu().numpy() if isinstance(sem_seg, torch.Tensor) else np.asarray(sem_seg)
    if pan.ndim == 3 and pan.shape[0] == 1:
        pan = pan[0]
    if pan.ndim != 2:
        raise BridgeError(f"mmdet panoptic map must be 1×H×W or H×W, got shape {pan.shape}")
    pan = pan.astype(np.int64)
    names = _by_name(categories)
    num_classes = len(classes)
    infos = []
    for value in np.unique(pan).tolist():
        label, instance = value % INSTANCE_OFFSET, value // INSTANCE_OFFSET
        if label == num_classes or value < 0:
            continue
        if label > num_classes:
            raise BridgeError(f"mmdet panoptic value {value}: label {label} outside 0..{num_classes}")
        cat = names.get(str(classes[label]))
        if cat is None:
            raise BridgeError(f"mmdet class {classes[label]!r} (label {label}) is not among the annotation categories")
        infos.append(
            {
                "id": value + 1,
                "category_id": int(cat["id"]),
                "isthing": int(cat["isthing"]) if "isthing" in cat else int(instance > 0),
            }
        )
    return canonical_from_segment_map(pan + 1, infos, void_ids=())


def mmdet_from_canonical(
    c: CanonicalPanoptic, classes: Sequence[str], categories: Sequence[Mapping[str, Any]]
) -> torch.Tensor:
    """The inverse: a 1×H×W int64 tensor of ``label + k * 1000`` (things k = 1, 2, ...; stuff k = 0)."""
    label_of = {str(name): i for i, name in enumerate(classes)}
    name_of = {int(cat["id"]): str(cat["name"]) for cat in categories}
    pan = np.full(c.shape, len(classes), dtype=np.int64)
    count: dict[int, int] = {}
    for s in c.segments:
        name = name_of.get(int(s["category_id"]))
        if name is None or name not in label_of:
            raise BridgeError(f"segment {s['id']}: dataset category {s['category_id']} has no mmdet class")
        label = label_of[name]
        k = 0
        if s["isthing"]:
            k = count.get(label, 0) + 1
            count[label] = k
        pan[c.segment == s["id"]] = label + k * INSTANCE_OFFSET
    return torch.from_numpy(pan)[None]


__all__ = ["INSTANCE_OFFSET", "canonical_from_mmdet", "mmdet_from_canonical"]
