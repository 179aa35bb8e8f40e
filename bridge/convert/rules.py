r"""Conversion rule sets: plain data (YAML or a list of dicts) compiled once into rule objects.

A rule set is an ordered list of rules.  Each rule belongs to a *stage* (``stage:``, default
``main``); stages run in the order they first appear, each on the names the previous stage
produced.  Inside one stage a key may be claimed by at most one *name* rule (rename, drop,
drop_alias, split, concat) and at most one *value* rule (class_rows, reshape, transpose);
value rules run before name rules of the same stage; ``add`` rules run at the end of their stage.

Templates (``to``, ``of``) are safe string templates, no eval:
``{1}`` / ``{name}`` insert a regex group (an unmatched optional group inserts ''),
``{S-1}`` / ``{S+2}`` insert an integer group plus or minus a constant, ``{{`` / ``}}`` are braces.
Regexes use ``re.search``; a rendered template replaces the *matched part* of the key, so
``{from: '^sem_seg_head\.', to: 'panoptic_head.'}`` is a prefix rename and an anchored
``^...$`` regex rewrites the whole key.

``class_rows`` gathers rows by an index list (or a named one such as ``coco91_to_coco80``) that counts
class rows only; ``background: first|last|none`` says where the background / no-object row sits, and it
stays there.  ``drop`` with ``if_zero: true`` drops a key only while its tensor is all zeros and stops the
conversion otherwise (with the rule's ``hint``): for a weight the target model has no place for, which is
harmless only at its initial value.  Every rule's number of matched keys is reported; a rule that matches nothing is warned
about unless it says ``optional: true`` (e.g. a rule for module names, which no state-dict key has).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge.errors import ConversionError

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"

NAME_KINDS = ("rename", "drop", "drop_alias", "split", "concat")
VALUE_KINDS = ("class_rows", "reshape", "transpose")
ALL_KINDS = NAME_KINDS + VALUE_KINDS + ("add",)
#: Kinds a preset's ``losses:`` section may use.
LOSS_KINDS = ("rename", "drop", "add")
#: Where a class_rows tensor keeps its background / no-object row: row 0, the last row, or nowhere.
BACKGROUNDS = ("none", "first", "last")

_FIELD_RE = re.compile(r"\{(\w+)(?:([+-])(\d+))?\}")
_DTYPES = {"int64", "int32", "float32", "float16", "bfloat16", "float64", "bool", "uint8"}


@dataclass(frozen=True)
class Template:
    """A compiled name template: literal text and group references with optional +/- offsets."""

    source: str
    parts: tuple[tuple[str, Any, int], ...]  # ("lit", text, 0) or ("ref", group, offset)

    def render(self, match: re.Match[str] | None, rule: str) -> str:
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


@dataclass(frozen=True)
class Rule:
    """One compiled rule; ``spec`` keeps the original data for reports and provenance."""

    index: int
    kind: str
    stage: str
    pattern: re.Pattern[str] | None
    spec: dict[str, Any]
    to: Template | None = None
    to_list: tuple[Template, ...] = ()
    of: Template | None = None
    with_list: tuple[Template, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Short human name of the rule: ``#index kind 'regex'`` (or its ``name:``)."""
        name = self.spec.get("name")
        ident = name or (self.pattern.pattern if self.pattern is not None else self.spec.get("key", ""))
        return f"#{self.index} {self.kind} {ident!r}"

    @property
    def optional(self) -> bool:
        """True when the rule may match nothing without a warning (``optional: true``, e.g. module names only)."""
        return bool(self.spec.get("optional", False))

    def apply(self, template: Template, key: str, m: re.Match[str]) -> str:
        """Replace the matched part of ``key`` with ``template`` rendered from ``m``."""
        return key[: m.start()] + template.render(m, self.label) + key[m.end():]

    def match(self, key: str) -> re.Match[str] | None:
        """Return the full match of this rule's regex on ``key`` (``re.search`` semantics)."""
        return self.pattern.search(key) if self.pattern is not None else None


@dataclass(frozen=True)
class RuleSet:
    """An ordered, compiled rule set with its provenance (preset name or file path)."""

    rules: tuple[Rule, ...]
    source: str = "<inline>"
    #: The preset's ``losses:`` section: rename / drop / add rules for loss names (``bridge.compare``, kind loss).
    losses: tuple[Rule, ...] = ()

    @property
    def stages(self) -> list[str]:
        """Stage names in execution order."""
        seen: list[str] = []
        for rule in self.rules:
            if rule.stage not in seen:
                seen.append(rule.stage)
        return seen

    def stage_rules(self, stage: str) -> list[Rule]:
        """Rules of ``stage`` in file order."""
        return [r for r in self.rules if r.stage == stage]

    def specs(self) -> list[dict[str, Any]]:
        """The expanded rules as plain data (includes resolved), in order: what provenance records."""
        return [dict(r.spec) for r in self.rules]


def _regex(spec: dict[str, Any], field_name: str, label: str) -> re.Pattern[str]:
    raw = spec.get(field_name)
    if not isinstance(raw, str) or not raw:
        raise ConversionError(f"rule {label}: needs a regex string in {field_name!r}")
    if len(raw) > MAX_REGEX_CHARS:
        raise ConversionError(f"rule {label}: regex in {field_name!r} is longer than {MAX_REGEX_CHARS} characters")
    try:
        from re import _parser  # type: ignore[attr-defined]

        if _nested_repeat(_parser.parse(raw)):
            raise ConversionError(f"rule {label}: regex {raw!r} nests unbounded repetitions (like '(a+)+'), "
                                  "whose matching time can explode; rewrite it without the nesting")
        return re.compile(raw)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ConversionError(f"rule {label}: bad regex {raw!r}: {exc}") from None


#: Bounds of the integer fields of rules (tensor dims, sizes, shapes).
MAX_DIM = 16
MAX_ELEMENTS = 2**31
#: Longest regex a rule may hold; nested unbounded repetition (``(a+)+``) is refused (its matching cost
#: grows exponentially with the key length).
MAX_REGEX_CHARS = 2000


def _int(spec: dict[str, Any], name: str, default: int, label: str, lo: int, hi: int) -> int:
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConversionError(f"rule {label}: {name!r} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _int_list(value: Any, name: str, label: str, lo: int, hi: int) -> list[int]:
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi
                                          for v in value):
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


def compile_rule(index: int, spec: dict[str, Any]) -> Rule:
    """Compile one rule dict; raise ConversionError naming the rule when it is malformed."""
    if not isinstance(spec, dict):
        raise ConversionError(f"rule #{index}: must be a mapping, got {type(spec).__name__}")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in ALL_KINDS:
        raise ConversionError(f"rule #{index}: unknown kind {kind!r} (known: {', '.join(ALL_KINDS)})")
    label = f"#{index} {kind}"
    stage = spec.get("stage", "main")
    if not isinstance(stage, (str, int)) or isinstance(stage, bool):
        raise ConversionError(f"rule {label}: 'stage' must be a string, got {stage!r}")
    stage = str(stage)
    opts: dict[str, Any] = {}
    if kind == "add":
        if "key" in spec and "to" in spec:
            pattern = _regex(spec, "key", label)
            to = compile_template(spec["to"], pattern, label)
        elif "key" in spec:
            pattern, to = None, compile_template(str(spec["key"]).replace("{", "{{").replace("}", "}}"), None, label)
        else:
            raise ConversionError(f"rule {label}: needs 'key' (fixed name, or regex with 'to')")
        dtype = str(spec.get("dtype", "float32"))
        if dtype not in _DTYPES:
            raise ConversionError(f"rule {label}: unknown dtype {dtype!r}")
        on = str(spec.get("on", "converted"))
        if on not in ("converted", "target", "source"):
            raise ConversionError(f"rule {label}: 'on' must be converted, target or source")
        value = spec.get("value", 0)
        if not isinstance(value, (int, float)) or (isinstance(value, int) and not -2**63 <= value < 2**64):
            raise ConversionError(f"rule {label}: 'value' must be a number, got {value!r}")
        shape = _int_list(spec.get("shape", []), "shape", label, 0, MAX_ELEMENTS)
        if len(shape) > MAX_DIM or math.prod(shape) > MAX_ELEMENTS:
            raise ConversionError(f"rule {label}: 'shape' {shape} is too large")
        opts = {"value": value, "dtype": dtype, "shape": shape, "on": on}
        return Rule(index, kind, stage, pattern, dict(spec), to=to, options=opts)
    pattern = _regex(spec, "from", label)
    to = of = None
    to_list: tuple[Template, ...] = ()
    with_list: tuple[Template, ...] = ()
    if kind == "rename":
        to = compile_template(spec.get("to"), pattern, label)
    elif kind == "drop":
        if not isinstance(spec.get("if_zero", False), bool):
            raise ConversionError(f"rule {label}: 'if_zero' must be true or false, got {spec.get('if_zero')!r}")
        opts = {"if_zero": spec.get("if_zero", False), "hint": str(spec.get("hint", ""))}
    elif kind == "drop_alias":
        of = compile_template(spec.get("of"), pattern, label)
    elif kind == "split":
        targets = spec.get("to")
        if not isinstance(targets, list) or len(targets) < 2:
            raise ConversionError(f"rule {label}: 'to' must list at least two templates")
        to_list = tuple(compile_template(t, pattern, label) for t in targets)
        sizes = spec.get("sizes")
        if sizes is not None and (not isinstance(sizes, list) or len(sizes) != len(targets)):
            raise ConversionError(f"rule {label}: 'sizes' must have one entry per target")
        if sizes is not None:
            _int_list(sizes, "sizes", label, 0, MAX_ELEMENTS)
        opts = {"dim": _int(spec, "dim", 0, label, -MAX_DIM, MAX_DIM), "sizes": sizes}
    elif kind == "concat":
        others = spec.get("with")
        if not isinstance(others, list) or not others:
            raise ConversionError(f"rule {label}: 'with' must list the other parts' templates")
        with_list = tuple(compile_template(t, pattern, label) for t in others)
        to = compile_template(spec.get("to"), pattern, label)
        opts = {"dim": _int(spec, "dim", 0, label, -MAX_DIM, MAX_DIM)}
    elif kind == "class_rows":
        rows = spec.get("index")
        if isinstance(rows, str):
            from bridge.coco91 import INDEX_LISTS

            if rows not in INDEX_LISTS:
                raise ConversionError(f"rule {label}: unknown index list {rows!r} (known: {', '.join(INDEX_LISTS)})")
            rows = list(INDEX_LISTS[rows])
        if not isinstance(rows, list) or not all(isinstance(i, int) and not isinstance(i, bool) and
                                                 0 <= i < MAX_ELEMENTS for i in rows):
            raise ConversionError(f"rule {label}: 'index' must be a list of ints >= 0 or a known list name")
        background = spec.get("background", "none")
        if background not in BACKGROUNDS:
            raise ConversionError(f"rule {label}: 'background' must be one of {', '.join(BACKGROUNDS)}")
        keep_trailing = _int(spec, "keep_trailing", 0, label, 0, MAX_ELEMENTS)
        if keep_trailing and background != "none":
            raise ConversionError(f"rule {label}: give 'background' or 'keep_trailing', not both")
        opts = {"index": rows, "dim": _int(spec, "dim", 0, label, -MAX_DIM, MAX_DIM), "keep_trailing": keep_trailing,
                "background": background}
    elif kind == "reshape":
        shape = _int_list(spec.get("shape"), "shape", label, -1, MAX_ELEMENTS)
        opts = {"shape": shape}
    elif kind == "transpose":
        dims = _int_list(spec.get("dims", [0, 1]), "dims", label, -MAX_DIM, MAX_DIM)
        if len(dims) != 2:
            raise ConversionError(f"rule {label}: 'dims' must be two ints")
        opts = {"dims": dims}
    return Rule(index, kind, stage, pattern, dict(spec), to=to, to_list=to_list, of=of, with_list=with_list,
                options=opts)


def list_presets() -> list[str]:
    """Names of the presets shipped in ``bridge/presets``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


#: Limits of a rule file: its size, the nesting of its lists and mappings, and no YAML aliases (an alias
#: bomb expands a few lines into billions of nodes).
MAX_RULES_BYTES = 4 * 2**20
MAX_YAML_DEPTH = 32


class _RuleLoader(yaml.SafeLoader):
    """yaml's safe loader that refuses aliases and nesting deeper than :data:`MAX_YAML_DEPTH`."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Compose one node; refuse an alias (``*name``) or a node nested too deeply."""
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConversionError(f"YAML aliases (*name) are not allowed in rule files (line {mark.line + 1})")
        depth = getattr(self, "_depth", 0)
        if depth >= MAX_YAML_DEPTH:
            raise ConversionError(f"rule file nested deeper than {MAX_YAML_DEPTH} levels")
        self._depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth


def _read_yaml(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_RULES_BYTES:
            raise ConversionError(f"rules file {path} is larger than {MAX_RULES_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
        return yaml.load(text, Loader=_RuleLoader)  # noqa: S506 - a safe loader (subclass of SafeLoader)
    except FileNotFoundError:
        raise ConversionError(f"rules file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConversionError(f"rules file {path} is not UTF-8 text (byte {exc.start})") from None
    except ConversionError as exc:
        raise ConversionError(f"{path}: {exc}") from None
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as exc:
        raise ConversionError(f"bad YAML in {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _expand(data: Any, where: str, seen: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Flatten ``include:`` of presets into one list of rule dicts and one of loss-name rules (``losses:``)."""
    if isinstance(data, list):
        return list(data), []
    if not isinstance(data, dict):
        raise ConversionError(f"{where}: a rule set must be a list of rules or a mapping with 'rules'")
    out: list[dict[str, Any]] = []
    losses: list[dict[str, Any]] = []
    for name in data.get("include", []) or []:
        if name in seen:
            raise ConversionError(f"{where}: include cycle through {name!r}")
        path = PRESET_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ConversionError(f"{where}: unknown included preset {name!r}")
        inc_rules, inc_losses = _expand(_read_yaml(path), str(path), seen + (name,))
        out.extend(inc_rules)
        losses.extend(inc_losses)
    rules = data.get("rules", [])
    if not isinstance(rules, list):
        raise ConversionError(f"{where}: 'rules' must be a list")
    own_losses = data.get("losses", []) or []
    if not isinstance(own_losses, list):
        raise ConversionError(f"{where}: 'losses' must be a list")
    return out + list(rules), losses + list(own_losses)


def compile_rules(specs: list[dict[str, Any]], source: str = "<inline>",
                  losses: list[dict[str, Any]] | None = None) -> RuleSet:
    """Compile a list of rule dicts (already expanded), and optional loss-name rules, into a RuleSet."""
    if not isinstance(specs, list):
        raise ConversionError(f"{source}: rules must be a list")
    loss_rules = tuple(compile_rule(i, s) for i, s in enumerate(losses or []))
    for rule in loss_rules:
        if rule.kind not in LOSS_KINDS:
            raise ConversionError(f"{source}: losses rule {rule.label}: kind must be one of {', '.join(LOSS_KINDS)}")
    return RuleSet(tuple(compile_rule(i, s) for i, s in enumerate(specs)), source, loss_rules)


def load_rules(preset_or_path: str | Path | list[dict[str, Any]] | RuleSet) -> RuleSet:
    """Load a rule set from a preset name, a YAML file path, a list of rule dicts or a RuleSet."""
    if isinstance(preset_or_path, RuleSet):
        return preset_or_path
    if isinstance(preset_or_path, list):
        rules, losses = _expand(preset_or_path, "<inline>", ())
        return compile_rules(rules, "<inline>", losses)
    text = str(preset_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in text:
        if not path.is_file():
            raise ConversionError(f"rules file not found: {path}")
        rules, losses = _expand(_read_yaml(path), str(path), ())
        return compile_rules(rules, str(path), losses)
    preset = PRESET_DIR / f"{text}.yaml"
    if not preset.is_file():
        raise ConversionError(f"unknown preset {text!r} (known: {', '.join(list_presets())})")
    rules, losses = _expand(_read_yaml(preset), str(preset), (text,))
    return compile_rules(rules, f"preset:{text}", losses)


def _rename_once(name: str, rules: RuleSet) -> tuple[str, bool]:
    matched = False
    for stage in rules.stages:
        hits = [(r, m) for r in rules.stage_rules(stage) if r.kind == "rename" and (m := r.match(name))]
        if len(hits) > 1:
            raise ConversionError(
                f"key {name!r} claimed by two rules of stage {stage!r}: {hits[0][0].label} and {hits[1][0].label}"
            )
        if hits:
            rule, m = hits[0]
            name = rule.apply(rule.to, name, m)  # type: ignore[arg-type]
            matched = True
    return name, matched


def translate_name(name: str, rules: RuleSet | str | Path | list[dict[str, Any]]) -> str:
    """Apply only the rename rules to a module/activation name.

    Tries ``name`` itself first; when no rename rule matches it, tries ``name + '.weight'`` and strips
    the suffix again, so module names translate like their parameters.  Unmatched names come back unchanged.
    """
    ruleset = load_rules(rules)
    out, matched = _rename_once(name, ruleset)
    if matched:
        return out
    out, matched = _rename_once(name + ".weight", ruleset)
    if matched and out.endswith(".weight"):
        return out[: -len(".weight")]
    return name
