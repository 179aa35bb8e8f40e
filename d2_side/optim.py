"""detectron2 side of optimizer records: the gradient clipping a detectron2 optimizer applies, read from
its class, and the per-iteration scheduler step (see ``bridge.optim``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from bridge.optim import clip_spec


def _cells(function: Any) -> dict[str, Any]:
    """The free variables of ``function`` (and of the functions it wraps, e.g. under ``torch.no_grad``)."""
    out: dict[str, Any] = {}
    while function is not None:
        code, closure = getattr(function, "__code__", None), getattr(function, "__closure__", None)
        if code is not None and closure:
            for name, cell in zip(code.co_freevars, closure):
                try:
                    out.setdefault(name, cell.cell_contents)
                except ValueError:  # an empty cell
                    continue
        function = getattr(function, "__wrapped__", None)
    return out


def _steps(optimizer: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(class name, free variables of its ``step``) for each class of ``optimizer`` that defines ``step``."""
    for cls in type(optimizer).__mro__:
        if "step" in vars(cls):
            yield cls.__name__, _cells(vars(cls)["step"])


def clip_setting(optimizer: Any) -> dict[str, Any] | None:
    """The gradient clipping ``optimizer`` applies before each update, as ``bridge.optim.clip_spec``, or None.

    Recognises detectron2's ``maybe_add_gradient_clipping`` (cfg.SOLVER.CLIP_GRADIENTS, ``value`` or ``norm``,
    each parameter tensor clipped alone) and the full-model wrapper of Mask2Former / Mask DINO's
    ``build_optimizer`` (``CLIP_TYPE: full_model``: one L2 norm over all parameters).
    """
    for _name, cells in _steps(optimizer):
        if "clip_norm_val" in cells:  # FullModelGradientClippingOptimizer.step
            return clip_spec("norm", cells["clip_norm_val"], norm_type=2.0, scope="full_model")
        if {"per_param_clipper", "global_clipper", "gradient_clipper"} & set(cells):  # optimizer_wgc_step
            per_param = cells.get("per_param_clipper", cells.get("gradient_clipper"))  # older detectron2
            clipper = per_param if per_param is not None else cells.get("global_clipper")
            cfg = _cells(clipper).get("cfg")
            kind = "norm" if getattr(clipper, "__name__", "") == "clip_grad_norm" else "value"
            return clip_spec(
                kind,
                cfg.CLIP_VALUE,
                norm_type=float(cfg.NORM_TYPE),
                scope="per_param" if per_param is not None else "full_model",
            )
    return None


def schedule_stepper(scheduler: Any) -> Callable[[], None]:
    """The per-iteration step of detectron2's lr scheduler (``build_lr_scheduler``), as the LRScheduler hook
    calls it after each iteration."""
    return scheduler.step
