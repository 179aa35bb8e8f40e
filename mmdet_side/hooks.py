"""mmengine hook that records an mmdet run in the bridge format; registered in mmdet's HOOKS.

Switch it on from a config, nothing in mmdet is edited::

    custom_imports = dict(imports=['mmdet_side'], allow_failed_imports=False)
    custom_hooks = [dict(type='BridgeRecordHook', run_dir='runs/mmdet', iterations=[0],
                         activations=['backbone.layer1', 'neck.fpn_convs.*'], grads=['backbone.conv1.*'])]

To record evaluation only (``tools/test.py``), give ``eval_run_dir`` and no ``run_dir``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from bridge.errors import BridgeError
from bridge.optim import OptimizerTap, record_grad_norm, record_params
from bridge.rng import IterationTape, record
from bridge.runs import Recorder
from bridge.taps import ModelTaps
from mmdet_side.canonical import annotation_categories, record_canonical_outputs
from mmdet_side.optim import clip_setting
from mmdet_side.recordable import to_recordable


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside mmengine's model wrappers (MMDistributedDataParallel and the others ``is_model_wrapper``
    knows)."""
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class BridgeRecordHook(Hook):
    """Record, for chosen training iterations, the batch after the data preprocessor (kind ``batch``),
    the losses (kind ``loss``), activations of modules matching ``activations`` and gradients of
    parameters matching ``grads`` into ``run_dir``; with ``eval_run_dir``, the batches, activations and
    predictions of val/test too (raw, and in the canonical forms of docs/OUTPUTS.md). Either run dir may be
    left out (``None``): without ``run_dir`` nothing of training is recorded.
    Keyword arguments as detectron2's ``RecordHook`` (same names, same defaults); ``record_batch`` /
    ``record_losses`` switch the batch and loss records off. ``eval_run_dir`` is this side's own: detectron2 records
    inference with ``d2_side.hooks.record_inference`` instead.
    ``seed_modules`` / ``seed``: as detectron2's ``RecordHook`` (torch's RNG reseeded with ``seed + step`` before
    each call of those modules in recorded training steps), so both sides' random point sampling lines up.
    ``matchers``: as detectron2's ``RecordHook`` (kind ``matching``), e.g.
    ``{"roi_matcher": "roi_head.bbox_assigner", "rpn_matcher": "rpn_head.assigner"}``.
    ``optimizer_steps`` / ``params`` / ``grad_norm``: as detectron2's ``RecordHook`` (the optimizer record, the
    parameters and the gradient norm right after the optimizer step, before mmengine zeroes the gradients).
    ``inputs``: as detectron2's ``RecordHook`` (each call's arguments, kind ``input``; docs/LAYER_LOCAL.md).
    ``functions``: as detectron2's ``RecordHook`` (calls of a held object's method, e.g.
    ``{"rpn_decode": "rpn_head.bbox_coder.decode"}``: arguments as kind ``input``, output as ``activation``).
    ``rng_scopes``: as detectron2's ``RecordHook``, the RNG tape of each recorded training iteration (every
    random draw made while a module matching the globs runs; record ``rng``, kind ``rng``)."""

    priority = "LOW"

    def __init__(
        self,
        run_dir: str | None = None,
        *,
        iterations: Iterable[int] = (0,),
        activations: Sequence[str] = (),
        grads: Sequence[str] = (),
        record_batch: bool = True,
        record_losses: bool = True,
        eval_run_dir: str | None = None,
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
        if not run_dir and not eval_run_dir:
            raise BridgeError("BridgeRecordHook: give run_dir (training), eval_run_dir (val/test) or both")
        self.run_dir = run_dir
        self.matchers = dict(matchers) if isinstance(matchers, Mapping) else tuple(matchers)
        self.optimizer_steps = optimizer_steps
        self.params = tuple(params)
        self.grad_norm = grad_norm
        self._optimizer_tap: OptimizerTap | None = None
        self.rng_scopes = rng_scopes
        self._rng = IterationTape()
        self._model: nn.Module | None = None
        self.seed_modules = tuple(seed_modules)
        self.seed = seed
        self.iterations = set(iterations)
        self.activations = tuple(activations)
        self.inputs = tuple(inputs)
        self.functions = dict(functions) if isinstance(functions, Mapping) else tuple(functions)
        self.grads = tuple(grads)
        self.record_batch = record_batch
        self.record_losses = record_losses
        self.eval_run_dir = eval_run_dir
        self.recorder: Recorder | None = None
        self.eval_recorder: Recorder | None = None
        self._step: int | None = None
        self._active: Recorder | None = None
        self._taps: list[ModelTaps] = []
        self._handles: list = []
        self._categories: list[dict] | None = None
        self._eval_dataset = None

    def before_run(self, runner) -> None:
        """Open the runs and attach hooks to the model and its data preprocessor."""
        model = unwrap(runner.model)
        self._model = model
        # Runs are created on first use: tools/test.py with the same config records no training run.
        if self.run_dir:
            self.recorder = Recorder(self.run_dir, framework="mmdet", lazy=True)
            self._taps.append(
                ModelTaps(
                    model,
                    self.recorder,
                    self._train_step,
                    activations=self.activations,
                    grads=self.grads,
                    seed_modules=self.seed_modules,
                    seed=self.seed,
                    matchers=self.matchers,
                    inputs=self.inputs,
                    functions=self.functions,
                )
            )
        if self.eval_run_dir:
            self.eval_recorder = Recorder(self.eval_run_dir, framework="mmdet", lazy=True)
            self._taps.append(
                ModelTaps(
                    model,
                    self.eval_recorder,
                    self._eval_step,
                    activations=self.activations,
                    inputs=self.inputs,
                    functions=self.functions,
                )
            )
            self._handles.append(model.register_forward_hook(self._on_predicted, with_kwargs=True))
        self._handles.append(model.data_preprocessor.register_forward_hook(self._on_preprocessed))
        if self.optimizer_steps:
            self._optimizer_tap = OptimizerTap(self.recorder, self.optimizer_steps)

    def before_train(self, runner) -> None:
        """Watch the optimizer's steps (the optim wrapper exists from here on) for ``params`` / ``grad_norm``."""
        if self.params or self.grad_norm:
            optimizer = runner.optim_wrapper.optimizer
            self._handles.append(optimizer.register_step_post_hook(self._after_optimizer_step))

    def _after_optimizer_step(self, _optimizer, _args: tuple, _kwargs: dict) -> None:
        step = self._train_step()
        if step is None:
            return
        if self.params:
            record_params(self.recorder, self._model, step, self.params)
        if self.grad_norm:
            record_grad_norm(self.recorder, self._model, step)

    def _train_step(self) -> int | None:
        return self._step if self._active is self.recorder and self._active is not None else None

    def _eval_step(self) -> int | None:
        return self._step if self._active is self.eval_recorder and self._active is not None else None

    def _on_preprocessed(self, _module: nn.Module, _inputs: tuple, output: object) -> None:
        if self._step is not None and self._active is not None and self.record_batch:
            self._active.record("batch", to_recordable(output), step=self._step, kind="batch")

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Arm recording when this iteration is one of ``iterations`` (and start its RNG tape with ``rng_scopes``)."""
        self._step = runner.iter if self.recorder is not None and runner.iter in self.iterations else None
        self._active = self.recorder if self._step is not None else None
        if self._optimizer_tap is not None:
            self._optimizer_tap.before_iteration(
                runner.iter, runner.optim_wrapper, self._model, clip_setting(runner.optim_wrapper)
            )
        if self._step is not None and self.rng_scopes:
            self._rng.begin(record(self.recorder, self._step, model=self._model, scopes=self.rng_scopes))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Write the iteration's RNG tape, record its losses, then disarm."""
        self._rng.end()
        if self._step is not None and self.record_losses and outputs is not None:
            self.recorder.record("losses", to_recordable(dict(outputs)), step=self._step, kind="loss")
        self._step, self._active = None, None

    def _on_predicted(self, _module: nn.Module, _args: tuple, kwargs: dict, output: object) -> None:
        """Record the predictions as the model returns them, before the evaluator sees them: mmdet's metrics
        may change them in place (``CocoPanopticMetric.process`` writes panopticapi's void id 0 into
        ``pred_panoptic_seg``, which would read back as label 0)."""
        if self._eval_step() is None or kwargs.get("mode") != "predict" or self._eval_dataset is None:
            return
        outputs = list(output)
        self.eval_recorder.record("outputs", to_recordable(outputs), step=self._step, kind="output")
        self._record_canonical_outputs(self._eval_dataset, self._step, outputs)

    def _before_eval_iter(self, dataloader, batch_idx: int) -> None:
        if self.eval_recorder is not None:
            self._step, self._active, self._eval_dataset = batch_idx, self.eval_recorder, dataloader.dataset

    def _after_eval_iter(self) -> None:
        self._step, self._active, self._eval_dataset = None, None, None

    def _record_canonical_outputs(self, dataset, step: int, outputs) -> None:
        """Record each sample's panoptic, instance and semantic predictions in the canonical forms
        (``panoptic.<img_id>``, ``instances.<img_id>``, ``semantic.<img_id>``; ``mmdet_side.canonical``):
        labels map to dataset ids by category name, as mmdet's metrics map them."""
        if not any(
            key in sample for sample in outputs for key in ("pred_panoptic_seg", "pred_instances", "pred_sem_seg")
        ):
            return
        if self._categories is None:
            self._categories = annotation_categories(dataset)
        record_canonical_outputs(self.eval_recorder, outputs, dataset.metainfo["classes"], self._categories, step)

    def before_val_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Arm eval recording (``eval_run_dir``) for this validation batch: its batch, activations and
        predictions (and panoptic ones in the canonical form) are recorded as the model makes them."""
        self._before_eval_iter(runner.val_dataloader, batch_idx)

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Disarm eval recording."""
        self._after_eval_iter()

    def before_test_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Arm eval recording (``eval_run_dir``) for this test batch (as ``before_val_iter``)."""
        self._before_eval_iter(runner.test_dataloader, batch_idx)

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Disarm eval recording."""
        self._after_eval_iter()

    def after_run(self, runner) -> None:
        """Detach every hook and close the runs."""
        self._rng.abort()
        for handle in self._handles:
            handle.remove()
        for taps in self._taps:
            taps.remove()
        if self._optimizer_tap is not None:
            self._optimizer_tap.finish()
        for recorder in (self.recorder, self.eval_recorder):
            if recorder is not None:
                recorder.close()


@torch.no_grad()
def record_inference(
    model: nn.Module,
    batches: Iterable[dict],
    recorder: Recorder,
    *,
    activations: Sequence[str] = (),
    max_batches: int | None = None,
    dataset: Any = None,
    inputs: Sequence[str] = (),
    functions: Sequence[str] | Mapping[str, str] = (),
) -> int:
    """Run ``model`` in eval mode on ``batches`` (e.g. ``Runner.build_dataloader(cfg.test_dataloader)``) and record,
    per batch index as step, the batch after the data preprocessor (kind ``batch``), the predictions (kind
    ``output``), chosen activations, the arguments of chosen modules (``inputs``, kind ``input``) and the calls
    of chosen parameter-free methods (``functions``, as ``bridge.taps.ModelTaps``). With the test ``dataset`` (its ``metainfo['classes']`` and annotation file), each sample's ``pred_panoptic_seg``,
    ``pred_instances`` and ``pred_sem_seg`` are also recorded in the canonical forms (``panoptic.<img_id>``,
    ``instances.<img_id>``, ``semantic.<img_id>``; see docs/OUTPUTS.md), which ``bridge.compare`` pairs with
    detectron2's. As ``d2_side.hooks.record_inference``; returns the number of batches recorded."""
    model.eval()
    step_box: list[int | None] = [None]
    taps = ModelTaps(
        unwrap(model), recorder, lambda: step_box[0], activations=activations, inputs=inputs, functions=functions
    )
    categories = annotation_categories(dataset) if dataset is not None else None
    count = 0
    try:
        for step, batch in enumerate(batches):
            if max_batches is not None and step >= max_batches:
                break
            step_box[0] = step
            data = model.data_preprocessor(batch, False)
            recorder.record("batch", to_recordable(data), step=step, kind="batch")
            outputs = model.predict(data["inputs"], data["data_samples"])
            recorder.record("outputs", to_recordable(list(outputs)), step=step, kind="output")
            if dataset is not None:
                record_canonical_outputs(recorder, outputs, dataset.metainfo["classes"], categories, step)
            count += 1
    finally:
        taps.remove()
    return count
