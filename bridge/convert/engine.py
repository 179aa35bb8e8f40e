"""Apply a compiled rule set to a state dict.  Renames never copy tensors: the same objects move.

The engine only schedules: stage by stage, value rules then name rules then ``add`` rules, one claim per
key; what each rule does is its class's (:mod:`bridge.convert.kinds`).  ``--reverse`` runs the same
stages backwards (:mod:`bridge.convert.reverse`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bridge.convert.kinds import Add, Concat, Drop, DropAlias, NameRule, Rule, Split, ValueRule
from bridge.convert.rules import RuleSet, claim, claimed_twice, load_rules
from bridge.errors import ConversionError


@dataclass
class ConversionResult:
    """What a conversion produced: the new state dict and the bookkeeping for the report."""

    state_dict: dict[str, torch.Tensor]
    source_keys: list[str]
    converted: list[tuple[str, str]] = field(default_factory=list)  # (source key, target key)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (source-stage key, rule label)
    added: list[str] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)  # target key -> source key(s)
    rules_source: str = "<inline>"
    rule_hits: dict[str, int] = field(default_factory=dict)  # rule label -> keys it matched (0: none)
    unused_rules: list[str] = field(default_factory=list)  # labels of non-optional rules that matched nothing

    def counts(self) -> dict[str, int]:
        """Numbers of source, converted, dropped and added keys."""
        return {
            "source": len(self.source_keys),
            "converted": len(self.converted),
            "dropped": len(self.dropped),
            "added": len(self.added),
            "output": len(self.state_dict),
        }


def _claims(rules: list[Any], keys: list[str], stage: str) -> dict[str, tuple[Any, re.Match[str]]]:
    """Map each key to the one rule (of ``rules``) matching it; two rules on one key is an error."""
    return {key: found for key in keys if (found := claim(rules, key, stage)) is not None}


@dataclass
class StageRun:
    """What one stage made of its input: the output dict and where each output key came from."""

    out: dict[str, torch.Tensor]
    #: output key -> the stage-input key(s) it was made from (empty for a key an ``add`` rule created)
    sources: dict[str, tuple[str, ...]]
    dropped: list[tuple[str, Rule]] = field(default_factory=list)  # (stage-input key, rule)
    added: list[tuple[str, Add]] = field(default_factory=list)


def _put(run: StageRun, origin: dict[str, str], key: str, tensor: torch.Tensor, sources: tuple[str, ...]) -> None:
    if key in run.out:
        first = "+".join(origin.get(k, k) for k in run.sources[key])
        raise ConversionError(
            f"two source keys land on {key!r}: {first!r} and {'+'.join(origin.get(k, k) for k in sources)!r}"
        )
    run.out[key] = tensor
    run.sources[key] = sources


def run_stage(
    ruleset: RuleSet,
    stage: str,
    state: dict[str, torch.Tensor],
    *,
    hits: dict[str, int],
    origin: dict[str, str] | None = None,
    source_names: list[str] | None = None,
    target_names: list[str] | None = None,
    check: bool = True,
) -> StageRun:
    """Run one stage on ``state`` (not modified): value rules, then name rules, then ``add`` rules.

    ``hits`` counts the keys each rule matched (by label); ``origin`` names each input key's source key in
    error messages; ``source_names`` / ``target_names`` are the pools of ``add`` rules with ``on: source`` /
    ``on: target``; ``check=False`` skips the value checks of ``drop`` (``if_zero``) and ``drop_alias``
    (for names-and-shapes-only dicts).
    """
    origin = origin if origin is not None else {}
    current = dict(state)
    keys = list(current)
    value_claims = _claims(ruleset.value_rules(stage), keys, stage)
    name_claims = _claims(ruleset.name_rules(stage), keys, stage)
    members: dict[str, str] = {}  # a concat claims its other parts too
    for key, (rule, m) in list(name_claims.items()):
        for other in rule.parts(key, m)[1:]:
            if other not in current:
                raise ConversionError(f"rule {rule.label}: {key!r} needs {other!r}, which is absent")
            if other in name_claims and name_claims[other][0] is not rule or other in members:
                raise claimed_twice(other, stage, rule, name_claims[other][0] if other in name_claims else rule)
            members[other] = key
    for key, (rule, _m) in value_claims.items():
        try:
            current[key] = rule.forward(key, current[key])
        except (RuntimeError, IndexError) as exc:  # e.g. a dim the tensor does not have
            raise ConversionError(
                f"rule {rule.label}: cannot apply it to {key!r} {list(current[key].shape)}: {str(exc).splitlines()[0]}"
            ) from None
        hits[rule.label] += 1
    run = StageRun({}, {})
    for key in keys:
        if key in members:
            continue
        found = name_claims.get(key)
        if found is None:
            _put(run, origin, key, current[key], (key,))
            continue
        rule, m = found
        hits[rule.label] += 1
        if isinstance(rule, Drop) and check:
            rule.check(origin.get(key, key), current[key])
        pairs = rule.forward(key, m, current, check)
        if isinstance(rule, (Drop, DropAlias)):
            run.dropped.append((key, rule))
        for name, tensor in pairs:
            _put(run, origin, name, tensor, tuple(rule.parts(key, m)))
    for rule in ruleset.add_rules(stage):
        pools = {
            "converted": list(run.out),
            "source": list(source_names or []),
            "target": list(target_names) if target_names is not None else list(run.out),
        }
        for name in rule.names(pools):
            if name in run.out:
                continue
            run.out[name] = rule.make(name)
            run.sources[name] = ()
            run.added.append((name, rule))
            hits[rule.label] += 1
    return run


def convert_state_dict(
    state_dict: dict[str, torch.Tensor],
    rules: RuleSet | str | Path | list[dict[str, Any]],
    *,
    target_names: list[str] | None = None,
) -> ConversionResult:
    """Convert ``state_dict`` with ``rules`` (RuleSet, preset name, YAML path or list of dicts).

    ``target_names`` feeds ``add`` rules with ``on: target``.  The input dict is not modified;
    renamed tensors are the same objects as in the input (no copies).
    """
    ruleset = load_rules(rules)
    current: dict[str, torch.Tensor] = dict(state_dict)
    origin: dict[str, str] = {k: k for k in current}
    result = ConversionResult(state_dict={}, source_keys=list(state_dict), rules_source=ruleset.source)
    hits: dict[str, int] = {rule.label: 0 for rule in ruleset.rules}
    for stage in ruleset.stages:
        run = run_stage(
            ruleset, stage, current, hits=hits, origin=origin, source_names=list(state_dict), target_names=target_names
        )
        result.dropped.extend((origin[key], rule.label) for key, rule in run.dropped)
        made_by = {name: rule for name, rule in run.added}
        result.added.extend(made_by)
        origin = {
            key: "+".join(origin[k] for k in srcs) if srcs else f"<added by {made_by[key].label}>"
            for key, srcs in run.sources.items()
        }
        current = run.out
    result.state_dict = current
    result.origin = origin
    added = set(result.added)
    result.converted = [(origin[k], k) for k in current if k not in added]
    result.rule_hits = hits
    result.unused_rules = [r.label for r in ruleset.rules if hits[r.label] == 0 and not r.optional]
    return result


@dataclass(frozen=True)
class Dropped:
    """A name the rules drop: as the dropping rule saw it, the rule's label and, for ``drop_alias``, the kept key."""

    name: str
    rule: str
    alias_of: str | None = None


@dataclass
class MappedTensor:
    """What the rules make of one named tensor: the (new name, tensor) pieces they keep and what they drop."""

    tensors: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    #: True when a value rule or a split changed the tensor (not only its name).
    values_changed: bool = False


def map_named_tensor(
    name: str,
    tensor: torch.Tensor,
    rules: RuleSet | str | Path | list[dict[str, Any]],
    *,
    check_if_zero: bool = False,
    values: bool = True,
) -> MappedTensor:
    """Apply a rule set to one named tensor (a weight, its gradient, an optimizer state of that weight), stage
    by stage, exactly as :func:`convert_state_dict` transforms that key: value rules (``class_rows``,
    ``reshape``, ``transpose``), then ``rename`` / ``split``; ``drop`` and ``drop_alias`` give a
    :class:`Dropped` (the alias's kept key is not looked up: the caller holds the other names).
    ``add`` rules are not applied (see :func:`added_names`); a ``concat`` rule needs its parts together and
    raises ConversionError here (convert the whole dict instead); ``check_if_zero`` applies ``drop``'s
    ``if_zero`` check (meaningful for weights, not gradients). Works on ``meta`` tensors (names and shapes only).
    ``values=False`` maps the name only (value rules skipped, every split name gets the tensor as is): for
    leaves recorded under a parameter's name that are not shaped like it (a step count, a learning rate).
    """
    ruleset = load_rules(rules)
    result = MappedTensor(tensors=[(name, tensor)])
    for stage in ruleset.stages:
        value_rules: list[ValueRule] = ruleset.value_rules(stage)
        name_rules: list[NameRule] = ruleset.name_rules(stage)
        kept: list[tuple[str, torch.Tensor]] = []
        for key, value in result.tensors:
            found = claim(value_rules, key, stage)
            if found is not None and values:
                value = found[0].forward(key, value)
                result.values_changed = True
            found = claim(name_rules, key, stage)
            if found is None:
                kept.append((key, value))
                continue
            rule, m = found
            if isinstance(rule, Drop):
                if check_if_zero:
                    rule.check(key, value)
                result.dropped.append(Dropped(key, rule.label))
            elif isinstance(rule, DropAlias):
                result.dropped.append(Dropped(key, rule.label, rule.kept(key, m)))
            elif isinstance(rule, Concat):
                raise ConversionError(
                    f"rule {rule.label}: {key!r} is one part of a concat; "
                    "convert its parts together (convert_state_dict)"
                )
            elif isinstance(rule, Split) and not values:
                kept.extend((new, value) for new in rule.forward_names(key, m))
            else:
                kept.extend(rule.forward(key, m, {key: value}))
                result.values_changed = result.values_changed or isinstance(rule, Split)
        result.tensors = kept
    return result


def added_names(
    rules: RuleSet | str | Path | list[dict[str, Any]], *, source: list[str], converted: list[str], target: list[str]
) -> set[str]:
    """Every key an ``add`` rule of ``rules`` would create, given the source keys, the converted keys and the
    target's keys (each rule reads the pool its ``on:`` names): keys only the target has, by design."""
    ruleset = load_rules(rules)
    pools = {"source": list(source), "converted": list(converted), "target": list(target)}
    return {name for rule in ruleset.add_rules() for name in rule.names(pools)}
