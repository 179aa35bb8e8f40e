"""Framework-free taps on a torch model: forward hooks on modules chosen by name globs, gradient
hooks on parameters chosen by name globs and wrappers around matchers chosen by attribute path, feeding a
``bridge.Recorder`` at a given step; and RNG seeding before chosen modules, so that stochastic parts (point
sampling in Mask2Former / Mask DINO criteria and matchers) draw the same numbers on both sides when their
code draws in the same order."""

from __future__ import annotations

import fnmatch
import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from bridge.errors import BridgeError
from bridge.matching import KIND as MATCHING
from bridge.matching import record_matching
from bridge.runs import Recorder

#: Kind of the records holding module call arguments.
INPUT = "input"


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
        warnings.warn(
            f"activation globs match {len(nested)} modules nested in other matches (e.g. {inner!r} inside "
            f"{outer!r}); record stages with a one-character glob such as 'backbone.layer?' or "
            "'backbone.bottom_up.res?' (docs/OUTPUTS.md)",
            stacklevel=3,
        )


class ModelTaps:
    """Record activations of chosen modules and gradients of chosen parameters while ``active()``.

    ``step_of`` returns the current step, or None when nothing should be recorded now. While a step is
    recorded, every call of a module matching ``seed_modules`` starts with ``torch.manual_seed(seed + step)``.
    ``matchers`` records matcher outputs as kind ``matching`` (canonical form of ``bridge.matching``): a list
    of attribute-path globs (recorded under the path), or a mapping record name -> glob so that both sides
    record under the same names. A path is a submodule (``criterion.matcher``: its forward output) or a
    plain object held by a module (detectron2's ``roi_heads.proposal_matcher``, mmdet's
    ``roi_head.bbox_assigner``: its ``__call__`` / ``assign`` result), wrapped until :meth:`remove`.
    Each call is one record: ``name``, ``name#1``, ... (a matcher called once per image).
    ``inputs`` (module-name globs) records each call's arguments as kind ``input`` under the same name and
    ``#N`` suffix as its activation (:func:`module_inputs`), for the layer-local check (docs/LAYER_LOCAL.md).
    ``functions`` records calls of parameter-free functions, methods of objects the model holds (a box coder:
    detectron2's ``proposal_generator.box2box_transform.apply_deltas``, mmdet's ``rpn_head.bbox_coder.decode``):
    a mapping record name -> attribute path (or a list of paths, recorded under the path). The method is
    shadowed on its object until :meth:`remove`; each call records its arguments as kind ``input``
    (:func:`function_inputs`) and its output as kind ``activation``, ``name``, ``name#1``, ... per call.
    Warns (``UserWarning``) when an activation glob matches no module, or matches modules nested inside
    other matched modules (:func:`nested_matches`).
    """

    def __init__(
        self,
        model: nn.Module,
        recorder: Recorder,
        step_of: Callable[[], int | None],
        *,
        activations: Sequence[str] = (),
        grads: Sequence[str] = (),
        seed_modules: Sequence[str] = (),
        seed: int = 0,
        matchers: Sequence[str] | Mapping[str, str] = (),
        inputs: Sequence[str] = (),
        functions: Sequence[str] | Mapping[str, str] = (),
    ) -> None:
        self._recorder = recorder
        self._step_of = step_of
        self._handles: list = []
        self._restore: list[tuple[Any, str, Any]] = []
        self._calls: dict[tuple[str, int, str], int] = {}
        self._wrap_matchers(model, matchers)
        self._wrap_functions(model, functions)
        modules = dict(model.named_modules())
        matched = match_names(modules, activations)
        _warn_about_globs(list(modules), matched, activations)
        for name in matched:
            self._handles.append(modules[name].register_forward_hook(self._activation_hook(name)))
        for name in match_names(modules, inputs):
            self._handles.append(modules[name].register_forward_pre_hook(self._input_hook(name), with_kwargs=True))
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

    def _input_hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            step = self._step_of()
            if step is not None:
                self._recorder.record(
                    self._unique(name, step, INPUT), module_inputs(module, args, kwargs), step=step, kind=INPUT
                )

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

    def _wrap_matchers(self, model: nn.Module, matchers: Sequence[str] | Mapping[str, str]) -> None:
        wanted = dict(matchers) if isinstance(matchers, Mapping) else {glob: glob for glob in matchers}
        found = matcher_paths(model)
        for record_name, glob in wanted.items():
            paths = match_names(found, [glob])
            if not paths:
                raise BridgeError(
                    f"matchers: {glob!r} matches no submodule or matcher object of the model "
                    f"(candidates: {', '.join(list(found)[:12]) or 'none'})"
                )
            for path in paths:
                name = path if record_name == glob else record_name
                owner, attr, target = found[path]
                if isinstance(target, nn.Module):
                    self._handles.append(
                        target.register_forward_hook(lambda _m, _i, out, name=name: self._record_matching(name, out))
                    )
                else:
                    setattr(owner, attr, _MatcherProxy(target, lambda out, name=name: self._record_matching(name, out)))
                    self._restore.append((owner, attr, target))

    def _record_matching(self, name: str, output: object) -> None:
        step = self._step_of()
        if step is not None:
            record_matching(self._recorder, self._unique(name, step, MATCHING), output, step=step)

    def _wrap_functions(self, model: nn.Module, functions: Sequence[str] | Mapping[str, str]) -> None:
        wanted = dict(functions) if isinstance(functions, Mapping) else {path: path for path in functions}
        for record_name, path in wanted.items():
            owner, attr = resolve_function(model, path)
            original = getattr(owner, attr)
            self._restore.append((owner, attr, getattr(owner, "__dict__", {}).get(attr, _ABSENT)))
            setattr(owner, attr, self._function_stand_in(record_name, path, original))

    def _function_stand_in(self, name: str, path: str, original: Callable) -> Callable:
        def stand_in(*args: Any, **kwargs: Any) -> Any:
            step = self._step_of()
            if step is not None:
                self._recorder.record(
                    self._unique(name, step, INPUT), function_inputs(path, args, kwargs), step=step, kind=INPUT
                )
            output = original(*args, **kwargs)
            if step is not None:
                self._recorder.record(
                    self._unique(name, step, "activation"), recordable(output), step=step, kind="activation"
                )
            return output

        return stand_in

    def remove(self) -> None:
        """Detach every hook from the model and put wrapped matchers and functions back."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for owner, attr, target in reversed(self._restore):
            if target is _ABSENT:
                delattr(owner, attr)
            else:
                setattr(owner, attr, target)
        self._restore.clear()


#: Marks an attribute that was not in the object's own ``__dict__`` (a class method), deleted on restore.
_ABSENT = object()


def resolve_function(model: nn.Module, path: str) -> tuple[Any, str]:
    """(object, method name) of the attribute path ``path`` below ``model`` (``rpn_head.bbox_coder.decode``);
    BridgeError when a part is missing or the last one is not callable."""
    *parts, attr = path.split(".")
    owner: Any = model
    for depth, part in enumerate(parts):
        owner = getattr(owner, part, None)
        if owner is None:
            raise BridgeError(f"functions: {path!r}: the model has no {'.'.join(parts[: depth + 1])!r}")
    if not callable(getattr(owner, attr, None)):
        raise BridgeError(f"functions: {path!r}: {type(owner).__name__} has no method {attr!r}")
    return owner, attr


def function_inputs(path: str, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The recorded form of one function call: ``{"args": [...], "kwargs": {...}, "function": path}`` (values as
    in :func:`module_inputs`); ``function`` tells ``bridge.local`` to replay it as a function, not a module."""
    return {
        "args": [recordable(a) for a in args],
        "kwargs": {k: recordable(v) for k, v in kwargs.items()},
        "function": path,
    }


def module_inputs(module: nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The recorded form of one module call: ``{"args": [...], "kwargs": {...}, "training": bool}``.

    Tensors, lists, tuples, str-keyed dicts, None and numbers are kept as they are; any other object (a
    framework's data sample, a module) becomes the string ``<unrecordable TYPE>``, and a call holding one
    cannot be replayed (``bridge.local`` reports it)."""
    return {
        "args": [recordable(a) for a in args],
        "kwargs": {k: recordable(v) for k, v in kwargs.items()},
        "training": bool(module.training),
    }


def recordable(value: Any) -> Any:
    """``value`` with every leaf that is not a tensor, None, number or str (nor a list, tuple or str-keyed dict
    of those) replaced by the string ``<unrecordable TYPE>``."""
    if isinstance(value, torch.Tensor) or value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(recordable(v) for v in value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: recordable(v) for k, v in value.items()}
    return f"{UNRECORDABLE}{type(value).__name__}>"


#: Prefix of the string standing in for an argument that cannot be recorded.
UNRECORDABLE = "<unrecordable "


class _MatcherProxy:
    """Stands in for a matcher object: calls it (``__call__`` or ``assign``), hands its output to ``on_output``
    and returns it; every other attribute is the matcher's own."""

    def __init__(self, target: Any, on_output: Callable[[object], None]) -> None:
        self._target = target
        self._on_output = on_output

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        output = self._target(*args, **kwargs)
        self._on_output(output)
        return output

    def assign(self, *args: Any, **kwargs: Any) -> Any:
        """The matcher's ``assign`` (mmdet's assigners), recorded."""
        output = self._target.assign(*args, **kwargs)
        self._on_output(output)
        return output

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def matcher_paths(model: nn.Module) -> dict[str, tuple[Any, str, Any]]:
    """Attribute paths a ``matchers`` glob may name: every submodule, and every plain object a module holds
    that can match (callable, or with an ``assign`` method), as path -> (owning module, attribute, object)."""
    found: dict[str, tuple[Any, str, Any]] = {}
    for module_name, module in model.named_modules():
        for attr, obj in list(module._modules.items()) + list(vars(module).items()):
            if attr.startswith("_") or obj is None:
                continue
            if _can_match(obj):
                found.setdefault(f"{module_name}.{attr}" if module_name else attr, (module, attr, obj))
    return found


def _can_match(obj: Any) -> bool:
    """A submodule, or an object (not a class, function or tensor) that is callable or has ``assign``."""
    if isinstance(obj, nn.Module):
        return True
    if isinstance(obj, (type, torch.Tensor)) or inspect.isroutine(obj):
        return False
    return callable(obj) or callable(getattr(obj, "assign", None))
