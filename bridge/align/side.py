"""What ``python -m d2_side.record_model`` and ``python -m mmdet_side.record_model`` share: one argument parser
(so both sides take the same arguments), the builder look-up and the weight files. Framework-free."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError
from bridge.runs import open_run


def side_parser(prog: str, framework: str) -> argparse.ArgumentParser:
    """The parser of ``prog`` (``python -m d2_side.record_model`` / ``python -m mmdet_side.record_model``)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=f"Build a {framework} model through a builder, run it on the one-sample split (or "
        "on a recorded run's batches) and record batches, activations and outputs.",
    )
    p.add_argument(
        "--config",
        required=True,
        help="detectron2: model-zoo config name or config file; mmdet: config file (one-sample, as "
        "python -m mmdet_side.config writes it) or mmdet::NAME",
    )
    p.add_argument("--out", required=True, help="run directory to record into (must not hold a run)")
    p.add_argument(
        "--builder",
        default="",
        help="MODULE:FUNCTION called with the loaded config, returning the model (default: the "
        "framework's own model builder)",
    )
    p.add_argument(
        "--config-setup",
        action="append",
        default=[],
        metavar="MODULE:FUNCTION",
        help="called with the config before the model is built (repeatable): detectron2 before the config "
        "file is merged (a research repo's add_*_config), mmdet after it is loaded",
    )
    p.add_argument("--weights", default="", help="checkpoint to load with strict=True (default: the builder's init)")
    p.add_argument("--save-weights", default="", help="write the model's state dict here (.pth or .safetensors)")
    p.add_argument("--replay", default="", help="feed the batches a detectron2 run recorded instead of the dataset")
    p.add_argument(
        "--input-format",
        choices=("BGR", "RGB"),
        default="BGR",
        help="detectron2's INPUT.FORMAT of the replayed batches",
    )
    p.add_argument("--activations", default="", help="comma-separated module globs to record, e.g. 'backbone.res?'")
    p.add_argument("--meta-out", default="", help="also write the evaluated dataset's normalized metadata here")
    p.add_argument("--seed", type=int, default=0, help="torch seed before the builder runs (default 0)")
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config options: detectron2 KEY VALUE pairs, mmdet KEY=VALUE (as --cfg-options)",
    )
    return p


def load_callable(spec: str, option: str = "--builder") -> Callable[..., Any]:
    """The callable ``MODULE:FUNCTION`` names; :class:`BridgeError` naming ``option`` when it is not one."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise BridgeError(f"{option} {spec!r}: expected MODULE:FUNCTION")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BridgeError(f"{option} {spec!r}: cannot import {module_name}: {exc}") from None
    found = getattr(module, attr, None)
    if not callable(found):
        raise BridgeError(f"{option} {spec!r}: {module_name} has no function {attr}")
    return found


def load_builder(spec: str) -> Callable[[Any], Any]:
    """The model builder ``--builder MODULE:FUNCTION`` names (see :func:`load_callable`)."""
    return load_callable(spec, "--builder")


def config_setups(specs: list[str]) -> list[Callable[[Any], Any]]:
    """The functions ``--config-setup MODULE:FUNCTION`` name, in order (see :func:`load_callable`)."""
    return [load_callable(spec, "--config-setup") for spec in specs]


def globs(text: str) -> list[str]:
    """The module globs of a comma-separated ``--activations`` value."""
    return [glob.strip() for glob in text.split(",") if glob.strip()]


def load_weights(model: Any, path: str) -> None:
    """Load the checkpoint ``path`` into ``model`` with strict=True (:func:`bridge.convert.load_strict`) and say so."""
    from bridge.convert import load_strict

    print(f"loaded {path} with strict=True ({load_strict(model, path)} tensors)")


def save_weights(model: Any, path: str, framework: str) -> None:
    """Write ``model``'s state dict to ``path`` atomically (``{'state_dict', 'meta'}``, or safetensors)."""
    from bridge.convert import save_checkpoint

    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(state, path, {"framework": framework, "written_by": "record_model"})


def recorded_batches(run_dir: str) -> list[Any]:
    """The ``batch`` records of the detectron2 run ``run_dir``, step by step (the mapper's ``list[dict]``)."""
    run = open_run(run_dir)
    framework = run.header().get("framework")
    if framework != "detectron2":
        raise BridgeError(f"--replay {run_dir}: not a detectron2 run (framework {framework!r})")
    steps = sorted({entry.step for entry in run.entries(kind="batch") if entry.name == "batch"})
    if not steps:
        raise BridgeError(f"--replay {run_dir}: the run holds no batch records")
    return [run.get("batch", step=step, kind="batch") for step in steps]
