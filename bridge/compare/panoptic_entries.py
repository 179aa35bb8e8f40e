"""Canonical panoptic records (``panoptic.<image_id>``, kind ``output``, see ``bridge.panoptic``) met by
``bridge.compare``: besides their tensors, both runs' results are compared as panoptic segmentations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.errors import BridgeError
from bridge.panoptic import (
    RECORD_PREFIX,
    CanonicalPanoptic,
    PanopticComparison,
    compare_panoptic,
    default_colors,
    from_record,
    html_section,
)
from bridge.runs import Run


@dataclass
class PanopticPair:
    """One image's panoptic results of both runs and their comparison (B against A)."""

    step: int
    rank: int
    name: str
    a: CanonicalPanoptic
    b: CanonicalPanoptic
    comparison: PanopticComparison
    device: str = "auto"

    @property
    def passed(self) -> bool:
        """True when both results are identical (``PanopticComparison.identical``)."""
        return self.comparison.identical

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no pixel maps)."""
        return {"step": self.step, "rank": self.rank, "name": self.name, **self.comparison.to_dict()}

    def html(self) -> tuple[str, str]:
        """(title, html) for the HTML report: both maps, the disagreement map and the PQ table."""
        title = f"Panoptic {self.name} (step {self.step}, rank {self.rank}): {self.comparison.summary()}"
        return title, html_section(self.a, self.b, self.comparison, default_colors(), device=self.device)


def _records(run: Run) -> set[tuple[int, int, str]]:
    return {(e.step, e.rank, e.name) for e in run.entries(kind="output") if e.name.startswith(RECORD_PREFIX)}


def compare_panoptic_records(run_a: Run, run_b: Run, device: str = "auto") -> list[PanopticPair]:
    """Compare every canonical panoptic record present in both runs (same step, rank and name) on ``device``.

    Records of different sizes are left out: their maps already fail as pairs of different shapes."""
    pairs = []
    for step, rank, name in sorted(_records(run_a) & _records(run_b)):
        try:
            a = from_record(run_a.get(name, step=step, kind="output", rank=rank))
            b = from_record(run_b.get(name, step=step, kind="output", rank=rank))
        except BridgeError as exc:
            raise BridgeError(
                f"record {name!r} step {step} rank {rank}: not a canonical panoptic result ({exc})"
            ) from None
        if a.shape != b.shape:
            continue
        pairs.append(PanopticPair(step, rank, name, a, b, compare_panoptic(a, b, device=device), device))
    return pairs
