"""Pair the leaves of two runs by (step, rank, kind, key), optionally renaming run A's keys.

A rule file (YAML or JSON) is an ordered list of ``{rename: {from: REGEX, to: TEMPLATE}}``
items, the format of the checkpoint converter's rename rules. Rules are applied in order,
each to the result of the previous one; a rule applies when its regex matches the whole
key (``re.fullmatch``). Templates refer to groups as ``{1}`` or ``{name}`` and may do index
arithmetic, ``{S-1}`` or ``{2+1}``; ``{{`` and ``}}`` are literal braces.

The template function is local until ``bridge.convert.rules`` exists; unify them then.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError, FormatError

_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*|\d+)\s*(?:([+-])\s*(\d+))?\}")


def expand_template(template: str, match: re.Match[str]) -> str:
    """Fill ``template`` from ``match``: ``{1}``, ``{name}``, ``{S-1}``, ``{2+1}``; ``{{``/``}}`` escape."""

    def sub(m: re.Match[str]) -> str:
        text = m.group(0)
        if text == "{{":
            return "{"
        if text == "}}":
            return "}"
        ref, op, num = m.group(1), m.group(2), m.group(3)
        try:
            value = match.group(int(ref) if ref.isdigit() else ref)
        except IndexError as exc:
            raise BridgeError(f"template {template!r} names group {ref!r} that the regex lacks") from exc
        if value is None:
            value = ""
        if op:
            try:
                n = int(value)
            except ValueError:
                raise BridgeError(f"template {template!r}: group {ref!r} = {value!r} is not an integer") from None
            value = str(n + int(num) if op == "+" else n - int(num))
        return value

    return _FIELD.sub(sub, template)


@dataclass(frozen=True)
class RenameRule:
    """One regex rename: keys fully matching ``pattern`` become ``template`` filled from groups."""

    pattern: re.Pattern[str]
    template: str

    def apply(self, key: str) -> str:
        """Return the renamed key, or ``key`` unchanged when the rule does not match."""
        m = self.pattern.fullmatch(key)
        return expand_template(self.template, m) if m else key


def parse_rules(data: Any, source: str = "<rules>") -> list[RenameRule]:
    """Build rules from parsed YAML/JSON: a list of ``{rename: {from, to}}`` (or ``{rules: [...]}``)."""
    if isinstance(data, dict) and "rules" in data:
        data = data["rules"]
    if data is None:
        return []
    if not isinstance(data, list):
        raise FormatError(f"{source}: expected a list of {{rename: {{from, to}}}} rules")
    rules = []
    for i, item in enumerate(data):
        body = item.get("rename") if isinstance(item, dict) else None
        if not isinstance(body, dict) or "from" not in body or "to" not in body:
            raise FormatError(f"{source}: rule {i} is not {{rename: {{from: REGEX, to: TEMPLATE}}}}")
        try:
            pattern = re.compile(str(body["from"]))
        except re.error as exc:
            raise FormatError(f"{source}: rule {i} has a bad regex: {exc}") from None
        rules.append(RenameRule(pattern, str(body["to"])))
    return rules


def load_rules(path: str | Path) -> list[RenameRule]:
    """Read a YAML or JSON rule file; raises FormatError when missing or malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FormatError(f"cannot read map file {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError / json.JSONDecodeError
        raise FormatError(f"map file {path} does not parse: {exc}".splitlines()[0]) from None
    return parse_rules(data, str(path))


def rename(key: str, rules: Sequence[RenameRule]) -> str:
    """Apply ``rules`` in order to ``key``."""
    for rule in rules:
        key = rule.apply(key)
    return key


@dataclass(frozen=True)
class Pair:
    """Two leaves that should hold the same value; ``key`` is the shared (renamed) key."""

    a: Any
    b: Any
    key: str


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


def pair_entries(a_entries: Iterable[Any], b_entries: Iterable[Any], rules: Sequence[RenameRule] = ()) -> Pairing:
    """Pair leaves on (step, rank, kind, key, occurrence); run A's keys go through ``rules`` first."""
    a_table = _index(a_entries, lambda e: rename(e.key, rules))
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
