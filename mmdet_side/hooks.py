"""mmengine hook that records an mmdet run in the bridge format; registered in mmdet's HOOKS.

Switch it on from a config, nothing in mmdet is edited::

    custom_imports = dict(imports=['mmdet_side'], allow_failed_imports=False)
    custom_hooks = [dict(type='BridgeRecordHook', run_dir='runs/mmdet', iterations=[0],
                         activations=['backbone.layer1', 'neck.fpn_convs.*'], grads=['backbone.conv1.*'])]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from torch import nn

from bridge.panoptic import to_record
from bridge.rng import IterationTape, record
from bridge.runs import Recorder
from bridge.taps import ModelTaps
from mmdet_side.panoptic import canonical_from_mmdet
from mmdet_side.recordable import to_recordable


@HOOKS.register_module()
class BridgeRecordHook(Hook):
    """Record, for chosen training iterations, the batch after the data preprocessor (kind ``batch``),
    the losses (kind ``loss``), activations of modules matching ``activations`` and gradients of
    parameters matching ``grads``; with ``eval_run_dir``, the batches and predictions of val/test too.
    ``seed_modules`` / ``seed``: as detectron2's ``RecordHook`` (torch's RNG reseeded with ``seed + step`` before
    each call of those modules in recorded training steps), so both sides' random point sampling lines up.
    ``rng_scopes``: as detectron2's ``RecordHook``, the RNG tape of each recorded training iteration (every
    random draw made while a module matching the globs runs; record ``rng``, kind ``rng``)."""

    priority = "LOW"

    def __init__(self, run_dir: str, iterations: Sequence[int] = (0,), activations: Sequence[str] = (),
                 grads: Sequence[str] = (), record_batch: bool = True, eval_run_dir: str | None = None,
                 seed_modules: Sequence[str] = (), seed: int = 0,
                 rng_scopes: Sequence[str] | Mapping[str, str | Sequence[str]] = ()) -> None:
        self.run_dir = run_dir
        self.rng_scopes = rng_scopes
        self._rng = IterationTape()
        self._model: nn.Module | None = None
        self.seed_modules = tuple(seed_modules)
        self.seed = seed
        self.iterations = set(iterations)
        self.activations = tuple(activations)
        self.grads = tuple(grads)
        self.record_batch = record_batch
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
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        self._model = model
        # Runs are created on first use: tools/test.py with the same config records no training run.
        self.recorder = Recorder(self.run_dir, framework="mmdet", lazy=True)
        self._taps.append(ModelTaps(model, self.recorder, self._train_step, activations=self.activations,
                                    grads=self.grads, seed_modules=self.seed_modules, seed=self.seed))
        if self.eval_run_dir:
            self.eval_recorder = Recorder(self.eval_run_dir, framework="mmdet", lazy=True)
            self._taps.append(ModelTaps(model, self.eval_recorder, self._eval_step, activations=self.activations))
            self._handles.append(model.register_forward_hook(self._on_predicted, with_kwargs=True))
        self._handles.append(model.data_preprocessor.register_forward_hook(self._on_preprocessed))

    def _train_step(self) -> int | None:
        return self._step if self._active is self.recorder else None

    def _eval_step(self) -> int | None:
        return self._step if self._active is self.eval_recorder and self._active is not None else None

    def _on_preprocessed(self, _module: nn.Module, _inputs: tuple, output: object) -> None:
        if self._step is not None and self._active is not None and self.record_batch:
            self._active.record("batch", to_recordable(output), step=self._step, kind="batch")

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Arm recording when this iteration is one of ``iterations`` (and start its RNG tape with ``rng_scopes``)."""
        self._step = runner.iter if runner.iter in self.iterations else None
        self._active = self.recorder if self._step is not None else None
        if self._step is not None and self.rng_scopes:
            self._rng.begin(record(self.recorder, self._step, model=self._model, scopes=self.rng_scopes))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Write the iteration's RNG tape, record its losses, then disarm."""
        self._rng.end()
        if self._step is not None and outputs is not None:
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
        self._record_canonical_panoptic(self._eval_dataset, self._step, outputs)

    def _before_eval_iter(self, dataloader, batch_idx: int) -> None:
        if self.eval_recorder is not None:
            self._step, self._active, self._eval_dataset = batch_idx, self.eval_recorder, dataloader.dataset

    def _after_eval_iter(self) -> None:
        self._step, self._active, self._eval_dataset = None, None, None

    def _record_canonical_panoptic(self, dataset, step: int, outputs) -> None:
        """Record each ``pred_panoptic_seg`` as ``panoptic.<img_id>`` in the canonical form (bridge.panoptic):
        labels map to dataset ids by category name, as mmdet's CocoPanopticMetric maps them."""
        panoptic = [sample for sample in outputs if "pred_panoptic_seg" in sample]
        if not panoptic:
            return
        if self._categories is None:
            self._categories = json.loads(Path(dataset.ann_file).read_bytes())["categories"]
        classes = dataset.metainfo["classes"]
        for sample in panoptic:
            canonical = canonical_from_mmdet(sample.pred_panoptic_seg.sem_seg, classes, self._categories)
            self.eval_recorder.record(f"panoptic.{sample.img_id}", to_record(canonical), step=step, kind="output")

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
        for recorder in (self.recorder, self.eval_recorder):
            if recorder is not None:
                recorder.close()
