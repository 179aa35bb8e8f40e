"""detectron2 side of recording: a trainer hook and an inference helper writing bridge runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from detectron2.engine import HookBase
from torch import nn

from bridge.panoptic import to_record
from bridge.rng import IterationTape, record
from bridge.runs import Recorder
from bridge.taps import ModelTaps
from d2_side.panoptic import canonical_from_d2
from d2_side.recordable import to_recordable

PANOPTIC_PREFIX = "panoptic."


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel wrappers."""
    return model.module if hasattr(model, "module") else model


class RecordHook(HookBase):
    """Record, for chosen iterations, the batch as the model receives it (the mapper's ``list[dict]``),
    the loss dict, and optionally activations (module-name globs) and gradients (parameter-name globs).

    Usage: ``trainer.register_hooks([RecordHook("runs/d2", iterations=[0, 1], activations=["backbone.*"])])``.
    ``seed_modules`` (module-name globs, e.g. ``["criterion"]``) reseed torch's RNG with ``seed + step`` before
    each call of those modules in recorded steps; give the mmdet hook the same to line up random sampling.
    ``rng_scopes`` (module-name globs, or a mapping label -> globs; see ``bridge.rng``) records the RNG tape of
    each recorded iteration: every random draw made while a matching module runs (record ``rng``, kind ``rng``),
    for ``ReplayHook`` / mmdet's ``BridgeReplayHook`` to replay.
    Works with any detectron2 trainer whose ``run_step`` calls ``self.model(data)`` (SimpleTrainer,
    AMPTrainer, DefaultTrainer, Mask DINO-style trainers). Each rank writes its own files.
    """

    def __init__(self, run_dir: str, *, iterations: Iterable[int] = (0,), activations: Sequence[str] = (),
                 grads: Sequence[str] = (), record_batch: bool = True, record_losses: bool = True,
                 seed_modules: Sequence[str] = (), seed: int = 0,
                 rng_scopes: Sequence[str] | Mapping[str, str | Sequence[str]] = ()) -> None:
        self._run_dir = run_dir
        self._rng_scopes = rng_scopes
        self._rng = IterationTape()
        self._seed_modules = tuple(seed_modules)
        self._seed = seed
        self._iterations = set(iterations)
        self._activations = tuple(activations)
        self._grads = tuple(grads)
        self._record_batch = record_batch
        self._record_losses = record_losses
        self.recorder: Recorder | None = None
        self._taps: ModelTaps | None = None
        self._handles: list = []

    def _current_step(self) -> int | None:
        step = self.trainer.iter
        return step if step in self._iterations else None

    def before_train(self) -> None:
        """Open the run and attach the hooks to the trainer's model."""
        self.recorder = Recorder(self._run_dir, framework="detectron2")
        model = self.trainer.model
        self._taps = ModelTaps(unwrap(model), self.recorder, self._current_step, activations=self._activations,
                               grads=self._grads, seed_modules=self._seed_modules, seed=self._seed)
        self._handles.append(model.register_forward_pre_hook(self._on_batch))
        self._handles.append(model.register_forward_hook(self._on_losses))

    def before_step(self) -> None:
        """In a recorded iteration with ``rng_scopes``: start the iteration's RNG tape."""
        step = self._current_step()
        if step is not None and self._rng_scopes:
            self._rng.begin(record(self.recorder, step, model=unwrap(self.trainer.model), scopes=self._rng_scopes))

    def after_step(self) -> None:
        """Write the iteration's RNG tape."""
        self._rng.end()

    def _on_batch(self, _model: nn.Module, inputs: tuple) -> None:
        step = self._current_step()
        if step is not None and self._record_batch and inputs:
            self.recorder.record("batch", to_recordable(inputs[0]), step=step, kind="batch")

    def _on_losses(self, _model: nn.Module, _inputs: tuple, output: object) -> None:
        step = self._current_step()
        if step is not None and self._record_losses and isinstance(output, dict):
            self.recorder.record("losses", to_recordable(output), step=step, kind="loss")

    def after_train(self) -> None:
        """Detach every hook and close the run."""
        self._rng.abort()
        for handle in self._handles:
            handle.remove()
        if self._taps is not None:
            self._taps.remove()
        if self.recorder is not None:
            self.recorder.close()


@torch.no_grad()
def record_inference(model: nn.Module, batches: Iterable[list[dict]], recorder: Recorder, *,
                     activations: Sequence[str] = (), max_batches: int | None = None,
                     metadata: Any = None) -> int:
    """Run ``model`` in eval mode on ``batches`` (e.g. ``build_detection_test_loader``) and record, per
    batch index as step, the inputs (kind ``batch``), the outputs (``panoptic_seg``, ``instances``,
    ``sem_seg``; kind ``output``) and chosen activations. With the dataset's ``metadata``, each
    ``panoptic_seg`` is also recorded in the canonical form (``panoptic.<image_id>``, ``bridge.panoptic``).
    Returns the number of batches recorded."""
    model.eval()
    step_box: list[int | None] = [None]
    taps = ModelTaps(unwrap(model), recorder, lambda: step_box[0], activations=activations)
    count = 0
    try:
        for step, inputs in enumerate(batches):
            if max_batches is not None and step >= max_batches:
                break
            step_box[0] = step
            recorder.record("batch", to_recordable(inputs), step=step, kind="batch")
            outputs = model(inputs)
            recorder.record("outputs", to_recordable(outputs), step=step, kind="output")
            if metadata is not None:
                record_canonical_panoptic(recorder, inputs, outputs, metadata, step)
            count += 1
    finally:
        taps.remove()
    return count


def record_canonical_panoptic(recorder: Recorder, inputs: list[dict], outputs: list[dict], metadata: Any,
                              step: int) -> None:
    """Record each output's ``panoptic_seg`` as ``panoptic.<image_id>`` in the canonical form (kind ``output``)."""
    for index, (record, output) in enumerate(zip(inputs, outputs)):
        if "panoptic_seg" in output:
            canonical = canonical_from_d2(output["panoptic_seg"], metadata)
            recorder.record(f"{PANOPTIC_PREFIX}{record.get('image_id', index)}", to_record(canonical), step=step,
                            kind="output")
