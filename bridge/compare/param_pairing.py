"""Pair two runs through a converter rule set, kind by kind: what ``--map PRESET`` does.

* Kinds recorded under a parameter's name (``grad``, ``param``, ``optim``: see PARAM_KINDS) go through the
  rules that convert the checkpoint, one tensor at a time (:func:`bridge.convert.map_named_tensor`): the
  record name (without a ``#N`` occurrence mark) is the parameter name, a path inside the record is kept.
  A ``class_rows`` / ``reshape`` / ``transpose`` rule transforms A's tensor before it is compared, a
  ``split`` pairs each piece with its own B leaf; a ``drop`` rule's key and a ``drop_alias`` whose kept key
  is recorded too are not reported as A-only (an alias recorded alone, as ``named_parameters`` lists a shared
  tensor once, stands for its kept key); B leaves an ``add`` rule creates are not reported as B-only.
* Kind ``loss`` goes through the preset's ``losses:`` section: rename / drop / add rules on the loss name
  (the leaf's path inside the record, or the record name for a bare value).
* Every other kind (activations, outputs) is renamed with the rename rules only, as before.

Pairs keep run A's recording order; for gradients that is backward order (a parameter's grad hook fires
when its gradient is computed), so the first divergent gradient is the one nearest the loss.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from bridge.convert.engine import MappedTensor, added_names, map_named_tensor
from bridge.convert.rules import RuleSet
from bridge.errors import BridgeError, FormatError

from .pairing import Pair, Pairing, _index, _order, name_mapper, pair_entries

#: Kinds whose record name is a parameter name: mapped through the checkpoint's conversion rules.
PARAM_KINDS = frozenset({"grad", "param", "optim"})
LOSS_KIND = "loss"

_MARK = re.compile(r"^(?P<name>[^#]+)(?P<mark>#\d+)?$")


@dataclass(frozen=True)
class ByDesign:
    """A leaf left unpaired on purpose by a rule (dropped, an alias compared once, added on B)."""

    entry: Any
    side: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the report's settings."""
        return {
            "side": self.side,
            "step": self.entry.step,
            "rank": self.entry.rank,
            "kind": self.entry.kind,
            "key": self.entry.key,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RulePairing(Pairing):
    """A :class:`Pairing` plus the leaves the rules leave unpaired on purpose."""

    by_design: tuple[ByDesign, ...] = ()


def pair_with_rules(a_entries: Iterable[Any], b_entries: Iterable[Any], ruleset: RuleSet, run_a: Any) -> RulePairing:
    """Pair leaves of runs A and B through ``ruleset`` (see the module docstring); ``run_a`` loads A's tensors
    that a value rule transforms (lazily, when the pair is compared). Raises FormatError naming the leaf when
    a rule cannot apply to it."""
    a_all, b_all = list(a_entries), list(b_entries)
    groups: list[RulePairing] = [
        _pair_params(
            [e for e in a_all if e.kind in PARAM_KINDS], [e for e in b_all if e.kind in PARAM_KINDS], ruleset, run_a
        ),
        _pair_losses([e for e in a_all if e.kind == LOSS_KIND], [e for e in b_all if e.kind == LOSS_KIND], ruleset),
    ]
    other = pair_entries(
        [e for e in a_all if e.kind not in PARAM_KINDS and e.kind != LOSS_KIND],
        [e for e in b_all if e.kind not in PARAM_KINDS and e.kind != LOSS_KIND],
        name_mapper(ruleset),
    )
    groups.append(RulePairing(other.pairs, other.a_only, other.b_only))
    return RulePairing(
        pairs=sorted((p for g in groups for p in g.pairs), key=lambda p: _order(p.a)),
        a_only=sorted((e for g in groups for e in g.a_only), key=_order),
        b_only=sorted((e for g in groups for e in g.b_only), key=_order),
        by_design=tuple(d for g in groups for d in g.by_design),
    )


def _split_mark(name: str) -> tuple[str, str]:
    m = _MARK.match(name)
    return (m["name"], m["mark"] or "") if m else (name, "")


def _with_path(name: str, path: str) -> str:
    return f"{name}.{path}" if path else name


@dataclass(frozen=True)
class _Piece:
    entry: Any
    key: str
    mapped_from: str  # the name the rules were applied to (the record name, or an alias's kept key)
    index: int  # which of the mapped tensors
    shape: tuple[int, ...]
    transform: bool  # A's tensor must be loaded and transformed


def _map(name: str, entry: Any, ruleset: RuleSet, cache: dict[tuple, MappedTensor]) -> MappedTensor:
    """The rules applied to ``name`` with a meta tensor shaped like ``entry`` (names and shapes only)."""
    values = entry.is_tensor and len(entry.shape) > 0
    key = (name, tuple(entry.shape), entry.dtype, values)
    if key not in cache:
        meta = torch.empty(tuple(entry.shape) if entry.is_tensor else (), device="meta")
        try:
            cache[key] = map_named_tensor(name, meta, ruleset, values=values)
        except BridgeError as exc:
            raise FormatError(f"step {entry.step} rank {entry.rank} {entry.kind} {entry.key!r}: {exc}") from None
    return cache[key]


def _pair_params(a_entries: list[Any], b_entries: list[Any], ruleset: RuleSet, run_a: Any) -> RulePairing:
    cache: dict[tuple, MappedTensor] = {}
    recorded = {(e.step, e.rank, e.kind, _split_mark(e.name)[0]) for e in a_entries}
    pieces: list[_Piece] = []
    by_design: list[ByDesign] = []
    for e in sorted(a_entries, key=_order):
        base, mark = _split_mark(e.name)
        name, mapped = base, _map(base, e, ruleset, cache)
        for drop in mapped.dropped:
            if drop.alias_of is not None and (e.step, e.rank, e.kind, drop.alias_of) not in recorded:
                name, mapped = drop.alias_of, _map(drop.alias_of, e, ruleset, cache)  # the alias stands for it
                break
        for drop in mapped.dropped:
            reason = f"{drop.rule}: alias of {drop.alias_of}" if drop.alias_of else f"dropped by {drop.rule}"
            by_design.append(ByDesign(e, "a", reason))
        for i, (new, tensor) in enumerate(mapped.tensors):
            pieces.append(
                _Piece(e, _with_path(new + mark, e.path), name, i, tuple(tensor.shape), mapped.values_changed)
            )
    converted = {name for mapped in cache.values() for name, _tensor in mapped.tensors}
    added = added_names(
        ruleset,
        source=sorted({_split_mark(e.name)[0] for e in a_entries}),
        converted=sorted(converted),
        target=sorted({_split_mark(e.name)[0] for e in b_entries}),
    )
    added -= converted  # an added key that A has too (a BatchNorm's num_batches_tracked) pairs as usual
    b_expected = [e for e in b_entries if _split_mark(e.name)[0] in added]
    b_table = _index([e for e in b_entries if _split_mark(e.name)[0] not in added], lambda e: e.key)
    by_design.extend(ByDesign(e, "b", "created by an add rule: no counterpart in A") for e in b_expected)
    seen: dict[tuple, int] = {}
    pairs, a_only = [], []
    for piece in pieces:
        e = piece.entry
        base_key = (e.step, e.rank, e.kind, piece.key)
        n = seen.get(base_key, 0)
        seen[base_key] = n + 1
        eb = b_table.pop(base_key + (n,), None)
        if eb is None:
            a_only.append(e)
            continue
        loader = _loader(run_a, e, piece, ruleset) if piece.transform else None
        pairs.append(Pair(e, eb, piece.key, a_tensor=loader, a_shape=piece.shape if piece.transform else None))
    return RulePairing(pairs, a_only, sorted(b_table.values(), key=_order), tuple(by_design))


def _loader(run_a: Any, entry: Any, piece: _Piece, ruleset: RuleSet) -> Callable[[], torch.Tensor]:
    """Load A's tensor and apply the rules to it, as the converter would transform the weight."""

    def load() -> torch.Tensor:
        mapped = map_named_tensor(piece.mapped_from, run_a.tensor(entry), ruleset)
        return mapped.tensors[piece.index][1]

    return load


def _loss_name(entry: Any) -> str:
    return entry.path or entry.name


def _pair_losses(a_entries: list[Any], b_entries: list[Any], ruleset: RuleSet) -> RulePairing:
    rules = RuleSet(ruleset.losses, f"{ruleset.source} losses")
    by_design: list[ByDesign] = []
    keys: dict[int, str] = {}
    kept_a: list[Any] = []
    converted: list[str] = []
    for e in a_entries:
        try:
            mapped = map_named_tensor(_loss_name(e), torch.empty((), device="meta"), rules, values=False)
        except BridgeError as exc:
            raise FormatError(f"step {e.step} rank {e.rank} loss {e.key!r}: {exc}") from None
        if mapped.dropped:
            by_design.append(ByDesign(e, "a", f"dropped by {mapped.dropped[0].rule} (losses)"))
            continue
        new = mapped.tensors[0][0]
        converted.append(new)
        keys[id(e)] = _with_path(e.name, new) if e.path else new
        kept_a.append(e)
    added = added_names(
        rules, source=[_loss_name(e) for e in a_entries], converted=converted, target=[_loss_name(e) for e in b_entries]
    ) - set(converted)
    kept_b = [e for e in b_entries if _loss_name(e) not in added]
    by_design.extend(
        ByDesign(e, "b", "created by an add rule of losses: no counterpart in A")
        for e in b_entries
        if _loss_name(e) in added
    )
    a_table = _index(kept_a, lambda e: keys[id(e)])
    b_table = _index(kept_b, lambda e: e.key)
    pairs, a_only = [], []
    for k, ea in a_table.items():
        eb = b_table.pop(k, None)
        if eb is None:
            a_only.append(ea)
        else:
            pairs.append(Pair(ea, eb, k[3]))
    return RulePairing(pairs, a_only, sorted(b_table.values(), key=_order), tuple(by_design))


def parameter_name_mapper(ruleset: RuleSet, names: Iterable[str]) -> Callable[[str], str]:
    """Map run A's parameter names (of one record that lists ``names``, e.g. an optimizer's parameters) to B's
    as :func:`pair_with_rules` pairs their tensors: through the rules; a ``drop_alias`` whose kept key is not
    among ``names`` stands for the kept key (``named_parameters`` lists a shared parameter once, under the name
    met first). A name the rules drop, split or concatenate is returned unchanged (it stays unpaired)."""
    listed = set(names)
    scalar = torch.empty((), device="meta")
    cache: dict[str, str] = {}

    def first_name(name: str) -> str | None:
        try:
            mapped = map_named_tensor(name, scalar, ruleset, values=False)
        except BridgeError:
            return None
        for drop in mapped.dropped:
            if drop.alias_of is not None and drop.alias_of not in listed:
                return first_name(drop.alias_of)
        return mapped.tensors[0][0] if len(mapped.tensors) == 1 else None

    def translate(name: str) -> str:
        if name not in cache:
            cache[name] = first_name(name) or name
        return cache[name]

    return translate
