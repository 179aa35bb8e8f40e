"""Framework-free semantic results: one canonical form (a per-pixel dataset category id map), its record
encoding, and a pixel-agreement comparison.

detectron2 gives ``output["sem_seg"]`` (C×H×W scores over contiguous classes) and mmdet 3.x
``pred_sem_seg.sem_seg`` (1×H×W labels, or C×H×W scores); ``d2_side.semantic`` and ``mmdet_side.semantic``
turn both into :class:`CanonicalSemantic`: the arg-max class of each pixel mapped to its *dataset* category
id, 0 where the class names no dataset category (detectron2's merged "things" class of PanopticFPN, mmdet's
ignore index).

This module never imports detectron2, mmdet, mmengine or mmcv.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bridge.errors import BridgeError
from bridge.runs import Recorder

RECORD_PREFIX = "semantic."
#: How many (A category, B category) confusions a report lists.
LISTED = 20


@dataclass
class CanonicalSemantic:
    """One image's semantic result: ``category`` H×W int64 dataset category ids (0 = no category)."""

    category: torch.Tensor

    def __post_init__(self) -> None:
        """Check the map is H×W."""
        self.category = torch.as_tensor(self.category).detach().cpu().to(torch.int64)
        if self.category.ndim != 2:
            raise BridgeError(f"semantic map must be H×W, got shape {tuple(self.category.shape)}")


def canonical_from_scores(scores: Any, lookup: torch.Tensor) -> CanonicalSemantic:
    """C×H×W class scores (or logits) → the arg-max class per pixel, mapped to dataset ids by ``lookup``
    (class index → dataset id, 0 for none; see ``bridge.outputs.instances.dataset_ids``)."""
    scores = torch.as_tensor(scores).detach().cpu()
    if scores.ndim != 3 or scores.shape[0] != len(lookup):
        raise BridgeError(
            f"semantic scores must be C×H×W with C = {len(lookup)} classes, got shape {tuple(scores.shape)}"
        )
    return CanonicalSemantic(lookup[scores.argmax(0)])


def canonical_from_labels(labels: Any, lookup: torch.Tensor) -> CanonicalSemantic:
    """H×W (or 1×H×W) class labels → dataset ids by ``lookup``; labels outside it (an ignore index) become 0."""
    labels = torch.as_tensor(labels).detach().cpu().to(torch.int64)
    if labels.ndim == 3 and labels.shape[0] == 1:
        labels = labels[0]
    if labels.ndim != 2:
        raise BridgeError(f"semantic labels must be H×W or 1×H×W, got shape {tuple(labels.shape)}")
    inside = (labels >= 0) & (labels < len(lookup))
    return CanonicalSemantic(torch.where(inside, lookup[labels.clamp(0, len(lookup) - 1)], 0))


def to_record(c: CanonicalSemantic) -> dict[str, torch.Tensor]:
    """A value for ``bridge.Recorder.record``: ``{"category": H×W int64}``."""
    return {"category": c.category}


def record_canonical_semantic(recorder: Recorder, image_id: object, c: CanonicalSemantic, *, step: int) -> None:
    """Record ``c`` as ``semantic.<image_id>`` (kind ``output``), the name ``bridge.compare`` pairs across runs."""
    recorder.record(f"{RECORD_PREFIX}{image_id}", to_record(c), step=step, kind="output")


def from_record(d: Any) -> CanonicalSemantic:
    """Rebuild a canonical result from :func:`to_record`'s value (as read back by ``Run.get``)."""
    if not isinstance(d, dict) or set(d) != {"category"}:
        raise BridgeError("semantic record must be a dict with the one key 'category'")
    return CanonicalSemantic(d["category"])


@dataclass
class SemanticComparison:
    """Pixel agreement of B's semantic map with the reference A's."""

    pixels: int
    differing: int
    confusions: list[dict[str, int]]
    allowed_share: float
    size_mismatch: str = ""

    @property
    def agreement(self) -> float:
        """Share of pixels with the same category on both sides (1.0 for an empty map)."""
        return 1.0 - self.differing / self.pixels if self.pixels else 1.0

    @property
    def passed(self) -> bool:
        """True when both maps have one size and the share of differing pixels is at most ``allowed_share``."""
        return not self.size_mismatch and self.differing <= self.allowed_share * self.pixels

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "pixels": self.pixels,
            "differing": self.differing,
            "agreement": self.agreement,
            "allowed_share": self.allowed_share,
            "confusions": self.confusions,
            "size_mismatch": self.size_mismatch,
            "passed": self.passed,
        }

    def summary(self) -> str:
        """One line: agreement, differing pixels and the largest confusion."""
        if self.size_mismatch:
            return f"FAIL: {self.size_mismatch}"
        text = f"pixel agreement {self.agreement:.6f} ({self.differing} of {self.pixels} pixels differ)"
        if self.confusions:
            top = self.confusions[0]
            text += f", most often A {top['a_category']} as B {top['b_category']} ({top['pixels']} px)"
        return text + ("" if self.passed else f"; FAIL (allowed share {self.allowed_share:g})")


def compare_semantic(
    a: CanonicalSemantic, b: CanonicalSemantic, *, allowed_share: float = 0.0, device: torch.device | str = "cpu"
) -> SemanticComparison:
    """Compare two maps pixel by pixel on ``device``; maps of different sizes fail (every pixel of A counted)."""
    if a.category.shape != b.category.shape:
        return SemanticComparison(
            int(a.category.numel()),
            int(a.category.numel()),
            [],
            float(allowed_share),
            f"maps differ in size: A {tuple(a.category.shape)} vs B {tuple(b.category.shape)}",
        )
    ca, cb = a.category.to(device).reshape(-1), b.category.to(device).reshape(-1)
    diff = ca != cb
    pairs, counts = torch.unique(torch.stack([ca[diff], cb[diff]]), dim=1, return_counts=True)
    order = counts.argsort(descending=True, stable=True)[:LISTED]
    confusions = [
        {"a_category": int(pairs[0, k]), "b_category": int(pairs[1, k]), "pixels": int(counts[k])}
        for k in order.tolist()
    ]
    return SemanticComparison(int(ca.numel()), int(diff.sum()), confusions, float(allowed_share))
