"""Safe name templates and rule regexes: the two pieces of text a conversion rule is made of.

A template (``to``, ``of``, ``with``) is literal text with group references: ``{1}`` / ``{name}`` insert a
regex group (an unmatched optional group inserts ''), ``{S-1}`` / ``{S+2}`` an integer group plus or minus a
constant, ``{{`` / ``}}`` are braces; no eval.  A rule regex is bounded in length and refused when it nests
unbounded repetitions (``(a+)+``), whose matching time can explode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.errors import ConversionError


class Groups(Protocol):
    """What a template is rendered from: a regex match, or the group values an inverse match recovered."""

    def group(self, name: int | str, /) -> Any:
        """The text of group ``name`` (None when it did not participate)."""


_FIELD_RE = re.compile(r"\{(\w+)(?:([+-])(\d+))?\}")
#: dtypes an ``add`` rule may create.
DTYPES = {"int64", "int32", "float32", "float16", "bfloat16", "float64", "bool", "uint8"}


@dataclass(frozen=True)
class Template:
    """A compiled name template: literal text and group references with optional +/- offsets."""

    source: str
    parts: tuple[tuple[str, Any, int], ...]  # ("lit", text, 0) or ("ref", group, offset)

    def render(self, match: Groups | None, rule: str) -> str:
        """Fill the template from ``match``; raise ConversionError when arithmetic hits a non-integer."""
        out: list[str] = []
        for kind, value, offset in self.parts:
            if kind == "lit":
                out.append(value)
                continue
            if match is None:
                raise ConversionError(f"rule {rule}: template {self.source!r} needs a regex match")
            text = match.group(value)
            if offset:
                if text is None or not text.lstrip("-").isdigit():
                    raise ConversionError(
                        f"rule {rule}: group {value!r} = {text!r} is not an integer in {self.source!r}"
                    )
                text = str(int(text) + offset)
            out.append(text or "")
        return "".join(out)


def compile_template(text: str, pattern: re.Pattern[str] | None, rule: str) -> Template:
    """Parse ``text`` into a Template, checking every group it names exists in ``pattern``."""
    if not isinstance(text, str):
        raise ConversionError(f"rule {rule}: template must be a string, got {text!r}")
    parts: list[tuple[str, Any, int]] = []
    pos = 0
    lit: list[str] = []
    while pos < len(text):
        if text.startswith("{{", pos):
            lit.append("{")
            pos += 2
            continue
        if text.startswith("}}", pos):
            lit.append("}")
            pos += 2
            continue
        if text[pos] == "{":
            m = _FIELD_RE.match(text, pos)
            if not m:
                raise ConversionError(f"rule {rule}: bad template field at {text[pos:]!r} in {text!r}")
            if lit:
                parts.append(("lit", "".join(lit), 0))
                lit = []
            name, sign, num = m.group(1), m.group(2), m.group(3)
            group: int | str = int(name) if name.isdigit() else name
            if pattern is None:
                raise ConversionError(f"rule {rule}: template {text!r} refers to a group but has no regex")
            if isinstance(group, int) and not 0 <= group <= pattern.groups:
                raise ConversionError(f"rule {rule}: template {text!r} uses group {group}, regex has {pattern.groups}")
            if isinstance(group, str) and group not in pattern.groupindex:
                raise ConversionError(f"rule {rule}: template {text!r} uses unknown group {group!r}")
            offset = int(num) * (-1 if sign == "-" else 1) if sign else 0
            parts.append(("ref", group, offset))
            pos = m.end()
            continue
        if text[pos] == "}":
            raise ConversionError(f"rule {rule}: unbalanced '}}' in template {text!r}")
        lit.append(text[pos])
        pos += 1
    if lit:
        parts.append(("lit", "".join(lit), 0))
    return Template(text, tuple(parts))


def compile_regex(spec: dict[str, Any], field_name: str, label: str) -> re.Pattern[str]:
    """The rule's regex in ``field_name``, compiled; ConversionError when missing, too long, bad or explosive."""
    raw = spec.get(field_name)
    if not isinstance(raw, str) or not raw:
        raise ConversionError(f"rule {label}: needs a regex string in {field_name!r}")
    if len(raw) > MAX_REGEX_CHARS:
        raise ConversionError(f"rule {label}: regex in {field_name!r} is longer than {MAX_REGEX_CHARS} characters")
    try:
        from re import _parser  # type: ignore[attr-defined]

        if _nested_repeat(_parser.parse(raw)):
            raise ConversionError(
                f"rule {label}: regex {raw!r} nests unbounded repetitions (like '(a+)+'), "
                "whose matching time can explode; rewrite it without the nesting"
            )
        return re.compile(raw)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ConversionError(f"rule {label}: bad regex {raw!r}: {exc}") from None


#: Bounds of the integer fields of rules (tensor dims, sizes, shapes).
MAX_DIM = 16
MAX_ELEMENTS = 2**31
#: Longest regex a rule may hold; nested unbounded repetition (``(a+)+``) is refused (its matching cost
#: grows exponentially with the key length).
MAX_REGEX_CHARS = 2000


def int_field(spec: dict[str, Any], name: str, default: int, label: str, lo: int, hi: int) -> int:
    """The integer field ``name`` of a rule (``default`` when absent), checked to lie in ``lo..hi``."""
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConversionError(f"rule {label}: {name!r} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def int_list(value: Any, name: str, label: str, lo: int, hi: int) -> list[int]:
    """``value`` checked to be a list of integers in ``lo..hi``."""
    if not isinstance(value, list) or any(
        isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi for v in value
    ):
        raise ConversionError(f"rule {label}: {name!r} must be a list of integers in {lo}..{hi}, got {value!r}")
    return value


def _items(parsed: Any) -> list[tuple[Any, Any]]:
    """The top-level items of a parsed regex, groups opened."""
    from re import _constants as c  # type: ignore[attr-defined]

    out = []
    for op, arg in parsed:
        if op == c.SUBPATTERN:
            out.extend(_items(arg[-1]))
        else:
            out.append((op, arg))
    return out


def _unbounded(op: Any, arg: Any) -> bool:
    from re import _constants as c  # type: ignore[attr-defined]

    return op in (c.MAX_REPEAT, c.MIN_REPEAT) and (arg[1] == c.MAXREPEAT or arg[1] > 100)


def _has_unbounded(parsed: Any) -> bool:
    from re import _constants as c  # type: ignore[attr-defined]

    for op, arg in _items(parsed):
        if _unbounded(op, arg) or (op in (c.MAX_REPEAT, c.MIN_REPEAT) and _has_unbounded(arg[2])):
            return True
        if op == c.BRANCH and any(_has_unbounded(b) for b in arg[1]):
            return True
    return False


def _nested_repeat(parsed: Any) -> bool:
    """True for the classic catastrophic form: an unbounded repetition whose body is nothing but (possibly
    alternated) unbounded repetitions, such as ``(a+)+``, ``(a*)*`` or ``(?:x+|y+)*``; a body with a fixed
    character as well (``(?:\\w+\\.)*``) is accepted."""
    from re import _constants as c  # type: ignore[attr-defined]

    for op, arg in _items(parsed):
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            body = _items(arg[2])
            bare = all(o in (c.MAX_REPEAT, c.MIN_REPEAT, c.BRANCH) for o, _a in body)
            if _unbounded(op, arg) and bare and _has_unbounded(arg[2]):
                return True
            if _nested_repeat(arg[2]):
                return True
        elif op == c.BRANCH and any(_nested_repeat(b) for b in arg[1]):
            return True
        elif op in (c.ASSERT, c.ASSERT_NOT) and _nested_repeat(arg[1]):
            return True
    return False
