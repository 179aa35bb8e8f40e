"""One self-contained HTML report: inline CSS, inline SVG plot, no scripts, no external resources."""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence

from bridge.atomic import atomic_open

from .engine import ComparisonResult
from .report_terminal import summary_line

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em} h2{font-size:1.1em;margin-top:1.5em}
.pass{color:#1a7f37;font-weight:bold} .fail{color:#c62828;font-weight:bold}
table{border-collapse:collapse;font-size:.85em}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
td.l,th.l{text-align:left} tr.bad td{background:#fde8e8;color:#a00}
svg text{font-size:11px;font-family:sans-serif}
"""


def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def error_plot_svg(result: ComparisonResult, width: int = 900, height: int = 320) -> str:
    """SVG of max_abs per pair (recording order, log scale), atol line, failures red, first divergence marked."""
    items = result.items
    if not items:
        return "<p>No pairs to plot.</p>"
    left, right, top, bottom = 60, 10, 10, 40
    pw, ph = width - left - right, height - top - bottom
    vals = [i.max_abs for i in items if i.max_abs is not None and math.isfinite(i.max_abs) and i.max_abs > 0]
    tols = [i.atol for i in items if i.atol > 0]
    pos = vals + tols
    lo = math.floor(math.log10(min(pos))) - 1 if pos else -12
    hi = math.ceil(math.log10(max(pos))) if pos else 0
    hi = max(hi, lo + 1)
    floor_v = 10.0**lo

    def x(n: int) -> float:
        return left + (pw * (n + 0.5) / len(items))

    def y(v: float) -> float:
        v = min(max(v, floor_v), 10.0**hi)
        return top + ph * (hi - math.log10(v)) / (hi - lo)

    out = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>',
    ]
    for d in range(lo, hi + 1):
        yy = y(10.0**d)
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e3e3e3"/>'
            f'<text x="{left - 4}" y="{yy + 4:.1f}" text-anchor="end">1e{d}</text>'
        )
    pts = []
    for n, it in enumerate(items):  # per-pair atol, drawn as a step line
        yy = y(it.atol) if it.atol > 0 else y(floor_v)
        pts.append(f"{x(n) - pw / len(items) / 2:.1f},{yy:.1f} {x(n) + pw / len(items) / 2:.1f},{yy:.1f}")
    out.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="#1565c0" stroke-dasharray="5,3"/>')
    fd = result.first_divergence
    for n, it in enumerate(items):
        v = it.max_abs
        if v is None:
            v = 10.0**hi if not it.passed else floor_v
        elif not math.isfinite(v):
            v = 10.0**hi
        color = "#2e7d32" if it.passed else "#d32f2f"
        out.append(
            f'<circle cx="{x(n):.1f}" cy="{y(v):.1f}" r="3" fill="{color}">'
            f"<title>{_e(it.key)} step {it.step} rank {it.rank}: max_abs {_f(it.max_abs)}</title></circle>"
        )
        if fd is not None and (it.step, it.rank, it.kind, it.key) == (fd.step, fd.rank, fd.kind, fd.key):
            out.append(
                f'<line x1="{x(n):.1f}" x2="{x(n):.1f}" y1="{top}" y2="{top + ph}" stroke="#d32f2f" '
                f'stroke-dasharray="3,3"/><text x="{x(n) + 4:.1f}" y="{top + 12}" fill="#d32f2f">'
                f"first divergence: {_e(it.key)}</text>"
            )
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">pair (recording order); '
        f"dots: max_abs (red = fail), dashed blue: atol</text></svg>"
    )
    return "".join(out)


def _table(result: ComparisonResult) -> str:
    cols = [
        "step",
        "rank",
        "kind",
        "key",
        "dtype",
        "shape",
        "max_abs",
        "mean_abs",
        "max_rel",
        "rel_l2",
        "cosine",
        "mismatched",
        "atol",
        "rtol",
        "result",
    ]
    head = "".join(
        f'<th class="{"l" if c in ("kind", "key", "dtype", "shape", "result") else ""}">{c}</th>' for c in cols
    )
    rows = []
    for it in result.items:
        dtype = it.dtype_a if it.dtype_a == it.dtype_b else f"{it.dtype_a} / {it.dtype_b}"
        shape = it.shape_a if it.shape_a == it.shape_b else f"{it.shape_a} / {it.shape_b}"
        cells = [
            it.step,
            it.rank,
            it.kind,
            it.key,
            dtype,
            shape,
            _f(it.max_abs),
            _f(it.mean_abs),
            _f(it.max_rel),
            _f(it.rel_l2),
            "-" if it.cosine is None else f"{it.cosine:.6f}",
            "-" if it.mismatched is None else it.mismatched,
            _f(it.atol),
            _f(it.rtol),
            ("by nature: " + it.reason if it.status == "by-nature" else "ok") if it.passed else f"FAIL: {it.reason}",
        ]
        tds = "".join(
            f'<td class="{"l" if c in ("kind", "key", "dtype", "shape", "result") else ""}">{_e(v)}</td>'
            for c, v in zip(cols, cells)
        )
        rows.append(f'<tr class="{"" if it.passed else "bad"}">{tds}</tr>')
    return f'<table id="pairs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _unpaired(result: ComparisonResult) -> str:
    parts = []
    for title, locs in (("Only in run A", result.a_only), ("Only in run B", result.b_only)):
        if locs:
            lis = "".join(f"<li>step {loc.step} rank {loc.rank} {_e(loc.kind)} {_e(loc.key)}</li>" for loc in locs)
            parts.append(f"<h2>{title} ({len(locs)})</h2><ul>{lis}</ul>")
    return "".join(parts)


def _output_sections(result: ComparisonResult) -> list[tuple[str, str]]:
    """One section per canonical instances / semantic result (its summary line) and one for by-nature leaves."""
    sections = []
    for form, pairs in (("Instances", result.instances), ("Semantic", result.semantic)):
        for pair in pairs:
            css = "pass" if pair.passed else "fail"
            sections.append(
                (
                    f"{form} {pair.name} (step {pair.step}, rank {pair.rank})",
                    f'<p class="{css}">{_e(pair.comparison.summary())}</p>',
                )
            )
    if result.by_nature:
        lis = "".join(
            f"<li>step {loc.step} rank {loc.rank} {_e(loc.kind)} {_e(loc.key)}: {_e(loc.reason)}</li>"
            for loc in result.by_nature
        )
        sections.append((f"Unpaired by nature ({len(result.by_nature)})", f"<ul>{lis}</ul>"))
    return sections


def build_html(result: ComparisonResult, extra_sections: Sequence[tuple[str, str]] = ()) -> str:
    """Return the report as one HTML string; the panoptic pictures of ``result.panoptic``, the other canonical
    outputs, the optimizer comparisons, the noise band and then ``extra_sections`` ((title, trusted html) pairs)
    are appended at the end."""
    extra_sections = (
        [pair.html() for pair in result.panoptic]
        + _output_sections(result)
        + [o.html() for o in result.optim]
        + ([result.band.html()] if result.band is not None else [])
        + list(extra_sections)
    )
    verdict = '<span class="pass">PASS</span>' if result.passed else '<span class="fail">FAIL</span>'
    extra = "".join(f"<section><h2>{_e(t)}</h2>{body}</section>" for t, body in extra_sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>compare {_e(os.path.basename(result.run_a))} vs {_e(os.path.basename(result.run_b))}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>{verdict} {_e(result.run_a)} vs {_e(result.run_b)}</h1>"
        f'<p id="summary">{_e(summary_line(result))}</p>'
        f"<h2>Max abs error per pair</h2>{error_plot_svg(result)}"
        f"{_unpaired(result)}<h2>Pairs</h2>{_table(result)}{extra}</body></html>"
    )


def write_html(
    result: ComparisonResult, path: str | os.PathLike[str], extra_sections: Sequence[tuple[str, str]] = ()
) -> None:
    """Write :func:`build_html` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(build_html(result, extra_sections).encode("utf-8"))
