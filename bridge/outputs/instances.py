"""Framework-free instance results: one canonical form, its record encoding, and a detection-matching comparison.

detectron2 (``output["instances"]``: ``pred_boxes``, ``pred_classes``, ``scores``, ``pred_masks``) and mmdet 3.x
(``pred_instances``: ``bboxes``, ``labels``, ``scores``, ``masks``) encode detections differently;
``d2_side.instances`` and ``mmdet_side.instances`` convert both into :class:`CanonicalInstances`: boxes xyxy in
the input image's pixels, *dataset* category ids, scores and bool masks at the input image's size.

Comparison (:func:`compare_instances`) matches B's detections to A's: greedily by overlap (mask IoU when both
sides have masks, box IoU otherwise), first among detections of the same category (matched), then among the
rest (relabelled), each pair above :data:`MATCH_IOU`; what is left is unmatched. The results agree
(``passed``) when every detection of each side is matched, none is relabelled, and the matched scores, boxes
and masks agree within the given tolerances. A field one side lacks (boxes, masks) is reported, not failed.

This module never imports detectron2, mmdet, mmengine or mmcv.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from bridge.errors import BridgeError
from bridge.runs import Recorder

RECORD_PREFIX = "instances."
MATCH_IOU = 0.5
#: How many unmatched / relabelled detections a summary or JSON report lists in full.
LISTED = 50


@dataclass
class CanonicalInstances:
    """One image's detections: ``boxes`` N×4 xyxy pixels (or None), ``category_id`` N int64 dataset ids,
    ``scores`` N float, ``masks`` N×H×W bool (or None)."""

    category_id: torch.Tensor
    scores: torch.Tensor
    boxes: torch.Tensor | None = None
    masks: torch.Tensor | None = None

    def __post_init__(self) -> None:
        """Check that every field describes the same N detections."""
        self.category_id = torch.as_tensor(self.category_id).detach().cpu().to(torch.int64).reshape(-1)
        self.scores = torch.as_tensor(self.scores).detach().cpu().reshape(-1)
        n = len(self.category_id)
        if len(self.scores) != n or not self.scores.is_floating_point():
            raise BridgeError(
                f"instances: scores must be {n} floats, got {self.scores.dtype} of shape {tuple(self.scores.shape)}"
            )
        if self.boxes is not None:
            self.boxes = torch.as_tensor(self.boxes).detach().cpu()
            if tuple(self.boxes.shape) != (n, 4) or not self.boxes.is_floating_point():
                raise BridgeError(
                    f"instances: boxes must be {n}×4 floats, got {self.boxes.dtype} of shape {tuple(self.boxes.shape)}"
                )
        if self.masks is not None:
            self.masks = torch.as_tensor(self.masks).detach().cpu()
            if self.masks.ndim != 3 or self.masks.shape[0] != n or self.masks.dtype != torch.bool:
                raise BridgeError(
                    f"instances: masks must be {n}×H×W bool, got {self.masks.dtype} of shape {tuple(self.masks.shape)}"
                )

    def __len__(self) -> int:
        return len(self.category_id)


def canonical_instances(category_id: Any, scores: Any, boxes: Any = None, masks: Any = None) -> CanonicalInstances:
    """Build a canonical result from already mapped fields, as both sides' converters do.

    Boxes that are all zero while there are detections are placeholders (detectron2's MaskFormer /
    Mask2Former instance inference fills ``pred_boxes`` with zeros) and read as no boxes. Float masks
    (0/1, as MaskFormer-style heads return them) become bool at 0.5.
    """
    if boxes is not None:
        boxes = torch.as_tensor(boxes).detach().cpu()
        if boxes.numel() and not boxes.any():
            boxes = None
    if masks is not None:
        masks = torch.as_tensor(masks).detach().cpu()
        if masks.is_floating_point():
            masks = masks >= 0.5
        masks = masks.to(torch.bool)
    return CanonicalInstances(category_id, scores, boxes, masks)


def to_record(c: CanonicalInstances) -> dict[str, torch.Tensor]:
    """A value for ``bridge.Recorder.record``: ``category_id``, ``scores`` and, when present, ``boxes``, ``masks``."""
    out = {"category_id": c.category_id, "scores": c.scores}
    if c.boxes is not None:
        out["boxes"] = c.boxes
    if c.masks is not None:
        out["masks"] = c.masks
    return out


def record_canonical_instances(recorder: Recorder, image_id: object, c: CanonicalInstances, *, step: int) -> None:
    """Record ``c`` as ``instances.<image_id>`` (kind ``output``), the name ``bridge.compare`` pairs across runs."""
    recorder.record(f"{RECORD_PREFIX}{image_id}", to_record(c), step=step, kind="output")


def from_record(d: Any) -> CanonicalInstances:
    """Rebuild a canonical result from :func:`to_record`'s value (as read back by ``Run.get``)."""
    if (
        not isinstance(d, dict)
        or not {"category_id", "scores"} <= set(d)
        or set(d) - {"category_id", "scores", "boxes", "masks"}
    ):
        raise BridgeError(
            "instances record must be a dict with 'category_id', 'scores' and optionally 'boxes', "
            f"'masks'; got keys {sorted(d) if isinstance(d, dict) else type(d).__name__}"
        )
    return CanonicalInstances(d["category_id"], d["scores"], d.get("boxes"), d.get("masks"))


# ---------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Tolerance:
    """``|a - b| <= atol + rtol * |b|`` elementwise (the compare engine's rule)."""

    atol: float = 0.0
    rtol: float = 0.0

    def excess(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """Largest ``|a - b| - rtol * |b| - atol`` (> 0 means out of tolerance); -inf for no elements."""
        if a.numel() == 0:
            return float("-inf")
        a64, b64 = a.to(torch.float64), b.to(torch.float64)
        return float(((a64 - b64).abs() - self.rtol * b64.abs() - self.atol).max())


#: No tolerance: equal values only.
EXACT = Tolerance()


@dataclass
class InstancesComparison:
    """How B's detections differ from the reference A's (indices are positions in each side's lists)."""

    n_a: int
    n_b: int
    matched_by: str
    matched: list[dict[str, Any]]
    relabelled: list[dict[str, Any]]
    unmatched_a: list[dict[str, Any]]
    unmatched_b: list[dict[str, Any]]
    max_score_diff: float | None
    max_box_diff: float | None
    min_mask_iou: float | None
    boxes: str
    masks: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every detection is matched in its category and within tolerance."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (matched pairs counted, not listed; at most :data:`LISTED` of each other list)."""
        return {
            "n_a": self.n_a,
            "n_b": self.n_b,
            "matched_by": self.matched_by,
            "matched": len(self.matched),
            "relabelled": self.relabelled[:LISTED],
            "unmatched_a": self.unmatched_a[:LISTED],
            "unmatched_b": self.unmatched_b[:LISTED],
            "n_relabelled": len(self.relabelled),
            "n_unmatched_a": len(self.unmatched_a),
            "n_unmatched_b": len(self.unmatched_b),
            "max_score_diff": self.max_score_diff,
            "max_box_diff": self.max_box_diff,
            "min_mask_iou": self.min_mask_iou,
            "boxes": self.boxes,
            "masks": self.masks,
            "passed": self.passed,
            "failures": self.failures,
        }

    def summary(self) -> str:
        """One line: counts, the largest differences and, when it fails, why."""

        def num(v: float | None) -> str:
            return "-" if v is None else f"{v:.3g}"

        text = (
            f"{self.n_a}/{self.n_b} detections (A/B), matched {len(self.matched)} by {self.matched_by} IoU, "
            f"relabelled {len(self.relabelled)}, unmatched A/B {len(self.unmatched_a)}/{len(self.unmatched_b)}, "
            f"max score diff {num(self.max_score_diff)}, max box diff {num(self.max_box_diff)}, "
            f"min mask IoU {num(self.min_mask_iou)}"
        )
        for what, where in (("boxes", self.boxes), ("masks", self.masks)):
            if where in ("a", "b"):
                text += f", {what} in {where.upper()} only"
        return text + ("" if self.passed else f"; FAIL: {'; '.join(self.failures)}")


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Na×Nb IoU of xyxy boxes (float64); an empty union gives 0."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def mask_iou(a: torch.Tensor, b: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Na×Nb IoU of bool masks of one size, counted exactly (one matrix product on ``device``); empty union 0."""
    pixels = math.prod(a.shape[1:])
    fa = a.reshape(len(a), pixels).to(device=device, dtype=torch.float64)
    fb = b.reshape(len(b), pixels).to(device=device, dtype=torch.float64)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter)).cpu()


def _greedy(
    iou: torch.Tensor, allowed: torch.Tensor, used_a: set[int], used_b: set[int]
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, iou) above :data:`MATCH_IOU` among ``allowed``, best IoU first (ties: lower i, then j)."""
    candidates = torch.nonzero((iou > MATCH_IOU) & allowed).tolist()
    candidates.sort(key=lambda ij: (-float(iou[ij[0], ij[1]]), ij[0], ij[1]))
    pairs = []
    for i, j in candidates:
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        pairs.append((i, j, float(iou[i, j])))
    return pairs


def _where(a: Any, b: Any) -> str:
    return "both" if a is not None and b is not None else "a" if a is not None else "b" if b is not None else "neither"


def _detection(c: CanonicalInstances, i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"index": i, "category_id": int(c.category_id[i]), "score": float(c.scores[i])}
    if c.boxes is not None:
        out["box"] = [float(v) for v in c.boxes[i]]
    return out


def compare_instances(
    a: CanonicalInstances,
    b: CanonicalInstances,
    *,
    scores: Tolerance = EXACT,
    boxes: Tolerance = EXACT,
    mask_iou_loss: float = 0.0,
    device: torch.device | str = "cpu",
) -> InstancesComparison:
    """Match B's detections to the reference A's and say whether they agree.

    ``scores`` / ``boxes``: tolerances on matched pairs' scores and box coordinates (pixels);
    ``mask_iou_loss``: the largest ``1 - IoU`` allowed between matched masks (0: identical masks).
    Masks of different sizes fail the comparison (detections are then matched by their boxes).
    """
    failures = []
    both_masks = a.masks is not None and b.masks is not None
    if both_masks and a.masks.shape[1:] != b.masks.shape[1:]:
        failures.append(f"masks differ in size: A {tuple(a.masks.shape[1:])} vs B {tuple(b.masks.shape[1:])}")
        both_masks = False
    both_boxes = a.boxes is not None and b.boxes is not None
    if both_masks:
        by, iou = "mask", mask_iou(a.masks, b.masks, device)
    elif both_boxes:
        by, iou = "box", box_iou(a.boxes, b.boxes)
    else:
        by, iou = "none", torch.zeros(len(a), len(b), dtype=torch.float64)
    same = a.category_id[:, None] == b.category_id[None, :]
    used_a: set[int] = set()
    used_b: set[int] = set()
    matched_pairs = _greedy(iou, same, used_a, used_b)
    relabelled_pairs = _greedy(iou, ~same, used_a, used_b)
    matched = [{"a": i, "b": j, "category_id": int(a.category_id[i]), "iou": v} for i, j, v in matched_pairs]
    relabelled = [
        {
            "a": i,
            "b": j,
            "a_category": int(a.category_id[i]),
            "b_category": int(b.category_id[j]),
            "iou": v,
            "a_score": float(a.scores[i]),
            "b_score": float(b.scores[j]),
        }
        for i, j, v in relabelled_pairs
    ]
    unmatched_a = [_detection(a, i) for i in range(len(a)) if i not in used_a]
    unmatched_b = [_detection(b, j) for j in range(len(b)) if j not in used_b]
    ia = torch.tensor([m["a"] for m in matched], dtype=torch.int64)
    ib = torch.tensor([m["b"] for m in matched], dtype=torch.int64)
    if by == "none" and (len(a) or len(b)):
        failures.append("no field to match detections by (boxes and masks missing on one side)")
    if relabelled:
        failures.append(f"{len(relabelled)} relabelled")
    if unmatched_a or unmatched_b:
        failures.append(f"unmatched A/B {len(unmatched_a)}/{len(unmatched_b)}")
    max_score = max_box = min_iou = None
    if len(ia):
        sa, sb = a.scores[ia], b.scores[ib]
        max_score = float((sa.to(torch.float64) - sb.to(torch.float64)).abs().max())
        if scores.excess(sa, sb) > 0:
            failures.append(
                f"scores out of tolerance (max diff {max_score:.3g}, atol {scores.atol:g}, rtol {scores.rtol:g})"
            )
        if both_boxes:
            ba, bb = a.boxes[ia], b.boxes[ib]
            max_box = float((ba.to(torch.float64) - bb.to(torch.float64)).abs().max())
            if boxes.excess(ba, bb) > 0:
                failures.append(
                    f"boxes out of tolerance (max diff {max_box:.3g} px, atol {boxes.atol:g}, rtol {boxes.rtol:g})"
                )
        if both_masks:
            min_iou = min(m["iou"] for m in matched)
            if 1.0 - min_iou > mask_iou_loss:
                failures.append(f"masks differ (min IoU {min_iou:.6g}, allowed 1 - IoU <= {mask_iou_loss:g})")
    return InstancesComparison(
        len(a),
        len(b),
        by,
        matched,
        relabelled,
        unmatched_a,
        unmatched_b,
        max_score,
        max_box,
        min_iou,
        _where(a.boxes, b.boxes),
        _where(a.masks, b.masks),
        failures,
    )


def dataset_ids(table: Sequence[int | None]) -> torch.Tensor:
    """A lookup tensor from a label → dataset id list; labels naming no dataset category (None) map to 0."""
    return torch.tensor([0 if v is None else int(v) for v in table], dtype=torch.int64)


def map_labels(labels: Any, lookup: torch.Tensor, what: str) -> torch.Tensor:
    """Map framework labels (contiguous class indices) to dataset ids through ``lookup``; BridgeError for a label
    outside it (``what`` names the field in the message)."""
    labels = torch.as_tensor(labels).detach().cpu().to(torch.int64).reshape(-1)
    bad = (labels < 0) | (labels >= len(lookup))
    if bad.any():
        raise BridgeError(f"{what}: label {int(labels[bad][0])} outside the {len(lookup)} classes of the dataset")
    return lookup[labels]
