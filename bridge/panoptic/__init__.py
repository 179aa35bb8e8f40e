"""Framework-free panoptic outputs: one canonical encoding, comparison (PQ/SQ/RQ), pictures and a CLI.

detectron2 (``output["panoptic_seg"]``) and mmdet 3.x (``pred_panoptic_seg.sem_seg``) encode panoptic
predictions differently; ``d2_side.panoptic`` and ``mmdet_side.panoptic`` convert both into
:class:`CanonicalPanoptic`: a dataset-category map, a segment-id map and the segment list, 0 = void.

CLI: ``python -m bridge.panoptic A B [--min-pq X] [--html OUT] [--json OUT] [--device auto|cpu|cuda]``
where A and B are run directories (every record named ``panoptic.*`` of kind ``output`` at every step) or
``.npz`` files written by :func:`save_npz`. Exit 0 identical (or every PQ >= ``--min-pq``), 1 differ, 2 bad
input. The per-pixel work runs in torch on the chosen device (CUDA when available), with integer counts.

This module never imports detectron2, mmdet, mmengine or mmcv.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from bridge.atomic import atomic_open
from bridge.coco.coco91 import panoptic_categories
from bridge.coco.semseg_png import read_panoptic_ids
from bridge.devices import resolve_device
from bridge.errors import BridgeError
from bridge.runs import Recorder

RECORD_PREFIX = "panoptic."
MATCH_IOU = 0.5
#: An unmatched B segment lying more than this share on A's void (or A's crowd region of its category)
#: is no false positive (panopticapi's rule).
IGNORED_SHARE = 0.5
SPLIT_MIN_SHARE = 0.1
#: Columns of the stored segment table; records written before ``iscrowd`` have the first four only.
SEGMENT_COLUMNS = ("id", "category_id", "isthing", "area", "iscrowd")
#: Largest segment or category id accepted (COCO-panoptic ids are 24-bit RGB values).
MAX_ID = 2**31 - 1


@dataclass
class CanonicalPanoptic:
    """One image's panoptic result: ``category`` (dataset ids) and ``segment`` maps, 0 = void, plus segments.

    ``segments`` holds ``{"id", "category_id", "isthing", "area", "iscrowd"}`` dicts, one per non-void
    segment id; ``iscrowd`` (COCO's crowd flag, meaningful in ground truth) defaults to 0.
    """

    category: np.ndarray
    segment: np.ndarray
    segments: list[dict[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Check shapes and that every segment id in the map is listed with a consistent category."""
        self.category = np.asarray(self.category, dtype=np.int64)
        self.segment = np.asarray(self.segment, dtype=np.int64)
        self.segments = [dict(s, iscrowd=int(bool(s.get("iscrowd", 0)))) for s in self.segments]
        if self.category.ndim != 2 or self.category.shape != self.segment.shape:
            raise BridgeError(
                f"panoptic maps must be two H×W arrays of one shape, got {self.category.shape} and {self.segment.shape}"
            )
        for what, values in (
            ("category", self.category),
            ("segment", self.segment),
            ("segments", [int(s.get(k, 0)) for s in self.segments for k in ("id", "category_id")]),
        ):
            values = np.asarray(values, dtype=np.int64)
            if values.size and (values.min() < 0 or values.max() > MAX_ID):
                raise BridgeError(
                    f"panoptic {what} ids must lie in 0..{MAX_ID}, got {int(values.min())}..{int(values.max())}"
                )
        listed = {int(s["id"]) for s in self.segments}
        if 0 in listed or len(listed) != len(self.segments):
            raise BridgeError("panoptic segments must have unique non-zero ids")
        present = set(np.unique(self.segment).tolist()) - {0}
        if present - listed:
            raise BridgeError(f"segment ids {sorted(present - listed)[:5]} appear in the map but not in segments")
        if np.any((self.segment == 0) != (self.category == 0)):
            raise BridgeError("category and segment maps disagree on which pixels are void")

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the maps."""
        return (int(self.segment.shape[0]), int(self.segment.shape[1]))

    def segment_by_id(self) -> dict[int, dict[str, int]]:
        """The segments keyed by their id."""
        return {int(s["id"]): s for s in self.segments}


def canonical_from_segment_map(
    ids: np.ndarray, segments_info: Sequence[dict[str, Any]], void_ids: Sequence[int] = (0,)
) -> CanonicalPanoptic:
    """Build a canonical result from a segment-id map and segments carrying *dataset* category ids.

    Segment ids are renumbered 1..N in the order of ``segments_info``; pixels whose id is in ``void_ids``
    or not listed become void. Each segment needs ``id``, ``category_id`` and ``isthing``; ``iscrowd``
    is kept when given (default 0).
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise BridgeError(f"segment-id map must be H×W, got shape {ids.shape}")
    category = np.zeros(ids.shape, dtype=np.int64)
    segment = np.zeros(ids.shape, dtype=np.int64)
    segments: list[dict[str, int]] = []
    void = {int(v) for v in void_ids}
    for info in segments_info:
        seg_id = int(info["id"])
        if seg_id in void:
            continue
        mask = ids == seg_id
        area = int(mask.sum())
        if area == 0:
            continue
        category_id = int(info["category_id"])
        if category_id <= 0:
            raise BridgeError(f"segment {seg_id}: dataset category id must be > 0, got {category_id}")
        new_id = len(segments) + 1
        segment[mask] = new_id
        category[mask] = category_id
        segments.append(
            {
                "id": new_id,
                "category_id": category_id,
                "isthing": int(bool(info["isthing"])),
                "area": area,
                "iscrowd": int(bool(info.get("iscrowd", 0))),
            }
        )
    return CanonicalPanoptic(category, segment, segments)


def canonical_from_panoptic_png(
    png_path: str | os.PathLike[str],
    segments_info: Sequence[dict[str, Any]],
    categories: Sequence[dict[str, Any]] | None = None,
    size: tuple[int, int] | None = None,
) -> CanonicalPanoptic:
    """Ground truth from a COCO-panoptic RGB id PNG and its ``segments_info`` (dataset category ids).

    ``isthing`` comes from the segment, else from ``categories`` (the annotation file's list; default:
    the COCO panoptic categories); ``iscrowd`` from the segment (default 0). The PNG must be 8-bit RGB and,
    when ``size`` (H, W) is given, of that size (``bridge.coco.semseg_png.read_panoptic_ids``).
    """
    if categories is None:
        categories = panoptic_categories()
    isthing = {int(c["id"]): int(c.get("isthing", 0)) for c in categories}
    infos = []
    for info in segments_info:
        cat = int(info["category_id"])
        if "isthing" not in info and cat not in isthing:
            raise BridgeError(f"{png_path}: segment {info['id']} has category {cat}, not in the categories")
        infos.append(
            {
                "id": int(info["id"]),
                "category_id": cat,
                "isthing": info.get("isthing", isthing.get(cat)),
                "iscrowd": info.get("iscrowd", 0),
            }
        )
    return canonical_from_segment_map(read_panoptic_ids(png_path, size), infos)


# ---------------------------------------------------------------- storage


def _segment_table(c: CanonicalPanoptic) -> np.ndarray:
    """The segments as an N×5 int64 table, one column per :data:`SEGMENT_COLUMNS`."""
    return np.array([[s[k] for k in SEGMENT_COLUMNS] for s in c.segments], dtype=np.int64).reshape(
        -1, len(SEGMENT_COLUMNS)
    )


def to_record(c: CanonicalPanoptic) -> dict[str, Any]:
    """A value for ``bridge.Recorder.record``: the two maps and an N×5 (:data:`SEGMENT_COLUMNS`) table."""
    return {
        "category": torch.from_numpy(np.ascontiguousarray(c.category)),
        "segment": torch.from_numpy(np.ascontiguousarray(c.segment)),
        "segments": torch.from_numpy(_segment_table(c)),
    }


def record_canonical_panoptic(recorder: Recorder, image_id: object, c: CanonicalPanoptic, *, step: int) -> None:
    """Record ``c`` as ``panoptic.<image_id>`` (kind ``output``), the name ``bridge.compare`` pairs across runs;
    both sides' record hooks record their panoptic results through this one function."""
    recorder.record(f"{RECORD_PREFIX}{image_id}", to_record(c), step=step, kind="output")


def _as_numpy(value: Any, what: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise BridgeError(f"panoptic record: {what} is not an integer array") from None


def from_record(d: Any) -> CanonicalPanoptic:
    """Rebuild a canonical result from :func:`to_record`'s value (as read back by ``Run.get``).

    A segment table of four columns (written before ``iscrowd`` was stored) reads with ``iscrowd`` 0.
    """
    if not isinstance(d, dict) or not {"category", "segment", "segments"} <= set(d):
        raise BridgeError("panoptic record must be a dict with 'category', 'segment' and 'segments'")
    table = _as_numpy(d["segments"], "segments")
    if table.ndim != 2 or table.shape[1] not in (4, len(SEGMENT_COLUMNS)):
        raise BridgeError(
            f"panoptic record: segments must be an N×{len(SEGMENT_COLUMNS)} (or N×4) table, got shape {table.shape}"
        )
    segments = [dict(zip(SEGMENT_COLUMNS, (int(v) for v in row))) for row in table]
    return CanonicalPanoptic(_as_numpy(d["category"], "category"), _as_numpy(d["segment"], "segment"), segments)


def save_npz(c: CanonicalPanoptic, path: str | os.PathLike[str]) -> None:
    """Write a canonical result to an ``.npz`` file (atomically): ``category``, ``segment``, ``segments``."""
    with atomic_open(path, "wb") as fh:
        np.savez_compressed(fh, category=c.category, segment=c.segment, segments=_segment_table(c))


def load_npz(path: str | os.PathLike[str]) -> CanonicalPanoptic:
    """Read a canonical result written by :func:`save_npz`; BridgeError if missing or malformed."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # a truncated zip raises BadZipFile, EOFError, zlib.error, ...
        raise BridgeError(f"{path}: cannot read panoptic .npz: {type(exc).__name__}: {exc}") from None
    try:
        return from_record(arrays)
    except BridgeError as exc:
        raise BridgeError(f"{path}: {exc}") from None


# ---------------------------------------------------------------- comparison


@dataclass
class PanopticComparison:
    """How B's panoptic result differs from the reference A (PQ/SQ/RQ in percent, shares in 0..1).

    ``crowd_a`` lists A's crowd segments, which PQ ignores (never matched, never false negatives).
    """

    category_agreement: float
    void_agreement: float
    void_share_a: float
    void_share_b: float
    void_grown: int
    void_shrunk: int
    same_partition: bool
    pq: float
    sq: float
    rq: float
    things: dict[str, float] | None
    stuff: dict[str, float] | None
    per_category: list[dict[str, Any]]
    matches: list[dict[str, Any]]
    unmatched_a: list[dict[str, Any]]
    unmatched_b: list[dict[str, Any]]
    crowd_a: list[dict[str, Any]]
    relabelled: list[dict[str, Any]]
    split: list[dict[str, Any]]
    merged: list[dict[str, Any]]

    @property
    def identical(self) -> bool:
        """True when every pixel's category, void-ness and segment partition agree."""
        return self.category_agreement == 1.0 and self.void_agreement == 1.0 and self.same_partition

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["identical"] = self.identical
        return out

    def summary(self) -> str:
        """One line: PQ, agreement and the counts of differences (and of ignored crowd segments, if any)."""
        crowd = f", crowd ignored {len(self.crowd_a)}" if self.crowd_a else ""
        return (
            f"PQ {self.pq:.2f} SQ {self.sq:.2f} RQ {self.rq:.2f}, category agreement "
            f"{self.category_agreement:.4f}, void agreement {self.void_agreement:.4f}, unmatched A/B "
            f"{len(self.unmatched_a)}/{len(self.unmatched_b)}, relabelled {len(self.relabelled)}, "
            f"split {len(self.split)}, merged {len(self.merged)}{crowd}"
        )


def _check_pair(a: CanonicalPanoptic, b: CanonicalPanoptic) -> None:
    """BridgeError unless both results have one size."""
    if a.shape != b.shape:
        raise BridgeError(f"panoptic results differ in size: A {a.shape} vs B {b.shape}")


def _on_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """An int64 map as a tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(device)


def _joint_histogram(seg_a: torch.Tensor, seg_b: torch.Tensor) -> dict[tuple[int, int], int]:
    """Pixel counts of every (A segment id, B segment id) pair that occurs, void (0) included, sorted by ids.

    Ids become dense indices (``torch.unique``) and the pairs are counted by one ``torch.bincount``.
    """
    ids_a, index_a = torch.unique(seg_a.reshape(-1), return_inverse=True)
    ids_b, index_b = torch.unique(seg_b.reshape(-1), return_inverse=True)
    n_b = len(ids_b)
    counts = torch.bincount(index_a * n_b + index_b, minlength=len(ids_a) * n_b)
    present = torch.nonzero(counts).reshape(-1)
    rows = torch.stack([ids_a[present // n_b], ids_b[present % n_b], counts[present]]).cpu().tolist()
    return {(i, j): n for i, j, n in zip(*rows)}


def _pixel_counts(cat_a: torch.Tensor, cat_b: torch.Tensor, seg_a: torch.Tensor, seg_b: torch.Tensor) -> dict[str, int]:
    """Pixels of equal category, of equal void-ness, void in A / in B, void only in B / only in A."""
    void_a, void_b = seg_a == 0, seg_b == 0
    names = ("same_category", "same_void", "void_a", "void_b", "void_grown", "void_shrunk")
    counts = (
        torch.stack(
            [
                (cat_a == cat_b).sum(),
                (void_a == void_b).sum(),
                void_a.sum(),
                void_b.sum(),
                (~void_a & void_b).sum(),
                (void_a & ~void_b).sum(),
            ]
        )
        .cpu()
        .tolist()
    )
    return dict(zip(names, counts))


def _category_pixels(category: torch.Tensor) -> dict[int, int]:
    """Pixel count of every category id in the map (0 = void included)."""
    values, counts = torch.unique(category, return_counts=True)
    return dict(zip(values.cpu().tolist(), counts.cpu().tolist()))


def _share(part: int, whole: int) -> float:
    """``part / whole``, 0 for an empty whole."""
    return part / whole if whole else 0.0


@dataclass
class _Overlap:
    """The joint histogram of two results with their segments and the segment areas it gives."""

    pairs: dict[tuple[int, int], int]
    segs_a: dict[int, dict[str, int]]
    segs_b: dict[int, dict[str, int]]
    area_a: dict[int, int]
    area_b: dict[int, int]

    @classmethod
    def build(cls, pairs: dict[tuple[int, int], int], a: CanonicalPanoptic, b: CanonicalPanoptic) -> _Overlap:
        """Sum the histogram's rows and columns into each segment's area."""
        segs_a, segs_b = a.segment_by_id(), b.segment_by_id()
        area_a, area_b = dict.fromkeys(segs_a, 0), dict.fromkeys(segs_b, 0)
        for (i, j), n in pairs.items():
            if i:
                area_a[i] += n
            if j:
                area_b[j] += n
        return cls(pairs, segs_a, segs_b, area_a, area_b)

    def iou(self, i: int, j: int) -> float:
        """panopticapi's IoU of A segment ``i`` and B segment ``j``: B's pixels on A's void leave the union."""
        inter = self.pairs.get((i, j), 0)
        return _share(inter, self.area_a[i] + self.area_b[j] - inter - self.pairs.get((0, j), 0))

    def same_partition(self) -> bool:
        """True when every A segment lies on exactly one B segment and back, and void on void."""
        used = [k for k in self.pairs if k != (0, 0)]
        return all(i and j for i, j in used) and len({i for i, _ in used}) == len({j for _, j in used}) == len(used)


def _match(ov: _Overlap) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[int, tuple[int, float]]]:
    """panopticapi's matching: same category and IoU > 0.5; A's crowd segments are never matched.

    Returns the matches, the IoU > 0.5 pairs of different categories (relabelled) and, per A segment, its
    best B segment by IoU (of any category; of its own category for a crowd segment).
    """
    matches: list[dict[str, Any]] = []
    relabelled: list[dict[str, Any]] = []
    best: dict[int, tuple[int, float]] = {}
    for i, j in ov.pairs:
        if i == 0 or j == 0:
            continue
        sa, sb = ov.segs_a[i], ov.segs_b[j]
        same = sa["category_id"] == sb["category_id"]
        iou = ov.iou(i, j)
        if (same or not sa["iscrowd"]) and iou > best.get(i, (0, 0.0))[1]:
            best[i] = (j, iou)
        if sa["iscrowd"] or iou <= MATCH_IOU:
            continue
        if same:
            matches.append({"a_id": i, "b_id": j, "category_id": sa["category_id"], "iou": iou})
        else:
            relabelled.append(
                {"a_id": i, "b_id": j, "a_category": sa["category_id"], "b_category": sb["category_id"], "iou": iou}
            )
    return matches, relabelled, best


def _crowd_regions(a: CanonicalPanoptic) -> dict[int, int]:
    """Category id → the A crowd segment that excuses B's segments of that category.

    As panopticapi's ``crowd_labels_dict``: one per category, the last listed one wins.
    """
    return {s["category_id"]: s["id"] for s in a.segments if s["iscrowd"]}


def _unmatched_b(ov: _Overlap, matched: set[int], crowd: dict[int, int]) -> list[dict[str, Any]]:
    """B's unmatched segments with their shares on A's void and on A's crowd region of their category.

    ``counted_fp`` is False when the two together exceed :data:`IGNORED_SHARE` of the segment's area.
    """
    out = []
    for j in sorted(ov.segs_b):
        if j in matched:
            continue
        sb = ov.segs_b[j]
        in_void = ov.pairs.get((0, j), 0)
        on_crowd = ov.pairs.get((crowd[sb["category_id"]], j), 0) if sb["category_id"] in crowd else 0
        out.append(
            dict(
                sb,
                void_in_a=_share(in_void, ov.area_b[j]),
                crowd_in_a=_share(on_crowd, ov.area_b[j]),
                counted_fp=_share(in_void + on_crowd, ov.area_b[j]) <= IGNORED_SHARE,
            )
        )
    return out


def _split_merged(ov: _Overlap) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A segments covered by several B segments of their category (split) and B segments covering
    several A segments of theirs (merged); a part counts from :data:`SPLIT_MIN_SHARE` of the A segment."""

    def big(i: int, j: int, n: int) -> bool:
        return (
            i != 0
            and j != 0
            and ov.segs_a[i]["category_id"] == ov.segs_b[j]["category_id"]
            and n >= SPLIT_MIN_SHARE * ov.area_a[i]
        )

    split, merged = [], []
    for i, sa in ov.segs_a.items():
        parts = [j for (x, j), n in ov.pairs.items() if x == i and big(x, j, n)]
        if len(parts) >= 2:
            split.append({"a_id": i, "category_id": sa["category_id"], "b_ids": sorted(parts)})
    for j, sb in ov.segs_b.items():
        parts = [i for (i, y), n in ov.pairs.items() if y == j and big(i, y, n)]
        if len(parts) >= 2:
            merged.append({"b_id": j, "category_id": sb["category_id"], "a_ids": sorted(parts)})
    return split, merged


def _category_rows(
    ov: _Overlap,
    matches: list[dict[str, Any]],
    unmatched_a: list[dict[str, Any]],
    unmatched_b: list[dict[str, Any]],
    pixels_a: dict[int, int],
    pixels_b: dict[int, int],
) -> list[dict[str, Any]]:
    """TP/FP/FN, PQ/SQ/RQ (percent) and pixel counts per category of either side."""
    isthing = {s["category_id"]: s["isthing"] for s in list(ov.segs_b.values()) + list(ov.segs_a.values())}
    rows: list[dict[str, Any]] = []
    for cat in sorted(isthing):
        tp_ious = [m["iou"] for m in matches if m["category_id"] == cat]
        tp = len(tp_ious)
        fn = sum(1 for s in unmatched_a if s["category_id"] == cat)
        fp = sum(1 for s in unmatched_b if s["category_id"] == cat and s["counted_fp"])
        denom = tp + 0.5 * fp + 0.5 * fn
        rows.append(
            {
                "category_id": cat,
                "isthing": isthing[cat],
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "pq": 100.0 * sum(tp_ious) / denom if denom else 0.0,
                "sq": 100.0 * sum(tp_ious) / tp if tp else 0.0,
                "rq": 100.0 * tp / denom if denom else 0.0,
                "a_pixels": pixels_a.get(cat, 0),
                "b_pixels": pixels_b.get(cat, 0),
            }
        )
    return rows


def _scores(rows: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """Mean PQ/SQ/RQ over the rows with a TP, FP or FN (and their number), None when there is none."""
    used = [r for r in rows if r["tp"] + r["fp"] + r["fn"] > 0]
    if not used:
        return None
    return {k: float(np.mean([r[k] for r in used])) for k in ("pq", "sq", "rq")} | {"n": len(used)}


def compare_panoptic(a: CanonicalPanoptic, b: CanonicalPanoptic, device: str = "auto") -> PanopticComparison:
    """Compare B against the reference A for one image, with panopticapi's ``pq_compute`` rules.

    Segments match when of the same category with IoU > 0.5 (B pixels that are void in A are left out of
    the union); A's crowd segments are never matched nor missed; an unmatched B segment lying more than
    half on A's void plus A's crowd region of its category is no false positive. PQ, SQ and RQ average over
    categories with a TP, FP or FN (100 for two empty results). The pixel work runs in torch on ``device``
    (``auto``: CUDA when available); every count is an integer, so results do not depend on the device.
    """
    _check_pair(a, b)
    dev = resolve_device(device)
    cat_a, cat_b, seg_a, seg_b = (_on_device(m, dev) for m in (a.category, b.category, a.segment, b.segment))
    pixels = _pixel_counts(cat_a, cat_b, seg_a, seg_b)
    ov = _Overlap.build(_joint_histogram(seg_a, seg_b), a, b)
    matches, relabelled, best = _match(ov)
    matched_a, matched_b = {m["a_id"] for m in matches}, {m["b_id"] for m in matches}
    unmatched_a = [
        dict(
            s,
            best_b_id=best.get(i, (0, 0.0))[0],
            best_iou=best.get(i, (0, 0.0))[1],
            void_in_b=_share(ov.pairs.get((i, 0), 0), ov.area_a[i]),
        )
        for i, s in sorted(ov.segs_a.items())
        if i not in matched_a and not s["iscrowd"]
    ]
    crowd_a = [
        dict(s, best_b_id=best.get(i, (0, 0.0))[0], best_iou=best.get(i, (0, 0.0))[1])
        for i, s in sorted(ov.segs_a.items())
        if s["iscrowd"]
    ]
    unmatched_b = _unmatched_b(ov, matched_b, _crowd_regions(a))
    split, merged = _split_merged(ov)
    rows = _category_rows(ov, matches, unmatched_a, unmatched_b, _category_pixels(cat_a), _category_pixels(cat_b))
    overall = _scores(rows) or {"pq": 100.0, "sq": 100.0, "rq": 100.0}
    n_pix = a.segment.size
    return PanopticComparison(
        category_agreement=pixels["same_category"] / n_pix,
        void_agreement=pixels["same_void"] / n_pix,
        void_share_a=pixels["void_a"] / n_pix,
        void_share_b=pixels["void_b"] / n_pix,
        void_grown=pixels["void_grown"],
        void_shrunk=pixels["void_shrunk"],
        same_partition=ov.same_partition(),
        pq=overall["pq"],
        sq=overall["sq"],
        rq=overall["rq"],
        things=_scores([r for r in rows if r["isthing"]]),
        stuff=_scores([r for r in rows if not r["isthing"]]),
        per_category=rows,
        matches=matches,
        unmatched_a=unmatched_a,
        unmatched_b=unmatched_b,
        crowd_a=crowd_a,
        relabelled=relabelled,
        split=split,
        merged=merged,
    )


def _disagreement(
    a: CanonicalPanoptic, b: CanonicalPanoptic, comparison: PanopticComparison, device: str
) -> np.ndarray:
    """Bool H×W from an existing comparison: pixels whose category differs or whose A segment is not paired
    with their B segment (by a match, or a crowd segment's same-category IoU > 0.5 partner)."""
    dev = resolve_device(device)
    partner = {0: 0}
    for m in comparison.matches:
        partner[m["a_id"]] = m["b_id"]
    for s in comparison.crowd_a:
        if s["best_iou"] > MATCH_IOU:
            partner[s["id"]] = s["best_b_id"]
    ids_a, index_a = torch.unique(_on_device(a.segment, dev), return_inverse=True)
    lut = torch.tensor([partner.get(i, -1) for i in ids_a.tolist()], dtype=torch.int64, device=dev)
    diff = (_on_device(a.category, dev) != _on_device(b.category, dev)) | (lut[index_a] != _on_device(b.segment, dev))
    return diff.cpu().numpy()


def disagreement_map(a: CanonicalPanoptic, b: CanonicalPanoptic, device: str = "auto") -> np.ndarray:
    """Bool H×W: True where category, void-ness or segment membership (after matching) differ."""
    return _disagreement(a, b, compare_panoptic(a, b, device), device)


# ---------------------------------------------------------------- pictures


def _fallback_color(category_id: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(category_id)
    return tuple(int(v) for v in rng.integers(40, 216, size=3))


def panoptic_color_image(c: CanonicalPanoptic, colors: dict[int, Sequence[int]]) -> np.ndarray:
    """uint8 H×W×3 picture: each segment in its category's colour, instances shaded apart, void black."""
    out = np.zeros(c.shape + (3,), dtype=np.uint8)
    seen: dict[int, int] = {}
    for s in c.segments:
        cat = int(s["category_id"])
        k = seen.get(cat, 0)
        seen[cat] = k + 1
        base = np.array(colors.get(cat, _fallback_color(cat)), dtype=np.int64)
        shade = 0 if k == 0 else (18 * ((k + 1) // 2)) * (1 if k % 2 else -1)
        out[c.segment == s["id"]] = np.clip(base + shade, 0, 255).astype(np.uint8)
    return out


def _png_data_uri(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(array: np.ndarray, caption: str) -> str:
    h, w = array.shape[:2]
    scale = max(1, 256 // max(w, 1))
    return (
        f'<figure style="display:inline-block;margin:4px"><img src="{_png_data_uri(array)}" '
        f'width="{w * scale}" height="{h * scale}" style="image-rendering:pixelated" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def html_section(
    a: CanonicalPanoptic,
    b: CanonicalPanoptic,
    comparison: PanopticComparison,
    colors: dict[int, Sequence[int]],
    title: str = "",
    device: str = "auto",
) -> str:
    """HTML fragment: A and B maps side by side, the disagreement map (red), a summary and per-category table.

    ``comparison`` is ``compare_panoptic(a, b)``; the disagreement map is computed on ``device``.
    Suits ``bridge.compare.report_html.build_html(result, extra_sections=[(title, html)])``.
    """
    diff = _disagreement(a, b, comparison, device)
    diff_rgb = np.zeros(diff.shape + (3,), dtype=np.uint8)
    diff_rgb[diff] = (230, 30, 30)
    diff_rgb[~diff] = (235, 235, 235)
    head = f"<h3>{html.escape(title)}</h3>" if title else ""
    table = "".join(
        f"<tr><td>{r['category_id']}</td><td>{'thing' if r['isthing'] else 'stuff'}</td><td>{r['tp']}</td>"
        f"<td>{r['fp']}</td><td>{r['fn']}</td><td>{r['pq']:.1f}</td><td>{r['a_pixels']}</td><td>{r['b_pixels']}</td></tr>"
        for r in comparison.per_category
    )
    return (
        f'<div class="panoptic">{head}<p>{html.escape(comparison.summary())}</p><div>'
        f"{_img(panoptic_color_image(a, colors), 'A')}{_img(panoptic_color_image(b, colors), 'B')}"
        f"{_img(diff_rgb, 'disagreement')}</div>"
        "<table><tr><th>category</th><th>kind</th><th>TP</th><th>FP</th><th>FN</th><th>PQ</th>"
        f"<th>A px</th><th>B px</th></tr>{table}</table></div>"
    )


# ---------------------------------------------------------------- CLI


def default_colors() -> dict[int, Sequence[int]]:
    """Category id → RGB colour of the 133 COCO-panoptic categories."""
    return {int(c["id"]): c["color"] for c in panoptic_categories() if "color" in c}


__all__ = [
    "CanonicalPanoptic",
    "PanopticComparison",
    "canonical_from_segment_map",
    "canonical_from_panoptic_png",
    "to_record",
    "from_record",
    "record_canonical_panoptic",
    "save_npz",
    "load_npz",
    "compare_panoptic",
    "disagreement_map",
    "panoptic_color_image",
    "html_section",
]
