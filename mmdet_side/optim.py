"""mmengine side of optimizer records: the gradient clipping an ``OptimWrapper`` applies (``clip_grad``) and
the per-iteration scheduler step (see ``bridge.optim``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bridge.optim import clip_spec


def clip_setting(optimizer: Any) -> dict[str, Any] | None:
    """The gradient clipping of an mmengine ``OptimWrapper`` (its ``clip_grad``), as ``bridge.optim.clip_spec``,
    or None. mmengine clips every parameter of the wrapper together (one norm, ``full_model``)."""
    kwargs = getattr(optimizer, "clip_grad_kwargs", None)
    if not kwargs:
        return None
    if getattr(optimizer, "grad_name", "grad_norm") == "grad_value":
        return clip_spec("value", kwargs["clip_value"], scope="full_model")
    return clip_spec("norm", kwargs["max_norm"], norm_type=float(kwargs.get("norm_type", 2.0)), scope="full_model")


def schedule_stepper(schedulers: Sequence[Any]) -> Callable[[], None]:
    """The per-iteration step of mmengine param schedulers, as ``ParamSchedulerHook.after_train_iter`` does it:
    every scheduler with ``by_epoch=False`` steps (epoch-based ones step only at the end of an epoch)."""
    per_iteration = [s for s in schedulers if not s.by_epoch]

    def step() -> None:
        for scheduler in per_iteration:
            scheduler.step()

    return step
