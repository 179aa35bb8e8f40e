"""detectron2 trainer hook that replays an RNG tape (``bridge.rng``) recorded by mmdet's ``BridgeRecordHook`` or
detectron2's ``RecordHook`` with ``rng_scopes``: the random draws made while the scoped modules run return the
recorded values. Mirrors the RNG part of mmdet's ``BridgeReplayHook`` (same argument names)::

    trainer.register_hooks([ReplayHook(rng_replay_dir="runs/mmdet", rng_scopes={"loss": "criterion"})])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from detectron2.engine import HookBase

from bridge.errors import BridgeError
from bridge.rng import IterationTape, replay, tape_steps
from d2_side.hooks import unwrap


class ReplayHook(HookBase):
    """Replay the RNG tape of ``rng_replay_dir`` (rank ``rank``) in every iteration that has one.

    ``rng_scopes`` gives the scope labels the tape was recorded with (module-name globs of this model, or a
    mapping label -> globs when the two models name their modules differently). ``rng_match``: ``'order'`` or
    ``'queue'`` (see ``bridge.rng.replay``). Recorded draws left over at the end of an iteration stop training
    with ``RngTapeLeftover`` unless ``rng_allow_left_over``; ``summaries`` holds each iteration's counts.
    """

    def __init__(
        self,
        rng_replay_dir: str | None = None,
        *,
        rank: int = 0,
        rng_scopes: Sequence[str] | Mapping[str, str | Sequence[str]] = (),
        rng_match: str = "order",
        rng_allow_left_over: bool = False,
    ) -> None:
        if not rng_replay_dir:
            raise BridgeError("ReplayHook needs rng_replay_dir (a run with an RNG tape)")
        self.rng_replay_dir = rng_replay_dir
        self.rank = rank
        self.rng_scopes = rng_scopes
        self.rng_match = rng_match
        self.rng_allow_left_over = rng_allow_left_over
        self.summaries: dict[int, dict[str, dict[str, int]]] = {}
        self._rng_steps: set[int] = set()
        self._rng = IterationTape()

    def before_train(self) -> None:
        """Find the iterations the tape holds (errors name the run)."""
        self._rng_steps = set(tape_steps(self.rng_replay_dir, self.rank))

    def before_step(self) -> None:
        """Start replaying this iteration's tape, when the run has one."""
        step = self.trainer.iter
        if step in self._rng_steps:
            self._rng.begin(
                replay(
                    self.rng_replay_dir,
                    step,
                    self.rank,
                    model=unwrap(self.trainer.model),
                    scopes=self.rng_scopes,
                    match=self.rng_match,
                    allow_left_over=self.rng_allow_left_over,
                )
            )

    def after_step(self) -> None:
        """End the iteration's replay: left-over draws are reported, the counts kept in ``summaries``."""
        summary = self._rng.end()
        if summary is not None:
            self.summaries[self.trainer.iter] = summary

    def after_train(self) -> None:
        """Leave a replay that training stopped inside."""
        self._rng.abort()
