"""detectron2 side of recording: a trainer hook and an inference helper writing bridge runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from detectron2.engine import HookBase
from torch import nn

from bridge.optim import OptimizerTap, record_grad_norm, record_params
from bridge.rng import IterationTape, record
from bridge.runs import Recorder
from bridge.taps import ModelTaps
from d2_side.canonical import record_canonical_outputs
from d2_side.optim import clip_setting
from d2_side.recordable import to_recordable


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel wrappers."""
    return model.module if hasattr(model, "module") else model


class RecordHook(HookBase):
    """Record, for chosen iterations, the batch as the model receives it (the mapper's ``list[dict]``),
    the loss dict, and optionally activations (module-name globs) and gradients (parameter-name globs).

    Usage: ``trainer.register_hooks([RecordHook("runs/d2", iterations=[0, 1], activations=["backbone.*"])])``.
    ``seed_modules`` (module-name globs, e.g. ``["criterion"]``) reseed torch's RNG with ``seed + step`` before
    each call of those modules in recorded steps; give the mmdet hook the same to line up random sampling.
    ``matchers`` records matcher outputs as kind ``matching`` (``bridge.taps.ModelTaps``), e.g.
    ``{"roi_matcher": "roi_heads.proposal_matcher", "rpn_matcher": "proposal_generator.anchor_matcher"}``.
    ``inputs`` (module-name globs) records each call's arguments as kind ``input`` (docs/LAYER_LOCAL.md).
    ``functions`` (record name -> attribute path of a method of an object the model holds, e.g.
    ``{"rpn_decode": "proposal_generator.box2box_transform.apply_deltas"}``) records each call's arguments
    (kind ``input``) and output (kind ``activation``) for the layer-local check (``bridge.taps.ModelTaps``).
    ``rng_scopes`` (module-name globs, or a mapping label -> globs; see ``bridge.rng``) records the RNG tape of
    each recorded iteration: every random draw made while a matching module runs (record ``rng``, kind ``rng``),
    for ``ReplayHook`` / mmdet's ``BridgeReplayHook`` to replay.
    Works with any detectron2 trainer whose ``run_step`` calls ``self.model(data)`` (SimpleTrainer,
    AMPTrainer, DefaultTrainer, Mask DINO-style trainers). Each rank writes its own files.
    ``optimizer_steps=N`` records the optimizer's per-parameter settings, its clipping and the lr of each
    param group at each of the first N iterations (kind ``optim``, ``bridge.optim``); ``params`` (parameter-name
    globs) records those parameters after the optimizer step of each recorded iteration (kind ``param``) and
    ``grad_norm=True`` the L2 norm of all gradients then (``grad_norm``, kind ``grad``).
    """

    def __init__(
        self,
        run_dir: str,
        *,
        iterations: Iterable[int] = (0,),
        activations: Sequence[str] = (),
        grads: Sequence[str] = (),
        record_batch: bool = True,
        record_losses: bool = True,
        seed_modules: Sequence[str] = (),
        seed: int = 0,
        matchers: Sequence[str] | Mapping[str, str] = (),
        optimizer_steps: int = 0,
        params: Sequence[str] = (),
        grad_norm: bool = False,
        inputs: Sequence[str] = (),
        rng_scopes: Sequence[str] | Mapping[str, str | Sequence[str]] = (),
        functions: Sequence[str] | Mapping[str, str] = (),
    ) -> None:
        self._run_dir = run_dir
        self._functions = dict(functions) if isinstance(functions, Mapping) else tuple(functions)
        self._inputs = tuple(inputs)
        self._matchers = dict(matchers) if isinstance(matchers, Mapping) else tuple(matchers)
        self._optimizer_steps = optimizer_steps
        self._params = tuple(params)
        self._grad_norm = grad_norm
        self._optimizer_tap: OptimizerTap | None = None
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
        self._taps = ModelTaps(
            unwrap(model),
            self.recorder,
            self._current_step,
            activations=self._activations,
            grads=self._grads,
            seed_modules=self._seed_modules,
            seed=self._seed,
            matchers=self._matchers,
            inputs=self._inputs,
            functions=self._functions,
        )
        self._handles.append(model.register_forward_pre_hook(self._on_batch))
        self._handles.append(model.register_forward_hook(self._on_losses))
        if self._optimizer_steps:
            self._optimizer_tap = OptimizerTap(self.recorder, self._optimizer_steps)

    def before_step(self) -> None:
        """Read the optimizer's settings and this iteration's learning rates (``optimizer_steps``); in a recorded
        iteration with ``rng_scopes``, start the iteration's RNG tape."""
        if self._optimizer_tap is not None:
            optimizer = self.trainer.optimizer
            self._optimizer_tap.before_iteration(
                self.trainer.iter, optimizer, unwrap(self.trainer.model), clip_setting(optimizer)
            )
        step = self._current_step()
        if step is not None and self._rng_scopes:
            self._rng.begin(record(self.recorder, step, model=unwrap(self.trainer.model), scopes=self._rng_scopes))

    def after_step(self) -> None:
        """Write the iteration's RNG tape, then record the chosen parameters and the gradient norm after the
        optimizer step of a recorded iteration."""
        self._rng.end()
        step = self._current_step()
        if step is None:
            return
        if self._params:
            record_params(self.recorder, unwrap(self.trainer.model), step, self._params)
        if self._grad_norm:
            record_grad_norm(self.recorder, unwrap(self.trainer.model), step)

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
        if self._optimizer_tap is not None:
            self._optimizer_tap.finish()
        if self.recorder is not None:
            self.recorder.close()


@torch.no_grad()
def record_inference(
    model: nn.Module,
    batches: Iterable[list[dict]],
    recorder: Recorder,
    *,
    activations: Sequence[str] = (),
    max_batches: int | None = None,
    metadata: Any = None,
    inputs: Sequence[str] = (),
    functions: Sequence[str] | Mapping[str, str] = (),
) -> int:
    """Run ``model`` in eval mode on ``batches`` (e.g. ``build_detection_test_loader``) and record, per
    batch index as step, the inputs (kind ``batch``), the outputs (``panoptic_seg``, ``instances``,
    ``sem_seg``; kind ``output``), chosen activations and the arguments of chosen modules (``inputs``, kind
    ``input``) and the calls of chosen ``functions`` (as ``RecordHook``). With the dataset's ``metadata``,
    each image's ``panoptic_seg``, ``instances`` and ``sem_seg`` are also recorded in the canonical forms
    (``panoptic.<image_id>``, ``instances.<image_id>``, ``semantic.<image_id>``; see docs/OUTPUTS.md), which
    ``bridge.compare`` pairs with mmdet's. Returns the number of batches recorded."""
    model.eval()
    step_box: list[int | None] = [None]
    taps = ModelTaps(
        unwrap(model), recorder, lambda: step_box[0], activations=activations, inputs=inputs, functions=functions
    )
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
                record_canonical_outputs(recorder, inputs, outputs, metadata, step)
            count += 1
    finally:
        taps.remove()
    return count
