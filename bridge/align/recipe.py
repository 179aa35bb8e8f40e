"""Read and check an alignment recipe (YAML, docs/ALIGN.md): every error names the file and the key."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge.align.families import FAMILIES
from bridge.errors import BridgeError

FRAMEWORKS = ("detectron2", "mmdet")
#: Every stage, in the order they run.
STAGES = ("data", "reference", "convert", "port", "compare", "report")
SIDES = ("reference", "port")
_TOP_KEYS = {"family", "out", "data", "reference", "port", "convert", "record", "compare", "stages", "known"}
#: The report's stages a ``known:`` entry can name (``bridge.report.stages.STAGES``).
REPORT_STAGES = ("weights", "metadata", "inference", "losses", "gradients", "optimizer", "evaluation")
_SIDE_KEYS = {
    "framework",
    "python",
    "builder",
    "config_setup",
    "command",
    "env",
    "cwd",
    "config",
    "options",
    "dataset",
    "task",
    "seed",
    "input_format",
    "run",
    "weights",
    "meta",
}


class RecipeError(BridgeError):
    """The recipe is unreadable or does not say what ``bridge.align`` needs."""


@dataclass
class Side:
    """One side of the alignment: how its process runs and where its run lands."""

    name: str
    framework: str
    python: str
    builder: str | None = None
    config_setup: list[str] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    config: str | None = None
    options: list[str] = field(default_factory=list)
    dataset: str | None = None
    task: str | None = None
    seed: int = 0
    input_format: str = "BGR"
    run: str | None = None
    weights: str | None = None
    meta: str | None = None
    record: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    """A checked recipe; paths as written (placeholders such as ``{out}`` filled in when stages run)."""

    path: Path
    out: Path
    stages: list[str]
    reference: Side
    port: Side
    data: dict[str, Any]
    convert: dict[str, Any]
    compare: dict[str, Any]
    family: str | None = None
    known: list[dict[str, Any]] = field(default_factory=list)


class _Checker:
    """Typed access to the recipe's keys; errors name the file and the dotted key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> RecipeError:
        return RecipeError(f"{self.path}: key '{key}': {message}")

    def mapping(self, value: Any, key: str, allowed: set[str] | None = None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        unknown = sorted(str(k) for k in value if allowed is not None and k not in allowed)
        if unknown:
            raise self.fail(
                f"{key}.{unknown[0]}" if key else unknown[0], f"unknown key (known: {', '.join(sorted(allowed))})"
            )
        return value

    def text(self, value: Any, key: str, *, required: bool = False) -> str | None:
        if value is None:
            if required:
                raise self.fail(key, "missing")
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or str(value) == "":
            raise self.fail(key, f"expected a non-empty string, got {value!r}")
        return str(value)

    def strings(self, value: Any, key: str) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value
        ):
            raise self.fail(key, "expected a list of strings")
        return [str(v) for v in value]

    def choice(
        self, value: Any, key: str, choices: tuple[str, ...] | list[str], *, required: bool = False
    ) -> str | None:
        text = self.text(value, key, required=required)
        if text is not None and text not in choices:
            raise self.fail(key, f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    def integer(self, value: Any, key: str, default: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {value!r}")
        return value


def _commands(check: _Checker, value: Any, key: str) -> list[list[str]]:
    """``command:`` as a list of argv lists (one argv list or several)."""
    if not isinstance(value, list) or not value:
        raise check.fail(key, "expected an argv list [PROGRAM, ARG...] or a list of them")
    if all(isinstance(v, list) for v in value):
        commands = [check.strings(v, f"{key}[{n}]") for n, v in enumerate(value)]
    else:
        commands = [check.strings(value, key)]
    if any(not argv for argv in commands):
        raise check.fail(key, "an empty command")
    return commands


def _side(check: _Checker, raw: Any, name: str, family: str | None, record: dict[str, Any]) -> Side:
    raw = check.mapping(raw, name, _SIDE_KEYS)
    if not raw:
        raise check.fail(name, "missing (give framework and a builder or a command)")
    framework = check.choice(raw.get("framework"), f"{name}.framework", FRAMEWORKS, required=True)
    builder = check.text(raw.get("builder"), f"{name}.builder")
    if builder is not None and (":" not in builder or builder.startswith(":") or builder.endswith(":")):
        raise check.fail(f"{name}.builder", f"expected MODULE:FUNCTION, got {builder!r}")
    commands = _commands(check, raw["command"], f"{name}.command") if "command" in raw else []
    if builder and commands:
        raise check.fail(name, "give either builder or command, not both")
    setups = check.strings(raw.get("config_setup"), f"{name}.config_setup")
    for spec in setups:
        if ":" not in spec or spec.startswith(":") or spec.endswith(":"):
            raise check.fail(f"{name}.config_setup", f"expected MODULE:FUNCTION, got {spec!r}")
    if setups and commands:
        raise check.fail(name, "config_setup belongs to a builder side (a command side sets up its own config)")
    config = check.text(raw.get("config"), f"{name}.config")
    if not commands and config is None:
        raise check.fail(
            f"{name}.config",
            "missing (a builder side builds from a config: a detectron2 model-zoo "
            "name or file, an mmdet config or mmdet::NAME)",
        )
    env = {str(k): str(v) for k, v in check.mapping(raw.get("env"), f"{name}.env").items()}
    defaults = FAMILIES[family] if family else None
    globs = record.get(name)
    side = Side(
        name=name,
        framework=framework,
        python=check.text(raw.get("python"), f"{name}.python") or sys.executable,
        builder=builder,
        config_setup=setups,
        commands=commands,
        env=env,
        cwd=check.text(raw.get("cwd"), f"{name}.cwd"),
        config=config,
        options=check.strings(raw.get("options"), f"{name}.options"),
        dataset=check.text(raw.get("dataset"), f"{name}.dataset") or (defaults.d2_dataset if defaults else None),
        task=check.choice(raw.get("task"), f"{name}.task", ("panoptic", "instances", "detection"))
        or (defaults.mmdet_task if defaults else "panoptic"),
        seed=check.integer(raw.get("seed"), f"{name}.seed", 0),
        input_format=check.choice(raw.get("input_format"), f"{name}.input_format", ("BGR", "RGB")) or "BGR",
        run=check.text(raw.get("run"), f"{name}.run"),
        weights=check.text(raw.get("weights"), f"{name}.weights"),
        meta=check.text(raw.get("meta"), f"{name}.meta"),
        record=check.strings(globs, f"record.{name}")
        if globs is not None
        else list(defaults.record[framework])
        if defaults
        else [],
    )
    return side


def parse_recipe(
    data: Any, path: Path, *, out: str | None = None, stages: list[str] | None = None, coco_root: str | None = None
) -> Recipe:
    """Check the parsed YAML ``data`` of the recipe ``path``; ``out`` / ``stages`` / ``coco_root`` override the
    recipe's (a COCO root replaces ``data.synthetic``)."""
    check = _Checker(path)
    top = check.mapping(data, "", _TOP_KEYS)
    if not top:
        raise RecipeError(f"{path}: empty recipe (expected a mapping with reference:, port:, ...; docs/ALIGN.md)")
    family = check.choice(top.get("family"), "family", sorted(FAMILIES))
    record = check.mapping(top.get("record"), "record", set(SIDES))
    reference = _side(check, top.get("reference"), "reference", family, record)
    port = _side(check, top.get("port"), "port", family, record)
    data_cfg = check.mapping(top.get("data"), "data", {"coco_root", "synthetic", "train_ids", "val_ids", "cache_dir"})
    if coco_root is not None:
        data_cfg = {k: v for k, v in data_cfg.items() if k != "synthetic"} | {"coco_root": coco_root}
    if "coco_root" in data_cfg and "synthetic" in data_cfg:
        raise check.fail("data", "give either coco_root or synthetic, not both")
    if "coco_root" in data_cfg:
        root = os.path.expandvars(check.text(data_cfg["coco_root"], "data.coco_root", required=True))
        if "$" in root:
            raise check.fail("data.coco_root", f"{data_cfg['coco_root']!r} names an unset environment variable")
        data_cfg = dict(data_cfg, coco_root=root)
    else:
        synthetic = check.mapping(data_cfg.get("synthetic"), "data.synthetic", {"images", "size"})
        images = check.integer(synthetic.get("images"), "data.synthetic.images", 2)
        size = synthetic.get("size", [240, 320])
        if not (1 <= images <= 99):
            raise check.fail("data.synthetic.images", f"expected 1..99, got {images}")
        if (
            not isinstance(size, list)
            or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 32 <= v <= 4096 for v in size)
        ):
            raise check.fail("data.synthetic.size", f"expected [HEIGHT, WIDTH] in 32..4096, got {size!r}")
        data_cfg = dict(data_cfg, synthetic={"images": images, "size": size})
    for key in ("train_ids", "val_ids"):
        ids = data_cfg.get(key)
        if ids is not None and (
            not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            raise check.fail(f"data.{key}", f"expected a list of image ids, got {ids!r}")
    convert = check.mapping(top.get("convert"), "convert", {"preset", "rules", "source", "output", "target"})
    for key in ("preset", "rules", "source", "output", "target"):
        check.text(convert.get(key), f"convert.{key}")
    if "preset" in convert and "rules" in convert:
        raise check.fail("convert", "give either preset or rules, not both")
    if "preset" not in convert and "rules" not in convert and family:
        convert = dict(convert, preset=FAMILIES[family].preset)
    compare = check.mapping(top.get("compare"), "compare", {"map", "args"})
    check.text(compare.get("map"), "compare.map")
    compare = dict(compare, args=check.strings(compare.get("args"), "compare.args"))
    chosen = stages if stages is not None else check.strings(top.get("stages"), "stages") or list(STAGES)
    for stage in chosen:
        if stage not in STAGES:
            raise check.fail("stages", f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    if "convert" in chosen and "preset" not in convert and "rules" not in convert:
        raise check.fail("convert", "missing preset or rules (or name a family:) for the convert stage")
    if "convert" in chosen and reference.commands and not (convert.get("source") or reference.weights):
        raise check.fail(
            "reference.weights",
            "missing: a command side names the checkpoint its run used, the "
            "source of the convert stage (or give convert.source)",
        )
    known = top.get("known") or []
    if not isinstance(known, list):
        raise check.fail("known", "expected a list of {stage, match, note}")
    for n, entry in enumerate(known):
        entry = check.mapping(entry, f"known[{n}]", {"stage", "match", "note", "accept"})
        stage = check.choice(entry.get("stage"), f"known[{n}].stage", REPORT_STAGES, required=True)
        check.text(entry.get("match"), f"known[{n}].match", required=True)
        check.text(entry.get("note"), f"known[{n}].note", required=True)
        if entry.get("accept") not in (None, True, False):
            raise check.fail(f"known[{n}].accept", "expected true or false")
        if entry.get("accept") and stage != "metadata":
            raise check.fail(
                f"known[{n}].accept",
                "only an evaluator-metadata difference can be accepted (stage "
                "metadata); tensors and results are judged by tolerances",
            )
    out_text = out if out is not None else check.text(top.get("out"), "out")
    if out_text is None:
        raise check.fail("out", "missing (or give --out)")
    return Recipe(
        path=path,
        out=Path(out_text),
        stages=[s for s in STAGES if s in chosen],
        reference=reference,
        port=port,
        data=data_cfg,
        convert=convert,
        compare=compare,
        family=family,
        known=[{k: v if k == "accept" else str(v) for k, v in entry.items()} for entry in known],
    )


def load_recipe(
    path: str | os.PathLike[str],
    *,
    out: str | None = None,
    stages: list[str] | None = None,
    coco_root: str | None = None,
) -> Recipe:
    """Read the recipe file ``path`` (``yaml.safe_load``) and check it (overrides as :func:`parse_recipe`);
    :class:`RecipeError` names the file and key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{p}: not UTF-8 text (expected a YAML recipe)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    return parse_recipe(data, p, out=out, stages=stages, coco_root=coco_root)
