"""detectron2 semantic outputs (``output["sem_seg"]``, C×H×W scores) to the canonical form of ``bridge.outputs.semantic``.

Channel ``c`` is the contiguous stuff id ``c``; it maps back to a dataset id through the metadata's
``stuff_dataset_id_to_contiguous_id``, as detectron2's ``SemSegEvaluator`` maps it (PanopticFPN's
``_separated`` registration maps its "things" channel 0 to dataset id 0: no category).
"""

from __future__ import annotations

from typing import Any

import torch

from bridge.errors import BridgeError
from bridge.outputs.instances import dataset_ids
from bridge.outputs.semantic import CanonicalSemantic, canonical_from_scores
from d2_side.panoptic import _meta_get


def label_lookup(metadata: Any, num_classes: int) -> list[int | None]:
    """Channel → dataset id for ``num_classes`` channels (None for a channel the stuff map does not name)."""
    stuff = _meta_get(metadata, "stuff_dataset_id_to_contiguous_id") or {}
    if not stuff:
        raise BridgeError(
            "metadata has no stuff_dataset_id_to_contiguous_id: semantic classes cannot be mapped to dataset ids"
        )
    inverse = {int(c): int(d) for d, c in stuff.items()}
    return [inverse.get(c) for c in range(num_classes)]


def canonical_from_d2(sem_seg: torch.Tensor, metadata: Any) -> CanonicalSemantic:
    """Convert detectron2's C×H×W ``sem_seg`` into a per-pixel dataset category id map (arg-max class)."""
    sem_seg = torch.as_tensor(sem_seg)
    if sem_seg.ndim != 3:
        raise BridgeError(f"detectron2 sem_seg must be C×H×W scores, got shape {tuple(sem_seg.shape)}")
    return canonical_from_scores(sem_seg, dataset_ids(label_lookup(metadata, sem_seg.shape[0])))


__all__ = ["canonical_from_d2", "label_lookup"]
