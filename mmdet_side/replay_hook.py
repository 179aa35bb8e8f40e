"""mmengine hook that replaces each training batch by the batch detectron2 recorded at that iteration.

    custom_imports = dict(imports=['mmdet_side'], allow_failed_imports=False)
    custom_hooks = [dict(type='BridgeReplayHook', run_dir='runs/d2', name='batch')]

With ``rng_replay_dir`` (a run whose record hook had ``rng_scopes``) the random draws of each iteration that
has a tape there return the recorded values (``bridge.rng.replay``); detectron2's ``ReplayHook`` does the same.

mmdet's pipeline still loads its own batch (it is then discarded); the model sees detectron2's tensors.
With ``eval_run_dir`` (a run written by ``d2_side.hooks.record_inference``), each val/test batch is replaced
too, by detectron2's inference batch of the same index.
Panoptic models: ``sem_seg_label_map='panoptic_fpn'`` for detectron2's PanopticFPN batches (things merged
into label 0), ``panoptic_num_things=80`` for Mask2Former / Mask DINO batches (stuff segments as instances).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from bridge.errors import BridgeError
from bridge.rng import IterationTape, replay, tape_steps
from bridge.runs import open_run
from mmdet_side.hooks import unwrap
from mmdet_side.replay import d2_inputs_to_mmdet, d2_train_batch_to_mmdet, panoptic_fpn_sem_seg_label_map

PANOPTIC_FPN = "panoptic_fpn"


def _resolve_sem_seg_label_map(runner, sem_seg_label_map: Sequence[int] | str | None) -> list[int] | None:
    """A list as given, or the PanopticFPN map built from the model's semantic head's class counts."""
    if sem_seg_label_map is None or not isinstance(sem_seg_label_map, str):
        return None if sem_seg_label_map is None else list(sem_seg_label_map)
    if sem_seg_label_map != PANOPTIC_FPN:
        raise BridgeError(
            f"BridgeReplayHook: sem_seg_label_map must be a list of labels or "
            f"{PANOPTIC_FPN!r}, got {sem_seg_label_map!r}"
        )
    model = unwrap(runner.model)
    head = getattr(model, "semantic_head", None)
    if head is None or not hasattr(head, "num_things_classes"):
        raise BridgeError(
            f"BridgeReplayHook: sem_seg_label_map={PANOPTIC_FPN!r} needs a model with a "
            f"PanopticFPN semantic_head, {type(model).__name__} has none"
        )
    return panoptic_fpn_sem_seg_label_map(head.num_things_classes, head.num_stuff_classes)


@HOOKS.register_module()
class BridgeReplayHook(Hook):
    """Feed detectron2's recorded training batch (``run_dir``, record ``name`` of kind ``batch``) into
    mmdet's ``train_step`` at each iteration.

    ``label_map`` maps detectron2 instance labels to mmdet labels, ``sem_seg_label_map`` semantic labels
    (a list, or ``'panoptic_fpn'``); ``panoptic_num_things`` splits Mask2Former / Mask DINO panoptic
    instances into thing instances and a semantic map (see :func:`mmdet_side.replay.d2_train_batch_to_mmdet`).
    ``eval_run_dir`` (a ``d2_side.hooks.record_inference`` run) replays detectron2's inference batches in
    validation and test, matched by batch index. ``input_format`` is detectron2's ``INPUT.FORMAT`` ('RGB' for
    Mask DINO / Mask2Former): RGB images are flipped to the BGR mmdet's own pipeline would load.
    ``rng_replay_dir`` replays the RNG tape of each iteration it holds (rank ``rank``), with ``rng_scopes`` the
    tape's scope labels (this model's module globs, or a mapping label -> globs), ``rng_match`` 'order' or
    'queue', and left-over draws an error unless ``rng_allow_left_over``; ``summaries`` keeps each iteration's
    counts. As detectron2's ``ReplayHook``.
    """

    priority = "VERY_HIGH"

    def __init__(
        self,
        run_dir: str | None = None,
        *,
        name: str = "batch",
        rank: int = 0,
        label_map: Sequence[int] | None = None,
        sem_seg_label_map: Sequence[int] | str | None = None,
        panoptic_num_things: int | None = None,
        eval_run_dir: str | None = None,
        input_format: str = "BGR",
        rng_replay_dir: str | None = None,
        rng_scopes: Sequence[str] | Mapping[str, str | Sequence[str]] = (),
        rng_match: str = "order",
        rng_allow_left_over: bool = False,
    ) -> None:
        if not run_dir and not eval_run_dir and not rng_replay_dir:
            raise BridgeError(
                "BridgeReplayHook needs run_dir (training batches), eval_run_dir (val/test) and/or "
                "rng_replay_dir (an RNG tape)"
            )
        self.rng_replay_dir = rng_replay_dir
        self.rng_scopes = rng_scopes
        self.rng_match = rng_match
        self.rng_allow_left_over = rng_allow_left_over
        self.summaries: dict[int, dict[str, dict[str, int]]] = {}
        self._rng_steps: set[int] = set()
        self._rng = IterationTape()
        self.run_dir = run_dir
        self.eval_run_dir = eval_run_dir
        self.name = name
        self.rank = rank
        self.label_map = label_map
        self.sem_seg_label_map = sem_seg_label_map
        self.panoptic_num_things = panoptic_num_things
        self.input_format = input_format
        self._run = None
        self._eval_run = None
        self._sem_seg_map: list[int] | None = None

    def before_run(self, runner) -> None:
        """Open the recorded run (errors name the run dir) and resolve the semantic label map."""
        self._run = open_run(self.run_dir) if self.run_dir else None
        self._eval_run = open_run(self.eval_run_dir) if self.eval_run_dir else None
        self._sem_seg_map = _resolve_sem_seg_label_map(runner, self.sem_seg_label_map)
        self._rng_steps = set(tape_steps(self.rng_replay_dir, self.rank)) if self.rng_replay_dir else set()

    def _start_rng(self, runner) -> None:
        if runner.iter in self._rng_steps:
            self._rng.begin(
                replay(
                    self.rng_replay_dir,
                    runner.iter,
                    self.rank,
                    model=unwrap(runner.model),
                    scopes=self.rng_scopes,
                    match=self.rng_match,
                    allow_left_over=self.rng_allow_left_over,
                )
            )

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """End the iteration's RNG replay: left-over draws are reported, the counts kept in ``summaries``."""
        summary = self._rng.end()
        if summary is not None:
            self.summaries[runner.iter] = summary

    def after_run(self, runner) -> None:
        """Leave an RNG replay that training stopped inside."""
        self._rng.abort()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Replace ``data_batch`` in place by the recorded batch of this iteration (with ``run_dir``), and start
        replaying its RNG tape (with ``rng_replay_dir``)."""
        self._start_rng(runner)
        if self._run is None:
            return
        if data_batch is None:
            raise BridgeError("BridgeReplayHook: mmengine passed no data_batch to replace")
        recorded = self._run.get(self.name, step=runner.iter, kind="batch", rank=self.rank)
        try:
            converted = d2_train_batch_to_mmdet(
                recorded, self.label_map, self._sem_seg_map, self.panoptic_num_things, input_format=self.input_format
            )
        except BridgeError as exc:
            raise BridgeError(f"BridgeReplayHook: {self.run_dir} step {runner.iter}: {exc}") from None
        data_batch.clear()
        data_batch.update(converted)

    def _replace_eval_batch(self, batch_idx: int, data_batch) -> None:
        """Replace a val/test ``data_batch`` in place by detectron2's inference batch number ``batch_idx``."""
        if self._eval_run is None:
            return
        if data_batch is None:
            raise BridgeError("BridgeReplayHook: mmengine passed no data_batch to replace")
        recorded = self._eval_run.get(self.name, step=batch_idx, kind="batch", rank=self.rank)
        try:
            converted = d2_inputs_to_mmdet(recorded, self.input_format)
        except BridgeError as exc:
            raise BridgeError(f"BridgeReplayHook: {self.eval_run_dir} step {batch_idx}: {exc}") from None
        data_batch.clear()
        data_batch.update(converted)

    def before_val_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """With ``eval_run_dir``: replace the validation batch by detectron2's inference batch."""
        self._replace_eval_batch(batch_idx, data_batch)

    def before_test_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """With ``eval_run_dir``: replace the test batch by detectron2's inference batch."""
        self._replace_eval_batch(batch_idx, data_batch)
