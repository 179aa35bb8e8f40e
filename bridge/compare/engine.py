"""Compare two recorded runs: pair leaves, compute statistics, find the first divergence."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bridge import Entry, Run, open_run
from bridge.devices import resolve_device
from bridge.errors import BridgeError
from bridge.runs import KINDS

from .band import BandResult, loss_band
from .local_kinds import kept_kind
from .nature import by_nature_key, split_unpaired
from .optim_entries import OptimComparison, compare_optim_records
from .output_entries import CanonicalOutputs, InstancesPair, SemanticPair, canonical_form, compare_canonical_outputs
from .pairing import Pair, load_map, name_mapper, pair_entries
from .panoptic_entries import PanopticPair
from .param_pairing import pair_with_rules
from .stats import READ_ELEMS, NumericStats, tensor_stats
from .tolerance import OPAQUE_DTYPES, TolerancePolicy, ToleranceRule, check_tolerance, is_exact_dtype, parse_tol_spec

ProgressFn = Callable[[int, int], None]


@dataclass
class ItemResult:
    """The comparison of one pair of leaves (one JSON ``items`` element)."""

    name: str
    key: str
    key_a: str
    step: int
    rank: int
    kind: str
    dtype_a: str
    dtype_b: str
    shape_a: list[int]
    shape_b: list[int]
    passed: bool
    reason: str
    atol: float
    rtol: float
    numel: int | None = None
    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None
    rel_l2: float | None = None
    cosine: float | None = None
    mismatched: int | None = None
    mismatched_share: float | None = None
    nan_a: int | None = None
    nan_b: int | None = None
    inf_a: int | None = None
    inf_b: int | None = None
    min_atol: float | None = None
    status: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict; non-finite floats become None (JSON null)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Location:
    """Where something happened: one leaf of run A (or B, for leaves only B has)."""

    step: int
    rank: int
    kind: str
    name: str
    key: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def _loc(entry: Entry, reason: str = "", key: str | None = None) -> Location:
    return Location(entry.step, entry.rank, entry.kind, entry.name, key if key is not None else entry.key, reason)


@dataclass
class ComparisonResult:
    """Everything a report needs: per-pair items, unpaired leaves, verdict, first divergence."""

    run_a: str
    run_b: str
    items: list[ItemResult]
    a_only: list[Location]
    b_only: list[Location]
    first_divergence: Location | None
    last_passing_before: Location | None
    settings: dict[str, Any] = field(default_factory=dict)
    panoptic: list[PanopticPair] = field(default_factory=list)
    instances: list[InstancesPair] = field(default_factory=list)
    semantic: list[SemanticPair] = field(default_factory=list)
    by_nature: list[Location] = field(default_factory=list)
    outputs_counted: bool = True
    optim: list[OptimComparison] = field(default_factory=list)
    band: BandResult | None = None

    @property
    def compared_nothing(self) -> bool:
        """True when no leaf was paired, none is unpaired and no other view (canonical outputs, optimizer
        records, loss band) met anything: a vacuous comparison."""
        return (
            not self.items
            and not self.a_only
            and not self.b_only
            and not self.output_pairs()
            and not self.by_nature
            and not self.optim
            and self.band is None
        )

    @property
    def passed(self) -> bool:
        """True when something was compared, every pair passes, no leaf is unpaired, (unless ``--kinds``
        leaves out ``output``) every canonical output result agrees, the optimizer records agree and the
        port's losses stay inside the noise band (when one was asked for)."""
        return (
            not self.compared_nothing
            and not self.a_only
            and not self.b_only
            and all(i.passed for i in self.items)
            and (not self.outputs_counted or all(p.passed for p in self.output_pairs()))
            and all(o.passed for o in self.optim)
            and (self.band is None or self.band.passed)
        )

    def output_pairs(self) -> list[PanopticPair | InstancesPair | SemanticPair]:
        """The canonical output results compared, all forms (docs/OUTPUTS.md)."""
        return [*self.panoptic, *self.instances, *self.semantic]

    @property
    def n_failed(self) -> int:
        """Number of failing pairs."""
        return sum(not i.passed for i in self.items)


@contextlib.contextmanager
def cpu_threads(device: torch.device, n: int = 1) -> Iterator[None]:
    """On CPU, run torch with ``n`` intra-op threads (cache-sized pieces gain nothing from
    OpenMP and lose badly when cores are shared); the previous setting is restored."""
    if device.type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _rows_for(shape: Sequence[int]) -> int:
    row = math.prod(shape[1:]) if len(shape) > 1 else 1
    return max(1, READ_ELEMS // max(1, row))


def _fill(item: ItemResult, st: NumericStats) -> None:
    for k in (
        "numel",
        "max_abs",
        "mean_abs",
        "max_rel",
        "rel_l2",
        "cosine",
        "mismatched",
        "nan_a",
        "nan_b",
        "inf_a",
        "inf_b",
        "min_atol",
    ):
        setattr(item, k, getattr(st, k))
    item.mismatched_share = st.mismatched_share


def _fail_reason(st: NumericStats, exact: bool) -> str:
    nonfinite = st.nan_a != st.nan_b or st.inf_a != st.inf_b or math.isinf(st.min_atol)
    what = "differ" if exact else "out of tolerance"
    msg = f"{st.mismatched} of {st.numel} elements {what}"
    if nonfinite:
        msg += f" (NaN a/b {st.nan_a}/{st.nan_b}, Inf a/b {st.inf_a}/{st.inf_b})"
    elif not exact:
        msg += f" (max_abs {st.max_abs:.3g}, needs atol >= {st.min_atol:.3g})"
    return msg


_UINT_OF_SIZE = {1: torch.uint8, 2: torch.uint16}


def _comparable(chunks: Iterable[torch.Tensor], dtype: str) -> Iterator[torch.Tensor]:
    """Yield chunks the statistics can handle: complex ones as their (real, imaginary) parts, opaque
    dtypes (int4, bits8, float4_e2m1fn_x2, ...) as the unsigned ints of their bytes, others as they are."""
    for chunk in chunks:
        if chunk.is_complex():
            yield torch.view_as_real(chunk)
        elif dtype in OPAQUE_DTYPES:
            yield chunk.view(_UINT_OF_SIZE[chunk.dtype.itemsize])
        else:
            yield chunk


def compare_pair(run_a: Run, run_b: Run, pair: Pair, policy: TolerancePolicy, device: torch.device) -> ItemResult:
    """Compare one pair of leaves and return its :class:`ItemResult`."""
    a, b = pair.a, pair.b
    shape_a = pair.a_shape if pair.a_shape is not None else tuple(a.shape)
    atol, rtol = policy.resolve(pair.key, a.dtype, a.kind)
    item = ItemResult(
        name=a.name,
        key=pair.key,
        key_a=a.key,
        step=a.step,
        rank=a.rank,
        kind=a.kind,
        dtype_a=a.dtype,
        dtype_b=b.dtype,
        shape_a=list(shape_a),
        shape_b=list(b.shape),
        passed=False,
        reason="",
        atol=atol,
        rtol=rtol,
    )
    if a.is_tensor != b.is_tensor or a.dtype != b.dtype:
        item.reason = (
            f"dtype mismatch: {a.dtype}{'' if a.is_tensor else ' value'} vs {b.dtype}{'' if b.is_tensor else ' value'}"
        )
        return item
    if tuple(shape_a) != tuple(b.shape):
        item.reason = f"shape mismatch: {list(shape_a)} vs {list(b.shape)}"
        return item
    exact = is_exact_dtype(a.dtype)
    if a.is_tensor:
        rows = _rows_for(b.shape)
        chunks_a = [pair.a_tensor()] if pair.a_tensor is not None else run_a.tensor_slices(a, rows)
        st = tensor_stats(
            _comparable(chunks_a, a.dtype),
            _comparable(run_b.tensor_slices(b, rows), b.dtype),
            atol=atol,
            rtol=rtol,
            exact=exact,
            device=device,
        )
        _fill(item, st)
        item.passed = st.mismatched == 0
        item.reason = "" if item.passed else _fail_reason(st, exact)
        return item
    return _compare_values(item, a.value, b.value, atol, rtol, exact)


def _fits_float(value: int | float) -> bool:
    """True unless ``value`` is an int beyond float range (such ints compare exactly, as Python ints)."""
    return not isinstance(value, int) or abs(value) < 2**1023


def _compare_values(item: ItemResult, va: Any, vb: Any, atol: float, rtol: float, exact: bool) -> ItemResult:
    numeric = isinstance(va, (int, float)) and isinstance(vb, (int, float)) and _fits_float(va) and _fits_float(vb)
    if numeric:
        st = tensor_stats(
            [torch.tensor([float(va)], dtype=torch.float64)],
            [torch.tensor([float(vb)], dtype=torch.float64)],
            atol=atol,
            rtol=rtol,
            exact=exact,
        )
        if exact:  # ints/bools: exact, without float rounding
            st.mismatched = int(va != vb)
        _fill(item, st)
        item.passed = st.mismatched == 0
    else:
        item.numel, item.mismatched = 1, int(va != vb)
        item.mismatched_share = float(item.mismatched)
        item.passed = va == vb
    if not item.passed:
        item.reason = f"value differs: {va!r} vs {vb!r}"
    return item


def _open(run: Run | str | os.PathLike[str]) -> Run:
    return run if isinstance(run, Run) else open_run(run)


def compare_runs(
    a: Run | str | os.PathLike[str],
    b: Run | str | os.PathLike[str],
    *,
    name_map: str | os.PathLike[str] | Iterable[Any] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    tolerances: Iterable[str | ToleranceRule] = (),
    device: str = "auto",
    kinds: Iterable[str] | None = None,
    progress: ProgressFn | None = None,
    show_raw: bool = False,
    band_runs: Iterable[Run | str | os.PathLike[str]] = (),
    band_margin: float = 0.0,
) -> ComparisonResult:
    """Compare run ``a`` against run ``b`` leaf by leaf.

    ``name_map`` is a converter preset name, a rule file (YAML/JSON) or a list of rule dicts pairing run A's keys
    with B's (``bridge.compare.param_pairing``: gradients / parameters through the conversion rules, losses
    through the preset's ``losses:``, other kinds renamed);
    ``atol``/``rtol`` override the dtype defaults; ``tolerances`` holds per-key
    ``'GLOB=ATOL,RTOL'`` overrides (last match wins); ``kinds`` keeps only those kinds;
    ``progress(done, total)`` is called after each pair. Canonical output records are compared as results
    (``output_entries``), not leaf by leaf; leaves that differ by nature are classified as such (``nature``),
    ``show_raw`` counts unpaired raw framework structures as unpaired. Optimizer records (kind ``optim``) are
    compared per parameter (``optim_entries``). With ``band_runs`` (more recordings of the reference), run B's
    losses are judged against the band run A and those span, widened by ``band_margin`` times its width
    (``band``), instead of leaf by leaf. Raises BridgeError on bad input (an unknown kind, a tolerance that is
    not a finite number >= 0).
    """
    kind_set = set(kinds) if kinds else None
    unknown = sorted(kind_set - set(KINDS)) if kind_set else []
    if unknown:
        raise BridgeError(f"unknown kind(s) {', '.join(map(repr, unknown))}: kinds are {', '.join(KINDS)}")
    check_tolerance("atol", atol)
    check_tolerance("rtol", rtol)
    dev = resolve_device(device)
    run_a, run_b = _open(a), _open(b)
    ruleset = load_map(
        Path(name_map)
        if isinstance(name_map, os.PathLike)
        else name_map
        if name_map is None or isinstance(name_map, str)
        else list(name_map)
    )
    policy = TolerancePolicy(
        atol, rtol, tuple(t if isinstance(t, ToleranceRule) else parse_tol_spec(t) for t in tolerances)
    )
    mapper = name_mapper(ruleset)
    references = [run_a, *(_open(r) for r in band_runs)]
    leaf_kinds = {"optim"} | ({"loss"} if len(references) > 1 else set())  # judged by their own views
    ea = [
        e
        for e in run_a.entries()
        if kept_kind(e.kind, kind_set) and e.kind not in leaf_kinds and canonical_form(e) is None
    ]
    eb = [
        e
        for e in run_b.entries()
        if kept_kind(e.kind, kind_set) and e.kind not in leaf_kinds and canonical_form(e) is None
    ]
    pairing = pair_entries(ea, eb) if ruleset is None else pair_with_rules(ea, eb, ruleset, run_a)
    items: list[ItemResult] = []
    total = len(pairing.pairs)
    with cpu_threads(dev):
        outputs = compare_canonical_outputs(
            run_a, run_b, policy, str(dev)
        )  # a view of their own, whatever ``kinds`` keeps
        for n, pair in enumerate(pairing.pairs, 1):
            items.append(_classify(compare_pair(run_a, run_b, pair, policy, dev)))
            if progress is not None:
                progress(n, total)
    counted = kind_set is None or "output" in kind_set
    a_only, a_nature = split_unpaired(pairing.a_only, outputs.sites, show_raw)
    b_only, b_nature = split_unpaired(pairing.b_only, outputs.sites, show_raw)
    if counted:
        a_only += outputs.a_only
        b_only = sorted(b_only + outputs.b_only, key=lambda e: (e.step, e.rank, e.index))
    first, last_ok = _first_divergence(pairing.pairs, items, a_only, b_only, _output_events(outputs) if counted else [])
    settings = {
        "run_a": str(run_a.path),
        "run_b": str(run_b.path),
        "device": str(dev),
        "kinds": sorted(kind_set) if kind_set else None,
        "name_map": str(name_map)
        if isinstance(name_map, (str, os.PathLike))
        else (None if name_map is None else "<inline>"),
        "tolerance": policy.describe(),
        "show_raw": show_raw,
        "unpaired_by_design": [d.to_dict() for d in getattr(pairing, "by_design", ())],
        "band_runs": [str(r.path) for r in references[1:]],
        "band_margin": band_margin,
    }
    return ComparisonResult(
        run_a=str(run_a.path),
        run_b=str(run_b.path),
        items=items,
        a_only=[_loc(e, _only_reason(e, "A"), e.name if canonical_form(e) else None) for e in a_only],
        b_only=[_loc(e, _only_reason(e, "B"), e.name if canonical_form(e) else None) for e in b_only],
        first_divergence=first,
        last_passing_before=last_ok,
        settings=settings,
        panoptic=outputs.panoptic,
        instances=outputs.instances,
        semantic=outputs.semantic,
        by_nature=[_loc(e, why) for e, why in a_nature + b_nature],
        outputs_counted=counted,
        optim=compare_optim_records(run_a, run_b, mapper, ruleset) if kind_set is None or "optim" in kind_set else [],
        band=loss_band(references, run_b, mapper, margin=band_margin) if len(references) > 1 else None,
    )


def _classify(item: ItemResult) -> ItemResult:
    """Set the item's status: ``by-nature`` for a leaf that differs by nature (``nature.BY_NATURE_KEYS``;
    it then counts as passing, its difference kept in ``reason``), else ``pass`` or ``fail``."""
    why = by_nature_key(item.key) or by_nature_key(item.key_a)
    if why is not None:
        item.status, item.passed = "by-nature", True
        item.reason = f"{why}, differs by nature" + (f": {item.reason}" if item.reason else "")
    else:
        item.status = "pass" if item.passed else "fail"
    return item


def _only_reason(entry: Entry, side: str) -> str:
    form = canonical_form(entry)
    if form is None:
        return f"only in run {side}"
    other = "B" if side == "A" else "A"
    return f"only in run {side}: run {other} holds no canonical {form} result for this image"


def _output_events(outputs: CanonicalOutputs) -> list[tuple[tuple, bool, Location]]:
    """First-divergence events of the compared canonical results, at their record's place in run A."""
    events = []
    for pair in outputs.pairs():
        entry = outputs.first_leaf.get((pair.step, pair.rank, pair.name))
        if entry is not None:
            reason = "" if pair.passed else pair.comparison.summary()
            events.append(((entry.step, entry.rank, entry.index), pair.passed, _loc(entry, reason, entry.name)))
    return events


def _first_divergence(
    pairs: list[Pair],
    items: list[ItemResult],
    a_only: list[Entry],
    b_only: list[Entry],
    extra: list[tuple[tuple, bool, Location]] = (),
) -> tuple[Location | None, Location | None]:
    """First failing pair, A-only leaf or ``extra`` event in A's order (step, rank, index); then the last pass
    before it."""
    events: list[tuple[tuple, bool, Location]] = list(extra)
    for pair, item in zip(pairs, items):
        events.append(((pair.a.step, pair.a.rank, pair.a.index), item.passed, _loc(pair.a, item.reason, pair.key)))
    for e in a_only:
        events.append(
            ((e.step, e.rank, e.index), False, _loc(e, _only_reason(e, "A"), e.name if canonical_form(e) else None))
        )
    events.sort(key=lambda ev: ev[0])
    last_ok = None
    for _, ok, loc in events:
        if not ok:
            return loc, last_ok
        last_ok = loc
    if b_only:
        e = min(b_only, key=lambda e: (e.step, e.rank, e.index))
        before = [ev for ev in events if ev[0][:2] <= (e.step, e.rank)]
        return _loc(e, _only_reason(e, "B"), e.name if canonical_form(e) else None), (before[-1][2] if before else None)
    return None, None
