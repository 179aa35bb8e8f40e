"""Compare a conversion to the target's keys/shapes; suggest renames for unmatched keys; render tables."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bridge.convert.engine import ConversionResult
from bridge.folding import fold_keys, matches_folded

__all__ = [
    "Report",
    "compare_to_target",
    "fold_keys",
    "fold_shape_mismatch",
    "matches_folded",
    "render_report",
    "report_without_target",
    "suggest_counterparts",
]


@dataclass
class Report:
    """Result of comparing converted keys to a target: every list is sorted."""

    converted: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, list[int], list[int]]] = field(default_factory=list)
    suggestions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    has_target: bool = False
    rule_hits: dict[str, int] = field(default_factory=dict)
    unused_rules: list[str] = field(default_factory=list)
    strict_check: dict[str, Any] | None = None  # the mmdet strict load of the written file, when run

    @property
    def ok(self) -> bool:
        """True when nothing is missing, unexpected or of the wrong shape, and a strict load (if run) passed."""
        strict_ok = self.strict_check is None or bool(self.strict_check.get("ok"))
        return strict_ok and not (self.missing or self.unexpected or self.shape_mismatch)

    def exit_code(self) -> int:
        """0 when fully matched (or no target given), 1 otherwise."""
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the report."""
        return {
            "ok": self.ok,
            "has_target": self.has_target,
            "counts": {
                k: len(getattr(self, k))
                for k in ("converted", "dropped", "added", "missing", "unexpected", "shape_mismatch")
            },
            "converted": [{"source": s, "target": t} for s, t in self.converted],
            "dropped": [{"key": k, "rule": r} for k, r in self.dropped],
            "added": self.added,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "shape_mismatch": [{"key": k, "got": g, "expected": e} for k, g, e in self.shape_mismatch],
            "suggestions": self.suggestions,
            "rule_hits": self.rule_hits,
            "unused_rules": self.unused_rules,
            "strict_check": self.strict_check,
        }


_TOKEN_RE = re.compile(r"[A-Za-z]+|\d+")


def _tokens(key: str) -> set[str]:
    return set(_TOKEN_RE.findall(key))


def _literal(key: str) -> str:
    """``key`` as a rule template (braces escaped)."""
    return key.replace("{", "{{").replace("}", "}}")


def suggest_counterparts(
    key: str,
    shape: tuple[int, ...] | None,
    candidates: dict[str, tuple[int, ...] | None],
    *,
    key_is_source: bool = True,
    position: float | None = None,
    positions: dict[str, float] | None = None,
    top: int = 3,
) -> list[dict[str, Any]]:
    """Rank ``candidates`` as counterparts of ``key``: same shape, shared name tokens, similar position.

    Each suggestion carries a ready-to-paste rename rule that goes from the converted (source-side) name
    to the target name: ``from`` = ``key`` and ``to`` = the candidate when ``key`` is an unexpected
    (converted) key (``key_is_source``), ``from`` = the candidate and ``to`` = ``key`` when ``key`` is a
    missing (target) key.
    """
    mine = _tokens(key)
    last = key.rsplit(".", 1)[-1]
    scored: list[tuple[float, str]] = []
    for cand, cshape in candidates.items():
        theirs = _tokens(cand)
        score = len(mine & theirs) / max(1, len(mine | theirs))
        if shape is not None and cshape is not None:
            score += 1.0 if tuple(cshape) == tuple(shape) else -0.5
        if cand.rsplit(".", 1)[-1] == last:
            score += 0.3
        if position is not None and positions and cand in positions:
            score += 0.3 * (1.0 - min(1.0, abs(positions[cand] - position)))
        scored.append((score, cand))
    scored.sort(key=lambda x: (-x[0], x[1]))
    suggestions = []
    for score, cand in scored[:top]:
        source, target = (key, cand) if key_is_source else (cand, key)
        suggestions.append(
            {
                "key": cand,
                "score": round(score, 3),
                "rule": {"kind": "rename", "from": "^" + re.escape(source) + "$", "to": _literal(target)},
            }
        )
    return suggestions


def compare_to_target(result: ConversionResult, target_shapes: dict[str, tuple[int, ...]]) -> Report:
    """Compare the converted state dict to ``target_shapes`` and build a Report with suggestions."""
    got = {k: tuple(v.shape) for k, v in result.state_dict.items()}
    report = report_without_target(result)
    report.has_target = True
    target = {k: tuple(v) for k, v in target_shapes.items()}
    report.missing = sorted(k for k in target if k not in got)
    report.unexpected = sorted(k for k in got if k not in target)
    report.shape_mismatch = sorted(
        (k, list(got[k]), list(target[k])) for k in got if k in target and got[k] != target[k]
    )
    got_pos = {k: i / max(1, len(got) - 1) for i, k in enumerate(got)}
    tgt_pos = {k: i / max(1, len(target) - 1) for i, k in enumerate(target)}
    missing_c = {k: target[k] for k in report.missing}
    unexp_c = {k: got[k] for k in report.unexpected}
    if missing_c:
        for key in report.unexpected:
            report.suggestions[key] = suggest_counterparts(
                key, got[key], missing_c, key_is_source=True, position=got_pos[key], positions=tgt_pos
            )
    if unexp_c:
        for key in report.missing:
            report.suggestions[key] = suggest_counterparts(
                key, target[key], unexp_c, key_is_source=False, position=tgt_pos[key], positions=got_pos
            )
    return report


def report_without_target(result: ConversionResult) -> Report:
    """A report of a conversion that has no target to compare to."""
    return Report(
        converted=sorted(result.converted, key=lambda x: x[1]),
        dropped=sorted(result.dropped),
        added=sorted(result.added),
        rule_hits=dict(result.rule_hits),
        unused_rules=list(result.unused_rules),
    )


def fold_shape_mismatch(rows: list[tuple[str, list[int], list[int]]]) -> list[tuple[str, list[int], list[int]]]:
    """Fold the keys of shape-mismatch rows that have the same (got, expected) shapes, like :func:`fold_keys`."""
    groups: dict[tuple[tuple[int, ...], tuple[int, ...]], list[str]] = {}
    for key, got, expected in rows:
        groups.setdefault((tuple(got), tuple(expected)), []).append(key)
    folded = [(name, list(got), list(exp)) for (got, exp), keys in groups.items() for name in fold_keys(keys)]
    return sorted(folded)


def _rule_text(rule: dict[str, Any]) -> str:
    return f"{{kind: rename, from: '{rule['from']}', to: '{rule['to']}'}}"


def render_report(report: Report, console: Any = None, *, title: str = "conversion", quiet: bool = False) -> None:
    """Print the report as rich tables (layer indices folded) to ``console`` (default: stdout), with the
    suggested rule of each unmatched key, the strict-load check and a warning per rule that matched nothing;
    ``quiet`` prints one verdict line and the warnings instead of the tables."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console(width=max(160, Console().width))
    if quiet:
        counts = ", ".join(
            f"{len(getattr(report, name))} {name}"
            for name in ("converted", "dropped", "added", "missing", "unexpected", "shape_mismatch")
        )
        verdict = ("fully matched" if report.ok else "NOT matched") if report.has_target else "no target given"
        console.print(f"{title}: {verdict} ({counts})", markup=False)
        for label in report.unused_rules:
            console.print(f"warning: rule {label} matched no key", markup=False)
        return
    summary = Table(
        title=f"{title}: {'fully matched' if report.ok else 'NOT matched'}"
        if report.has_target
        else f"{title} (no target given)"
    )
    summary.add_column("category")
    summary.add_column("count", justify="right")
    for name in ("converted", "dropped", "added", "missing", "unexpected", "shape_mismatch"):
        summary.add_row(name, str(len(getattr(report, name))))
    console.print(summary)
    for name in ("missing", "unexpected"):
        keys = getattr(report, name)
        if not keys:
            continue
        table = Table(title=name)
        table.add_column("key (folded)", overflow="fold")
        table.add_column("best counterpart", overflow="fold")
        table.add_column("suggested rule (first key)", overflow="fold")
        for folded in fold_keys(keys):
            first = next((k for k in keys if matches_folded(k, folded)), None)
            sug = report.suggestions.get(first or "", [])
            table.add_row(
                escape(folded), escape(sug[0]["key"]) if sug else "", escape(_rule_text(sug[0]["rule"])) if sug else ""
            )
        console.print(table)
    if report.shape_mismatch:
        table = Table(title="shape_mismatch")
        for col in ("key (folded)", "got", "expected"):
            table.add_column(col, overflow="fold")
        for key, got, exp in fold_shape_mismatch(report.shape_mismatch):
            table.add_row(escape(key), str(got), str(exp))
        console.print(table)
    if report.strict_check is not None:
        check = report.strict_check
        if check.get("ok"):
            console.print("strict load into the target model: ok")
        else:
            console.print(
                f"strict load into the target model: FAILED ({len(check.get('missing', []))} missing, "
                f"{len(check.get('unexpected', []))} unexpected, "
                f"{len(check.get('size_mismatch', []))} size mismatch)",
                markup=False,
            )
            for key in ("missing", "unexpected"):
                if check.get(key):
                    console.print(f"  {key}: {', '.join(fold_keys(check[key]))}", markup=False)
    for label in report.unused_rules:
        console.print(f"warning: rule {label} matched no key", markup=False)
