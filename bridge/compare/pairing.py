"""Pair the leaves of two runs by (step, rank, kind, key), optionally renaming run A's keys.

Names are translated with the checkpoint converter's rule engine (``bridge.convert.rules``), so one
table serves weights and activations: ``--map`` takes a preset name (e.g. ``d2-panoptic-fpn-to-mmdet``)
or a YAML/JSON rule file, either in the converter's form (``{kind: rename, from, to}``, stages,
``include``) or with the short items ``{rename: {from: REGEX, to: TEMPLATE}}`` (one reader for both:
:func:`bridge.convert.rules.read_rule_file`). With ``--map``, gradients,
parameters and losses are paired by :mod:`bridge.compare.param_pairing` (the whole rule set, not only renames).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.convert.rules import RuleSet, load_rules, translate_name
from bridge.errors import BridgeError, FormatError


def load_map(source: str | Path | Sequence[Any] | RuleSet | None) -> RuleSet | None:
    """The rule set of ``--map``: a preset name, a rule file (YAML/JSON) or a list of rule dicts; None for None.
    Read by the converter's own reader (:func:`bridge.convert.rules.load_rules`), so a map file is any rule
    file, the short ``{rename: {from, to}}`` items included; its ``losses:`` section is kept (loss-name rules,
    see bridge.compare.param_pairing)."""
    if source is None or isinstance(source, RuleSet):
        return source
    try:
        return load_rules(source if isinstance(source, (str, Path)) else list(source))
    except BridgeError as exc:
        raise FormatError(f"--map {source}: {exc}") from None


def name_mapper(source: str | Path | Sequence[Any] | RuleSet | None) -> Callable[[str], str] | None:
    """Return a function renaming run A's keys, from a preset name, a rule file or a list of rule dicts."""
    ruleset = load_map(source)
    if ruleset is None:
        return None

    def translate(key: str) -> str:
        # `name#N` marks the N-th call of a shared module in one step (bridge.taps): keep the mark
        occurrence = _OCCURRENCE.match(key)
        if occurrence:
            return translate_name(occurrence["name"], ruleset) + occurrence["mark"] + (occurrence["path"] or "")
        return translate_name(key, ruleset)

    return translate


_OCCURRENCE = re.compile(r"^(?P<name>[^#]+)(?P<mark>#\d+)(?P<path>\..*)?$")


@dataclass(frozen=True)
class Pair:
    """Two leaves that should hold the same value; ``key`` is the shared (renamed) key.

    ``a_tensor`` (with ``a_shape``) loads A's tensor as the rules transform it (class rows, a split piece):
    compared instead of A's recorded tensor."""

    a: Any
    b: Any
    key: str
    a_tensor: Callable[[], Any] | None = None
    a_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Pairing:
    """Pairs in run A's recording order, plus the leaves only one side has."""

    pairs: list[Pair]
    a_only: list[Any]
    b_only: list[Any]


def _order(entry: Any) -> tuple:
    return (entry.step, entry.rank if entry.rank is not None else -1, entry.index, entry.path)


def _index(entries: Iterable[Any], keyfn) -> dict[tuple, Any]:
    table: dict[tuple, Any] = {}
    seen: dict[tuple, int] = {}
    for e in sorted(entries, key=_order):
        base = (e.step, e.rank, e.kind, keyfn(e))
        n = seen.get(base, 0)
        seen[base] = n + 1
        table[base + (n,)] = e  # nth occurrence of the same key in one step
    return table


def pair_entries(
    a_entries: Iterable[Any],
    b_entries: Iterable[Any],
    mapper: Callable[[str], str] | None = None,
) -> Pairing:
    """Pair leaves on (step, rank, kind, key, occurrence); run A's keys go through ``mapper`` first
    (see :func:`name_mapper`)."""
    mapper = mapper or (lambda key: key)
    a_table = _index(a_entries, lambda e: mapper(e.key))
    b_table = _index(b_entries, lambda e: e.key)
    pairs, a_only = [], []
    for k, ea in a_table.items():  # insertion order = A's recording order
        eb = b_table.pop(k, None)
        if eb is None:
            a_only.append(ea)
        else:
            pairs.append(Pair(ea, eb, k[3]))
    b_only = sorted(b_table.values(), key=_order)
    return Pairing(pairs, a_only, b_only)
