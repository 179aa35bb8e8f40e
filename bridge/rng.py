"""The RNG tape: record every random draw one side makes, and replay those values on the other side.

``record(recorder, step)`` stores, in call order, each draw made inside the block (kind ``rng``, one record
per block); ``replay(run_dir, step)`` makes the same draws on this side return the recorded values. With
``model`` and ``scopes`` only draws made while a module matching a scope's globs runs count. Draws are seen
at torch's dispatcher (a ``TorchDispatchMode``), so a draw is intercepted whoever calls it: ``torch.rand``
imported by name, Tensor methods, ``nn.Dropout``, dropout inside ``nn.MultiheadAttention`` and
``F.scaled_dot_product_attention``. See docs/RNG.md for what is and is not intercepted.
"""

from __future__ import annotations

import collections
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from bridge.errors import BridgeError, FormatError
from bridge.runs import Recorder, open_run
from bridge.taps import match_names

TAPE_NAME = "rng"
MATCH_MODES = ("order", "queue")
IN_PLACE_OPS = ("uniform_", "normal_", "bernoulli_", "random_", "exponential_", "geometric_", "log_normal_", "cauchy_")
OUT_OF_PLACE_OPS = (
    "rand",
    "randn",
    "randint",
    "randperm",
    "rand_like",
    "randn_like",
    "randint_like",
    "bernoulli",
    "multinomial",
    "normal",
    "poisson",
    "binomial",
    "_standard_gamma",
    "_sample_dirichlet",
)
DROPOUT_OPS = ("native_dropout",)
_BOOL_VALUED = frozenset({"bernoulli", "bernoulli_", "native_dropout"})
_SKIP_DIRS = (os.path.dirname(torch.__file__) + os.sep, os.path.dirname(os.path.abspath(__file__)) + os.sep)


def _packets(names: Sequence[str], kind: str) -> dict[Any, tuple[str, str]]:
    return {getattr(torch.ops.aten, name): (name, kind) for name in names if hasattr(torch.ops.aten, name)}


_RANDOM_OPS = {
    **_packets(IN_PLACE_OPS, "in_place"),
    **_packets(OUT_OF_PLACE_OPS, "out_of_place"),
    **_packets(DROPOUT_OPS, "dropout"),
}


class RngTapeError(BridgeError):
    """A tape cannot be used: missing step or rank, unreadable or malformed, recorded with other scopes."""


class RngTapeMismatch(RngTapeError):
    """The replaying side's draw is not the tape's next one (other op, shape or dtype): a finding."""


class RngTapeMissing(RngTapeError):
    """The replaying side draws where the tape has no draw left to give."""


class RngTapeLeftover(RngTapeError):
    """Recorded draws were not asked for by the replaying side before the block ended."""


@dataclass
class Draw:
    """One random draw: where it happened (scope label, module name, Python call site), what it was (op,
    shape, dtype, device) and the values it produced (bernoulli draws and dropout masks as bool)."""

    scope: str
    module: str
    op: str
    shape: tuple[int, ...]
    dtype: str
    device: str
    site: str
    value: torch.Tensor

    @property
    def key(self) -> tuple[str, tuple[int, ...], str]:
        """What two draws must share to be the same draw: (op, shape, dtype)."""
        return self.op, self.shape, self.dtype

    def describe(self) -> str:
        """``randperm[131] int64 at .../matcher.py:88 (module 'roi_heads')``."""
        where = f" (module {self.module!r})" if self.module else ""
        return f"{self.op}{list(self.shape)} {self.dtype} at {self.site}{where}"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _call_site() -> str:
    """``file:line`` of the innermost Python frame outside torch and ``bridge``, or ``"?"``."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_SKIP_DIRS):
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def normalize_scopes(scopes: Sequence[str] | Mapping[str, str | Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Scope label -> module-name globs. A sequence of globs makes each glob its own label; a mapping names
    the labels (``{'loss': 'criterion*'}``), so that two frameworks' module names share one label. In a
    mapping the glob ``""`` is the model itself (its forward, when called as ``model(...)``)."""
    if isinstance(scopes, str):
        raise BridgeError(
            f"rng scopes must be a list of module-name globs or a mapping label -> globs, got the "
            f"string {scopes!r} (write [{scopes!r}])"
        )
    if isinstance(scopes, Mapping):
        items = [(str(label), (globs,) if isinstance(globs, str) else tuple(globs)) for label, globs in scopes.items()]
        empty_glob_ok = True
    else:
        items = [(str(glob), (str(glob),)) for glob in scopes]
        empty_glob_ok = False
    for label, globs in items:
        if not label or not globs or not all(isinstance(g, str) and (g or empty_glob_ok) for g in globs):
            raise BridgeError(
                f"rng scope {label!r}: needs a non-empty label and module-name globs, got {globs!r} "
                f"(the model itself: a mapping {{'model': ''}})"
            )
    return dict(items)


class _Scopes:
    """Track which scope is running: forward pre/post hooks on the modules matching each label's globs keep a
    stack of (label, module name); ``on_first`` / ``on_last`` run when the stack leaves / reaches empty.
    Without labels the whole block is one scope, label ``""``."""

    def __init__(
        self,
        model: nn.Module | None,
        labels: dict[str, tuple[str, ...]],
        on_first: Callable[[], None],
        on_last: Callable[[], None],
    ) -> None:
        self.stack: list[tuple[str, str]] = []
        self._handles: list = []
        self._on_first, self._on_last = on_first, on_last
        self.whole_block = not labels
        if self.whole_block:
            self.stack.append(("", ""))
            return
        if model is None:
            raise BridgeError(f"rng scopes {sorted(labels)} need the model whose modules they name (model=...)")
        modules = dict(model.named_modules())
        owner: dict[str, str] = {}
        for label, globs in labels.items():
            names = match_names(modules, globs)
            if not names:
                listing = ", ".join(list(modules)[:15])
                raise BridgeError(
                    f"rng scope {label!r}: globs {list(globs)} match no module of {type(model).__name__} "
                    f"(modules: {listing}, ...)"
                )
            for name in names:
                if name in owner and owner[name] != label:
                    raise BridgeError(
                        f"rng scopes {owner[name]!r} and {label!r} both match module {name!r}; "
                        f"a module belongs to one scope"
                    )
                owner[name] = label
        for name, label in owner.items():
            module = modules[name]
            if type(module).__call__ is not nn.Module.__call__:
                raise BridgeError(
                    f"rng scope {label!r}: module {name!r} ({type(module).__name__}) overrides __call__, "
                    f"so its forward hooks never run and its draws cannot be scoped to it; scope the "
                    f"module that calls it (or the model, {{'model': ''}})"
                )
            self._handles.append(module.register_forward_pre_hook(self._enter_hook(label, name)))
            self._handles.append(module.register_forward_hook(self._exit_hook(), always_call=True))

    def _enter_hook(self, label: str, name: str) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple) -> None:
            self.stack.append((label, name))
            if len(self.stack) == 1:
                self._on_first()

        return hook

    def _exit_hook(self) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple, _output: object) -> None:
            if self.stack:
                self.stack.pop()
                if not self.stack:
                    self._on_last()

        return hook

    def current(self) -> tuple[str, str]:
        """(label, module name) of the innermost running scope."""
        return self.stack[-1]

    def remove(self) -> None:
        """Detach the hooks; leave a running scope (the block raised inside a module)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self.stack and not self.whole_block:
            self.stack.clear()
            self._on_last()


class _Intercept(TorchDispatchMode):
    """Send every random aten op to ``handler(name, kind, func, args, kwargs)``; all others run as they are."""

    def __init__(self, handler: Callable[..., Any]) -> None:
        super().__init__()
        self._handler = handler

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        """Random ops go to the tape's handler."""
        found = _RANDOM_OPS.get(func._overloadpacket)
        if found is None:
            return func(*args, **(kwargs or {}))
        return self._handler(found[0], found[1], func, args, kwargs or {})


def _dropout_args(args: tuple, kwargs: dict) -> tuple[torch.Tensor, float, bool | None]:
    names = ("input", "p", "train")
    values = list(args) + [kwargs[n] for n in names[len(args) :] if n in kwargs]
    return values[0], float(values[1]), values[2] if len(values) > 2 else None


def _is_dropout_draw(p: float, train: bool | None) -> bool:
    return train is not False and 0.0 < p < 1.0


def _apply_mask(source: torch.Tensor, mask: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``native_dropout``'s result from a keep-mask, computed the same way on record and replay on every device."""
    return source.mul(mask).mul_(1.0 / (1.0 - p)), mask


class _Tape:
    """What record and replay share: the scope tracker, the dispatch mode, the per-scope counts."""

    def __init__(self, model: nn.Module | None, scopes: Sequence[str] | Mapping[str, Any]) -> None:
        self.labels = normalize_scopes(scopes)
        self._mode = _Intercept(self._on_draw)
        self._sdpa = None
        self._scopes: _Scopes | None = None
        self._model = model

    def _start(self) -> None:
        self._scopes = _Scopes(self._model, self.labels, self._push, self._pop)
        if self._scopes.whole_block:
            self._push()

    def _stop(self) -> None:
        if self._scopes is not None:
            whole = self._scopes.whole_block
            self._scopes.remove()
            if whole:
                self._pop()

    def _push(self) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            from torch.nn.attention import SDPBackend, sdpa_kernel  # CUDA's fused attention draws dropout in its kernel

            self._sdpa = sdpa_kernel([SDPBackend.MATH])
            self._sdpa.__enter__()
        self._mode.__enter__()

    def _pop(self) -> None:
        self._mode.__exit__(None, None, None)
        if self._sdpa is not None:
            self._sdpa.__exit__(None, None, None)
            self._sdpa = None

    def _on_draw(self, op: str, kind: str, func, args: tuple, kwargs: dict) -> Any:
        raise NotImplementedError


class TapeRecording(_Tape):
    """The value of ``with record(...) as tape``: ``tape.draws`` in call order, ``tape.summary()``."""

    def __init__(
        self,
        recorder: Recorder,
        step: int,
        model: nn.Module | None,
        scopes: Sequence[str] | Mapping[str, Any],
        name: str,
    ) -> None:
        super().__init__(model, scopes)
        self.recorder, self.step, self.name = recorder, step, name
        self.draws: list[Draw] = []

    def _on_draw(self, op: str, kind: str, func, args: tuple, kwargs: dict) -> Any:
        label, module = self._scopes.current()
        site = _call_site()
        if kind == "dropout":
            source, p, train = _dropout_args(args, kwargs)
            if not _is_dropout_draw(p, train):
                return func(*args, **kwargs)
            mask = torch.empty_like(source, dtype=torch.bool).bernoulli_(1.0 - p)
            self.draws.append(
                Draw(
                    label,
                    module,
                    f"{op}(p={p:g})",
                    tuple(source.shape),
                    _dtype_name(source.dtype),
                    str(source.device),
                    site,
                    mask,
                )
            )
            return _apply_mask(source, mask, p)
        result = func(*args, **kwargs)
        drawn = args[0] if kind == "in_place" else result
        value = drawn.to(torch.bool, copy=True) if op in _BOOL_VALUED else drawn.clone()
        self.draws.append(
            Draw(label, module, op, tuple(drawn.shape), _dtype_name(drawn.dtype), str(drawn.device), site, value)
        )
        return result

    def summary(self) -> dict[str, dict[str, int]]:
        """Per scope label: ``{"recorded": n, "replayed": 0, "left_over": 0}``."""
        counts = collections.Counter(draw.scope for draw in self.draws)
        labels = list(self.labels) or [""]
        return {label: {"recorded": counts[label], "replayed": 0, "left_over": 0} for label in labels}

    def save(self) -> None:
        """Write the tape as one record (``name``, ``step``, kind ``rng``)."""
        value = {
            "scopes": [[label, list(globs)] for label, globs in self.labels.items()] or [["", []]],
            "draws": [
                {
                    "scope": d.scope,
                    "module": d.module,
                    "op": d.op,
                    "shape": list(d.shape),
                    "dtype": d.dtype,
                    "device": d.device,
                    "site": d.site,
                    "value": d.value,
                }
                for d in self.draws
            ],
        }
        self.recorder.record(self.name, value, step=self.step, kind="rng")


@contextmanager
def record(
    recorder: Recorder,
    step: int = 0,
    model: nn.Module | None = None,
    scopes: Sequence[str] | Mapping[str, Any] = (),
    *,
    name: str = TAPE_NAME,
) -> Iterator[TapeRecording]:
    """Record every random draw made inside the block into ``recorder`` at ``step`` (record ``name``, kind
    ``rng``), written when the block ends without an exception.

    Args:
        recorder: the run to write into (``bridge.Recorder``).
        step: the training step the draws belong to; one tape per (name, step).
        model: the module whose submodules ``scopes`` name; needed when ``scopes`` is given.
        scopes: module-name globs (each its own scope label) or a mapping label -> globs. Only draws made while
            a matching module runs are recorded, under the label of the innermost one; draws elsewhere run as
            usual. Empty: every draw in the block, label ``""``.

    On the CPU recording changes no value: each draw runs as it would, dropout draws its mask as torch does.
    Raises ``BridgeError`` for scopes that match no module or share a module.
    """
    tape = TapeRecording(recorder, step, model, scopes, name)
    tape._start()
    try:
        yield tape
    finally:
        tape._stop()
    tape.save()


class TapeReplay(_Tape):
    """The value of ``with replay(...) as tape``: ``tape.summary()`` and ``tape.left_over()`` per scope."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        step: int,
        rank: int,
        model: nn.Module | None,
        scopes: Sequence[str] | Mapping[str, Any],
        match: str,
        name: str,
    ) -> None:
        if match not in MATCH_MODES:
            raise BridgeError(f"rng replay: match must be one of {MATCH_MODES}, got {match!r}")
        super().__init__(model, scopes)
        self.run_dir, self.step, self.rank, self.match = str(run_dir), step, rank, match
        tape_labels, draws = load_tape(run_dir, step, rank, name)
        self._where = f"{self.run_dir} step {step} rank {rank}"
        wanted = list(self.labels) or [""]
        for label in wanted:
            if label not in tape_labels:
                shown = [lab or '"" (everything)' for lab in tape_labels]
                raise RngTapeError(
                    f"{self._where}: scope {label or '(everything)'!r} is not on the tape, which was "
                    f"recorded with scopes {shown}; record and replay with the same scope labels"
                )
        self.recorded = {label: [d for d in draws if d.scope == label] for label in tape_labels}
        self._position = dict.fromkeys(tape_labels, 0)
        self._used = {label: [False] * len(items) for label, items in self.recorded.items()}
        self._queues: dict[str, dict[tuple, collections.deque[int]]] = {}
        for label, items in self.recorded.items():
            queues: dict[tuple, collections.deque[int]] = collections.defaultdict(collections.deque)
            for index, draw in enumerate(items):
                queues[draw.key].append(index)
            self._queues[label] = queues

    def _take(self, label: str, wanted: Draw) -> Draw:
        items = self.recorded[label]
        if self.match == "queue":
            queue = self._queues[label].get(wanted.key)
            if not queue:
                raise RngTapeMissing(
                    f"{self._where}: the replaying side draws {wanted.describe()} in scope "
                    f"{label!r}, and the tape has no such draw left there "
                    f"({self._remaining_text(label)})"
                )
            index = queue.popleft()
        else:
            index = self._position[label]
            if index >= len(items):
                raise RngTapeMissing(
                    f"{self._where}: the replaying side draws {wanted.describe()} in scope {label!r}, "
                    f"after all {len(items)} draws the tape recorded there"
                )
            if items[index].key != wanted.key:
                raise RngTapeMismatch(
                    f"{self._where}: draw #{index} of scope {label!r}: the replaying side draws "
                    f"{wanted.describe()} where the tape has {items[index].describe()}"
                )
            self._position[label] = index + 1
        self._used[label][index] = True
        return items[index]

    def _remaining_text(self, label: str) -> str:
        left = [d for d, used in zip(self.recorded[label], self._used[label]) if not used]
        shown = "; ".join(d.describe() for d in left[:3])
        return f"{len(left)} left: {shown}{' ...' if len(left) > 3 else ''}" if left else "none left"

    def _on_draw(self, op: str, kind: str, func, args: tuple, kwargs: dict) -> Any:
        label, module = self._scopes.current()
        site = _call_site()
        if kind == "dropout":
            source, p, train = _dropout_args(args, kwargs)
            if not _is_dropout_draw(p, train):
                return func(*args, **kwargs)
            wanted = Draw(
                label,
                module,
                f"{op}(p={p:g})",
                tuple(source.shape),
                _dtype_name(source.dtype),
                str(source.device),
                site,
                source,
            )
            mask = self._take(label, wanted).value.to(device=source.device, dtype=torch.bool)
            return _apply_mask(source, mask, p)
        if kind == "in_place":
            result = drawn = args[0]
        else:
            result = drawn = func(*args, **kwargs)
        wanted = Draw(label, module, op, tuple(drawn.shape), _dtype_name(drawn.dtype), str(drawn.device), site, drawn)
        drawn.copy_(self._take(label, wanted).value)
        return result

    def summary(self) -> dict[str, dict[str, int]]:
        """Per scope label on the tape: ``{"recorded": n, "replayed": m, "left_over": n - m}``."""
        out = {}
        for label, used in self._used.items():
            replayed = sum(used)
            out[label] = {"recorded": len(used), "replayed": replayed, "left_over": len(used) - replayed}
        return out

    def left_over(self) -> list[Draw]:
        """Recorded draws not (yet) asked for, in tape order, scope by scope."""
        return [d for label, items in self.recorded.items() for d, used in zip(items, self._used[label]) if not used]

    def check_left_over(self) -> None:
        """Raise ``RngTapeLeftover`` naming the scopes with draws left over and the first such draw."""
        left = self.left_over()
        if left:
            counts = {label: c["left_over"] for label, c in self.summary().items() if c["left_over"]}
            raise RngTapeLeftover(
                f"{self._where}: {len(left)} recorded draw(s) left over when the block ended "
                f"(per scope: {counts}); first: {left[0].describe()} in scope {left[0].scope!r}"
            )


@contextmanager
def replay(
    run_dir: str | os.PathLike[str],
    step: int = 0,
    rank: int = 0,
    model: nn.Module | None = None,
    scopes: Sequence[str] | Mapping[str, Any] = (),
    match: str = "order",
    *,
    allow_left_over: bool = False,
    name: str = TAPE_NAME,
) -> Iterator[TapeReplay]:
    """Make the random draws inside the block return the values the tape at (``run_dir``, ``step``, ``rank``)
    recorded, scope label by scope label.

    Args:
        run_dir: a run holding a tape written by :func:`record` (record ``name``, kind ``rng``).
        step, rank: which tape.
        model, scopes: as in :func:`record`; the labels must be on the tape (module globs may differ).
        match: ``"order"``: the n-th draw of a scope gets the tape's n-th draw of that scope, and a draw whose
            (op, shape, dtype) differs stops with ``RngTapeMismatch`` naming both call sites. ``"queue"``: each
            draw gets the earliest unused recorded draw of the same (op, shape, dtype) in its scope.
        allow_left_over: when False (default), recorded draws nobody asked for raise ``RngTapeLeftover`` at the
            end of the block; when True they are only counted in ``tape.summary()``.

    A draw with no recorded counterpart raises ``RngTapeMissing``. Values are copied onto the replaying
    draw's own tensor, so they land on its device (CPU or CUDA) with its dtype. A missing, unreadable or
    malformed tape, or one recorded with other scope labels, raises ``RngTapeError`` naming run, step and scope.
    """
    tape = TapeReplay(run_dir, step, rank, model, scopes, match, name)
    tape._start()
    try:
        yield tape
    finally:
        tape._stop()
    if not allow_left_over:
        tape.check_left_over()


def _open_tapes(run_dir: str | os.PathLike[str], rank: int, name: str) -> tuple[Any, list[int]]:
    """The opened run and the steps holding a tape ``name`` on ``rank``; RngTapeError for an unreadable run."""
    try:
        run = open_run(run_dir)
    except FormatError as exc:
        raise RngTapeError(f"{run_dir}: cannot read the rng tape: {exc}") from None
    return run, sorted({e.step for e in run.entries(rank=rank, kind="rng") if e.name == name})


def load_tape(
    run_dir: str | os.PathLike[str], step: int = 0, rank: int = 0, name: str = TAPE_NAME
) -> tuple[list[str], list[Draw]]:
    """Read the tape (record ``name``, kind ``rng``) of ``step`` on ``rank``: its scope labels and its draws
    in call order (values on the CPU). Raises ``RngTapeError`` naming the run, step and rank."""
    where = f"{run_dir} step {step} rank {rank}"
    run, steps = _open_tapes(run_dir, rank, name)
    if rank not in run.ranks():
        raise RngTapeError(f"{where}: the run has no rank {rank} (ranks {run.ranks()})")
    if step not in steps:
        raise RngTapeError(
            f"{where}: no rng tape {name!r} for step {step} on rank {rank} (tapes at steps {steps or 'none'})"
        )
    try:
        value = run.get(name, step=step, kind="rng", rank=rank)
    except FormatError as exc:
        raise RngTapeError(f"{where}: rng tape unreadable (truncated or corrupt): {exc}") from None
    try:
        labels = [str(label) for label, _globs in value["scopes"]]
        draws = [
            Draw(
                str(d["scope"]),
                str(d["module"]),
                str(d["op"]),
                tuple(int(n) for n in d["shape"]),
                str(d["dtype"]),
                str(d["device"]),
                str(d["site"]),
                d["value"],
            )
            for d in value["draws"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise RngTapeError(f"{where}: rng tape is malformed ({exc!r})") from None
    for index, draw in enumerate(draws):
        if (
            draw.scope not in labels
            or not isinstance(draw.value, torch.Tensor)
            or tuple(draw.value.shape) != draw.shape
        ):
            raise RngTapeError(
                f"{where}: rng tape draw #{index} ({draw.describe()}, scope {draw.scope!r}) is malformed: "
                f"unknown scope or values of another shape"
            )
    return labels, draws


def tape_steps(run_dir: str | os.PathLike[str], rank: int = 0, name: str = TAPE_NAME) -> list[int]:
    """The steps at which ``run_dir`` holds a tape on ``rank``; raises ``RngTapeError`` when it holds none."""
    run, steps = _open_tapes(run_dir, rank, name)
    if not steps:
        raise RngTapeError(
            f"{run_dir}: no rng tape {name!r} on rank {rank} (ranks {run.ranks()}); record one with "
            f"rng_scopes=[...] on the record hook"
        )
    return steps


class IterationTape:
    """One tape block per training iteration, opened and closed from a trainer's hooks (``begin`` before the
    iteration, ``end`` after it, ``abort`` when training stops inside one)."""

    def __init__(self) -> None:
        self._block: Any = None
        self.tape: TapeRecording | TapeReplay | None = None

    def begin(self, block: Any) -> None:
        """Enter ``block`` (a :func:`record` or :func:`replay` context); a block still open is ended first."""
        self.end()
        self._block = block
        self.tape = block.__enter__()

    def end(self) -> dict[str, dict[str, int]] | None:
        """Leave the open block (the tape is written, or left-over draws raise) and return its summary."""
        block, self._block = self._block, None
        if block is None:
            return None
        block.__exit__(None, None, None)
        return self.tape.summary()

    def abort(self) -> None:
        """Leave the open block without writing or checking anything (training stopped inside it)."""
        block, self._block = self._block, None
        if block is not None:
            stopped = RuntimeError("training stopped inside a taped iteration")
            block.__exit__(type(stopped), stopped, None)


__all__ = [
    "record",
    "replay",
    "load_tape",
    "tape_steps",
    "IterationTape",
    "normalize_scopes",
    "Draw",
    "TapeRecording",
    "TapeReplay",
    "RngTapeError",
    "RngTapeMismatch",
    "RngTapeMissing",
    "RngTapeLeftover",
    "TAPE_NAME",
    "MATCH_MODES",
]
