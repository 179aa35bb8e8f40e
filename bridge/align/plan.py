"""The commands each stage of a recipe runs: one list of :class:`Step` per stage, with the paths under ``out/``
they write (docs/ALIGN.md has the layout). Pure: nothing runs or is written here."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bridge.align.recipe import Recipe, Side

#: Each framework's package of side entry points (``python -m PACKAGE.record_model``).
SIDE_PACKAGES = {"detectron2": "d2_side", "mmdet": "mmdet_side"}


@dataclass
class Step:
    """One process of a stage: its argv, the environment variables it adds, its working directory."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None

    def shell(self) -> str:
        """The command as one shell line that reruns it by hand."""
        line = shlex.join(self.argv)
        if self.env:
            line = "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items()) + " " + line
        return f"cd {shlex.quote(self.cwd)} && {line}" if self.cwd else line


@dataclass
class Stage:
    """A stage: its steps, the paths it writes (removed before it runs and when it fails) and the exit codes of
    its steps that are verdicts rather than failures."""

    name: str
    steps: list[Step]
    outputs: list[Path]
    verdict_codes: tuple[int, ...] = (0,)
    folders: list[Path] = field(default_factory=list)  # created (empty) before the stage runs


class Layout:
    """Where everything goes under the recipe's ``out/`` (absolute, so a side's ``cwd`` changes nothing)."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.out = recipe.out.expanduser().resolve()
        self.coco = (
            Path(recipe.data["coco_root"]).expanduser().resolve() if "coco_root" in recipe.data else self.out / "coco"
        )
        self.cache = (
            Path(recipe.data["cache_dir"]).expanduser().resolve()
            if recipe.data.get("cache_dir")
            else self.out / "cache"
        )
        self.convert_report = self.out / "convert.json"
        self.compare_json = self.out / "compare.json"
        self.report_html = self.out / "report.html"
        self.report_json = self.out / "report.json"
        self.known = self.out / "known.json"
        self.converted = self._path(recipe.convert.get("output")) or self.out / "port_weights.pth"

    def _path(self, text: str | None) -> Path | None:
        return None if text is None else Path(self.fill(text)).expanduser().resolve()

    def fill(self, text: str, side: Side | None = None) -> str:
        """``text`` with the placeholders ``{out}``, ``{coco_root}``, ``{reference_run}``, ``{port_run}`` and,
        for ``side``, ``{python}``, ``{run}``, ``{weights}`` replaced."""
        values = {"{out}": str(self.out), "{coco_root}": str(self.coco)}
        if side is not None:
            values |= {"{python}": side.python}
        for text_key, value in values.items():
            text = text.replace(text_key, value)
        if "{reference_run}" in text:
            text = text.replace("{reference_run}", str(self.run(self.recipe.reference)))
        if "{port_run}" in text:
            text = text.replace("{port_run}", str(self.run(self.recipe.port)))
        if side is not None and "{run}" in text:
            text = text.replace("{run}", str(self.run(side)))
        if side is not None and "{weights}" in text:
            text = text.replace("{weights}", str(self.weights(side) or ""))
        return text

    def run(self, side: Side) -> Path:
        """The run directory ``side`` records into."""
        return self._path(side.run) or self.out / "runs" / side.name

    def side_dir(self, side: Side) -> Path:
        """The folder of ``side``'s other files (config, saved weights, metadata)."""
        return self.out / side.name

    def meta(self, side: Side) -> Path | None:
        """The metadata document ``side`` writes (a builder side always; a command side when it names one)."""
        return self._path(side.meta) if side.commands else self.side_dir(side) / "meta.json"

    def convert_source(self) -> Path:
        """The reference checkpoint the convert stage reads."""
        given = self.recipe.convert.get("source") or self.recipe.reference.weights
        return self._path(given) or self.side_dir(self.recipe.reference) / "weights.pth"

    def weights(self, side: Side) -> Path | None:
        """The checkpoint ``side`` loads: its ``weights:``, else for the port the converted checkpoint."""
        given = self._path(side.weights)
        if given is not None or side.name == "reference":
            return given
        return self.converted if "convert" in self.recipe.stages or self.converted.exists() else None

    def env(self) -> dict[str, str]:
        """The ``BRIDGE_*`` variables every side process gets (one-sample registration)."""
        env = {"BRIDGE_COCO_ROOT": str(self.coco), "BRIDGE_CACHE_DIR": str(self.cache)}
        for key, var in (("train_ids", "BRIDGE_TRAIN_IMAGE_IDS"), ("val_ids", "BRIDGE_VAL_IMAGE_IDS")):
            if self.recipe.data.get(key):
                env[var] = ",".join(str(i) for i in self.recipe.data[key])
        return env


def _data_stage(layout: Layout) -> Stage | None:
    synthetic = layout.recipe.data.get("synthetic")
    if synthetic is None:
        return None
    code = (
        f"from bridge.coco.synthetic import write_synthetic_coco; write_synthetic_coco({str(layout.coco)!r}, "
        f"num_images={synthetic['images']}, image_size={tuple(synthetic['size'])!r})"
    )
    return Stage("data", [Step([sys.executable, "-c", code])], [layout.coco, layout.cache])


def _builder_steps(layout: Layout, side: Side) -> list[Step]:
    recipe, package = layout.recipe, SIDE_PACKAGES[side.framework]
    env = layout.env() | {k: layout.fill(v, side) for k, v in side.env.items()}
    cwd = layout.fill(side.cwd, side) if side.cwd else None
    steps, config = [], layout.fill(side.config or "", side)
    options = [layout.fill(option, side) for option in side.options]
    if side.framework == "mmdet":
        written = layout.side_dir(side) / "config.py"
        steps.append(
            Step(
                [
                    side.python,
                    "-m",
                    "mmdet_side.config",
                    "--base",
                    config,
                    "-o",
                    str(written),
                    "--task",
                    side.task or "panoptic",
                ],
                env,
                cwd,
            )
        )
        config = str(written)
    elif side.dataset:
        options += ["DATASETS.TEST", f"({side.dataset!r},)"]
    argv = [
        side.python,
        "-m",
        f"{package}.record_model",
        "--config",
        config,
        "--out",
        str(layout.run(side)),
        "--seed",
        str(side.seed),
        "--meta-out",
        str(layout.meta(side)),
    ]
    argv += ["--builder", side.builder] if side.builder else []
    argv += [arg for spec in side.config_setup for arg in ("--config-setup", spec)]
    argv += ["--activations", ",".join(side.record)] if side.record else []
    weights = layout.weights(side)
    argv += ["--weights", str(weights)] if weights else []
    if side.name == "reference" and "convert" in recipe.stages and not weights and not recipe.convert.get("source"):
        argv += ["--save-weights", str(layout.convert_source())]
    if side.name == "port" and recipe.reference.framework == "detectron2":
        argv += ["--replay", str(layout.run(recipe.reference)), "--input-format", side.input_format]
    steps.append(Step(argv + options, env, cwd))
    return steps


def _side_stage(layout: Layout, side: Side) -> Stage:
    if side.commands:
        env = layout.env() | {k: layout.fill(v, side) for k, v in side.env.items()}
        cwd = layout.fill(side.cwd, side) if side.cwd else None
        steps = [Step([layout.fill(arg, side) for arg in argv], env, cwd) for argv in side.commands]
        return Stage(side.name, steps, [layout.run(side)])
    outputs = [layout.run(side), layout.side_dir(side)]
    return Stage(side.name, _builder_steps(layout, side), outputs, folders=[layout.side_dir(side)])


def _convert_stage(layout: Layout) -> Stage:
    convert = layout.recipe.convert
    argv = [sys.executable, "-m", "bridge.convert", str(layout.convert_source()), "-o", str(layout.converted)]
    argv += ["--preset", convert["preset"]] if "preset" in convert else ["--rules", layout.fill(convert["rules"])]
    argv += ["--target", layout.fill(convert["target"])] if convert.get("target") else []
    argv += ["--json", str(layout.convert_report)]
    return Stage("convert", [Step(argv)], [layout.converted, layout.convert_report], verdict_codes=(0, 1))


def compare_map(recipe: Recipe) -> str | None:
    """The ``--map`` of the compare: ``compare.map``, else the conversion's preset or rule file."""
    return recipe.compare.get("map") or recipe.convert.get("preset") or recipe.convert.get("rules")


def _compare_stage(layout: Layout) -> Stage:
    recipe = layout.recipe
    argv = [
        sys.executable,
        "-m",
        "bridge.compare",
        str(layout.run(recipe.reference)),
        str(layout.run(recipe.port)),
        "--json",
        str(layout.compare_json),
        "--html",
        str(layout.out / "compare.html"),
    ]
    mapping = compare_map(recipe)
    argv += ["--map", layout.fill(mapping)] if mapping else []
    argv += [layout.fill(arg) for arg in recipe.compare["args"]]
    return Stage("compare", [Step(argv)], [layout.compare_json, layout.out / "compare.html"], verdict_codes=(0, 1))


def report_pieces(layout: Layout) -> list[Path]:
    """The pieces that exist for the report: conversion report, both metadata documents, the compare JSON, and
    the recipe's known differences (``out/known.json``, written before the report stage runs)."""
    recipe = layout.recipe
    metas = [layout.meta(recipe.reference), layout.meta(recipe.port)]
    pieces = [layout.convert_report] if layout.convert_report.exists() else []
    if all(meta is not None and meta.exists() for meta in metas):
        pieces += metas
    pieces += [layout.compare_json] if layout.compare_json.exists() else []
    return pieces + ([layout.known] if pieces and recipe.known else [])


def report_stage(layout: Layout) -> Stage:
    """The report stage over the pieces present now (call it once the earlier stages ran)."""
    argv = [
        sys.executable,
        "-m",
        "bridge.report",
        *map(str, report_pieces(layout)),
        "-o",
        str(layout.report_html),
        "--json",
        str(layout.report_json),
    ]
    return Stage("report", [Step(argv)], [layout.report_html, layout.report_json], verdict_codes=(0, 1))


def plan(layout: Layout) -> list[Stage]:
    """The stages the recipe asks for, in order (the report's pieces are listed when it is reached)."""
    recipe, stages = layout.recipe, []
    for name in recipe.stages:
        if name == "data":
            stage = _data_stage(layout)
            stages += [stage] if stage else []
        elif name in ("reference", "port"):
            stages.append(_side_stage(layout, getattr(recipe, name)))
        elif name == "convert":
            stages.append(_convert_stage(layout))
        elif name == "compare":
            stages.append(_compare_stage(layout))
        else:
            stages.append(report_stage(layout))
    return stages
