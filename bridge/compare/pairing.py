"""Pair the leaves of two runs by (step, rank, kind, key), optionally renaming run A's keys.

A rule file (YAML or JSON) is an ordered list of ``{rename: {from: REGEX, to: TEMPLATE}}``
items, the format of the checkpoint converter's rename rules. Rules are applied in order,
each to the result of the previous one; a rule applies when its regex matches the whole
key (``re.fullmatch``). Templates refer to groups as ``{1}`` or ``{name}`` and may do index
arithmetic, ``{S-1}`` or ``{2+1}``; ``{{`` and ``}}`` are literal braces.

:func:`name_mapper` uses the checkpoint converter's rule engine (``bridge.convert.rules``:
``re.search``, the template replaces the matched part, stages, presets) when it is
importable, so one rule file serves both tools; the small local engine below
(``re.fullmatch``, rules chained in order) is the fallback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
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
    data = _read_rule_file(path)
    return parse_rules(data, str(path))


def rename(key: str, rules: Sequence[RenameRule]) -> str:
    """Apply ``rules`` in order to ``key``."""
    for rule in rules:
        key = rule.apply(key)
    return key


def name_mapper(source: str | Path | Sequence[Any] | None) -> Callable[[str], str] | None:
    """Return a function renaming run A's keys, from a rule file / preset name / list of rule dicts.

    Uses ``bridge.convert.rules`` (renames only) when available, else the local rules.
    """
    if source is None:
        return None
    if not isinstance(source, (str, Path)) and all(isinstance(r, RenameRule) for r in source):
        local = list(source)
        return lambda key: rename(key, local)
    try:
        from bridge.convert.rules import load_rules as convert_load_rules
        from bridge.convert.rules import translate_name
    except ImportError:
        local = load_rules(source) if isinstance(source, (str, Path)) else parse_rules(list(source))
        return lambda key: rename(key, local)
    spec: Any = source
    if not isinstance(source, (str, Path)):
        spec = _as_convert_specs(list(source))
    elif Path(source).is_file():
        data = _read_rule_file(Path(source))
        if isinstance(data, dict) and not data.get("include") and isinstance(data.get("rules"), list):
            data = data["rules"]
        if isinstance(data, list):
            spec = _as_convert_specs(data)
    ruleset = convert_load_rules(spec)  # a preset name or a file with includes goes as is

    def translate(key: str) -> str:
        # `name#N` marks the N-th call of a shared module in one step (bridge.taps): keep the mark
        occurrence = _OCCURRENCE.match(key)
        if occurrence:
            return translate_name(occurrence["name"], ruleset) + occurrence["mark"] + (occurrence["path"] or "")
        return translate_name(key, ruleset)

    return translate


_OCCURRENCE = re.compile(r"^(?P<name>[^#]+)(?P<mark>#\d+)(?P<path>\..*)?$")


def _as_convert_specs(items: list[Any]) -> list[Any]:
    """``{rename: {from, to}}`` items -> the converter's ``{kind: rename, from, to}``; others unchanged."""
    return [
        {"kind": "rename", **it["rename"]} if isinstance(it, dict) and set(it) == {"rename"} and isinstance(it["rename"], dict)
        else it
        for it in items
    ]


def _read_rule_file(path: Path) -> Any:
    """Parse a YAML/JSON rule file; FormatError when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FormatError(f"cannot read map file {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError / json.JSONDecodeError
        raise FormatError(f"map file {path} does not parse: {exc}".splitlines()[0]) from None


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


def pair_entries(
    a_entries: Iterable[Any],
    b_entries: Iterable[Any],
    rules: Sequence[RenameRule] | Callable[[str], str] | None = (),
) -> Pairing:
    """Pair leaves on (step, rank, kind, key, occurrence); run A's keys go through ``rules`` first
    (a list of :class:`RenameRule` or a key -> key function, see :func:`name_mapper`)."""
    if callable(rules):
        mapper = rules
    else:
        local = list(rules or ())
        mapper = lambda key: rename(key, local)  # noqa: E731
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
