"""Stage verdicts: what each piece says about weights, metadata, inference, losses, gradients, optimizer and
evaluation, in the order porters align them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.meta import diff_metadata

from .pieces import Piece, PieceError

#: The stages in the order porters align them; the first failing one goes on top of the report.
STAGES: tuple[str, ...] = ("weights", "metadata", "inference", "losses", "gradients", "optimizer", "evaluation")

#: Compare-record kind → stage. Canonical output results (panoptic, instances, semantic) go to evaluation.
KIND_STAGE = {
    "batch": "inference",
    "activation": "inference",
    "output": "inference",
    "meta": "inference",
    "loss": "losses",
    "matching": "losses",
    "grad": "gradients",
    "param": "optimizer",
}

PASS, FAIL, NOT_RUN = "pass", "fail", "not run"
_LIST = 8  # how many names a finding lists before "... and N more"


@dataclass
class Stage:
    """One stage's verdict: ``pass``, ``fail`` or ``not run`` (no piece covers it), with the findings that
    explain it, the tolerances used and the pieces it was judged from."""

    name: str
    status: str = NOT_RUN
    findings: list[str] = field(default_factory=list)
    tolerances: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def judge(self, ok: bool, source: str) -> None:
        """Record one piece's verdict: any failure makes the stage fail."""
        if source not in self.sources:
            self.sources.append(source)
        if not ok:
            self.status = FAIL
        elif self.status == NOT_RUN:
            self.status = PASS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "name": self.name,
            "status": self.status,
            "findings": self.findings,
            "tolerances": self.tolerances,
            "sources": self.sources,
        }


def _names(values: Sequence[Any]) -> str:
    shown = ", ".join(str(v) for v in values[:_LIST])
    return shown + (f", ... and {len(values) - _LIST} more" if len(values) > _LIST else "")


def _conversion(stage: Stage, piece: Piece) -> None:
    d, src = piece.data, str(piece.path)
    counts = d.get("counts") or {}
    stage.judge(bool(d.get("ok")), src)
    stage.findings.append(
        f"conversion ({src}): {counts.get('converted', len(d['converted']))} converted, "
        f"{counts.get('dropped', 0)} dropped, {counts.get('added', 0)} added"
        + ("" if d.get("has_target", True) else " (no target given: keys not checked)")
    )
    for key, what in (("missing", "missing in the converted checkpoint"), ("unexpected", "unexpected")):
        if d[key]:
            stage.findings.append(f"{len(d[key])} keys {what}: {_names(d[key])}")
    if d["shape_mismatch"]:
        rows = [f"{r['key']} {r['got']} vs {r['expected']}" for r in d["shape_mismatch"]]
        stage.findings.append(f"{len(rows)} shape mismatches: {_names(rows)}")
    for key, cands in (d.get("suggestions") or {}).items():
        if cands:
            stage.findings.append(f"suggestion for {key}: {cands[0].get('key')} (rule {cands[0].get('rule')})")
    if d.get("unused_rules"):
        stage.findings.append(f"rules that matched nothing: {_names(d['unused_rules'])}")
    check = d.get("strict_check")
    if check is not None:
        stage.findings.append(
            "strict load into the target model: "
            + ("ok" if check.get("ok") else f"FAILED {check.get('error', '')}".strip())
        )
    stage.tolerances.append("conversion: keys and shapes exact")


def _initcheck(stage: Stage, piece: Piece) -> None:
    d, src = piece.data, str(piece.path)
    stage.judge(bool(d.get("ok")), src)
    rows = d["rows"]
    by: dict[str, list[str]] = {}
    for row in rows:
        by.setdefault(str(row.get("verdict")), []).append(str(row.get("key")))
    stage.findings.append(
        f"initialisation ({src}, seed {d.get('seed')}): " + ", ".join(f"{len(v)} {k}" for k, v in sorted(by.items()))
    )
    for verdict, keys in sorted(by.items()):
        if verdict not in ("equal", "same-distribution"):
            stage.findings.append(f"{verdict}: {_names(keys)}")
    stage.tolerances.append("initcheck: equal, or a two-sample Kolmogorov-Smirnov test not rejecting at alpha 0.001")


def _metadata(
    stage: Stage,
    piece_a: Piece,
    piece_b: Piece | None,
    diffs: list[dict[str, Any]],
    accepted: Sequence[dict[str, Any]] = (),
) -> None:
    """Judge the metadata differences; one that an ``accepted`` known difference matches (its ``match`` in the
    field or the sentence) is listed as accepted, with the recipe's note, and does not fail the stage."""
    src = str(piece_a.path) if piece_b is None else f"{piece_a.path} + {piece_b.path}"
    texts = [f"{d['field']}: {d['sentence']}" for d in diffs]
    reasons = [next((entry["note"] for entry in accepted if entry["match"] in text), None) for text in texts]
    open_diffs = [text for text, reason in zip(texts, reasons) if reason is None]
    stage.judge(not open_diffs, src)
    summary = "equivalent" if not diffs else f"{len(diffs)} differences"
    if len(open_diffs) < len(diffs):
        summary += f", {len(diffs) - len(open_diffs)} accepted by the recipe"
    stage.findings.append(f"evaluator metadata ({src}): {summary}")
    stage.findings.extend(open_diffs)
    stage.findings.extend(f"accepted difference: {text} ({reason})" for text, reason in zip(texts, reasons) if reason)
    stage.tolerances.append(
        "metadata: classes, ids, labels and evaluator settings exact, unless accepted by the recipe"
    )


def metadata_differences(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """The differences of two normalized metadata documents as JSON-ready dicts (``bridge.meta``)."""
    return [
        {"field": d.field, "a_value": d.a_value, "b_value": d.b_value, "sentence": d.sentence}
        for d in diff_metadata(a, b)
    ]


def _tolerance_text(settings: dict[str, Any]) -> list[str]:
    tol = settings.get("tolerance") or {}
    out = []
    if tol.get("atol") is not None or tol.get("rtol") is not None:
        out.append(f"compare: every float leaf atol {tol.get('atol')}, rtol {tol.get('rtol')}")
    for rule in tol.get("rules") or []:
        out.append(f"compare --tol {rule.get('pattern')}: atol {rule.get('atol')}, rtol {rule.get('rtol')}")
    defaults = tol.get("dtype_defaults") or {}
    if defaults:
        out.append(
            "compare dtype defaults (atol, rtol): " + ", ".join(f"{k} {v[0]:g}/{v[1]:g}" for k, v in defaults.items())
        )
    out.append("compare: integer, bool, str leaves and kind matching exact; |a-b| <= atol + rtol*|b| for floats")
    return out


def _compare(stages: dict[str, Stage], piece: Piece) -> None:
    d, src = piece.data, str(piece.path)
    per_stage: dict[str, dict[str, list[Any]]] = {}
    for item in d["items"]:
        bucket = per_stage.setdefault(
            KIND_STAGE.get(item.get("kind"), "inference"), {"items": [], "fail": [], "only": []}
        )
        bucket["items"].append(item)
        if not item.get("passed"):
            bucket["fail"].append(item)
    outputs = [("panoptic", p, bool(p.get("identical"))) for p in d.get("panoptic") or []]
    outputs += [("instances", p, bool(p.get("passed"))) for p in d.get("instances") or []]
    outputs += [("semantic", p, bool(p.get("passed"))) for p in d.get("semantic") or []]
    unpaired = [(loc, "A") for loc in d["unpaired"]["a_only"]] + [(loc, "B") for loc in d["unpaired"]["b_only"]]
    for loc, side in unpaired:
        canonical = loc.get("kind") == "output" and str(loc.get("key", "")).split(".")[0] in (
            "panoptic",
            "instances",
            "semantic",
        )
        name = "evaluation" if canonical else KIND_STAGE.get(loc.get("kind"), "inference")
        per_stage.setdefault(name, {"items": [], "fail": [], "only": []})["only"].append((loc, side))
    tol_text = _tolerance_text(d.get("settings") or {})
    for name, bucket in per_stage.items():
        stage = stages[name]
        stage.judge(not bucket["fail"] and not bucket["only"], src)
        n, bad = len(bucket["items"]), len(bucket["fail"])
        kinds = sorted({i.get("kind") for i in bucket["items"]})
        if n:
            stage.findings.append(f"compare ({src}): {n - bad} of {n} pairs pass ({', '.join(kinds)})")
        for item in bucket["fail"][:_LIST]:
            stage.findings.append(
                f"FAIL step {item.get('step')} rank {item.get('rank')} {item.get('kind')} "
                f"{item.get('key')}: {item.get('reason')}"
            )
        if bad > _LIST:
            stage.findings.append(f"... and {bad - _LIST} more failing pairs")
        if bucket["only"]:
            stage.findings.append(
                f"{len(bucket['only'])} leaves without a partner: "
                + _names(
                    [f"{loc.get('key')} ({loc.get('reason') or 'only in run ' + side})" for loc, side in bucket["only"]]
                )
            )
        stage.tolerances.extend(t for t in tol_text if t not in stage.tolerances)
    if outputs and d.get("outputs_counted", True):
        stage = stages["evaluation"]
        for form, p, ok in outputs:
            stage.judge(ok, src)
            stage.findings.append(
                f"{form} {p.get('name')} step {p.get('step')}: {'agrees' if ok else 'DIFFERS'}"
                + _output_summary(form, p)
            )
        stage.tolerances.append(
            "outputs: panoptic identical; instances matched in category, scores/boxes within "
            "the compare tolerance, masks identical unless --tol; semantic maps every pixel "
            "unless --tol"
        )
    first = d.get("first_divergence")
    if first:
        canonical = first.get("kind") == "output" and str(first.get("key", "")).split(".")[0] in (
            "panoptic",
            "instances",
            "semantic",
        )
        stage = stages["evaluation" if canonical else KIND_STAGE.get(first.get("kind"), "inference")]
        last = d.get("last_passing_before")
        stage.findings.insert(
            0,
            f"first divergence ({src}): step {first.get('step')} rank {first.get('rank')} "
            f"{first.get('kind')} {first.get('key')}: {first.get('reason')}"
            + (f"; last passing before it: {last.get('kind')} {last.get('key')}" if last else ""),
        )
    if d.get("by_nature"):
        stages["inference"].findings.append(
            f"{len(d['by_nature'])} unpaired leaves differ by nature (paths, timestamps, raw framework "
            f"structures; not divergences): {_names([loc.get('key') for loc in d['by_nature']])}"
        )
    design = (d.get("settings") or {}).get("unpaired_by_design") or []
    if design:
        stage = stages[KIND_STAGE.get(design[0].get("kind"), "inference")]
        stage.findings.append(
            f"{len(design)} leaves unpaired by design of the --map rules: "
            + _names([f"{x.get('key')} ({x.get('reason')})" for x in design])
        )


def _output_summary(form: str, p: dict[str, Any]) -> str:
    if form == "panoptic":
        return (
            f" (PQ {p.get('pq', 0):.2f}, category agreement {p.get('category_agreement', 0):.4f}, "
            f"relabelled {len(p.get('relabelled') or [])}, unmatched A/B {len(p.get('unmatched_a') or [])}/"
            f"{len(p.get('unmatched_b') or [])})"
        )
    if form == "instances":
        fails = "; ".join(p.get("failures") or [])
        return (
            f" ({p.get('matched')} of {p.get('n_a')}/{p.get('n_b')} detections matched"
            + (f"; {fails}" if fails else "")
            + ")"
        )
    return f" (pixel agreement {p.get('agreement', 0):.4f}, {p.get('differing')} of {p.get('pixels')} differ)"


def _parity(stage: Stage, piece: Piece) -> None:
    d, src = piece.data, str(piece.path)
    stage.judge(bool(d.get("parity")), src)
    stage.findings.append(
        f"evaluator tables ({src}): "
        + ("at parity" if d.get("parity") else f"differ in {_names(d.get('differing') or [])}")
    )
    stage.findings.extend(f"known reason: {r}" for r in d.get("reasons") or [])
    stage.tolerances.append(f"evaluator tables: |detectron2 - mmdet| <= {d.get('tolerance')} per metric")


def _known_entries(piece: Piece) -> list[dict[str, Any]]:
    """The checked entries of a ``known`` piece: ``{stage, match, note}`` and optionally ``accept: true`` (only
    for stage ``metadata``); :class:`PieceError` naming the file and the entry otherwise."""
    entries = piece.data["known_differences"]
    if not isinstance(entries, list):
        raise PieceError(f"{piece.path}: known_differences must be a list")
    for n, entry in enumerate(entries):
        if (
            not isinstance(entry, dict)
            or entry.get("stage") not in STAGES
            or not all(isinstance(entry.get(k), str) and entry.get(k) for k in ("match", "note"))
            or entry.get("accept") not in (None, True, False)
            or (entry.get("accept") is True and entry["stage"] != "metadata")
        ):
            raise PieceError(
                f"{piece.path}: known_differences[{n}]: expected {{stage: one of {', '.join(STAGES)}, "
                "match: text, note: text, accept: true (stage metadata only)}"
            )
    return entries


def _known(stages: dict[str, Stage], piece: Piece) -> None:
    """Explain known differences where they show: each entry ``{stage, match, note}`` of the piece adds
    ``known difference: NOTE`` to its stage when one of that stage's findings contains ``match``. Verdicts
    stay as they are (a known difference is still a difference), except for evaluator-metadata differences an
    entry accepts (``accept: true``), which :func:`_metadata` lists as accepted."""
    for entry in _known_entries(piece):
        stage = stages[entry["stage"]]
        if entry.get("accept") is not True and any(entry["match"] in finding for finding in stage.findings):
            stage.findings.append(f"known difference ({entry['match']}): {entry['note']}")


def judge(pieces: Sequence[Piece]) -> list[Stage]:
    """The stages, in :data:`STAGES` order, judged from ``pieces``. Normalized metadata documents pair up in
    the order given (two make one diff); an odd one out is bad input (:class:`PieceError`)."""
    stages = {name: Stage(name) for name in STAGES}
    accepted = [
        entry
        for piece in pieces
        if piece.type == "known"
        for entry in _known_entries(piece)
        if entry.get("accept") is True
    ]
    pending_meta: Piece | None = None
    for piece in pieces:
        if piece.type == "conversion":
            _conversion(stages["weights"], piece)
        elif piece.type == "initcheck":
            _initcheck(stages["weights"], piece)
        elif piece.type == "metadata_diff":
            _metadata(stages["metadata"], piece, None, list(piece.data["differences"]), accepted)
        elif piece.type == "metadata":
            if pending_meta is None:
                pending_meta = piece
                continue
            _metadata(
                stages["metadata"], pending_meta, piece, metadata_differences(pending_meta.data, piece.data), accepted
            )
            pending_meta = None
        elif piece.type == "compare":
            _compare(stages, piece)
        elif piece.type == "parity":
            _parity(stages["evaluation"], piece)
    for piece in pieces:
        if piece.type == "known":
            _known(stages, piece)
    if pending_meta is not None:
        raise PieceError(
            f"{pending_meta.path}: a metadata document needs its counterpart from the other framework "
            "(give both, or the diff written by python -m bridge.meta A B --json OUT)"
        )
    return [stages[name] for name in STAGES]


def first_failing(stages: Sequence[Stage]) -> Stage | None:
    """The first failing stage in alignment order, or None."""
    return next((s for s in stages if s.status == FAIL), None)


def exit_code(stages: Sequence[Stage]) -> int:
    """0 when no stage fails, 1 otherwise."""
    return 1 if first_failing(stages) else 0
