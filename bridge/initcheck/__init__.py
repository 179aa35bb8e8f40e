"""``python -m bridge.initcheck A B [--preset NAME | --rules FILE] [--seed N] [--json OUT.json] [--quiet]``.

A and B are state-dict files, detectron2 configs (``.yaml`` or a model-zoo path) or mmdet configs (``.py``
or ``mmdet::...``); a config's model is built with ``--seed`` in a subprocess (``bridge.initcheck.sources``).
Compares the two state dicts parameter by parameter (after mapping A's names with the rule set):
mean, std, min, max, share of zeros, and a verdict per parameter:
``equal`` (bit-identical), ``same-distribution`` (a two-sample Kolmogorov-Smirnov test on a
subsample does not reject at alpha = 0.001) or ``different-distribution``; keys present on only one
side get ``missing-in-a`` / ``missing-in-b``, differing shapes ``shape-mismatch``.
Keys that the rules add (e.g. ``num_batches_tracked``) have no source value: they are listed apart, not
compared.  Exit 0 when every parameter is equal or same-distribution, 1 otherwise, 2 on bad input.
On a terminal, each stage (building a model, mapping names, comparing) shows its progress on stderr;
``--quiet`` prints only the summary line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

OK_VERDICTS = ("equal", "same-distribution")
KS_C_ALPHA = 1.949  # c(alpha) for alpha = 0.001
SAMPLE = 4096


@dataclass
class ParamStats:
    """Summary statistics of one tensor."""

    mean: float
    std: float
    min: float
    max: float
    zeros: float

    @classmethod
    def of(cls, tensor: torch.Tensor) -> "ParamStats":
        """Compute the statistics of ``tensor`` (as float64)."""
        t = tensor.detach().reshape(-1).to(torch.float64)
        if t.numel() == 0:
            return cls(0.0, 0.0, 0.0, 0.0, 0.0)
        return cls(
            t.mean().item(),
            t.std(unbiased=False).item(),
            t.min().item(),
            t.max().item(),
            (t == 0).to(torch.float64).mean().item(),
        )


def _subsample(t: torch.Tensor, seed: int) -> torch.Tensor:
    flat = t.detach().reshape(-1).to(torch.float64)
    if flat.numel() <= SAMPLE:
        return flat
    gen = torch.Generator().manual_seed(seed)
    return flat[torch.randperm(flat.numel(), generator=gen)[:SAMPLE]]


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic D of two 1-D samples."""
    a, b = torch.sort(a).values, torch.sort(b).values
    values = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, values, right=True).to(torch.float64) / a.numel()
    cdf_b = torch.searchsorted(b, values, right=True).to(torch.float64) / b.numel()
    return (cdf_a - cdf_b).abs().max().item()


def ks_critical(n: int, m: int) -> float:
    """The KS statistic above which two samples of sizes ``n`` and ``m`` differ at alpha = 0.001."""
    return KS_C_ALPHA * math.sqrt((n + m) / (n * m))


def verdict(a: torch.Tensor, b: torch.Tensor) -> tuple[str, float]:
    """Verdict for two tensors of the same shape, with the KS statistic (0 when equal)."""
    if a.dtype == b.dtype and torch.equal(a, b):
        return "equal", 0.0
    if not (a.is_floating_point() and b.is_floating_point()):
        return "different-distribution", 1.0
    sa, sb = _subsample(a, 1), _subsample(b, 2)
    n, m = sa.numel(), sb.numel()
    if n == 0 or m == 0:
        return "different-distribution", 1.0
    d = ks_statistic(sa, sb)
    critical = ks_critical(n, m)
    return ("same-distribution" if d <= critical else "different-distribution"), d


def compare_state_dicts(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], progress: Callable[[int, int], None] | None = None
) -> list[dict[str, Any]]:
    """Per-key rows: statistics of both sides and the verdict, sorted by key; ``progress(done, total)`` is called
    after each key."""
    rows: list[dict[str, Any]] = []
    keys = sorted(set(a) | set(b))
    for key in keys:
        row: dict[str, Any] = {"key": key}
        if key not in a or key not in b:
            row["verdict"] = "missing-in-a" if key not in a else "missing-in-b"
        elif tuple(a[key].shape) != tuple(b[key].shape):
            row["verdict"] = "shape-mismatch"
            row["shape_a"], row["shape_b"] = list(a[key].shape), list(b[key].shape)
        else:
            row["verdict"], row["ks"] = verdict(a[key], b[key])
            n = min(a[key].numel(), SAMPLE)
            if row["verdict"] != "equal" and n and a[key].is_floating_point() and b[key].is_floating_point():
                row["ks_critical"] = ks_critical(n, n)
            row["a"], row["b"] = vars(ParamStats.of(a[key])), vars(ParamStats.of(b[key]))
        rows.append(row)
        if progress is not None:
            progress(len(rows), len(keys))
    return rows


def fold_rows(rows: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(verdict, folded keys, first row) per group of rows with one verdict, keys folded like the converter's."""
    from bridge.folding import fold_keys, matches_folded

    by_verdict: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_verdict.setdefault(row["verdict"], []).append(row)
    out = []
    for name in sorted(by_verdict):
        group = by_verdict[name]
        for folded in fold_keys([r["key"] for r in group]):
            out.append((name, folded, next(r for r in group if matches_folded(r["key"], folded))))
    return out


def pair_text(a: float, b: float) -> str:
    """``a/b`` with 4 significant digits, or as many as it takes (up to 17) to show that they differ."""
    for digits in (4, 6, 9, 12, 17):
        ta, tb = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if ta != tb or a == b:
            break
    return f"{ta}/{tb}"


def render(rows: list[dict[str, Any]], added: list[str], ok: bool, *, show_all: bool = False) -> None:
    """Print a summary of verdict counts, then the rows (folded; only the differing ones unless ``show_all``)
    with the statistics of their first key, then the keys the rules added (not compared)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from bridge.folding import fold_keys

    console = Console(width=max(160, Console().width))
    title = f"initcheck: {'all equal or same distribution' if ok else 'DIFFERENCES'}"
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    summary = Table(title=title)
    summary.add_column("verdict")
    summary.add_column("count", justify="right")
    for name, count in sorted(counts.items()):
        summary.add_row(name, str(count))
    summary.add_row("added by the rules (not compared)", str(len(added)))
    console.print(summary)
    shown = [r for r in rows if show_all or r["verdict"] not in OK_VERDICTS]
    if shown:
        table = Table(title="parameters" if show_all else "differences")
        for col in (
            "verdict",
            "key (folded)",
            "KS D/critical",
            "mean a/b",
            "std a/b",
            "min a/b",
            "max a/b",
            "zeros a/b",
        ):
            table.add_column(col, overflow="fold")
        for name, folded, first in fold_rows(shown):
            ks = f"{first['ks']:.4g}/{first['ks_critical']:.4g}" if "ks_critical" in first else ""
            if "a" in first:
                cells = [ks] + [pair_text(first["a"][s], first["b"][s]) for s in ("mean", "std", "min", "max", "zeros")]
            else:
                cells = [""] * 6
            table.add_row(name, escape(folded), *cells)
        console.print(table)
    if added:
        console.print("added by the rules, not compared: " + ", ".join(fold_keys(added)), markup=False)


def summary_line(rows: list[dict[str, Any]], added: list[str], ok: bool) -> str:
    """One line: the outcome and the count of each verdict (what ``--quiet`` prints)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    parts = [f"{count} {name}" for name, count in sorted(counts.items())] + [f"{len(added)} added by the rules"]
    return f"initcheck: {'OK' if ok else 'DIFFERENCES'}: {', '.join(parts)}"


@contextmanager
def stages(quiet: bool) -> Iterator[Callable[[str], Callable[[int, int], None]]]:
    """Progress on stderr when it is a terminal (rich, as ``bridge.compare``'s bar; nothing when ``quiet``): yields
    ``start(description)``, which ends the stage before, shows a new one with its elapsed time and returns its
    ``update(done, total)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield lambda _description: lambda _done, _total: None
        return
    columns = (
        SpinnerColumn(finished_text="done"),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        current: list[Any] = []

        def finish() -> None:
            if current:
                total = bar.tasks[-1].total or 1
                bar.update(current[-1], total=total, completed=total)

        def start(description: str) -> Callable[[int, int], None]:
            finish()
            current.append(bar.add_task(description, total=None))
            task = current[-1]
            return lambda done, total: bar.update(task, completed=done, total=total)

        yield start
        finish()
