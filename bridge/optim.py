"""Framework-free record of what an optimizer does to each parameter (kind ``optim``, see docs/FORMAT.md).

``record_optimizer(recorder, optimizer, model, step)`` stores one record named ``optimizer``: the optimizer
type, the gradient clipping it applies (given by the caller, detected by ``d2_side.optim.clip_setting`` /
``mmdet_side.optim.clip_setting``), per trainable parameter its group's settings (lr, initial_lr,
weight_decay, momentum / betas, eps, nesterov, amsgrad, ...) and optionally the learning rate of each
parameter group at each of the first N iterations (:func:`lr_schedule`). ``record_params`` and
``grad_norm`` serve N-step parity: the parameters after each optimizer step (kind ``param``) and the total
gradient norm (kind ``grad``).
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from bridge.errors import BridgeError
from bridge.runs import Recorder

#: Name of the record holding the optimizer settings.
RECORD_NAME = "optimizer"
#: Name of the record holding the total gradient norm of a step (kind ``grad``).
GRAD_NORM_NAME = "grad_norm"
#: Group keys that choose an implementation of the same arithmetic: not recorded.
IMPLEMENTATION_KEYS = frozenset({"params", "foreach", "fused", "capturable", "differentiable"})
#: The clipping kinds: ``norm`` (clip_grad_norm_) and ``value`` (clip_grad_value_).
CLIP_TYPES = ("norm", "value")
#: Where clipping applies: to each parameter tensor alone, or to all parameters together.
CLIP_SCOPES = ("per_param", "full_model")


def clip_spec(kind: str, max_value: float, *, norm_type: float = 2.0, scope: str = "full_model") -> dict[str, Any]:
    """Return the canonical clipping setting recorded by :func:`record_optimizer`.

    ``kind`` is ``norm`` or ``value``; ``max_value`` the max norm (or max absolute value);
    ``scope`` is ``per_param`` (each parameter tensor clipped alone, detectron2's CLIP_GRADIENTS) or
    ``full_model`` (one norm over every parameter, mmengine's ``clip_grad``, Mask DINO's ``full_model``).
    """
    if kind not in CLIP_TYPES:
        raise BridgeError(f"clip type must be one of {CLIP_TYPES}, got {kind!r}")
    if scope not in CLIP_SCOPES:
        raise BridgeError(f"clip scope must be one of {CLIP_SCOPES}, got {scope!r}")
    return {
        "type": kind,
        "max": float(max_value),
        "norm_type": float(norm_type) if kind == "norm" else None,
        "scope": scope,
    }


def _setting(value: Any) -> Any:
    """A group value as a recordable scalar (tuples of numbers as lists), or None when it is not one."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, (bool, int, float)) for v in value):
        return [float(v) if isinstance(v, float) else v for v in value]
    return None


def group_settings(group: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The settings of one ``optimizer.param_groups`` entry that change the update, as recordable scalars:
    the keys of the optimizer's ``defaults`` (no implementation switches such as ``foreach``) and the
    schedulers' ``initial_*`` values; bookkeeping keys that other code adds to a group (mmengine's
    ``lr_mult`` / ``decay_mult``) are left out, their effect is in ``lr`` and ``weight_decay``."""
    out = {}
    for key, value in group.items():
        if key in IMPLEMENTATION_KEYS or not (key in defaults or key.startswith("initial_")):
            continue
        setting = _setting(value)
        if setting is not None or value is None:
            out[key] = setting
    return out


def torch_optimizer(optimizer: Any) -> Any:
    """``optimizer`` itself, or the torch optimizer a wrapper holds as ``.optimizer`` (mmengine's OptimWrapper)."""
    inner = getattr(optimizer, "optimizer", None)
    return inner if isinstance(getattr(inner, "param_groups", None), list) else optimizer


def _param_groups(optimizer: Any) -> list[dict[str, Any]]:
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list):
        raise BridgeError(
            f"{type(optimizer).__name__} has no param_groups list; pass a torch optimizer "
            "(for an mmengine OptimWrapper, its .optimizer)"
        )
    return groups


def describe_optimizer(
    optimizer: Any,
    model: nn.Module,
    *,
    clip: dict[str, Any] | None = None,
    schedule: Sequence[Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Return the ``optimizer`` record's value: type, clip, per trainable parameter of ``model`` (by name)
    its group index and settings, and the per-group lr schedule. A parameter's ``lr`` is its group's lr at
    the schedule's first iteration when a schedule is given (the record then does not depend on when it is
    taken), else the group's current lr. A trainable parameter that no group holds
    gets ``{"group": -1}`` (the optimizer never updates it: a finding in itself). An mmengine OptimWrapper is
    described by the torch optimizer it holds."""
    optimizer = torch_optimizer(optimizer)
    groups = _param_groups(optimizer)
    group_of = {id(p): index for index, group in enumerate(groups) for p in group["params"]}
    settings = [group_settings(group, getattr(optimizer, "defaults", {})) for group in groups]
    params: dict[str, Any] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        index = group_of.get(id(param), -1)
        params[name] = {"group": index, **(settings[index] if index >= 0 else {})}
        if schedule and index >= 0:
            params[name]["lr"] = float(schedule[0][index])
    kind = type(optimizer)
    base = next((c for c in kind.__mro__ if c.__module__.startswith("torch.optim")), kind)
    return {
        "type": base.__name__,
        "class": f"{kind.__module__}.{kind.__qualname__}",
        "clip": clip,
        "params": params,
        "lr_schedule": [list(map(float, row)) for row in schedule] if schedule is not None else None,
    }


def lr_schedule(optimizer: Any, advance: Callable[[], Any], iterations: int) -> list[list[float]]:
    """Read the lr of every param group at iterations 0 .. ``iterations``-1, calling ``advance()`` (the
    per-iteration scheduler step) between reads; the schedulers end ``iterations`` - 1 steps further."""
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise BridgeError(f"iterations must be an int >= 1, got {iterations!r}")
    rows = []
    with warnings.catch_warnings():  # stepping a scheduler without optimizer.step() is the point here
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        for it in range(iterations):
            if it:
                advance()
            rows.append(group_lrs(optimizer))
    return rows


def group_lrs(optimizer: Any) -> list[float]:
    """The current lr of every param group of ``optimizer`` (or of the torch optimizer a wrapper holds)."""
    return [float(group["lr"]) for group in _param_groups(torch_optimizer(optimizer))]


def record_optimizer(
    recorder: Recorder,
    optimizer: Any,
    model: nn.Module,
    step: int,
    lr_schedule: Sequence[Sequence[float]] | None = None,
    *,
    clip: dict[str, Any] | None = None,
) -> None:
    """Record ``optimizer``'s settings for every trainable parameter of ``model`` (record ``optimizer``,
    kind ``optim``) at ``step``; ``lr_schedule[i][g]`` is group g's lr at iteration i (see :func:`lr_schedule`),
    ``clip`` the gradient clipping applied before each update (:func:`clip_spec`, None: none)."""
    recorder.record(
        RECORD_NAME, describe_optimizer(optimizer, model, clip=clip, schedule=lr_schedule), step=step, kind="optim"
    )


def record_params(recorder: Recorder, model: nn.Module, step: int, patterns: Iterable[str]) -> int:
    """Record the trainable parameters of ``model`` whose names match a glob of ``patterns`` (kind ``param``,
    one record per parameter, named as the parameter) at ``step``; returns how many were recorded. Frozen
    parameters are left out: one framework keeps frozen norms as parameters, the other as buffers."""
    patterns = tuple(patterns)
    count = 0
    for name, param in model.named_parameters():
        if param.requires_grad and any(fnmatch.fnmatchcase(name, p) for p in patterns):
            recorder.record(name, param.detach(), step=step, kind="param")
            count += 1
    return count


def grad_norm(model: nn.Module) -> float:
    """The L2 norm over the gradients of every parameter of ``model`` that has one (0.0 when none has)."""
    total = 0.0
    for param in model.parameters():
        if param.grad is not None:
            total += float(param.grad.detach().double().pow(2).sum())
    return math.sqrt(total)


def record_grad_norm(recorder: Recorder, model: nn.Module, step: int) -> None:
    """Record :func:`grad_norm` of ``model`` as ``grad_norm`` (kind ``grad``) at ``step``."""
    recorder.record(GRAD_NORM_NAME, grad_norm(model), step=step, kind="grad")


class OptimizerTap:
    """What both frameworks' record hooks share: the optimizer's settings at the first iteration seen and
    the lr of each param group at each of the first ``iterations`` iterations, recorded as one ``optimizer``
    record (kind ``optim``, step = the first iteration) once the last of them starts, or at :meth:`finish`."""

    def __init__(self, recorder: Recorder, iterations: int) -> None:
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise BridgeError(f"optimizer_steps must be an int >= 1, got {iterations!r}")
        self._recorder = recorder
        self._iterations = iterations
        self._value: dict[str, Any] | None = None
        self._start = 0
        self._rows: list[list[float]] = []
        self._done = False

    def before_iteration(self, iteration: int, optimizer: Any, model: nn.Module, clip: dict[str, Any] | None) -> None:
        """Call before each training iteration runs (after the schedulers set its lr)."""
        if self._done:
            return
        if self._value is None:
            self._value = describe_optimizer(optimizer, model, clip=clip)
            self._start = iteration
        self._rows.append(group_lrs(optimizer))
        if len(self._rows) == self._iterations:
            self.finish()

    def finish(self) -> None:
        """Record what was collected (fewer iterations when training stopped early); idempotent."""
        if self._done or self._value is None:
            return
        self._value["lr_schedule"] = self._rows
        self._recorder.record(RECORD_NAME, self._value, step=self._start, kind="optim")
        self._done = True
