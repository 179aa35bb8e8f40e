"""Terminal report: a rich table (passing layer runs folded), unpaired leaves, a summary line.

Recorded text (keys, run paths) is escaped: a key like ``a[/x]`` is shown as it is, never read as markup."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.folding import index_token

from .engine import ComparisonResult, ItemResult

_INT = re.compile(r"^\d+$")


@dataclass
class Row:
    """One table row: a single item, or a folded run of passing items differing by one layer index."""

    label: str
    items: list[ItemResult]

    @property
    def passed(self) -> bool:
        """True when every item of the row passes."""
        return all(i.passed for i in self.items)


def _fold_slot(k1: str, k2: str) -> int | None:
    """Position of the single integer dotted component where two keys differ, else None."""
    t1, t2 = k1.split("."), k2.split(".")
    if len(t1) != len(t2):
        return None
    diff = [i for i, (x, y) in enumerate(zip(t1, t2)) if x != y]
    if len(diff) == 1 and _INT.match(t1[diff[0]]) and _INT.match(t2[diff[0]]):
        return diff[0]
    return None


def _label(items: list[ItemResult], slot: int) -> str:
    toks = items[0].key.split(".")
    toks[slot] = index_token([int(i.key.split(".")[slot]) for i in items])
    return ".".join(toks)


def fold_rows(items: list[ItemResult]) -> list[Row]:
    """Fold consecutive passing items (same step/rank/kind) whose keys differ only by one layer index."""
    rows: list[Row] = []
    group: list[ItemResult] = []
    slot: int | None = None

    def flush() -> None:
        if len(group) > 1 and slot is not None:
            rows.append(Row(_label(group, slot), list(group)))
        else:
            rows.extend(Row(i.key, [i]) for i in group)

    for item in items:
        if (
            group
            and item.passed
            and group[-1].passed
            and (item.step, item.rank, item.kind) == (group[-1].step, group[-1].rank, group[-1].kind)
        ):
            s = _fold_slot(group[-1].key, item.key)
            if s is not None and (slot is None or s == slot) and _fold_slot(group[0].key, item.key) == s:
                slot = s
                group.append(item)
                continue
        flush()
        group, slot = [item], None
    if group:
        flush()
    return rows


def _num(v: float | None, fmt: str = ".3g") -> str:
    return "-" if v is None else format(v, fmt)


def _agg(items: list[ItemResult], attr: str, fn=max) -> float | None:
    vals = [getattr(i, attr) for i in items if getattr(i, attr) is not None]
    return fn(vals) if vals else None


def build_table(result: ComparisonResult) -> Table:
    """Return the rich table of pairs, failing rows in red."""
    table = Table(title=escape(f"{result.run_a}  vs  {result.run_b}"), show_lines=False)
    for col in ("step", "rank", "kind", "key", "dtype", "shape", "max_abs", "max_rel", "cosine", "mismatch", "result"):
        table.add_column(
            col,
            justify="right" if col in ("step", "rank", "max_abs", "max_rel", "cosine", "mismatch") else "left",
            no_wrap=col != "key",
            overflow="fold",
            min_width=24 if col == "key" else None,
        )
    for row in fold_rows(result.items):
        it = row.items[0]
        dtype = it.dtype_a if it.dtype_a == it.dtype_b else f"{it.dtype_a}/{it.dtype_b}"
        shape = "x".join(map(str, it.shape_a)) if it.shape_a == it.shape_b else f"{it.shape_a}/{it.shape_b}"
        mism = _agg(row.items, "mismatched", sum)
        table.add_row(
            str(it.step),
            str(it.rank),
            escape(it.kind),
            escape(row.label),
            escape(dtype),
            shape or "()",
            _num(_agg(row.items, "max_abs")),
            _num(_agg(row.items, "max_rel")),
            _num(_agg(row.items, "cosine", min), ".6f"),
            "-" if mism is None else str(int(mism)),
            _verdict(row),
            style=None if row.passed else "red",
        )
    return table


def _verdict(row: Row) -> str:
    if not row.passed:
        return "FAIL"
    return "by nature" if any(i.status == "by-nature" for i in row.items) else "ok"


def summary_line(result: ComparisonResult) -> str:
    """One line: verdict, counts, first divergence."""
    verdict = "PASS" if result.passed else "FAIL"
    text = (
        f"{verdict}: {len(result.items)} pairs, {result.n_failed} failed, "
        f"{len(result.a_only)} only in A, {len(result.b_only)} only in B"
    )
    outputs = result.output_pairs()
    if outputs:
        failed = sum(not p.passed for p in outputs)
        text += f", {len(outputs)} canonical outputs, {failed} differ" + (
            "" if result.outputs_counted else " (not counted)"
        )
    if result.by_nature:
        text += f", {len(result.by_nature)} unpaired by nature"
    if result.optim:
        records = len(result.optim)
        text += f", {records} optimizer record{'s' if records != 1 else ''} ({sum(o.paired for o in result.optim)} parameters paired)"
    fd = result.first_divergence
    if fd is not None:
        text += f"; first divergence: step {fd.step} rank {fd.rank} {fd.kind} {fd.key} ({fd.reason})"
        lp = result.last_passing_before
        text += f"; last passing before: {lp.key} (step {lp.step})" if lp else "; nothing passed before it"
    bad_optim = [o for o in result.optim if not o.passed]
    if bad_optim:
        text += f"; optimizer records differ at step {', '.join(str(o.step) for o in bad_optim)}"
    if result.band is not None and not result.band.passed:
        text += "; losses outside the reference noise band"
    return text


def print_report(result: ComparisonResult, console: Console | None = None) -> None:
    """Print the table, unpaired leaves and summary to ``console`` (stdout by default)."""
    console = console or Console()
    console.print(build_table(result))
    for form, pairs in (("panoptic", result.panoptic), ("instances", result.instances), ("semantic", result.semantic)):
        for pair in pairs:
            console.print(
                f"{form} {pair.name} step {pair.step} rank {pair.rank}: {pair.comparison.summary()}",
                style="green" if pair.passed else "red",
                markup=False,
                highlight=False,
            )
    if result.by_nature:
        reasons: dict[str, int] = {}
        for loc in result.by_nature:
            reasons[loc.reason] = reasons.get(loc.reason, 0) + 1
        console.print(
            f"{len(result.by_nature)} unpaired leaves differ by nature (not divergences; --show-raw counts "
            "raw structures): " + "; ".join(f"{n} {why}" for why, n in reasons.items()),
            markup=False,
            highlight=False,
        )
    for comparison in result.optim:
        for line in comparison.lines():
            console.print(line, style="green" if comparison.passed else "red", markup=False, highlight=False)
    if result.band is not None:
        for line in result.band.lines():
            console.print(line, style="green" if result.band.passed else "red", markup=False, highlight=False)
    failed = [i for i in result.items if not i.passed]
    for it in failed[:20]:
        console.print(
            f"FAIL step {it.step} rank {it.rank} {it.kind} {it.key}: {it.reason}",
            style="red",
            markup=False,
            highlight=False,
        )
    if len(failed) > 20:
        console.print(f"... and {len(failed) - 20} more failing pairs", style="red")
    for title, locs in (("only in run A", result.a_only), ("only in run B", result.b_only)):
        if locs:
            console.print(f"[red]{len(locs)} leaves {title}:[/red]")
            for loc in locs[:50]:
                why = loc.reason.partition(": ")[2]  # canonical records say why they have no partner
                console.print(
                    f"  step {loc.step} rank {loc.rank} {loc.kind} {loc.key}" + (f" ({why})" if why else ""),
                    markup=False,
                )
            if len(locs) > 50:
                console.print(f"  ... and {len(locs) - 50} more")
    console.print(
        summary_line(result), style="bold green" if result.passed else "bold red", markup=False, highlight=False
    )
