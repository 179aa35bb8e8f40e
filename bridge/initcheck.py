"""``python -m bridge.initcheck A B [--preset NAME | --rules FILE] [--report OUT.json]``.

Compares two state dicts parameter by parameter (after mapping A's names with the rule set):
mean, std, min, max, share of zeros, and a verdict per parameter:
``equal`` (bit-identical), ``same-distribution`` (a two-sample Kolmogorov-Smirnov test on a
subsample does not reject at alpha = 0.001) or ``different-distribution``; keys present on only one
side get ``missing-in-a`` / ``missing-in-b``, differing shapes ``shape-mismatch``.
Exit 0 when every parameter is equal or same-distribution, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bridge.atomic import atomic_write_bytes
from bridge.cli import BAD_INPUT, report_bad_input
from bridge.errors import BridgeError

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
        return cls(t.mean().item(), t.std(unbiased=False).item(), t.min().item(), t.max().item(),
                   (t == 0).to(torch.float64).mean().item())


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
    critical = KS_C_ALPHA * math.sqrt((n + m) / (n * m))
    return ("same-distribution" if d <= critical else "different-distribution"), d


def compare_state_dicts(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Per-key rows: statistics of both sides and the verdict, sorted by key."""
    rows: list[dict[str, Any]] = []
    for key in sorted(set(a) | set(b)):
        row: dict[str, Any] = {"key": key}
        if key not in a or key not in b:
            row["verdict"] = "missing-in-a" if key not in a else "missing-in-b"
        elif tuple(a[key].shape) != tuple(b[key].shape):
            row["verdict"] = "shape-mismatch"
            row["shape_a"], row["shape_b"] = list(a[key].shape), list(b[key].shape)
        else:
            row["verdict"], row["ks"] = verdict(a[key], b[key])
            row["a"], row["b"] = vars(ParamStats.of(a[key])), vars(ParamStats.of(b[key]))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the initialisation check; return the exit status."""
    p = argparse.ArgumentParser(prog="python -m bridge.initcheck", description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset")
    g.add_argument("--rules")
    p.add_argument("--report")
    p.add_argument("--unsafe-pickle", action="store_true")
    args = p.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from bridge.convert import convert_state_dict, load_checkpoint

    try:
        sa = load_checkpoint(args.a, unsafe_pickle=args.unsafe_pickle)
        sb = load_checkpoint(args.b, unsafe_pickle=args.unsafe_pickle)
        if args.preset or args.rules:
            sa = convert_state_dict(sa, args.preset or args.rules).state_dict
        rows = compare_state_dicts(sa, sb)
        ok = all(r["verdict"] in OK_VERDICTS for r in rows)
        if args.report:
            data = {"ok": ok, "a": str(args.a), "b": str(args.b), "rows": rows}
            atomic_write_bytes(args.report, (json.dumps(data, indent=1) + "\n").encode())
    except BAD_INPUT as exc:
        return report_bad_input(exc)
    table = Table(title=f"initcheck: {'all equal or same distribution' if ok else 'DIFFERENCES'}")
    for col in ("key", "verdict", "mean a/b", "std a/b", "min a/b", "max a/b", "zeros a/b"):
        table.add_column(col)
    for r in rows:
        if "a" in r:
            cells = [f"{r['a'][s]:.4g}/{r['b'][s]:.4g}" for s in ("mean", "std", "min", "max", "zeros")]
        else:
            cells = [""] * 5
        table.add_row(r["key"], r["verdict"], *cells)
    Console().print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
