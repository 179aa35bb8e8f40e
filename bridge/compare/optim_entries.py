"""Optimizer records (kind ``optim``, see ``bridge.optim``) met by ``bridge.compare``: per-parameter settings
paired through the name map, mismatches grouped by module prefix, clipping and the lr schedule (the first
iteration where a paired parameter's learning rate differs)."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bridge.convert.rules import RuleSet
from bridge.optim import RECORD_NAME
from bridge.runs import Run

from .param_pairing import parameter_name_mapper

KIND = "optim"
#: Relative tolerance for float settings: mmengine's chained schedulers and detectron2's closed forms
#: round differently in the last bits.
RTOL = 1e-6
_SHOWN_NAMES = 3


def _same(a: Any, b: Any, rtol: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=rtol, abs_tol=0.0)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, rtol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], rtol) for k in a)
    return a == b


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return "missing" if value is None else str(value)


def _common_prefix(names: list[str]) -> str:
    parts = [n.split(".") for n in names]
    common: list[str] = []
    for tokens in zip(*parts):
        if len(set(tokens)) != 1:
            break
        common.append(tokens[0])
    return ".".join(common)


@dataclass
class SettingGroup:
    """Parameters (named as in run B) whose ``setting`` is ``value_a`` in run A and ``value_b`` in run B.

    ``label`` is their common module prefix (``backbone.*``) or the one name; ``of`` how many paired
    parameters lie under that prefix; ``iteration`` the schedule iteration (None: a group setting)."""

    setting: str
    value_a: Any
    value_b: Any
    label: str
    names: list[str]
    names_a: list[str]
    of: int
    iteration: int | None = None

    def line(self) -> str:
        """One terminal line: ``backbone.*: lr 1e-05 vs 0.0001 (262 parameters, e.g. ...)``."""
        count = f"{len(self.names)} parameter{'s' if len(self.names) != 1 else ''}"
        if self.of != len(self.names):
            count = f"{len(self.names)} of {self.of} parameters"
        example = ", ".join(self.names[:_SHOWN_NAMES]) + (", ..." if len(self.names) > _SHOWN_NAMES else "")
        where = f"iteration {self.iteration}: " if self.iteration is not None else ""
        return (
            f"{where}{self.label}: {self.setting} {_fmt(self.value_a)} vs {_fmt(self.value_b)} "
            f"({count}{', e.g. ' + example if len(self.names) > 1 else ''})"
        )


def _grouped(
    diffs: list[tuple[str, Any, Any, str, str]], all_names: list[str], iteration: int | None = None
) -> list[SettingGroup]:
    """Group (setting, a, b, name_b, name_a) rows by setting and values, then by first name component."""
    classes: dict[tuple[str, str, str], list[tuple[str, str, Any, Any]]] = {}
    for setting, va, vb, name_b, name_a in diffs:
        classes.setdefault((setting, repr(va), repr(vb)), []).append((name_b, name_a, va, vb))
    out = []
    for (setting, _, _), rows in classes.items():
        buckets: dict[str, list[tuple[str, str, Any, Any]]] = {}
        for row in rows:
            buckets.setdefault(row[0].split(".")[0], []).append(row)
        for bucket in buckets.values():
            names = [r[0] for r in bucket]
            prefix = _common_prefix(names)
            label = names[0] if len(names) == 1 else (f"{prefix}.*" if prefix else "*")
            under = [n for n in all_names if not prefix or n == prefix or n.startswith(prefix + ".")]
            out.append(
                SettingGroup(
                    setting,
                    bucket[0][2],
                    bucket[0][3],
                    label,
                    names,
                    [r[1] for r in bucket],
                    len(under) if len(names) > 1 else 1,
                    iteration,
                )
            )
    return out


@dataclass
class OptimComparison:
    """The optimizer records of both runs at one (step, rank), compared parameter by parameter."""

    step: int
    rank: int
    missing: str | None = None  # "A" / "B": this run lacks the record the other one holds
    type_a: str | None = None
    type_b: str | None = None
    clip_a: dict[str, Any] | None = None
    clip_b: dict[str, Any] | None = None
    clip_equal: bool = True
    paired: int = 0
    settings: list[SettingGroup] = field(default_factory=list)
    a_only: list[str] = field(default_factory=list)
    b_only: list[str] = field(default_factory=list)
    schedule_iterations: tuple[int, int] = (0, 0)
    schedule_first_diff: int | None = None
    schedule: list[SettingGroup] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when type, clipping, every paired setting and the schedule agree and no parameter is unpaired."""
        return (
            self.missing is None
            and self.type_a == self.type_b
            and self.clip_equal
            and not self.settings
            and not self.a_only
            and not self.b_only
            and self.schedule_first_diff is None
            and self.schedule_iterations[0] == self.schedule_iterations[1]
        )

    def lines(self) -> list[str]:
        """Human-readable findings, one per line (the verdict line first)."""
        head = f"optimizer step {self.step} rank {self.rank}: "
        if self.missing:
            return [head + f"FAIL: recorded only in run {'B' if self.missing == 'A' else 'A'}"]
        out = [
            head
            + ("PASS" if self.passed else "FAIL")
            + f": {self.paired} parameters paired, {len(self.settings)} setting differences, "
            f"{len(self.a_only)} only in A, {len(self.b_only)} only in B"
        ]
        if self.type_a != self.type_b:
            out.append(f"  type: {self.type_a} vs {self.type_b}")
        if not self.clip_equal:
            out.append(f"  clipping: {_clip_text(self.clip_a)} vs {_clip_text(self.clip_b)}")
        out.extend("  " + group.line() for group in self.settings)
        for title, names in (("trainable only in A", self.a_only), ("trainable only in B", self.b_only)):
            if names:
                shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
                out.append(f"  {len(names)} parameters {title}: {shown}")
        ia, ib = self.schedule_iterations
        if ia != ib:
            out.append(f"  lr schedule: {ia} iterations recorded in A, {ib} in B")
        if self.schedule_first_diff is not None:
            out.append(f"  lr schedule first differs at iteration {self.schedule_first_diff}:")
            out.extend("    " + group.line() for group in self.schedule)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (every differing parameter named)."""
        data = asdict(self)
        data["passed"] = self.passed
        data["schedule_iterations"] = list(self.schedule_iterations)
        return data

    def html(self) -> tuple[str, str]:
        """(title, html) for the HTML report."""
        title = f"Optimizer (step {self.step}, rank {self.rank}): {'PASS' if self.passed else 'FAIL'}"
        rows = "".join(f"<li>{html.escape(line.strip())}</li>" for line in self.lines()[1:])
        return title, f"<p>{html.escape(self.lines()[0])}</p><ul>{rows}</ul>"


def _clip_text(clip: dict[str, Any] | None) -> str:
    if not clip:
        return "none"
    norm = f", norm_type {_fmt(clip.get('norm_type'))}" if clip.get("type") == "norm" else ""
    return f"{clip.get('type')} {_fmt(clip.get('max'))} ({clip.get('scope')}{norm})"


def _curve(schedule: list[list[float]] | None, group: int) -> list[float]:
    if not schedule or group < 0:
        return []
    return [row[group] for row in schedule]


def compare_optim(
    step: int, rank: int, a: dict[str, Any], b: dict[str, Any], mapper: Callable[[str], str] | None, rtol: float = RTOL
) -> OptimComparison:
    """Compare two ``optimizer`` record values; run A's parameter names go through ``mapper``."""
    mapper = mapper or (lambda name: name)
    params_a = {mapper(name): (name, s) for name, s in a["params"].items()}
    params_b = b["params"]
    result = OptimComparison(
        step, rank, type_a=a.get("type"), type_b=b.get("type"), clip_a=a.get("clip"), clip_b=b.get("clip")
    )
    result.clip_equal = _same(result.clip_a, result.clip_b, rtol)
    paired = [name for name in params_b if name in params_a]
    result.paired = len(paired)
    result.a_only = [name_a for key, (name_a, _) in params_a.items() if key not in params_b]
    result.b_only = [name for name in params_b if name not in params_a]
    diffs = []
    for name in paired:
        name_a, sa = params_a[name]
        sb = params_b[name]
        for setting in sorted((set(sa) | set(sb)) - {"group"}):
            if not _same(sa.get(setting), sb.get(setting), rtol):
                diffs.append((setting, sa.get(setting), sb.get(setting), name, name_a))
    result.settings = _grouped(diffs, paired)
    sched_a, sched_b = a.get("lr_schedule") or [], b.get("lr_schedule") or []
    result.schedule_iterations = (len(sched_a), len(sched_b))
    for it in range(min(len(sched_a), len(sched_b))):
        rows = []
        for name in paired:
            name_a, sa = params_a[name]
            ga, gb = sa.get("group", -1), params_b[name].get("group", -1)
            if ga < 0 or gb < 0:
                continue
            va, vb = sched_a[it][ga], sched_b[it][gb]
            if not _same(va, vb, rtol):
                rows.append(("lr", va, vb, name, name_a))
        if rows:
            result.schedule_first_diff = it
            result.schedule = _grouped(rows, paired, iteration=it)
            break
    return result


def _records(run: Run) -> set[tuple[int, int]]:
    return {(e.step, e.rank) for e in run.entries(kind=KIND) if e.name == RECORD_NAME}


def compare_optim_records(
    run_a: Run, run_b: Run, mapper: Callable[[str], str] | None, ruleset: RuleSet | None = None
) -> list[OptimComparison]:
    """Compare the ``optimizer`` records of both runs at every (step, rank) either run holds. With ``ruleset``
    run A's parameter names pair as their gradients do (``param_pairing.parameter_name_mapper``: a shared
    parameter listed under an alias stands for its kept key); otherwise through ``mapper``."""
    in_a, in_b = _records(run_a), _records(run_b)
    out = []
    for step, rank in sorted(in_a | in_b):
        if (step, rank) not in in_b:
            out.append(OptimComparison(step, rank, missing="B"))
        elif (step, rank) not in in_a:
            out.append(OptimComparison(step, rank, missing="A"))
        else:
            a = run_a.get(RECORD_NAME, step=step, kind=KIND, rank=rank)
            names = parameter_name_mapper(ruleset, a["params"]) if ruleset is not None else mapper
            out.append(compare_optim(step, rank, a, run_b.get(RECORD_NAME, step=step, kind=KIND, rank=rank), names))
    return out
