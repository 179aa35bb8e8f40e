"""Canonical output records met by ``bridge.compare``: ``panoptic.<id>``, ``instances.<id>``, ``semantic.<id>``
(kind ``output``; docs/OUTPUTS.md). Each is compared as a result of its form (panoptic segmentation,
matched detections, pixel agreement), never leaf by leaf: segment ids and detection order are free.

Tolerances come from the compare's policy: instance ``scores`` and ``boxes`` resolve like tensors of their
dtype under the keys ``instances.<id>.scores`` / ``instances.<id>.boxes`` (``--tol``, ``--atol``, dtype
defaults); masks and semantic maps are exact unless a ``--tol`` rule matches ``instances.<id>.masks``
(its ATOL: the largest ``1 - IoU`` of matched masks) or ``semantic.<id>`` (its ATOL: the share of pixels
allowed to differ).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from bridge import panoptic as pan
from bridge.errors import BridgeError
from bridge.outputs import instances as inst
from bridge.outputs import semantic as sem
from bridge.runs import Entry, Run

from .panoptic_entries import PanopticPair, compare_panoptic_records
from .tolerance import TolerancePolicy

#: Record-name prefix → form. A record of kind ``output`` whose name starts with one is canonical.
FORMS = {pan.RECORD_PREFIX: "panoptic", inst.RECORD_PREFIX: "instances", sem.RECORD_PREFIX: "semantic"}


def canonical_form(entry: Entry) -> str | None:
    """The canonical form of ``entry``'s record (``panoptic``, ``instances``, ``semantic``) or None."""
    if entry.kind != "output":
        return None
    return next((form for prefix, form in FORMS.items() if entry.name.startswith(prefix)), None)


@dataclass
class InstancesPair:
    """One image's instance results of both runs and their comparison (B against A)."""

    step: int
    rank: int
    name: str
    comparison: inst.InstancesComparison

    @property
    def passed(self) -> bool:
        """True when the detections agree (see ``bridge.outputs.instances.compare_instances``)."""
        return self.comparison.passed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"step": self.step, "rank": self.rank, "name": self.name, **self.comparison.to_dict()}


@dataclass
class SemanticPair:
    """One image's semantic results of both runs and their pixel agreement (B against A)."""

    step: int
    rank: int
    name: str
    comparison: sem.SemanticComparison

    @property
    def passed(self) -> bool:
        """True when the maps agree within the allowed share of pixels."""
        return self.comparison.passed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"step": self.step, "rank": self.rank, "name": self.name, **self.comparison.to_dict()}


@dataclass
class CanonicalOutputs:
    """The canonical records of two runs: compared pairs per form, and records only one run holds
    (their first leaf, in recording order)."""

    panoptic: list[PanopticPair] = field(default_factory=list)
    instances: list[InstancesPair] = field(default_factory=list)
    semantic: list[SemanticPair] = field(default_factory=list)
    a_only: list[Entry] = field(default_factory=list)
    b_only: list[Entry] = field(default_factory=list)
    first_leaf: dict[tuple[int, int, str], Entry] = field(default_factory=dict)

    def pairs(self) -> list[PanopticPair | InstancesPair | SemanticPair]:
        """Every compared pair, all forms."""
        return [*self.panoptic, *self.instances, *self.semantic]

    @property
    def sites(self) -> set[tuple[int, int]]:
        """(step, rank) where both runs hold canonical records: there the raw ``outputs`` are redundant."""
        return {(p.step, p.rank) for p in self.pairs()}


def _rule_atol(policy: TolerancePolicy, key: str) -> float:
    """ATOL of the last ``--tol`` rule matching ``key``, else 0 (exact)."""
    return next((rule.atol for rule in reversed(policy.rules) if fnmatch.fnmatchcase(key, rule.pattern)), 0.0)


def _dtype(tensor: Any) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _records(entries: list[Entry]) -> dict[tuple[int, int, str], Entry]:
    """Canonical (step, rank, name) → its first leaf (lowest index)."""
    first: dict[tuple[int, int, str], Entry] = {}
    for e in entries:
        if canonical_form(e) is not None:
            k = (e.step, e.rank, e.name)
            if k not in first or e.index < first[k].index:
                first[k] = e
    return first


def _instances_pair(
    run_a: Run, run_b: Run, site: tuple[int, int, str], policy: TolerancePolicy, device: str
) -> InstancesPair:
    step, rank, name = site
    a = inst.from_record(run_a.get(name, step=step, kind="output", rank=rank))
    b = inst.from_record(run_b.get(name, step=step, kind="output", rank=rank))
    scores = inst.Tolerance(*policy.resolve(f"{name}.scores", _dtype(a.scores)))
    boxes = inst.Tolerance(*policy.resolve(f"{name}.boxes", _dtype(a.boxes) if a.boxes is not None else "float32"))
    comparison = inst.compare_instances(
        a, b, scores=scores, boxes=boxes, mask_iou_loss=_rule_atol(policy, f"{name}.masks"), device=device
    )
    return InstancesPair(step, rank, name, comparison)


def _semantic_pair(
    run_a: Run, run_b: Run, site: tuple[int, int, str], policy: TolerancePolicy, device: str
) -> SemanticPair:
    step, rank, name = site
    a = sem.from_record(run_a.get(name, step=step, kind="output", rank=rank))
    b = sem.from_record(run_b.get(name, step=step, kind="output", rank=rank))
    allowed = max(_rule_atol(policy, name), _rule_atol(policy, f"{name}.category"))
    return SemanticPair(step, rank, name, sem.compare_semantic(a, b, allowed_share=allowed, device=device))


def compare_canonical_outputs(run_a: Run, run_b: Run, policy: TolerancePolicy, device: str) -> CanonicalOutputs:
    """Compare every canonical record the two runs share (same step, rank and name) as a result of its form,
    and list the records only one run holds. BridgeError names a record that is not of its form."""
    first_a, first_b = _records(run_a.entries()), _records(run_b.entries())
    both = sorted(set(first_a) & set(first_b))
    out = CanonicalOutputs(first_leaf=first_a)
    out.panoptic = compare_panoptic_records(run_a, run_b, device=device)
    for site in both:
        form = canonical_form(first_a[site])
        try:
            if form == "instances":
                out.instances.append(_instances_pair(run_a, run_b, site, policy, device))
            elif form == "semantic":
                out.semantic.append(_semantic_pair(run_a, run_b, site, policy, device))
        except BridgeError as exc:
            raise BridgeError(
                f"record {site[2]!r} step {site[0]} rank {site[1]}: not a canonical {form} result "
                f"or not comparable ({exc})"
            ) from None
    out.a_only = sorted((first_a[k] for k in set(first_a) - set(first_b)), key=lambda e: (e.step, e.rank, e.index))
    out.b_only = sorted((first_b[k] for k in set(first_b) - set(first_a)), key=lambda e: (e.step, e.rank, e.index))
    return out
