"""The self-contained report page: inline CSS, inline SVG, one canvas and a little inline JS; no external
resources."""

from __future__ import annotations

import html
import json
import math
from typing import Any

from .stages import FAIL, PASS

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:75em}
h1{font-size:1.35em} h2{font-size:1.12em;margin-top:1.6em} h3{font-size:1em}
.pass{color:#1a7f37;font-weight:bold} .fail{color:#c62828;font-weight:bold} .notrun{color:#777}
#verdict{font-size:1.2em;padding:.5em .8em;border-radius:4px}
#verdict.pass{background:#e6f4ea} #verdict.fail{background:#fde8e8}
table{border-collapse:collapse;font-size:.85em} th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}
tr.fail td{background:#fde8e8} .first{border:2px solid #c62828;padding:.2em 1em;border-radius:4px}
ul.findings li{font-family:ui-monospace,monospace;font-size:.82em;white-space:pre-wrap}
details.group{margin-left:1em} details.group>summary{cursor:pointer;font-family:ui-monospace,monospace;font-size:.85em}
.row{display:grid;grid-template-columns:22em 9em 4.5em 12em 7em 7em 1fr;gap:.4em;font-family:ui-monospace,monospace;
font-size:.78em;margin-left:2em;align-items:center} .row.fail{color:#a00}
.bar{height:.8em;background:#6a9fd4;display:inline-block} .row.fail .bar{background:#c62828}
.controls{margin:.5em 0} .controls>*{margin-right:1em} svg text{font-size:11px;font-family:sans-serif}
.muted{color:#666;font-size:.85em}
"""

_JS = r"""
(function(){
function colour(t){var s=[[68,1,84],[59,82,139],[33,145,140],[94,201,98],[253,231,37]];
 t=Math.max(0,Math.min(1,t))*(s.length-1);var i=Math.min(Math.floor(t),s.length-2),f=t-i;
 return 'rgb('+s[i].map(function(c,k){return Math.round(c+(s[i+1][k]-c)*f)}).join(',')+')';}
var dataEl=document.getElementById('heatmap-data');
if(dataEl){var hm=JSON.parse(dataEl.textContent);var cv=document.getElementById('heatmap');
 var rows=hm.cells.length,cols=rows?hm.cells[0].length:0;var cell=Math.max(2,Math.min(12,Math.floor(480/Math.max(rows,cols,1))));
 cv.width=cols*cell;cv.height=rows*cell;var ctx=cv.getContext('2d');var mx=0;
 hm.cells.forEach(function(r){r.forEach(function(v){if(v>mx)mx=v;});});
 hm.cells.forEach(function(r,y){r.forEach(function(v,x){ctx.fillStyle=colour(mx>0?v/mx:0);ctx.fillRect(x*cell,y*cell,cell,cell);});});
 cv.setAttribute('data-drawn','1');document.getElementById('heatmap-max').textContent=mx.toPrecision(3);cv.setAttribute('data-max',String(mx));}
var plot=document.getElementById('entry-plot');if(!plot)return;
var rowsAll=Array.prototype.slice.call(plot.querySelectorAll('.row'));
function apply(){var k=document.getElementById('f-kind').value,s=document.getElementById('f-status').value,
 q=document.getElementById('f-text').value.toLowerCase(),by=document.getElementById('f-sort').value,shown=0;
 rowsAll.forEach(function(r){var ok=(!k||r.dataset.kind===k)&&(!s||r.dataset.status===s)&&(!q||r.dataset.key.toLowerCase().indexOf(q)>=0);
  r.style.display=ok?'':'none';if(ok)shown++;});
 plot.querySelectorAll('details.group').forEach(function(d){var box=d.querySelector(':scope>.rows');if(!box)return;
  var rs=Array.prototype.slice.call(box.children);rs.sort(function(a,b){
   if(by==='error')return parseFloat(b.dataset.err)-parseFloat(a.dataset.err);
   if(by==='status')return (a.dataset.status===b.dataset.status?0:(a.dataset.status==='fail'?-1:1))||(a.dataset.order-b.dataset.order);
   if(by==='kind')return a.dataset.kind.localeCompare(b.dataset.kind)||(a.dataset.order-b.dataset.order);
   return a.dataset.order-b.dataset.order;});rs.forEach(function(r){box.appendChild(r);});});
 plot.querySelectorAll('details.group').forEach(function(d){var any=Array.prototype.some.call(d.querySelectorAll('.row'),function(r){return r.style.display!=='none';});
  d.style.display=any?'':'none';if((q||s==='fail')&&any)d.open=true;});
 document.getElementById('shown-count').textContent=String(shown);}
var ids={kind:'f-kind',status:'f-status',key:'f-text',sort:'f-sort'};
location.hash.replace(/^#/,'').split('&').forEach(function(kv){var p=kv.split('=');if(ids[p[0]]&&p.length===2)
 document.getElementById(ids[p[0]]).value=decodeURIComponent(p[1]);});
Object.keys(ids).forEach(function(k){var el=document.getElementById(ids[k]);el.addEventListener('input',apply);el.addEventListener('change',apply);});
apply();plot.setAttribute('data-ready','1');
})();
"""


def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def _num(v: Any) -> str:
    return "" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def _status_class(status: str) -> str:
    return {PASS: "pass", FAIL: "fail"}.get(status, "notrun")


def _stages(report: dict[str, Any]) -> list[str]:
    out = [
        '<h2>Stages (in the order porters align)</h2><table id="stages"><tr><th>stage</th><th>verdict</th>'
        "<th>from</th><th>findings</th></tr>"
    ]
    for s in report["stages"]:
        cls = _status_class(s["status"])
        out.append(
            f'<tr class="{cls if cls == "fail" else ""}" data-stage="{_e(s["name"])}"><td>{_e(s["name"])}</td>'
            f'<td class="{cls}">{_e(s["status"])}</td><td>{_e(", ".join(s["sources"]))}</td>'
            f"<td>{len(s['findings'])}</td></tr>"
        )
    out.append("</table>")
    for s in report["stages"]:
        if s["status"] == "not run":
            continue
        out.append(
            f'<h3 id="stage-{_e(s["name"])}">{_e(s["name"])}: <span class="{_status_class(s["status"])}">'
            f'{_e(s["status"])}</span></h3><ul class="findings">'
            + "".join(f"<li>{_e(f)}</li>" for f in s["findings"])
            + "</ul>"
        )
        if s["tolerances"]:
            out.append('<p class="muted">tolerances: ' + "; ".join(_e(t) for t in s["tolerances"]) + "</p>")
    return out


def _histogram_svg(hist: dict[str, Any], atol: float | None) -> str:
    w, h, left, bottom = 520, 180, 50, 30
    counts = hist["counts"]
    bars = [("exact 0", hist["zeros"])] if hist["zeros"] else []
    top = max(counts + [1]) if counts else max(hist["zeros"], 1)  # the exact-zero bar is clipped, its count written
    parts = [
        f'<svg id="error-histogram" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'role="img" aria-label="histogram of |a-b|">',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}" stroke="#444"/>',
    ]
    x0 = left
    if bars:
        bh = (h - bottom - 10) * min(1.0, hist["zeros"] / top)
        parts.append(
            f'<rect class="zeros" x="{x0}" y="{h - bottom - bh:.1f}" width="24" height="{bh:.1f}" fill="#999">'
            f"<title>{hist['zeros']} elements exactly equal</title></rect>"
            f'<text x="{x0}" y="{h - bottom + 14}">0</text>'
            f'<text x="{x0}" y="{h - bottom - bh - 2:.1f}">{hist["zeros"]}</text>'
        )
        x0 += 34
    if counts:
        lo, hi = hist["lo"], hist["hi"]
        bw = (w - 10 - x0) / len(counts)
        for i, c in enumerate(counts):
            bh = (h - bottom - 10) * c / top
            a, b = lo + (hi - lo) * i / len(counts), lo + (hi - lo) * (i + 1) / len(counts)
            parts.append(
                f'<rect class="bin" x="{x0 + i * bw:.1f}" y="{h - bottom - bh:.1f}" width="{max(bw - 1, 1):.1f}" '
                f'height="{bh:.1f}" fill="#6a9fd4"><title>{c} elements with |a-b| in '
                f"[{10**a:.3g}, {10**b:.3g})</title></rect>"
            )
        for frac in (0, 0.5, 1):
            val = lo + (hi - lo) * frac
            parts.append(
                f'<text x="{x0 + (w - 10 - x0) * frac - (30 if frac == 1 else 0):.1f}" y="{h - bottom + 14}">'
                f"{10**val:.2g}</text>"
            )
        if atol and atol > 0 and lo <= math.log10(atol) <= hi:
            ax = x0 + (w - 10 - x0) * (math.log10(atol) - lo) / (hi - lo)
            parts.append(
                f'<line class="atol" x1="{ax:.1f}" y1="5" x2="{ax:.1f}" y2="{h - bottom}" stroke="#c62828" '
                f'stroke-dasharray="4 3"/><text x="{ax + 3:.1f}" y="14" fill="#c62828">atol</text>'
            )
    parts.append(f'<text x="{left}" y="{h - 4}">|a - b| (log scale); bar height = elements</text></svg>')
    return "".join(parts)


def _sample_note(hist: dict[str, Any]) -> str:
    if hist.get("every", 1) <= 1:
        return ""
    return f"of {hist['sampled']} elements sampled (one chunk in {hist['every']}): "


def _picture(t: dict[str, Any] | None) -> list[str]:
    if t is None:
        return [
            '<h2>First divergent tensor</h2><p class="muted" id="no-picture">No failing tensor pair to picture '
            "(every pair passes, or no runs were given: --runs RUN_A RUN_B).</p>"
        ]
    hm = t["heatmap"]
    names = _e(t["key"]) + ("" if not t.get("key_a") or t["key_a"] == t["key"] else f" (run A: {_e(t['key_a'])})")
    data = json.dumps({"cells": hm["cells"]}).replace("</", "<\\/")
    return [
        f"<h2>First divergent tensor</h2><p><b>{names}</b> {_e(t['kind'])} step {t['step']} rank {t['rank']}, "
        f'shape {t["shape"]}: {_e(t["reason"])}<br><span class="muted">from {_e(t.get("source", ""))}; '
        f"tolerance atol {_num(t.get('atol'))}, rtol {_num(t.get('rtol'))}</span></p>",
        f'<h3>Where the error lives</h3><p class="muted">|a - b|: {_e(hm["how"])} ({hm["rows"]} x {hm["cols"]}'
        f"{'' if len(hm['cells']) == hm['rows'] and len(hm['cells'][0]) == hm['cols'] else ', cells summed block by block'}"
        f'); dark = 0, bright = the largest cell (<span id="heatmap-max"></span>)</p>',
        f'<canvas id="heatmap" width="10" height="10" style="image-rendering:pixelated;border:1px solid #ccc">'
        f'</canvas><script type="application/json" id="heatmap-data">{data}</script>',
        f'<h3>Error histogram</h3><p class="muted">{_sample_note(t["histogram"])}{t["histogram"]["zeros"]} elements exactly equal'
        f"{', ' + str(t['histogram']['nonfinite']) + ' non-finite' if t['histogram']['nonfinite'] else ''}</p>",
        _histogram_svg(t["histogram"], t.get("atol")),
    ]


def _tree(items: list[dict[str, Any]]) -> dict[str, Any]:
    root: dict[str, Any] = {"children": {}, "rows": []}
    for order, item in enumerate(items):
        parts = str(item.get("key", "")).split(".")
        node = root["children"].setdefault(
            f"step {item.get('step')} rank {item.get('rank')}", {"children": {}, "rows": []}
        )
        for part in parts[:-1]:
            node = node["children"].setdefault(part, {"children": {}, "rows": []})
        node["rows"].append((order, item))
    return root


def _fold(name: str, node: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    while not node["rows"] and len(node["children"]) == 1:
        ((child, sub),) = node["children"].items()
        name, node = f"{name}.{child}", sub
    return name, node


def _all_rows(node: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [i for _, i in node["rows"]]
    for sub in node["children"].values():
        rows += _all_rows(sub)
    return rows


def _err(item: dict[str, Any]) -> float:
    v = item.get("rel_l2") if item.get("rel_l2") is not None else item.get("max_abs")
    if v is None:
        return 0.0 if item.get("passed") else 1.0
    return float(v)


def _row(order: int, item: dict[str, Any]) -> str:
    err = _err(item)
    width = 0 if err <= 0 else max(2, min(100, (math.log10(err) + 12) / 14 * 100))
    status = item.get("status") or ("pass" if item.get("passed") else "fail")
    name = _e(item.get("key"))
    if item.get("key_a") and item["key_a"] != item.get("key"):
        name += f' <span class="muted">(A: {_e(item["key_a"])})</span>'
    shape = (
        item.get("shape_a")
        if item.get("shape_a") == item.get("shape_b")
        else f"{item.get('shape_a')} vs {item.get('shape_b')}"
    )
    return (
        f'<div class="row {"fail" if status == "fail" else ""}" data-order="{order}" data-kind="{_e(item.get("kind"))}" '
        f'data-status="{_e(status)}" data-err="{err:.6g}" data-key="{_e(item.get("key"))}">'
        f"<span>{name}</span><span>{_e(shape)}</span><span>{_e(status)}</span>"
        f'<span title="rel_l2 (else max_abs), log scale 1e-12..1e2"><span class="bar" style="width:{width:.0f}%"></span> '
        f"{'0' if err == 0 else f'{err:.2g}'}</span><span>max {_num(item.get('max_abs'))}</span>"
        f"<span>{_e(item.get('kind'))}</span><span>{_e(item.get('reason') or '')}</span></div>"
    )


def _group(name: str, node: dict[str, Any], out: list[str]) -> None:
    name, node = _fold(name, node)
    rows = _all_rows(node)
    bad = sum(1 for i in rows if (i.get("status") or ("pass" if i.get("passed") else "fail")) == "fail")
    worst = max((_err(i) for i in rows), default=0.0)
    out.append(
        f'<details class="group"{" open" if bad else ""}><summary>{_e(name)} '
        f'<span class="{"fail" if bad else "pass"}">{len(rows) - bad}/{len(rows)} pass</span> '
        f'<span class="muted">worst {worst:.2g}</span></summary>'
    )
    if node["rows"]:
        out.append('<div class="rows">' + "".join(_row(o, i) for o, i in node["rows"]) + "</div>")
    for child, sub in node["children"].items():
        _group(child, sub, out)
    out.append("</details>")


def _entries(report: dict[str, Any]) -> list[str]:
    blocks = [e for e in report.get("entries", []) if e["items"]]
    if not blocks:
        return []
    kinds = sorted({i.get("kind") for b in blocks for i in b["items"]})
    total = sum(len(b["items"]) for b in blocks)
    out = [
        '<h2>Per-entry errors, grouped by module</h2><p class="muted">Groups with a failing entry are open; '
        "passing groups are folded (click to expand). Bar: rel_l2 (else max_abs) on a log scale; an exact 0 has "
        'no bar.</p><div class="controls">'
        '<label>kind <select id="f-kind"><option value="">all</option>'
        + "".join(f'<option value="{_e(k)}">{_e(k)}</option>' for k in kinds)
        + "</select></label>"
        '<label>status <select id="f-status"><option value="">all</option><option value="fail">fail</option>'
        '<option value="pass">pass</option><option value="by-nature">by-nature</option></select></label>'
        '<label>key <input id="f-text" type="search" placeholder="filter"></label>'
        '<label>sort <select id="f-sort"><option value="order">recording order</option><option value="error">'
        'error</option><option value="status">status</option><option value="kind">kind</option></select></label>'
        '<span class="muted">(also from the address: #status=fail&amp;kind=grad&amp;key=res2&amp;sort=error)</span>'
        f'<span><span id="shown-count">{total}</span> of {total} shown</span></div><div id="entry-plot">'
    ]
    for block in blocks:
        out.append(f'<h3 class="muted">{_e(block["source"])}</h3>')
        for name, node in _tree(block["items"])["children"].items():
            _group(name, node, out)
    out.append("</div>")
    return out


def render_html(report: dict[str, Any]) -> str:
    """The whole page for a report document (:func:`bridge.report.build_report`)."""
    first = report["first_failing_stage"]
    verdict = "PASS: every stage passes" if first is None else f"FAIL: first failing stage: {first}"
    body = [
        f'<h1>d2-mmdet-bridge alignment report</h1><p id="verdict" class="{"pass" if first is None else "fail"}">'
        f"{_e(verdict)}</p>"
    ]
    if first is not None:
        stage = next(s for s in report["stages"] if s["name"] == first)
        body.append(
            f'<div class="first" id="first-failing"><h2>First failing stage: {_e(first)}</h2><ul class="findings">'
            + "".join(f"<li>{_e(f)}</li>" for f in stage["findings"])
            + "</ul></div>"
        )
    body += _stages(report)
    body += _picture(report.get("first_divergent_tensor"))
    body += _entries(report)
    body.append(
        '<h2>Pieces</h2><table id="pieces"><tr><th>file</th><th>type</th><th>written by</th></tr>'
        + "".join(
            f"<tr><td>{_e(p['path'])}</td><td>{_e(p['type'])}</td><td>{_e(p['written_by'])}</td></tr>"
            for p in report["pieces"]
        )
        + "</table>"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>alignment report: '
        f"{_e(verdict)}</title><style>{_CSS}</style></head><body>"
        + "".join(body)
        + f"<script>{_JS}</script></body></html>\n"
    )
