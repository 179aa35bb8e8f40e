"""Side-by-side PQ tables of detectron2's ``COCOPanopticEvaluator`` and mmdet's ``CocoPanopticMetric``.

Both result dicts use detectron2's names (``PQ``, ``SQ``, ``RQ``, ``PQ_th`` ..., ``RQ_st``; mmdet's
``coco_panoptic/`` prefix is stripped here too). :func:`parity_report` lines them up, computes the
differences and, when any exceeds the tolerance, names the known reasons the two evaluators can differ.

This module never imports detectron2, mmdet, mmengine or mmcv.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The panoptic metrics both evaluators report, by detectron2's names (``d2_side`` / ``mmdet_side.panoptic_eval``).
METRICS = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")
#: What mmdet's ``CocoPanopticMetric`` puts before each metric name.
MMDET_PREFIX = "coco_panoptic/"

REASON_ZERO_AREA = (
    "mmdet's CocoPanopticDataset.parse_data_info drops ground-truth segments of zero area "
    "(and boxes under one pixel); detectron2 keeps every segment of the annotation file"
)
REASON_SKIPPED = (
    "categories with neither ground truth nor prediction are skipped by both evaluators, so a "
    "category present on one side only (e.g. after a mapping difference) changes the averages"
)
REASON_MAPPING = (
    "detectron2 maps contiguous ids to dataset ids with the dataset metadata "
    "(thing_/stuff_dataset_id_to_contiguous_id); mmdet maps labels to dataset ids by the "
    "annotation file's category names (coco.get_cat_ids(cat_names=classes))"
)
REASON_THINGS = (
    "only thing metrics differ: thing instances are encoded differently (detectron2 segment ids "
    "vs mmdet label + k * 1000); check instance counts and the isthing flags"
)
REASON_STUFF = (
    "only stuff metrics differ: stuff categories are resolved differently (detectron2's stuff map "
    "vs mmdet's class names); check merged stuff classes"
)
REASON_MISSING = "a metric is reported by one evaluator only"


@dataclass
class ParityRow:
    """One metric: both values and ``difference = detectron2 - mmdet`` (None when one side lacks it)."""

    metric: str
    detectron2: float | None
    mmdet: float | None
    difference: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the row."""
        return {
            "metric": self.metric,
            "detectron2": self.detectron2,
            "mmdet": self.mmdet,
            "difference": self.difference,
        }


@dataclass
class ParityReport:
    """The side-by-side rows, the tolerance used, and the known reasons (empty when at parity)."""

    rows: list[ParityRow]
    tolerance: float
    reasons: list[str] = field(default_factory=list)

    @property
    def differing(self) -> list[str]:
        """Metrics whose difference exceeds the tolerance or that one side lacks."""
        return [r.metric for r in self.rows if r.difference is None or abs(r.difference) > self.tolerance]

    @property
    def parity(self) -> bool:
        """True when every metric agrees within the tolerance."""
        return not self.differing

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: rows, tolerance, parity, differing metrics and reasons."""
        return {
            "rows": [r.to_dict() for r in self.rows],
            "tolerance": self.tolerance,
            "parity": self.parity,
            "differing": self.differing,
            "reasons": list(self.reasons),
        }

    def table(self) -> Any:
        """A ``rich.table.Table`` of the rows (differing rows in red)."""
        from rich.table import Table

        def fmt(value: float | None) -> str:
            return "—" if value is None else f"{value:.4f}"

        table = Table(title="Panoptic parity: detectron2 vs mmdet" + ("" if self.parity else " (DIFFER)"))
        for name in ("metric", "detectron2", "mmdet", "difference"):
            table.add_column(name, justify="left" if name == "metric" else "right")
        bad = set(self.differing)
        for row in self.rows:
            table.add_row(
                row.metric,
                fmt(row.detectron2),
                fmt(row.mmdet),
                fmt(row.difference),
                style="red" if row.metric in bad else None,
            )
        return table

    def print(self, console: Any | None = None) -> None:
        """Print the table and, when the evaluators differ, the known reasons."""
        from rich.console import Console

        console = console or Console()
        console.print(self.table())
        for reason in self.reasons:
            console.print(f"- {reason}")


def _normalise(result: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in result.items():
        name = key[len(MMDET_PREFIX) :] if key.startswith(MMDET_PREFIX) else key
        if name in METRICS and value is not None:
            out[name] = float(value)
    return out


def parity_report(
    d2_result: Mapping[str, Any], mmdet_result: Mapping[str, Any], *, tolerance: float = 1e-6
) -> ParityReport:
    """Line up detectron2's and mmdet's PQ/SQ/RQ results and name the known reasons for any difference.

    Both dicts may use either naming (``PQ`` or ``coco_panoptic/PQ``); other keys are ignored. A NaN on
    both sides (e.g. no stuff at all) counts as equal.
    """
    d2, mm = _normalise(d2_result), _normalise(mmdet_result)
    rows: list[ParityRow] = []
    for metric in METRICS:
        a, b = d2.get(metric), mm.get(metric)
        if a is None and b is None:
            continue
        if a is None or b is None:
            diff = None
        elif math.isnan(a) and math.isnan(b):
            diff = 0.0
        else:
            diff = a - b
        rows.append(ParityRow(metric, a, b, diff))
    report = ParityReport(rows, tolerance)
    differing = set(report.differing)
    if differing:
        reasons = []
        if any(r.difference is None for r in rows):
            reasons.append(REASON_MISSING)
        things = {m for m in differing if m.endswith("_th")}
        stuff = {m for m in differing if m.endswith("_st")}
        if things and not stuff:
            reasons.append(REASON_THINGS)
        if stuff and not things:
            reasons.append(REASON_STUFF)
        reasons += [REASON_ZERO_AREA, REASON_SKIPPED, REASON_MAPPING]
        report.reasons = reasons
    return report


__all__ = ["METRICS", "ParityReport", "ParityRow", "parity_report"]
