"""Apply a compiled rule set to a state dict.  Renames never copy tensors: the same objects move."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bridge.convert.rules import NAME_KINDS, VALUE_KINDS, Rule, RuleSet, load_rules
from bridge.errors import ConversionError

_DTYPE_MAP = {
    "int64": torch.int64, "int32": torch.int32, "float32": torch.float32, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "float64": torch.float64, "bool": torch.bool, "uint8": torch.uint8,
}


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
        return {"source": len(self.source_keys), "converted": len(self.converted),
                "dropped": len(self.dropped), "added": len(self.added), "output": len(self.state_dict)}


def _claim(rules: list[Rule], key: str, stage: str) -> tuple[Rule, re.Match[str]] | None:
    """The one rule (of ``rules``) matching ``key``, with its match; two rules on one key is an error."""
    found: tuple[Rule, re.Match[str]] | None = None
    for rule in rules:
        m = rule.match(key)
        if m is None:
            continue
        if found is not None:
            raise ConversionError(
                f"key {key!r} claimed by two rules of stage {stage!r}: {found[0].label} and {rule.label}"
            )
        found = (rule, m)
    return found


def _claims(rules: list[Rule], keys: list[str], stage: str) -> dict[str, tuple[Rule, re.Match[str]]]:
    """Map each key to the one rule (of ``rules``) matching it; two rules on one key is an error."""
    return {key: claim for key in keys if (claim := _claim(rules, key, stage)) is not None}


def _class_rows(rule: Rule, key: str, tensor: torch.Tensor) -> torch.Tensor:
    """Gather the class rows named by the rule's index list; keep the background row(s) where they are.

    Indices count class rows only: with ``background: first`` class row ``i`` is tensor row ``i + 1`` and
    the background row stays row 0; with ``background: last`` it stays the last row; ``keep_trailing: N``
    keeps the last N rows after the gathered ones.
    """
    opts = rule.options
    dim, background = opts["dim"], opts["background"]
    if tensor.dim() <= dim:
        raise ConversionError(f"rule {rule.label}: {key!r} has {tensor.dim()} dims, no dim {dim}")
    n = tensor.shape[dim]
    lead = 1 if background == "first" else 0
    trail = 1 if background == "last" else opts["keep_trailing"]
    index = [i + lead for i in opts["index"]]
    if index and (max(index) >= n - trail or min(index) < lead):
        raise ConversionError(
            f"rule {rule.label}: {key!r} has {n} rows along dim {dim}; index needs {max(index) + 1 + trail}"
            f" (background: {background})"
        )
    index = list(range(lead)) + index + list(range(n - trail, n))
    return tensor.index_select(dim, torch.tensor(index, dtype=torch.long, device=tensor.device))


def _value_transform(rule: Rule, key: str, tensor: torch.Tensor) -> torch.Tensor:
    opts = rule.options
    if rule.kind == "class_rows":
        return _class_rows(rule, key, tensor)
    if rule.kind == "reshape":
        try:
            return tensor.reshape(opts["shape"])
        except RuntimeError as exc:
            raise ConversionError(f"rule {rule.label}: cannot reshape {key!r} {list(tensor.shape)}: {exc}") from None
    if rule.kind == "transpose":
        a, b = opts["dims"]
        if max(a, b) >= tensor.dim():
            raise ConversionError(f"rule {rule.label}: {key!r} has {tensor.dim()} dims, cannot swap {a},{b}")
        return tensor.transpose(a, b)
    raise AssertionError(rule.kind)


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """torch.equal, short-cut when both are views of the same memory (aliases restored as shared)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return torch.equal(a, b)


def _check_droppable(rule: Rule, key: str, tensor: torch.Tensor) -> None:
    """A ``drop`` rule with ``if_zero`` stops at a tensor that is not all zeros (the rule's ``hint`` added)."""
    if rule.options.get("if_zero") and bool(tensor.count_nonzero()):
        hint = rule.options.get("hint")
        raise ConversionError(
            f"rule {rule.label}: {key!r} is not zero (max abs "
            f"{tensor.abs().max().item():.4g}); dropping it would change the model"
            + (f". {hint}" if hint else ""))


def _renamed(rule: Rule, key: str, m: re.Match[str], tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """What a ``rename`` or ``split`` rule makes of one key: its new name(s) with the tensor (or its pieces)."""
    if rule.kind == "rename":
        return [(rule.apply(rule.to, key, m), tensor)]  # type: ignore[arg-type]
    dim, sizes = rule.options["dim"], rule.options["sizes"]
    n = len(rule.to_list)
    try:
        pieces = torch.split(tensor, sizes, dim) if sizes else torch.chunk(tensor, n, dim)
    except (RuntimeError, IndexError) as exc:
        raise ConversionError(f"rule {rule.label}: cannot split {key!r}: {exc}") from None
    if len(pieces) != n or (sizes is None and tensor.shape[dim] % n):
        raise ConversionError(
            f"rule {rule.label}: {key!r} dim {dim} of size {tensor.shape[dim]} does not split into {n}"
        )
    return [(rule.apply(tmpl, key, m), piece) for tmpl, piece in zip(rule.to_list, pieces)]


def _add_names(rule: Rule, pools: dict[str, list[str]]) -> list[str]:
    """The keys an ``add`` rule names: its fixed key, or its template applied to the keys of its ``on`` pool."""
    if rule.pattern is None:
        return [rule.to.render(None, rule.label)]  # type: ignore[union-attr]
    return [rule.apply(rule.to, k, m) for k in pools[rule.options["on"]] if (m := rule.match(k))]  # type: ignore[arg-type]


def _put(out: dict[str, torch.Tensor], origin: dict[str, str], key: str, tensor: torch.Tensor, src: str) -> None:
    if key in out:
        raise ConversionError(f"two source keys land on {key!r}: {origin[key]!r} and {src!r}")
    out[key] = tensor
    origin[key] = src


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
        stage_rules = ruleset.stage_rules(stage)
        keys = list(current)
        value_claims = _claims([r for r in stage_rules if r.kind in VALUE_KINDS], keys, stage)
        name_claims = _claims([r for r in stage_rules if r.kind in NAME_KINDS], keys, stage)
        # concat claims its other parts too
        members: dict[str, str] = {}
        for key, (rule, m) in list(name_claims.items()):
            if rule.kind != "concat":
                continue
            for tmpl in rule.with_list:
                other = rule.apply(tmpl, key, m)
                if other not in current:
                    raise ConversionError(f"rule {rule.label}: {key!r} needs {other!r}, which is absent")
                if other in name_claims and name_claims[other][0] is not rule or other in members:
                    claimer = name_claims[other][0].label if other in name_claims else rule.label
                    raise ConversionError(
                        f"key {other!r} claimed by two rules of stage {stage!r}: {rule.label} and {claimer}"
                    )
                members[other] = key
        for key, (rule, _m) in value_claims.items():
            try:
                current[key] = _value_transform(rule, key, current[key])
            except (RuntimeError, IndexError) as exc:  # e.g. a dim the tensor does not have
                raise ConversionError(f"rule {rule.label}: cannot apply it to {key!r} "
                                      f"{list(current[key].shape)}: {str(exc).splitlines()[0]}") from None
            hits[rule.label] += 1
        out: dict[str, torch.Tensor] = {}
        new_origin: dict[str, str] = {}
        for key in keys:
            tensor = current[key]
            if key in members:
                continue
            claim = name_claims.get(key)
            if claim is None:
                _put(out, new_origin, key, tensor, origin[key])
                continue
            rule, m = claim
            hits[rule.label] += 1
            if rule.kind == "drop":
                _check_droppable(rule, origin[key], tensor)
                result.dropped.append((origin[key], rule.label))
            elif rule.kind == "drop_alias":
                kept = rule.apply(rule.of, key, m)  # type: ignore[arg-type]
                if kept not in current:
                    raise ConversionError(f"rule {rule.label}: alias {key!r} names kept key {kept!r}, which is absent")
                other = current[kept]
                if not _same_values(other, tensor):
                    raise ConversionError(
                        f"rule {rule.label}: alias {key!r} differs from kept key {kept!r}; refusing to drop it"
                    )
                result.dropped.append((origin[key], rule.label))
            elif rule.kind in ("rename", "split"):
                for name, piece in _renamed(rule, key, m, tensor):
                    _put(out, new_origin, name, piece, origin[key])
            elif rule.kind == "concat":
                parts_keys = [key] + [rule.apply(t, key, m) for t in rule.with_list]
                try:
                    merged = torch.cat([current[k] for k in parts_keys], rule.options["dim"])
                except (RuntimeError, IndexError) as exc:
                    raise ConversionError(f"rule {rule.label}: cannot concat {parts_keys}: {exc}") from None
                _put(out, new_origin, rule.apply(rule.to, key, m), merged,  # type: ignore[arg-type]
                     "+".join(origin[k] for k in parts_keys))
        for rule in (r for r in stage_rules if r.kind == "add"):
            opts = rule.options
            pools = {"converted": list(out), "source": list(state_dict),
                     "target": list(target_names) if target_names is not None else list(out)}
            for name in _add_names(rule, pools):
                if name in out:
                    continue
                dtype = _DTYPE_MAP[opts["dtype"]]
                try:
                    out[name] = torch.full(opts["shape"], opts["value"], dtype=dtype)
                except (RuntimeError, OverflowError, TypeError) as exc:
                    raise ConversionError(f"rule {rule.label}: cannot make {name!r}: {exc}") from None
                new_origin[name] = f"<added by {rule.label}>"
                result.added.append(name)
                hits[rule.label] += 1
        current, origin = out, new_origin
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
        stage_rules = ruleset.stage_rules(stage)
        value_rules = [r for r in stage_rules if r.kind in VALUE_KINDS]
        name_rules = [r for r in stage_rules if r.kind in NAME_KINDS]
        kept: list[tuple[str, torch.Tensor]] = []
        for key, value in result.tensors:
            claim = _claim(value_rules, key, stage)
            if claim is not None and values:
                value = _value_transform(claim[0], key, value)
                result.values_changed = True
            claim = _claim(name_rules, key, stage)
            if claim is None:
                kept.append((key, value))
                continue
            rule, m = claim
            if rule.kind == "drop":
                if check_if_zero:
                    _check_droppable(rule, key, value)
                result.dropped.append(Dropped(key, rule.label))
            elif rule.kind == "drop_alias":
                result.dropped.append(Dropped(key, rule.label, rule.apply(rule.of, key, m)))  # type: ignore[arg-type]
            elif rule.kind == "concat":
                raise ConversionError(f"rule {rule.label}: {key!r} is one part of a concat; "
                                      "convert its parts together (convert_state_dict)")
            elif rule.kind == "split" and not values:
                kept.extend((rule.apply(tmpl, key, m), value) for tmpl in rule.to_list)
            else:
                kept.extend(_renamed(rule, key, m, value))
                result.values_changed = result.values_changed or rule.kind == "split"
        result.tensors = kept
    return result


def added_names(rules: RuleSet | str | Path | list[dict[str, Any]], *, source: list[str],
                converted: list[str], target: list[str]) -> set[str]:
    """Every key an ``add`` rule of ``rules`` would create, given the source keys, the converted keys and the
    target's keys (each rule reads the pool its ``on:`` names): keys only the target has, by design."""
    ruleset = load_rules(rules)
    pools = {"source": list(source), "converted": list(converted), "target": list(target)}
    return {name for rule in ruleset.rules if rule.kind == "add" for name in _add_names(rule, pools)}
