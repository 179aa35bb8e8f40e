"""Pair run A's recorded module inputs with run B's modules through the conversion rules.

A module name of A translates like its parameters (``bridge.convert.rules.translate_name``: the rename
rules applied to the name, or to ``name.weight``), so ``backbone.fpn_output2`` pairs with
``neck.fpn_convs.0.conv`` under ``d2-panoptic-fpn-to-mmdet``. A rule file given to ``--map`` may add, beside
(or instead of) converter rules::

    modules:                       # module renames tried first, re.sub with a full match
      - {from: '^roi_heads\\.box_head$', to: 'roi_head.bbox_head'}
    arguments:                     # per-module argument renames (A's name glob)
      - {module: 'sem_seg_head.*', rename: {src_key_padding_mask: key_padding_mask, '0': query}}
    functions:                     # record name (``functions=`` of both record hooks) -> B's attribute path
      rpn_decode: rpn_head.bbox_coder.decode

An argument rename names a keyword, or a position as a digit string; a renamed position becomes a keyword.
A function record keeps its name on both sides; ``arguments:`` items match it like a module name.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.compare.pairing import load_map
from bridge.convert.rules import RuleSet, read_rule_file, translate_name
from bridge.errors import BridgeError, FormatError

_OCCURRENCE = re.compile(r"^(?P<name>[^#]+)(?P<mark>#\d+)?$")


@dataclass
class LocalMap:
    """Converter rules plus the module and argument rules of ``--map`` files."""

    ruleset: RuleSet | None = None
    modules: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    arguments: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    functions: dict[str, str] = field(default_factory=dict)


def load_local_map(sources: Sequence[str | Path]) -> LocalMap:
    """The map of every ``--map`` source (preset names or YAML files), later sources' rule sets winning."""
    result = LocalMap()
    for source in sources:
        data: Any = None
        if Path(source).is_file():
            try:
                data = read_rule_file(Path(source))  # the one reader of rule files
            except BridgeError as exc:
                raise FormatError(f"--map {source}: {exc}") from None
        if isinstance(data, dict):
            _add_sections(result, data, str(source))
            if not (data.get("rules") or data.get("include")):
                continue
        result.ruleset = load_map(str(source))
    return result


def _add_sections(result: LocalMap, data: dict[str, Any], source: str) -> None:
    for item in data.get("modules") or []:
        if not isinstance(item, dict) or not isinstance(item.get("from"), str) or not isinstance(item.get("to"), str):
            raise FormatError(f"--map {source}: modules: each item needs 'from' and 'to' strings, got {item!r}")
        try:
            result.modules.append((re.compile(item["from"]), item["to"]))
        except re.error as exc:
            raise FormatError(f"--map {source}: modules: bad regex {item['from']!r} ({exc})") from None
    for item in data.get("arguments") or []:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("module"), str)
            or not isinstance(item.get("rename"), dict)
        ):
            raise FormatError(
                f"--map {source}: arguments: each item needs 'module' (glob) and 'rename' (mapping), got {item!r}"
            )
        result.arguments.append((item["module"], {str(k): str(v) for k, v in item["rename"].items()}))
    functions = data.get("functions") or {}
    if not isinstance(functions, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in functions.items()
    ):
        raise FormatError(
            f"--map {source}: functions: a mapping record name -> B's attribute path "
            f"(e.g. rpn_decode: rpn_head.bbox_coder.decode), got {functions!r}"
        )
    result.functions.update(functions)


def pair_module(name: str, local_map: LocalMap) -> str:
    """B's module name for A's module ``name`` (a ``#N`` call suffix is kept); unchanged when no rule applies
    or ``name`` is a function record of ``functions:``."""
    match = _OCCURRENCE.match(name)
    base, mark = (match["name"], match["mark"] or "") if match else (name, "")
    if base in local_map.functions:
        return name
    for pattern, template in local_map.modules:
        if pattern.fullmatch(base):
            return pattern.sub(template, base) + mark
    if local_map.ruleset is not None:
        return translate_name(base, local_map.ruleset) + mark
    return name


def argument_renames(name: str, local_map: LocalMap) -> dict[str, str]:
    """The argument renames for A's module ``name`` (every matching ``arguments:`` item, later ones winning)."""
    base = name.split("#", 1)[0]
    renames: dict[str, str] = {}
    for glob, rename in local_map.arguments:
        if fnmatch.fnmatchcase(base, glob):
            renames.update(rename)
    return renames


def plan_pairs(input_records: Iterable[tuple[str, int]], local_map: LocalMap) -> list[dict[str, Any]]:
    """One replay task per recorded (A name, step): ``{"step", "name_a", "name_b", "renames"}``, with
    ``"function"`` (B's attribute path) for a function record of ``functions:``."""
    tasks = []
    for name, step in input_records:
        task: dict[str, Any] = {
            "step": step,
            "name_a": name,
            "name_b": pair_module(name, local_map),
            "renames": argument_renames(name, local_map),
        }
        if name.split("#", 1)[0] in local_map.functions:
            task["function"] = local_map.functions[name.split("#", 1)[0]]
        tasks.append(task)
    return tasks
