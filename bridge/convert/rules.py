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

Each kind is a class of :mod:`bridge.convert.kinds` that applies itself and its reverse; this module reads
rule files (one reader for the converter and ``bridge.compare --map``) and compiles them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bridge.convert.kinds import KINDS, Add, NameRule, Rename, Rule, ValueRule
from bridge.convert.templates import Template, compile_template
from bridge.errors import ConversionError

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"

ALL_KINDS = tuple(KINDS)
#: Kinds a preset's ``losses:`` section may use.
LOSS_KINDS = ("rename", "drop", "add")

__all__ = [
    "ALL_KINDS",
    "LOSS_KINDS",
    "PRESET_DIR",
    "Rule",
    "RuleSet",
    "Template",
    "claim",
    "claimed_twice",
    "compile_rule",
    "compile_rules",
    "compile_template",
    "list_presets",
    "load_rules",
    "normalise_rules",
    "read_rule_file",
    "translate_name",
]


def compile_rule(index: int, spec: dict[str, Any]) -> Rule:
    """Compile one rule dict into its kind's class (:mod:`bridge.convert.kinds`); ConversionError naming the
    rule when it is malformed."""
    if not isinstance(spec, dict):
        raise ConversionError(f"rule #{index}: must be a mapping, got {type(spec).__name__}")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConversionError(f"rule #{index}: unknown kind {kind!r} (known: {', '.join(ALL_KINDS)})")
    label = f"#{index} {kind}"
    stage = spec.get("stage", "main")
    if not isinstance(stage, (str, int)) or isinstance(stage, bool):
        raise ConversionError(f"rule {label}: 'stage' must be a string, got {stage!r}")
    return KINDS[kind].parse(index, str(stage), spec, label)


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

    def name_rules(self, stage: str) -> list[NameRule]:
        """The name rules (rename, drop, drop_alias, split, concat) of ``stage``."""
        return [r for r in self.rules if r.stage == stage and isinstance(r, NameRule)]

    def value_rules(self, stage: str) -> list[ValueRule]:
        """The value rules (class_rows, reshape, transpose) of ``stage``."""
        return [r for r in self.rules if r.stage == stage and isinstance(r, ValueRule)]

    def add_rules(self, stage: str | None = None) -> list[Add]:
        """The ``add`` rules of ``stage`` (of every stage for None)."""
        return [r for r in self.rules if isinstance(r, Add) and stage in (None, r.stage)]

    def specs(self) -> list[dict[str, Any]]:
        """The expanded rules as plain data (includes resolved), in order: what provenance records."""
        return [dict(r.spec) for r in self.rules]


def claimed_twice(key: str, stage: str, first: Rule, second: Rule | str) -> ConversionError:
    """The error for a key two rules of one stage claim (ambiguity is an error, never a silent first match)."""
    other = second if isinstance(second, str) else second.label
    return ConversionError(f"key {key!r} claimed by two rules of stage {stage!r}: {first.label} and {other}")


def claim(rules: list[Any], key: str, stage: str) -> tuple[Any, re.Match[str]] | None:
    """The one rule of ``rules`` matching ``key``, with its match; two rules on one key is an error."""
    found: tuple[Any, re.Match[str]] | None = None
    for rule in rules:
        m = rule.match(key)
        if m is None:
            continue
        if found is not None:
            raise claimed_twice(key, stage, found[0], rule)
        found = (rule, m)
    return found


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


def read_rule_file(path: Path) -> Any:
    """Parse a rule file (YAML, or JSON for a ``.json`` file) safely and within limits; ConversionError naming
    the file when it is missing, too large, not UTF-8 or does not parse."""
    try:
        if path.stat().st_size > MAX_RULES_BYTES:
            raise ConversionError(f"rules file {path} is larger than {MAX_RULES_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.load(text, Loader=_RuleLoader)  # a safe loader (subclass of SafeLoader)
    except FileNotFoundError:
        raise ConversionError(f"rules file not found: {path}") from None
    except IsADirectoryError:
        raise ConversionError(f"rules file {path} is a directory") from None
    except UnicodeDecodeError as exc:
        raise ConversionError(f"rules file {path} is not UTF-8 text (byte {exc.start})") from None
    except ConversionError as exc:
        raise ConversionError(f"{path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConversionError(f"bad JSON in {path}: {exc}") from None
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as exc:
        raise ConversionError(
            f"bad YAML in {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None


def normalise_rules(items: list[Any]) -> list[Any]:
    """Rule items in the one dialect the compiler reads: the short form ``{rename: {from, to}}`` (the name-map
    files of ``bridge.compare --map``) becomes ``{kind: rename, from, to}``; other items are left as they are."""
    return [
        {"kind": "rename", **it["rename"]}
        if isinstance(it, dict) and set(it) == {"rename"} and isinstance(it["rename"], dict)
        else it
        for it in items
    ]


def _expand(data: Any, where: str, seen: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Flatten ``include:`` of presets into one list of rule dicts and one of loss-name rules (``losses:``)."""
    if isinstance(data, list):
        return normalise_rules(data), []
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
        inc_rules, inc_losses = _expand(read_rule_file(path), str(path), seen + (name,))
        out.extend(inc_rules)
        losses.extend(inc_losses)
    rules = data.get("rules", [])
    if not isinstance(rules, list):
        raise ConversionError(f"{where}: 'rules' must be a list")
    own_losses = data.get("losses", []) or []
    if not isinstance(own_losses, list):
        raise ConversionError(f"{where}: 'losses' must be a list")
    return out + normalise_rules(rules), losses + normalise_rules(own_losses)


def compile_rules(
    specs: list[dict[str, Any]], source: str = "<inline>", losses: list[dict[str, Any]] | None = None
) -> RuleSet:
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
        rules, losses = _expand(read_rule_file(path), str(path), ())
        return compile_rules(rules, str(path), losses)
    preset = PRESET_DIR / f"{text}.yaml"
    if not preset.is_file():
        raise ConversionError(f"unknown preset {text!r} (known: {', '.join(list_presets())})")
    rules, losses = _expand(read_rule_file(preset), str(preset), (text,))
    return compile_rules(rules, f"preset:{text}", losses)


def _rename_once(name: str, rules: RuleSet) -> tuple[str, bool]:
    matched = False
    for stage in rules.stages:
        found = claim([r for r in rules.stage_rules(stage) if isinstance(r, Rename)], name, stage)
        if found is not None:
            rule, m = found
            name = rule.forward_names(name, m)[0]
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
