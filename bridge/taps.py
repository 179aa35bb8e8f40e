"""Framework-free taps on a torch model: forward hooks on modules chosen by name globs and gradient
hooks on parameters chosen by name globs, feeding a ``bridge.Recorder`` at a given step; and RNG seeding
before chosen modules, so that stochastic parts (point sampling in Mask2Former / Mask DINO criteria and
matchers) draw the same numbers on both sides when their code draws in the same order."""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from bridge.runs import Recorder


def match_names(names: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """Names (in their order) that match any of the fnmatch ``patterns``."""
    return [name for name in names if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)]


def nested_matches(names: Sequence[str]) -> list[tuple[str, str]]:
    """(inner, outer) pairs of matched module names where ``inner`` is a submodule of ``outer``.

    A glob such as ``backbone.bottom_up.res*`` or ``backbone.layer*`` matches a stage *and* every module in it;
    those inner modules rarely correspond across frameworks (detectron2's ``Conv2d`` applies its norm inside,
    mmdet's conv does not), so they report divergences an aligned port does not have."""
    chosen = set(names)
    pairs = []
    for name in names:
        parts = name.split(".")
        outer = next((".".join(parts[:k]) for k in range(1, len(parts)) if ".".join(parts[:k]) in chosen), None)
        if outer is not None:
            pairs.append((name, outer))
    return pairs


def _warn_about_globs(modules: Sequence[str], matched: Sequence[str], patterns: Sequence[str]) -> None:
    """Warn about activation globs that match no module, or that match modules nested in other matches."""
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(name, p) for name in modules)]
    if unmatched:
        warnings.warn(f"activation globs match no module: {', '.join(unmatched)}", stacklevel=3)
    nested = nested_matches(matched)
    if nested:
        inner, outer = nested[0]
        warnings.warn(f"activation globs match {len(nested)} modules nested in other matches (e.g. {inner!r} inside "
                      f"{outer!r}); record stages with a one-character glob such as 'backbone.layer?' or "
                      "'backbone.bottom_up.res?' (docs/OUTPUTS.md)", stacklevel=3)


class ModelTaps:
    """Record activations of chosen modules and gradients of chosen parameters while ``active()``.

    ``step_of`` returns the current step, or None when nothing should be recorded now. While a step is
    recorded, every call of a module matching ``seed_modules`` starts with ``torch.manual_seed(seed + step)``.
    Warns (``UserWarning``) when an activation glob matches no module, or matches modules nested inside
    other matched modules (:func:`nested_matches`).
    """

    def __init__(self, model: nn.Module, recorder: Recorder, step_of: Callable[[], int | None], *,
                 activations: Sequence[str] = (), grads: Sequence[str] = (), seed_modules: Sequence[str] = (),
                 seed: int = 0) -> None:
        self._recorder = recorder
        self._step_of = step_of
        self._handles: list = []
        self._calls: dict[tuple[str, int, str], int] = {}
        modules = dict(model.named_modules())
        matched = match_names(modules, activations)
        _warn_about_globs(list(modules), matched, activations)
        for name in matched:
            self._handles.append(modules[name].register_forward_hook(self._activation_hook(name)))
        for name in match_names(modules, seed_modules):
            self._handles.append(modules[name].register_forward_pre_hook(self._seed_hook(seed)))
        parameters = dict(model.named_parameters())
        for name in match_names(parameters, grads):
            if parameters[name].requires_grad:
                self._handles.append(parameters[name].register_hook(self._grad_hook(name)))

    def _unique(self, name: str, step: int, kind: str) -> str:
        """``name`` on the first call in a step, ``name#1``, ``name#2``... on later calls (shared heads)."""
        count = self._calls.get((name, step, kind), 0)
        self._calls[(name, step, kind)] = count + 1
        return name if count == 0 else f"{name}#{count}"

    def _activation_hook(self, name: str) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple, output: object) -> None:
            step = self._step_of()
            if step is not None:
                self._recorder.record(self._unique(name, step, "activation"), output, step=step, kind="activation")
        return hook

    def _seed_hook(self, seed: int) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple) -> None:
            step = self._step_of()
            if step is not None:
                torch.manual_seed(seed + step)
        return hook

    def _grad_hook(self, name: str) -> Callable:
        def hook(grad: torch.Tensor) -> None:
            step = self._step_of()
            if step is not None:
                self._recorder.record(self._unique(name, step, "grad"), grad, step=step, kind="grad")
        return hook

    def remove(self) -> None:
        """Detach every hook from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
