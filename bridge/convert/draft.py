"""Draft a rule set from two key lists: pairs (``draft_pairing``) -> rules (``draft_rules``) -> a YAML file.

The draft is an ordinary rule file: stages ``draft-aliases`` (drop_alias), ``draft-drop`` (zero tensors),
``draft-classes`` (class_rows), ``draft-1``, ``draft-2``, ... (renames, specific before general) and
``draft-buffers`` (add).  Every rule carries ``name``, ``confidence`` (0..1) and ``covers`` (the number of
source keys it was drafted from), fields the rule loader keeps and ignores; a rule below
:data:`~bridge.convert.draft_pairing.LOW_CONFIDENCE` also has a ``note`` starting ``LOW CONFIDENCE``.
Keys left unpaired are listed at the end of the file with their three best candidates.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import yaml

from bridge.convert.draft_pairing import LOW_CONFIDENCE, Pairing, Side, leaf, pair_keys
from bridge.convert.draft_rules import Draft, generalise, order_stages
from bridge.convert.engine import convert_state_dict
from bridge.convert.report import compare_to_target
from bridge.convert.rules import load_rules
from bridge.errors import ConversionError

_NUM = re.compile(r"\d+")


@dataclass
class DraftResult:
    """The drafted rules (rule-language dicts, in order), the pairing they came from, and a self-check."""

    rules: list[dict[str, Any]]
    pairing: Pairing
    check: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        """Keys paired, rules, low-confidence rules and unpaired keys (source, target)."""
        return {
            "source_keys_paired": len(self.pairing.pairs),
            "aliases": len(self.pairing.aliases),
            "rules": len(self.rules),
            "low_confidence_rules": sum(1 for r in self.rules if r["confidence"] < LOW_CONFIDENCE),
            "unpaired_source": len(self.pairing.unpaired_source),
            "unpaired_target": len(self.pairing.unpaired_target),
        }


def _spec(d: Draft, stage: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"stage": stage, "kind": d.kind, "name": name, "from": d.regex}
    spec["to" if d.kind == "rename" else "of"] = d.template
    spec["confidence"] = d.confidence
    spec["covers"] = len(d.members)
    if d.confidence < LOW_CONFIDENCE:
        spec["note"] = "LOW CONFIDENCE" + (f": {d.note}" if d.note else ": few or dissimilar pairs; check the names")
    elif d.note:
        spec["note"] = d.note
    return spec


def _class_rule(keys: list[str], rows: tuple[int, int]) -> dict[str, Any]:
    src, tgt = rows
    regex = "^(?:" + "|".join(re.escape(k) for k in keys) + ")$"
    spec: dict[str, Any] = {
        "stage": "draft-classes",
        "kind": "class_rows",
        "name": f"class-rows-{src}-to-{tgt}",
        "from": regex,
        "dim": 0,
        "background": "none",
    }
    if src in (91, 92) and tgt == 80:
        spec.update(
            index="coco91_to_coco80",
            confidence=0.7,
            covers=len(keys),
            note="COCO category-id slots (91, + 1 spare) -> 80 contiguous classes; check the order",
        )
    elif tgt < src:
        spec.update(
            index=list(range(tgt)),
            confidence=0.3,
            covers=len(keys),
            note=f"LOW CONFIDENCE: keeps the first {tgt} of {src} rows; check which rows the target has",
        )
    else:
        raise ConversionError(f"class rows {keys[0]!r}: {src} rows cannot become {tgt}")
    return spec


def _class_rules(src: Side, tgt: Side, pairing: Pairing) -> list[dict[str, Any]]:
    by_rows: dict[tuple[int, int], list[str]] = defaultdict(list)
    for s in pairing.class_rows:
        by_rows[(src.shapes[s][0], tgt.shapes[pairing.pairs[s]][0])].append(s)
    out = []
    for rows, keys in sorted(by_rows.items()):
        if rows[1] > rows[0]:  # a target with more rows cannot be drafted: leave the pairs to the report
            continue
        out.append(_class_rule(sorted(keys), rows))
    return out


def _number_regex(keys: list[str]) -> str:
    """An anchored regex for ``keys`` of one name shape: numbers that vary become ``\\d+``, others stay."""
    numbers = [_NUM.findall(k) for k in keys]
    pieces = re.split(r"(\d+)", keys[0])
    out, pos = "", 0
    for n, piece in enumerate(pieces):
        if n % 2 == 0:
            out += re.escape(piece)
            continue
        out += piece if len({nums[pos] for nums in numbers}) == 1 else r"\d+"
        pos += 1
    return "^" + out + "$"


def _drop_rules(pairing: Pairing, source_keys: list[str]) -> list[dict[str, Any]]:
    """Unpaired all-zero source tensors: dropped while they stay zero (``if_zero``), one rule per name shape."""
    shapes: dict[str, list[str]] = defaultdict(list)
    for key in sorted(pairing.zero):
        shapes[_NUM.sub("#", key)].append(key)
    out = []
    for n, keys in enumerate(shapes.values()):
        regex = _number_regex(keys)
        if any(re.search(regex, k) for k in source_keys if k not in pairing.zero):
            regex = "^(?:" + "|".join(re.escape(k) for k in keys) + ")$"
        out.append(
            {
                "stage": "draft-drop",
                "kind": "drop",
                "name": f"zero-{n}",
                "from": regex,
                "if_zero": True,
                "confidence": 0.6,
                "covers": len(keys),
                "note": "all zeros and unpaired: dropped only while zero",
                "hint": "a non-zero tensor here needs a place in the target model",
            }
        )
        for key in keys:
            pairing.unpaired_source.remove(key)
    return out


def _add_rules(tgt: Side, pairing: Pairing) -> list[dict[str, Any]]:
    """Target-only ``num_batches_tracked`` buffers (BatchNorm's counter): added as int64 zeros."""
    counters = [k for k in pairing.unpaired_target if leaf(k) == "num_batches_tracked"]
    if not counters:
        return []
    modules = {k.rsplit(".", 1)[0] for k in counters}
    with_var = {k.rsplit(".", 1)[0] for k in tgt.shapes if leaf(k) == "running_var"}
    if modules == with_var:
        regex, note, conf = r"^(.*)\.running_var$", "every BatchNorm of the target counts batches", 0.9
    else:
        regex = "^(" + "|".join(re.escape(m) for m in sorted(modules)) + r")\.running_var$"
        note, conf = "only some BatchNorms of the target count batches", 0.7
    for k in counters:
        pairing.unpaired_target.remove(k)
    return [
        {
            "stage": "draft-buffers",
            "kind": "add",
            "name": "bn-num-batches-tracked",
            "key": regex,
            "to": "{1}.num_batches_tracked",
            "value": 0,
            "dtype": "int64",
            "confidence": conf,
            "covers": len(counters),
            "note": note,
        }
    ]


def _stand_in(src: Side) -> dict[str, torch.Tensor]:
    """Source tensors for the self-check: the real ones, or uninitialised ones of the manifest's shapes."""
    if src.tensors is not None:
        return src.tensors
    return {k: torch.empty(s) for k, s in src.shapes.items()}


def self_check(rules: list[dict[str, Any]], src: Side, tgt: Side, pairing: Pairing) -> dict[str, Any]:
    """Run the draft through the converter: which target keys receive the source key the pairing chose."""
    try:
        result = convert_state_dict(_stand_in(src), load_rules(rules), target_names=list(tgt.shapes))
    except ConversionError as exc:
        return {"ok": False, "error": str(exc)}
    report = compare_to_target(result, tgt.shapes)
    wanted = {t: s for s, t in pairing.pairs.items()}
    origin = result.origin
    disagree = sorted(t for t, s in wanted.items() if origin.get(t) != s)
    strays = sorted(
        {origin[k] for k in list(report.unexpected) + [k for k, *_ in report.shape_mismatch] if k in origin}
    )
    return {
        "ok": report.ok,
        "error": None,
        "missing": len(report.missing),
        "unexpected": len(report.unexpected),
        "shape_mismatch": len(report.shape_mismatch),
        "target_keys_as_paired": len(wanted) - len(disagree),
        "rule_overrides_pairing": disagree[:50],
        "stray_sources": strays,
    }


def _demote(rules: list[dict[str, Any]], strays: list[str]) -> None:
    """Mark the rename rule that first renames a source key to a name the target lacks (or to another shape)
    as low confidence, naming the key; rules are in stage order, so the first match is the one that ran."""
    renames = [r for r in rules if r["kind"] == "rename"]
    for key in strays:
        spec = next((r for r in renames if re.search(r["from"], key)), None)
        if spec is None or spec["confidence"] < LOW_CONFIDENCE:
            continue
        spec["confidence"] = round(min(spec["confidence"], LOW_CONFIDENCE) - 0.01, 2)
        spec["note"] = f"LOW CONFIDENCE: renames {key} to a name the target lacks" + (
            f"; {spec['note']}" if spec.get("note") else ""
        )


_LITERAL_NUMBER = re.compile(r"\{[^}]*\}|(\d+)")


def _guessed_numbers(rules: list[dict[str, Any]], tgt: Side, drafts: dict[str, Draft]) -> None:
    """Mark low confidence a rename whose template writes a number the source name does not hold (``norm3`` ->
    ``norms.0``) where the target has a same-shaped key with another number there: such a pair rests on order
    (or a guess) alone."""
    for spec in rules:
        draft = drafts.get(spec.get("name", ""))
        if draft is None or spec["kind"] != "rename" or spec["confidence"] < LOW_CONFIDENCE:
            continue
        source_literals = set(re.findall(r"(?<![\\d])\d+", re.sub(r"\(\\d\+\)", "", spec["from"])))
        spans = [m.span(1) for m in _LITERAL_NUMBER.finditer(spec["to"]) if m.group(1)]
        spans = [(a, b) for a, b in spans if spec["to"][a:b] not in source_literals]
        for a, b in spans:
            probe = spec["to"][:a] + "\x00" + spec["to"][b:]
            sibling = None
            for s, t in draft.members[:3]:
                m = re.search(spec["from"], s)
                rendered = s[: m.start()] + probe + s[m.end() :]
                pattern = re.compile("^" + re.escape(_render_fields(rendered, m)).replace("\x00", r"\d+") + "$")
                sibling = next(
                    (k for k in tgt.shapes if k != t and pattern.match(k) and tgt.shapes[k] == tgt.shapes[t]), None
                )
                if sibling:
                    break
            if sibling:
                spec["confidence"] = round(min(spec["confidence"], LOW_CONFIDENCE) - 0.01, 2)
                spec["note"] = (
                    f"LOW CONFIDENCE: writes {spec['to'][a:b]!r} where the source name has no such number; "
                    f"{sibling} has the same shape"
                )
                break


def _render_fields(text: str, m: re.Match[str]) -> str:
    """``text`` with its ``{n}`` / ``{n+k}`` / ``{n-k}`` fields filled from ``m`` (the draft's own templates)."""

    def fill(f: re.Match[str]) -> str:
        value = int(m.group(int(f.group(1))))
        return str(value + int(f.group(2) or 0))

    return re.sub(r"\{(\d+)([+-]\d+)?\}", fill, text)


def draft_rules(src: Side, tgt: Side, progress: Callable[[str], None] = lambda _m: None) -> DraftResult:
    """Pair ``src`` with ``tgt`` and generalise the pairs into rules; return them with a self-check."""
    progress(f"pairing {len(src.shapes)} source keys with {len(tgt.shapes)} target keys")
    pairing = pair_keys(src, tgt, progress)
    progress(f"paired {len(pairing.pairs)} keys, {len(pairing.aliases)} aliases; generalising")
    renames = generalise(pairing.pairs, pairing.confidence, "rename")
    untouched = {s for s, t in pairing.pairs.items() if s == t}
    order_stages(renames, list(src.shapes), untouched)
    aliases = generalise(pairing.aliases, {k: 1.0 for k in pairing.aliases}, "drop_alias")
    order_stages(aliases, list(src.shapes), set(src.shapes) - set(pairing.aliases))
    rules = [_spec(d, "draft-aliases", f"alias-{n}") for n, d in enumerate(aliases)]
    rules += _drop_rules(pairing, list(src.shapes))
    rules += _class_rules(src, tgt, pairing)
    ordered = sorted(renames, key=lambda d: (d.stage, -len(d.members)))
    rules += [_spec(d, f"draft-{d.stage + 1}", f"rename-{n}") for n, d in enumerate(ordered)]
    _guessed_numbers(rules, tgt, {f"rename-{n}": d for n, d in enumerate(ordered)})
    rules += _add_rules(tgt, pairing)
    progress(f"{len(rules)} rules; checking the draft with the converter")
    result = DraftResult(rules, pairing)
    result.check = self_check(rules, src, tgt, pairing)
    _demote(rules, result.check.get("stray_sources", []))
    return result


def render_yaml(result: DraftResult, source: str, target: str) -> str:
    """The draft as a commented YAML rule file that ``--rules`` loads as it is."""
    s = result.summary()
    lines = [
        f"# Drafted by `python -m bridge.convert draft` from {source} -> {target}.",
        f"# {s['source_keys_paired']} source keys paired, {s['aliases']} aliases, {s['rules']} rules "
        f"({s['low_confidence_rules']} low confidence), unpaired: {s['unpaired_source']} source, "
        f"{s['unpaired_target']} target.",
        "# Review every rule marked LOW CONFIDENCE and the unpaired keys at the end; `confidence` and `covers`",
        "# (source keys the rule was drafted from) are notes for the reader: the converter ignores them.",
        "name: draft",
        "rules:",
    ]
    for spec in result.rules:
        if spec["confidence"] < LOW_CONFIDENCE:
            lines.append(f"  # LOW CONFIDENCE ({spec['confidence']}): review this rule")
        text = yaml.safe_dump(spec, default_flow_style=True, sort_keys=False, width=10**9).strip()
        lines.append(f"  - {text}")
    pairing = result.pairing
    for title, keys in (("source keys", pairing.unpaired_source), ("target keys", pairing.unpaired_target)):
        if not keys:
            continue
        lines.append(f"# Unpaired {title} ({len(keys)}), LOW CONFIDENCE, with their three best candidates:")
        for key in keys:
            cands = ", ".join(f"{c} ({score})" for c, score in pairing.candidates.get(key, []))
            lines.append(f"#   {key}: {cands}")
    return "\n".join(lines) + "\n"


def report_json(result: DraftResult, seconds: float) -> dict[str, Any]:
    """The draft's report: summary, rules, every pair with its confidence, unpaired keys with candidates."""
    p = result.pairing
    return {
        "summary": result.summary(),
        "seconds": round(seconds, 3),
        "rules": result.rules,
        "pairs": [
            {
                "source": s,
                "target": t,
                "confidence": round(p.confidence.get(s, 0.0), 3),
                "class_rows": s in p.class_rows,
            }
            for s, t in p.pairs.items()
        ],
        "aliases": [{"source": s, "equals": k} for s, k in p.aliases.items()],
        "unpaired_source": {k: p.candidates.get(k, []) for k in p.unpaired_source},
        "unpaired_target": {k: p.candidates.get(k, []) for k in p.unpaired_target},
        "check": result.check,
    }
