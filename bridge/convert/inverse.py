"""Run a ``from`` regex and its template backwards: what ``--reverse`` uses to name a key's source.

A rule maps the matched part of a key through a template: ``from: '^res(?P<S>\\d+)\\.'``,
``to: 'layer{S-1}.'``.  Backwards, the template becomes a regex (its literal text escaped, each group it
inserts captured with the group's own sub-pattern, an offset group as an integer), whose match gives back
the groups' values; the ``from`` regex is then walked with those values to spell the source text.  Parts
of ``from`` that no group keeps (an optional ``(?:bottom_up\\.)?``, an alternation) give several
candidates, greedy first (present before absent, left branch before right), as the regex itself would
try them; a wildcard outside any kept group (``.*``) cannot be spelled and raises :class:`NotInvertible`.
The caller checks every candidate by running the rule forwards on it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from re import _constants as _c  # type: ignore[attr-defined]  # the regex parse tree's opcodes
from re import _parser  # type: ignore[attr-defined]
from typing import Any

from bridge.convert.templates import Template

#: Most candidate source names one key may have (each optional part doubles them).
MAX_CANDIDATES = 64


class NotInvertible(Exception):
    """A rule (or one key under it) cannot be run backwards; the message says why."""


@dataclass(frozen=True)
class GroupValues:
    """The values of a ``from`` regex's groups recovered from an inverse match (``.group`` like a match)."""

    values: dict[int, str | None]
    names: dict[str, int]

    def group(self, name: int | str, /) -> str | None:
        """The value of group ``name`` (index or name); None when it did not participate."""
        index = self.names[name] if isinstance(name, str) else name
        return self.values.get(index)


def _group_sources(regex: str) -> dict[int, str]:
    """The source text of each capturing group of ``regex``, by group index."""
    out: dict[int, str] = {}
    stack: list[tuple[int | None, int]] = []
    count, i, in_class = 0, 0, False
    while i < len(regex):
        char = regex[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
            i += 1
            continue
        if char == "[":
            in_class = True
            i += 1
            i += regex[i : i + 1] == "^"
            i += regex[i : i + 1] == "]"
            continue
        if char == "(":
            if regex.startswith("(?P<", i):
                count += 1
                stack.append((count, regex.index(">", i) + 1))
            elif regex.startswith("(?", i):
                stack.append((None, i))
            else:
                count += 1
                stack.append((count, i + 1))
        elif char == ")" and stack:
            group, start = stack.pop()
            if group is not None:
                out[group] = regex[start:i]
        i += 1
    return out


def _optional_groups(parsed: Any, under: bool = False, out: dict[int, bool] | None = None) -> dict[int, bool]:
    """For each group of a parsed regex: whether it may not participate (inside a ``?``, ``*`` or a branch)."""
    out = {} if out is None else out
    for op, arg in parsed:
        if op == _c.SUBPATTERN:
            if arg[0] is not None:
                out[arg[0]] = under
            _optional_groups(arg[-1], under, out)
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            _optional_groups(arg[2], under or arg[0] == 0, out)
        elif op == _c.BRANCH:
            for branch in arg[1]:
                _optional_groups(branch, True, out)
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            _optional_groups(arg[1], True, out)
    return out


_TAIL = re.compile(r"(?:\$|\\Z|\(\?=[^()]*(?:\([^()]*\)[^()]*)*\)|\(\?![^()]*(?:\([^()]*\)[^()]*)*\))+$")


def _anchors(regex: str) -> tuple[str, str]:
    """The leading ``^`` / ``\\A`` and the trailing ``$`` / lookaheads of a regex without top-level ``|``."""
    head = "^" if regex.startswith("^") else r"\A" if regex.startswith(r"\A") else ""
    tail = _TAIL.search(regex)
    return head, tail.group(0) if tail and not regex.endswith(r"\$") else ""


def _plain_group(source: str) -> str:
    """A group's sub-pattern with its own named groups made anonymous (their names are used by the caller)."""
    return re.sub(r"\(\?P<\w+>", "(?:", source)


@dataclass(frozen=True)
class InverseTemplate:
    """A template read backwards: :meth:`match` recovers the ``from`` regex's group values from an output key."""

    regex: re.Pattern[str]
    captures: tuple[tuple[str, int, int], ...]  # (capture name, group index, offset)
    names: dict[str, int]

    def match(self, key: str) -> tuple[re.Match[str], GroupValues] | None:
        """The inverse match on ``key`` and the group values it gives, or None (also when two uses disagree)."""
        m = self.regex.search(key)
        if m is None:
            return None
        values: dict[int, str | None] = {}
        for capture, index, offset in self.captures:
            text = m.group(capture)
            if offset and text is not None:
                text = str(int(text) - offset)
            if index in values and values[index] != text:
                return None
            values[index] = text
        return m, GroupValues(values, self.names)


def invert_template(template: Template, pattern: re.Pattern[str]) -> InverseTemplate:
    """The inverse regex of ``template`` rendered from matches of ``pattern``; NotInvertible when there is none."""
    sources = _group_sources(pattern.pattern)
    optional = _optional_groups(_parser.parse(pattern.pattern))
    head, tail = ("", "") if _top_level_branch(pattern.pattern) else _anchors(pattern.pattern)
    out = [head]
    captures: list[tuple[str, int, int]] = []
    seen: dict[tuple[int, int], str] = {}
    for kind, value, offset in template.parts:
        if kind == "lit":
            out.append(re.escape(value))
            continue
        index = pattern.groupindex[value] if isinstance(value, str) else value
        if index == 0:
            raise NotInvertible(f"template {template.source!r} inserts the whole match")
        if (index, offset) in seen:
            out.append(f"(?P={seen[index, offset]})")
            continue
        name = f"g{index}_{'m' if offset < 0 else 'p'}{abs(offset)}"
        body = r"-?\d+" if offset else _plain_group(sources[index])
        out.append(f"(?P<{name}>{body})" + ("?" if optional.get(index) else ""))
        seen[index, offset] = name
        captures.append((name, index, offset))
    out.append(tail)
    try:
        regex = re.compile("".join(out))
    except re.error as exc:
        raise NotInvertible(f"template {template.source!r} gives no inverse regex: {exc}") from None
    return InverseTemplate(regex, tuple(captures), dict(pattern.groupindex))


def _top_level_branch(regex: str) -> bool:
    depth, i, in_class = 0, 0, False
    while i < len(regex):
        char = regex[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
        i += 1
    return False


def spell(pattern: re.Pattern[str], groups: GroupValues) -> list[str]:
    """Every text ``pattern`` can match given its groups' values, greedy first; NotInvertible when a part of
    it no group keeps cannot be spelled (a wildcard, a character class)."""
    out = _spell(_parser.parse(pattern.pattern), groups)
    return list(dict.fromkeys(out))[:MAX_CANDIDATES]


def _spell(parsed: Any, groups: GroupValues) -> list[str]:
    texts = [""]
    for op, arg in parsed:
        options = _spell_item(op, arg, groups)
        texts = [a + b for a, b in itertools.islice(itertools.product(texts, options), MAX_CANDIDATES)]
        if not texts:
            return []
    return texts


def _spell_item(op: Any, arg: Any, groups: GroupValues) -> list[str]:
    if op == _c.LITERAL:
        return [chr(arg)]
    if op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
        return [""]
    if op == _c.SUBPATTERN:
        index = arg[0]
        if index is None:
            return _spell(arg[-1], groups)
        if index not in groups.values:
            raise NotInvertible(f"group {index} is not kept by the template")
        value = groups.values[index]
        return [] if value is None else [value]
    if op == _c.GROUPREF:
        value = groups.values.get(arg)
        return [] if value is None else [value]
    if op == _c.IN and len(arg) == 1 and arg[0][0] == _c.LITERAL:
        return [chr(arg[0][1])]
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT) and arg[1] <= 1:
        present = _spell(arg[2], groups) if arg[1] == 1 else []
        took_part = any(groups.values.get(index) is not None for index in _optional_groups(arg[2]))
        absent = [""] if arg[0] == 0 and not took_part else []
        return present + absent if op == _c.MAX_REPEAT else absent + present
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT) and arg[0] == arg[1]:
        return _spell(list(arg[2]) * arg[0], groups)
    if op == _c.BRANCH:
        return [text for branch in arg[1] for text in _spell(branch, groups)]
    raise NotInvertible("the regex has a part no template group keeps (a wildcard or a character class)")
