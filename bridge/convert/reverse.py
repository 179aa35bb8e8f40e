"""Run a rule set backwards: an mmdet checkpoint back to detectron2 (``python -m bridge.convert --reverse``).

Stages run in reverse order; inside a stage, the forward's order is undone: keys an ``add`` rule created
are removed, each output key is traced to its source key(s) through the name rules (a split's pieces are
concatenated, a concat is split), the values are turned back by the value rules, and the aliases a
``drop_alias`` dropped are recreated as the very same tensor as their kept key.

What the mmdet checkpoint does not hold comes from the *original* (the detectron2 checkpoint that was
converted, or its key manifest), when given:

* names: the original is converted forwards once, stage by stage, and each output key's source is read
  off that trace (exact, even where a rule is many-to-one such as ``(?:bottom_up\\.)?``); keys the trace
  lacks are named by running the rules' templates backwards (:mod:`bridge.convert.inverse`), and where
  that gives several names the most specific rule and the greedy reading win, reported as *ambiguous*;
* values: keys a ``drop`` rule dropped, class rows a ``class_rows`` index left out, a ``reshape``'s original
  shape.  Without the original (or with a manifest, which has no values) they are reported as
  *not restored* and the result is not ok; a dropped ``if_zero`` key is restored as zeros from a manifest.

Finally the result is converted forwards again and must give back the input bit for bit (*verified*).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from bridge.convert.engine import StageRun, convert_state_dict, run_stage
from bridge.convert.inverse import NotInvertible
from bridge.convert.kinds import Drop, DropAlias, Inversion, NameRule
from bridge.convert.rules import RuleSet, claim, load_rules
from bridge.errors import ConversionError

#: The origin of a key whose value the original gave (not the mmdet checkpoint).
FROM_ORIGINAL = "<original>"


@dataclass
class Ambiguous:
    """A key the rules could have made from more than one source key: the one chosen and the others."""

    key: str
    chosen: str
    others: list[str]
    rule: str


@dataclass
class ReverseResult:
    """What a reverse conversion produced, and what it could not do."""

    state_dict: dict[str, torch.Tensor]
    source_keys: list[str]
    restored: list[tuple[str, str]] = field(default_factory=list)  # (mmdet key(s), detectron2 key)
    removed: list[tuple[str, str]] = field(default_factory=list)  # (key an add rule created, rule label)
    from_original: list[tuple[str, str]] = field(default_factory=list)  # (key, rule label): values the original gave
    ambiguous: list[Ambiguous] = field(default_factory=list)
    not_restored: list[tuple[str, str]] = field(default_factory=list)  # (key or rule, why)
    #: keys where converting the result forwards does not give back the input (checked when nothing is missing)
    mismatched: list[str] = field(default_factory=list)
    verified: bool = False
    rules_source: str = "<inline>"

    @property
    def ok(self) -> bool:
        """True when everything was restored and the forward conversion gives the input back bit for bit."""
        return self.verified and not self.not_restored and not self.mismatched

    def counts(self) -> dict[str, int]:
        """Numbers of input keys, restored, removed, taken from the original, ambiguous, not restored, output."""
        return {
            "source": len(self.source_keys),
            "restored": len(self.restored),
            "removed": len(self.removed),
            "from_original": len(self.from_original),
            "ambiguous": len(self.ambiguous),
            "not_restored": len(self.not_restored),
            "mismatched": len(self.mismatched),
            "output": len(self.state_dict),
        }

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the result (without tensors)."""
        return {
            "ok": self.ok,
            "verified": self.verified,
            "counts": self.counts(),
            "restored": [{"source": s, "target": t} for s, t in self.restored],
            "removed": [{"key": k, "rule": r} for k, r in self.removed],
            "from_original": [{"key": k, "rule": r} for k, r in self.from_original],
            "ambiguous": [
                {"key": a.key, "chosen": a.chosen, "others": a.others, "rule": a.rule} for a in self.ambiguous
            ],
            "not_restored": [{"key": k, "why": w} for k, w in self.not_restored],
            "mismatched": self.mismatched,
        }


@dataclass
class _Traced:
    """One stage of the original converted forwards: its input dict and what the stage made of it."""

    inputs: dict[str, torch.Tensor]
    run: StageRun

    @cached_property
    def outputs(self) -> dict[tuple[str, ...], tuple[str, ...]]:
        """The output keys made from each tuple of stage-input keys (several for a split)."""
        out: dict[tuple[str, ...], list[str]] = {}
        for key, sources in self.run.sources.items():
            out.setdefault(sources, []).append(key)
        return {sources: tuple(keys) for sources, keys in out.items()}

    def value(self, key: str) -> torch.Tensor | None:
        """The original's stage-input tensor at ``key``; None when absent or only a shape (a manifest)."""
        tensor = self.inputs.get(key)
        return None if tensor is None or tensor.is_meta else tensor


def _trace(ruleset: RuleSet, original: dict[str, torch.Tensor], target_names: list[str]) -> list[_Traced]:
    """The original converted forwards stage by stage (value checks skipped for a manifest's meta tensors);
    ``target_names`` (the converted checkpoint's keys) feed ``add`` rules with ``on: target``."""
    check = not any(t.is_meta for t in original.values())
    hits = {rule.label: 0 for rule in ruleset.rules}
    current, out = dict(original), []
    for stage in ruleset.stages:
        run = run_stage(
            ruleset, stage, current, hits=hits, source_names=list(original), target_names=target_names, check=check
        )
        out.append(_Traced(current, run))
        current = run.out
    return out


def _made_by(traced: _Traced, key: str, ruleset: RuleSet, stage: str) -> NameRule | None:
    sources = traced.run.sources[key]
    found = claim(ruleset.name_rules(stage), sources[0], stage)
    return found[0] if found else None


def _symbolic(
    ruleset: RuleSet,
    stage: str,
    key: str,
    present: dict[str, torch.Tensor],
) -> tuple[list[Inversion], list[str]]:
    """The ways ``key`` can come from the stage's name rules, checked forwards, most specific first; and why
    a rule whose template matches ``key`` could not name its source."""
    found: list[Inversion] = []
    failures: list[str] = []
    rules = ruleset.name_rules(stage)
    for rule in rules:
        try:
            candidates = rule.invert(key)
        except NotInvertible as exc:
            failures.append(str(exc))
            continue
        for inv in candidates:
            if not all(o in present for o in inv.outputs):
                continue
            try:
                if (claim(rules, inv.sources[0], stage) or (None,))[0] is inv.rule:  # a concat's other parts
                    found.append(inv)  # are its members
            except ConversionError:  # two rules of the stage would claim the source
                continue
    order = {id(r): i for i, r in enumerate(rules)}
    return sorted(found, key=lambda inv: (-inv.specificity, order[id(inv.rule)])), failures


_Plan = tuple[str, NameRule | None, tuple[str, ...], tuple[str, ...]]  # key, rule, source keys, output keys


def _remove_added(
    ruleset: RuleSet,
    stage: str,
    current: dict[str, torch.Tensor],
    origin: dict[str, str],
    traced: _Traced | None,
    pools: dict[str, list[str]],
    result: ReverseResult,
) -> None:
    """Remove the keys the stage's ``add`` rules created: those the original's trace added, or (without it)
    those that still hold exactly the added value."""
    created = {name for name, _r in traced.run.added} if traced else None
    for rule in reversed(ruleset.add_rules(stage)):
        for name in rule.names(pools | {"converted": list(current)}):
            if name in current and (name in created if created is not None else rule.made(current[name])):
                del current[name]
                result.removed.append((origin.pop(name), rule.label))


def _plan(
    ruleset: RuleSet, stage: str, current: dict[str, torch.Tensor], traced: _Traced | None, result: ReverseResult
) -> list[_Plan]:
    """For each key: the name rule it came from (None: passed through), its source keys and the output keys
    the inversion takes (a split's pieces); from the trace when it has the key, else from the templates."""
    plans: list[_Plan] = []
    for key in current:
        rule: NameRule | None
        if traced is not None and traced.run.sources.get(key):
            sources = traced.run.sources[key]
            rule = _made_by(traced, key, ruleset, stage)
            outputs = traced.outputs[sources] if rule else (key,)
        else:
            found, failures = _symbolic(ruleset, stage, key, current)
            if not found and failures:
                result.not_restored.append((key, failures[0] + "; give the original as --target"))
                continue
            if not found:
                rule, sources, outputs = None, (key,), (key,)
            else:
                rule, sources, outputs = found[0].rule, found[0].sources, found[0].outputs
                others = sorted({inv.sources[0] for inv in found[1:]} - {sources[0]})
                if others:
                    result.ambiguous.append(Ambiguous(key, sources[0], others, rule.label))
        plans.append((key, rule, sources, outputs))
    return plans


def _reverse_stage(
    ruleset: RuleSet,
    stage: str,
    current: dict[str, torch.Tensor],
    origin: dict[str, str],
    traced: _Traced | None,
    pools: dict[str, list[str]],
    result: ReverseResult,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Undo one stage: the stage's output dict (and each key's mmdet origin) back to the stage's input."""
    current, origin = dict(current), dict(origin)
    _remove_added(ruleset, stage, current, origin, traced, pools, result)
    new: dict[str, torch.Tensor] = {}
    new_origin: dict[str, str] = {}
    renamed: set[str] = set()
    consumed: set[str] = set()
    plans = _plan(ruleset, stage, current, traced, result)
    # a split's later pieces are taken with its first one, wherever they stand in the checkpoint
    pieces = {o for key, rule, _s, outputs in plans if rule is not None for o in outputs if o != key}
    for key, rule, sources, outputs in plans:
        if key in consumed or (rule is None and key in pieces):
            continue
        missing = [o for o in outputs if o not in current or o in consumed]
        if missing:
            result.not_restored.append((sources[0], f"rule {rule.label if rule else '?'}: needs {missing}"))
            continue
        consumed.update(outputs)
        tensors = [current[o] for o in outputs]
        if rule is not None:
            shapes = [(traced.inputs[s].shape if traced and s in traced.inputs else None) for s in sources]
            try:
                tensors = rule.unmerge(tensors, shapes)
            except NotInvertible as exc:
                result.not_restored.append((sources[0], str(exc)))
                continue
        for source, tensor in zip(sources, tensors):
            if source in new:
                result.not_restored.append((source, f"both {new_origin[source]!r} and {outputs[0]!r} give it"))
                continue
            new[source] = tensor
            new_origin[source] = "+".join(origin[o] for o in outputs)
            renamed.add(source)
    _restore_dropped(ruleset, stage, new, new_origin, traced, result)
    for key in [k for k in new if k in renamed]:
        found = claim(ruleset.value_rules(stage), key, stage)
        if found is None:
            continue
        try:
            new[key] = found[0].reverse(key, new[key], traced.value(key) if traced else None)
        except (NotInvertible, RuntimeError, IndexError) as exc:
            result.not_restored.append((key, str(exc).splitlines()[0]))
            del new[key]
            renamed.discard(key)
    _restore_aliases(ruleset, stage, new, new_origin, traced, result)
    return new, new_origin


def _restore_dropped(
    ruleset: RuleSet,
    stage: str,
    new: dict[str, torch.Tensor],
    new_origin: dict[str, str],
    traced: _Traced | None,
    result: ReverseResult,
) -> None:
    """Keys a ``drop`` rule dropped, from the original; without it, reported once per rule."""
    drops = [r for r in ruleset.name_rules(stage) if isinstance(r, Drop)]
    if traced is None:
        result.not_restored.extend(
            (
                rule.label,
                "the keys this drop rule dropped are not in the mmdet checkpoint; "
                "give the original as --target to restore them",
            )
            for rule in drops
        )
        return
    for key, rule in traced.run.dropped:
        if not isinstance(rule, Drop) or key in new:
            continue
        value = traced.value(key)
        if value is None and rule.if_zero:
            meta = traced.inputs[key]
            value = torch.zeros(meta.shape, dtype=meta.dtype)
        if value is None:
            result.not_restored.append((key, f"dropped by rule {rule.label}; a key manifest has no values"))
            continue
        new[key], new_origin[key] = value, FROM_ORIGINAL
        result.from_original.append((key, rule.label))


def _restore_aliases(
    ruleset: RuleSet,
    stage: str,
    new: dict[str, torch.Tensor],
    new_origin: dict[str, str],
    traced: _Traced | None,
    result: ReverseResult,
) -> None:
    """Aliases a ``drop_alias`` rule dropped, recreated as their kept key's very tensor."""
    aliases = [r for r in ruleset.name_rules(stage) if isinstance(r, DropAlias)]
    if not aliases:
        return
    if traced is not None:
        for key, rule in traced.run.dropped:
            if isinstance(rule, DropAlias) and key not in new:
                kept = rule.kept(key, rule.match(key))
                if kept in new:
                    new[key], new_origin[key] = new[kept], new_origin[kept]
                else:
                    result.not_restored.append((key, f"alias of {kept!r} (rule {rule.label}), which is absent"))
        return
    for kept in list(new):
        for rule in aliases:
            names = [a for a in rule.aliases_of(kept) if a not in new]
            if names:
                new[names[0]], new_origin[names[0]] = new[kept], new_origin[kept]
                if len(names) > 1:
                    result.ambiguous.append(Ambiguous(kept, names[0], names[1:], rule.label))


def reverse_state_dict(
    state_dict: dict[str, torch.Tensor],
    rules: RuleSet | str | Path | list[dict[str, Any]],
    *,
    original: dict[str, torch.Tensor] | None = None,
) -> ReverseResult:
    """Convert ``state_dict`` (the rules' *output* side) back to the rules' input side.

    ``original`` is the checkpoint the rules were written for (its tensors, or meta tensors of its key
    manifest's shapes): it names the keys exactly and gives the values the forward conversion dropped.
    The input dict is not modified; renamed tensors are the same objects (no copies).
    """
    ruleset = load_rules(rules)
    traces = _trace(ruleset, original, list(state_dict)) if original is not None else None
    result = ReverseResult(state_dict={}, source_keys=list(state_dict), rules_source=ruleset.source)
    pools = {"source": list(original) if original is not None else [], "target": list(state_dict)}
    current, origin = dict(state_dict), {k: k for k in state_dict}
    for i, stage in reversed(list(enumerate(ruleset.stages))):
        current, origin = _reverse_stage(ruleset, stage, current, origin, traces[i] if traces else None, pools, result)
    if original is not None:
        order = {k: i for i, k in enumerate(original)}
        current = dict(sorted(current.items(), key=lambda kv: order.get(kv[0], len(order))))
    result.state_dict = current
    result.restored = [(origin[k], k) for k in current if origin[k] != FROM_ORIGINAL]
    if not result.not_restored:
        _verify(result, ruleset, state_dict)
    return result


def _verify(result: ReverseResult, ruleset: RuleSet, expected: dict[str, torch.Tensor]) -> None:
    """Convert the result forwards again; every key must come back with the very same bits."""
    try:
        again = convert_state_dict(result.state_dict, ruleset, target_names=list(expected)).state_dict
    except ConversionError as exc:
        result.not_restored.append(("<forward check>", str(exc)))
        return
    result.mismatched = sorted(
        {k for k in set(again) ^ set(expected)}
        | {k for k in set(again) & set(expected) if not _identical(again[k], expected[k])}
    )
    result.verified = True


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bits (NaNs compare equal to themselves)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point() or a.is_complex():
        a, b = a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)
    return bool(torch.equal(a, b))
