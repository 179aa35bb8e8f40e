"""Noise band: judge the port's per-step losses against the spread of K reference runs (the same
reference recorded with different seeds), not against a fixed tolerance.

For every scalar loss leaf (kind ``loss``) and step, the band is [min, max] over the references,
widened on each side by ``margin`` times its width; the port passes a step when its value lies inside.
Reference keys go through the same name map as ``bridge.compare``'s run A.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bridge.errors import BridgeError
from bridge.runs import Run

KIND = "loss"


def scalar_losses(run: Run, mapper: Callable[[str], str] | None = None, rank: int = 0) -> dict[str, dict[int, float]]:
    """Every scalar leaf of kind ``loss`` on ``rank``: {key (through ``mapper``): {step: value}}."""
    mapper = mapper or (lambda key: key)
    out: dict[str, dict[int, float]] = {}
    for entry in run.entries(rank=rank, kind=KIND):
        if entry.is_tensor:
            if math.prod(entry.shape) != 1:
                continue
            value = float(run.tensor(entry).reshape(()).double())
        elif isinstance(entry.value, (int, float)) and not isinstance(entry.value, bool):
            value = float(entry.value)
        else:
            continue
        out.setdefault(mapper(entry.key), {})[entry.step] = value
    return out


@dataclass
class BandSeries:
    """One loss: the port's value, the band and each reference's value per step."""

    key: str
    steps: list[int]
    port: list[float]
    low: list[float]
    high: list[float]
    references: list[list[float]]
    outside: list[int] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when the port stays inside the band at every step."""
        return not self.outside


@dataclass
class BandResult:
    """The port's losses judged against the references' band."""

    references: list[str]
    port: str
    margin: float
    series: list[BandSeries]
    missing: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every loss of every step lies inside the band and no loss or step is missing."""
        return not self.missing and all(s.passed for s in self.series)

    def lines(self) -> list[str]:
        """Human-readable findings: a verdict line, then one line per step outside the band."""
        out = [
            f"noise band ({len(self.references)} reference runs, margin {self.margin:g}): "
            f"{'PASS' if self.passed else 'FAIL'}: {len(self.series)} losses, "
            f"{sum(len(s.outside) for s in self.series)} steps outside the band"
        ]
        for s in self.series:
            for step in s.outside:
                i = s.steps.index(step)
                out.append(f"  step {step} {s.key}: {s.port[i]:.7g} outside [{s.low[i]:.7g}, {s.high[i]:.7g}]")
        out.extend(f"  missing: {m}" for m in self.missing)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "passed": self.passed}

    def html(self) -> tuple[str, str]:
        """(title, html): one inline SVG per loss with the band shaded, the references grey, the port red/blue."""
        title = f"Noise band of {len(self.references)} reference runs: {'PASS' if self.passed else 'FAIL'}"
        body = [f"<p>{html.escape(self.lines()[0])}</p>"]
        body.extend(f"<h3>{html.escape(s.key)}</h3>{band_svg(s)}" for s in self.series)
        if self.missing:
            body.append("<ul>" + "".join(f"<li>missing: {html.escape(m)}</li>" for m in self.missing) + "</ul>")
        return title, "".join(body)


def band_svg(series: BandSeries, width: int = 520, height: int = 200) -> str:
    """SVG of one loss over steps: the band (shaded), each reference (grey) and the port (blue, red outside)."""
    left, right, top, bottom = 70, 10, 10, 30
    pw, ph = width - left - right, height - top - bottom
    values = series.low + series.high + series.port + [v for ref in series.references for v in ref]
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo - (abs(lo) or 1.0) * 1e-3, hi + (abs(hi) or 1.0) * 1e-3
    n = len(series.steps)

    def x(i: int) -> float:
        return left + (pw * i / (n - 1) if n > 1 else pw / 2)

    def y(v: float) -> float:
        return top + ph * (hi - v) / (hi - lo)

    out = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 10}" text-anchor="end">{hi:.5g}</text>',
        f'<text x="{left - 4}" y="{top + ph}" text-anchor="end">{lo:.5g}</text>',
    ]
    upper = [f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(series.high)]
    lower = [f"{x(i):.1f},{y(v):.1f}" for i, v in reversed(list(enumerate(series.low)))]
    out.append(f'<polygon points="{" ".join(upper + lower)}" fill="#bbdefb" stroke="#90caf9"/>')
    for ref in series.references:
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(ref))
        out.append(f'<polyline points="{pts}" fill="none" stroke="#9e9e9e"/>')
    pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(series.port))
    out.append(f'<polyline points="{pts}" fill="none" stroke="#1565c0" stroke-width="2"/>')
    for i, (step, v) in enumerate(zip(series.steps, series.port)):
        color = "#d32f2f" if step in series.outside else "#1565c0"
        out.append(
            f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{color}"><title>step {step}: '
            f"{v:.7g} (band {series.low[i]:.7g} .. {series.high[i]:.7g})</title></circle>"
        )
        out.append(f'<text x="{x(i):.1f}" y="{height - 14}" text-anchor="middle">{step}</text>')
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 2}" text-anchor="middle">step; shaded: reference band, '
        f"grey: references, blue: port (red dot: outside)</text></svg>"
    )
    return "".join(out)


def loss_band(
    references: Sequence[Run],
    port: Run,
    mapper: Callable[[str], str] | None = None,
    *,
    margin: float = 0.0,
    rank: int = 0,
) -> BandResult:
    """Judge ``port``'s scalar losses against the band the ``references`` span (keys through ``mapper``).

    A loss or step that some reference or the port lacks is listed in ``missing`` (and fails).
    Raises BridgeError for fewer than two references or a negative margin."""
    if len(references) < 2:
        raise BridgeError(f"a noise band needs at least 2 reference runs, got {len(references)}")
    if not margin >= 0:
        raise BridgeError(f"band margin must be >= 0, got {margin!r}")
    refs = [scalar_losses(run, mapper, rank) for run in references]
    got = scalar_losses(port, None, rank)
    missing: list[str] = []
    series = []
    keys = sorted(set().union(*refs) | set(got))
    for key in keys:
        holders = [str(run.path) for run, values in zip(references, refs) if key not in values]
        if key not in got:
            holders.append(f"{port.path} (port)")
        if holders:
            missing.append(f"loss {key} not recorded in {', '.join(holders)}")
            continue
        steps = sorted(set(got[key]).intersection(*(r[key] for r in refs)))
        for step in sorted(set(got[key]).union(*(r[key] for r in refs)) - set(steps)):
            missing.append(f"loss {key} step {step} not recorded in every run")
        if not steps:
            continue
        ref_values = [[r[key][s] for s in steps] for r in refs]
        low, high = [], []
        for values in zip(*ref_values):
            width = max(values) - min(values)
            low.append(min(values) - margin * width)
            high.append(max(values) + margin * width)
        port_values = [got[key][s] for s in steps]
        outside = [s for s, v, lo, hi in zip(steps, port_values, low, high) if not lo <= v <= hi]
        series.append(BandSeries(key, steps, port_values, low, high, ref_values, outside))
    return BandResult([str(r.path) for r in references], str(port.path), float(margin), series, missing)
