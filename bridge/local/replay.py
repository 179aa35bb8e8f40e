"""Run modules of a model on recorded inputs (framework-free: both sides' ``local`` entry points use it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bridge.errors import BridgeError
from bridge.runs import Recorder, Run
from bridge.taps import UNRECORDABLE, recordable, resolve_function

#: Kind of the records written by the replay.
LOCAL = "local"

#: Name of the ``meta`` record (step 0) of a local run listing every replayed call: step, name_a, name_b, status.
PAIRS_RECORD = "local_pairs"


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _has_unrecordable(value: Any) -> bool:
    if isinstance(value, str):
        return value.startswith(UNRECORDABLE)
    if isinstance(value, (list, tuple)):
        return any(_has_unrecordable(v) for v in value)
    if isinstance(value, dict):
        return any(_has_unrecordable(v) for v in value.values())
    return False


def apply_renames(args: list[Any], kwargs: dict[str, Any], renames: dict[str, str]) -> tuple[list[Any], dict[str, Any]]:
    """Rename keyword arguments and turn renamed positions (digit keys) into keywords."""
    if not renames:
        return args, kwargs
    moved = {renames[str(i)]: a for i, a in enumerate(args) if str(i) in renames}
    kept = [a for i, a in enumerate(args) if str(i) not in renames]
    return kept, {**{renames.get(k, k): v for k, v in kwargs.items()}, **moved}


def replay_call(
    model: nn.Module, module: nn.Module, recorded: dict[str, Any], renames: dict[str, str], device: torch.device
) -> Any:
    """``module``'s output on one recorded call, without gradients, with ``model`` (its root) switched to the
    recorded train/eval mode as a whole, so that a parent's ``train()`` override applies (mmdet's ResNet keeps
    its BatchNorms in eval mode under ``norm_eval``); every module's mode and ``module``'s buffers (BatchNorm
    statistics) are restored afterwards."""
    args, kwargs = apply_renames(list(recorded.get("args") or []), dict(recorded.get("kwargs") or {}), renames)
    modes = {m: m.training for m in model.modules()}
    buffers = {name: buf.clone() for name, buf in module.named_buffers()}
    try:
        model.train(bool(recorded.get("training", False)))
        with torch.no_grad():
            return module(*_to_device(args, device), **_to_device(kwargs, device))
    finally:
        for m, mode in modes.items():
            m.training = mode
        with torch.no_grad():
            for name, buf in module.named_buffers():
                buf.copy_(buffers[name])


def replay_function(function: Any, recorded: dict[str, Any], renames: dict[str, str], device: torch.device) -> Any:
    """``function``'s output on one recorded call (arguments renamed and moved to ``device``), without gradients."""
    args, kwargs = apply_renames(list(recorded.get("args") or []), dict(recorded.get("kwargs") or {}), renames)
    with torch.no_grad():
        return function(*_to_device(args, device), **_to_device(kwargs, device))


def _target(model: nn.Module, modules: dict[str, nn.Module], task: dict[str, Any]) -> tuple[Any, str]:
    """The module or function ``task`` replays into, or None with the status saying why."""
    if "function" in task:
        try:
            owner, attr = resolve_function(model, task["function"])
        except BridgeError as exc:
            return None, f"no function ({exc})"
        return getattr(owner, attr), "ok"
    base = task["name_b"].split("#", 1)[0]
    return (modules[base], "ok") if base in modules else (None, "no module")


def replay_pairs(
    model: nn.Module, run_a: Run, tasks: Sequence[dict[str, Any]], recorder: Recorder, device: torch.device
) -> list[dict[str, Any]]:
    """Replay every task (``bridge.local.pairing.plan_pairs``) and record B's output as kind ``local`` under
    ``name_b``; one status per task: ``ok``, ``no module`` (B has no module of that name), ``no function
    (...)`` (a function task whose attribute path B lacks), ``function record without a path`` (A recorded a
    function call, ``--map`` names no ``functions:`` path for it), ``unrecordable input`` or ``failed: ...``
    (the module or function raised)."""
    modules = dict(model.named_modules())
    statuses = []
    for task in tasks:
        recorded = run_a.get(task["name_a"], step=task["step"], kind="input")
        if "function" in recorded and "function" not in task:
            target, status = None, "function record without a path (add functions: NAME: PATH to --map)"
        else:
            target, status = _target(model, modules, task)
        if target is not None:
            if _has_unrecordable(recorded):
                status = "unrecordable input"
            else:
                try:
                    if "function" in task:
                        output = recordable(replay_function(target, recorded, task["renames"], device))
                    else:
                        output = replay_call(model, target, recorded, task["renames"], device)
                    recorder.record(task["name_b"], output, step=task["step"], kind=LOCAL)
                except Exception as exc:  # a module's own error on these inputs is a finding, not a crash
                    status = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        statuses.append({**task, "status": status})
    return statuses
