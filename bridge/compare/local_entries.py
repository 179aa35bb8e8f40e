"""End-to-end against layer-local error per paired module, and the origin of a divergence.

For each module call recorded in run A as kind ``input`` and replayed by ``python -m bridge.local`` (kind
``local`` in RUN_LOCAL under B's name): the end-to-end error is A's activation against B's own activation
(run B), the local error is A's activation against B's module run on A's inputs. The **origin** is the
first call (in A's recording order) whose local error exceeds tolerance; a call whose end-to-end error
exceeds tolerance while its local error does not is **inherited** (docs/LAYER_LOCAL.md).
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bridge.local.pairing import LocalMap, load_local_map, pair_module
from bridge.local.replay import PAIRS_RECORD
from bridge.runs import Run, open_run

#: Tolerance of a float32 activation when none is given: absolute, relative.
DEFAULT_TOL: tuple[float, float] = (1e-4, 1e-4)


@dataclass
class LocalRow:
    """One paired module call: errors (max abs; None when a side lacks the record) and its verdict."""

    step: int
    name_a: str
    name_b: str
    end_to_end: float | None
    local: float | None
    end_to_end_ok: bool | None
    local_ok: bool | None
    verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form: errors as numbers, ``"shape"`` when the shapes differ, None when a side lacks the record."""
        return {**vars(self), "end_to_end": _json_error(self.end_to_end), "local": _json_error(self.local)}


def _json_error(value: float | None) -> float | str | None:
    return "shape" if value is not None and math.isinf(value) else value


def _leaves(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _leaves(v)]
    if isinstance(value, dict):
        return [t for k in sorted(value) for t in _leaves(value[k])]
    return []


def value_error(a: Any, b: Any, atol: float, rtol: float) -> tuple[float, bool]:
    """Max abs difference over the tensor leaves of two values, and whether all are within ``atol + rtol*|b|``
    (inf and False when their leaves differ in number or shape)."""
    la, lb = _leaves(a), _leaves(b)
    if len(la) != len(lb) or any(x.shape != y.shape for x, y in zip(la, lb)):
        return math.inf, False
    worst, ok = 0.0, True
    for x, y in zip(la, lb):
        x, y = x.double(), y.double()
        if x.numel():
            worst = max(worst, float((x - y).abs().max()))
            ok = ok and bool(torch.allclose(x, y, atol=atol, rtol=rtol, equal_nan=True))
    return worst, ok


def _get(run: Run, name: str, step: int, kind: str) -> Any:
    have = {(e.name, e.step, e.kind) for e in run.entries(step=step, kind=kind)}
    return run.get(name, step=step, kind=kind) if (name, step, kind) in have else None


def local_rows(
    run_a: Run | str | os.PathLike[str],
    run_b: Run | str | os.PathLike[str],
    run_local: Run | str | os.PathLike[str],
    name_map: Any = None,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    local_map: LocalMap | None = None,
) -> list[LocalRow]:
    """One row per module call recorded as ``input`` in run A (A's order), paired as ``bridge.local`` paired it
    (the local run's ``local_pairs`` record; else through ``name_map`` / ``local_map``), with verdicts ``origin`` (first
    local failure), ``local`` (a later local failure), ``inherited``, ``ok`` or ``unpaired``."""
    runs = [r if isinstance(r, Run) else open_run(r) for r in (run_a, run_b, run_local)]
    a, b, loc = runs
    mapping = local_map or (load_local_map([name_map]) if name_map is not None else LocalMap())
    tol_a, tol_r = atol if atol is not None else DEFAULT_TOL[0], rtol if rtol is not None else DEFAULT_TOL[1]
    seen: list[tuple[int, str]] = []
    for entry in a.entries(kind="input"):
        if (entry.step, entry.name) not in seen:
            seen.append((entry.step, entry.name))
    recorded = _get(loc, PAIRS_RECORD, 0, "meta") or []
    paired = {(item["step"], item["name_a"]): item["name_b"] for item in recorded}
    rows = []
    for step, name_a in seen:
        name_b = paired.get((step, name_a)) or pair_module(name_a, mapping)
        out_a = _get(a, name_a, step, "activation")
        row = LocalRow(step, name_a, name_b, None, None, None, None)
        for field, other in (
            ("end_to_end", _get(b, name_b, step, "activation")),
            ("local", _get(loc, name_b, step, "local")),
        ):
            if out_a is not None and other is not None:
                error, ok = value_error(out_a, other, tol_a, tol_r)
                setattr(row, field, error)
                setattr(row, f"{field}_ok", ok)
        rows.append(row)
    return judge(rows)


def judge(rows: Sequence[LocalRow]) -> list[LocalRow]:
    """Set each row's verdict (see :func:`local_rows`)."""
    origin_found = False
    for row in rows:
        if row.local_ok is None:
            row.verdict = "unpaired"
        elif not row.local_ok:
            row.verdict = "local" if origin_found else "origin"
            origin_found = True
        elif row.end_to_end_ok is False:
            row.verdict = "inherited"
        else:
            row.verdict = "ok"
    return list(rows)


def origin(rows: Sequence[LocalRow]) -> LocalRow | None:
    """The first row whose local error exceeds tolerance, or None."""
    return next((row for row in rows if row.verdict == "origin"), None)


def _fmt(value: float | None) -> str:
    return "-" if value is None else "shape" if math.isinf(value) else f"{value:.3g}"


def format_rows(rows: Sequence[LocalRow]) -> list[str]:
    """Plain text lines of the table and the origin sentence."""
    lines = [f"{'step':>4}  {'module (A -> B)':<70} {'end-to-end':>11} {'local':>11}  verdict"]
    for row in rows:
        lines.append(
            f"{row.step:>4}  {row.name_a + ' -> ' + row.name_b:<70} {_fmt(row.end_to_end):>11} "
            f"{_fmt(row.local):>11}  {row.verdict}"
        )
    return [*lines, origin_line(rows)]


def origin_line(rows: Sequence[LocalRow]) -> str:
    """The sentence naming the origin (or saying there is none)."""
    found = origin(rows)
    return (
        f"origin: {found.name_a} -> {found.name_b} (step {found.step}): local error {_fmt(found.local)}"
        if found
        else "origin: none (every local error within tolerance)"
    )


def local_section(rows: Sequence[LocalRow], atol: float | None = None, rtol: float | None = None) -> dict[str, Any]:
    """The ``local`` section of the JSON report (docs/COMPARE_JSON.md): the tolerance, the origin row (or None)
    and every row (:meth:`LocalRow.to_dict`)."""
    found = origin(rows)
    return {
        "atol": atol if atol is not None else DEFAULT_TOL[0],
        "rtol": rtol if rtol is not None else DEFAULT_TOL[1],
        "origin": found.to_dict() if found else None,
        "rows": [row.to_dict() for row in rows],
    }


def local_html(rows: Sequence[LocalRow]) -> str:
    """The table of the HTML report (``id="local"``; rows with local error marked), then the origin sentence."""
    head = "".join(
        f'<th class="l">{c}</th>' if c in ("module A", "module B", "verdict") else f"<th>{c}</th>"
        for c in ("step", "module A", "module B", "end-to-end", "local", "verdict")
    )
    body = []
    for row in rows:
        cells = [
            f"<td>{row.step}</td>",
            f'<td class="l">{html.escape(row.name_a)}</td>',
            f'<td class="l">{html.escape(row.name_b)}</td>',
            f"<td>{_fmt(row.end_to_end)}</td>",
            f"<td>{_fmt(row.local)}</td>",
            f'<td class="l">{row.verdict}</td>',
        ]
        body.append(f'<tr class="{"bad" if row.local_ok is False else ""}">{"".join(cells)}</tr>')
    return (
        f'<table id="local"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
        f"<p>{html.escape(origin_line(rows))}</p>"
    )
