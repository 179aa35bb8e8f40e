"""mmengine hook that replaces each training batch by the batch detectron2 recorded at that iteration.

    custom_imports = dict(imports=['mmdet_side'], allow_failed_imports=False)
    custom_hooks = [dict(type='BridgeReplayHook', run_dir='runs/d2', name='batch')]

mmdet's pipeline still loads its own batch (it is then discarded); the model sees detectron2's tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from bridge.errors import BridgeError
from bridge.runs import open_run
from mmdet_side.replay import d2_train_batch_to_mmdet


@HOOKS.register_module()
class BridgeReplayHook(Hook):
    """Feed detectron2's recorded training batch (``run_dir``, record ``name`` of kind ``batch``) into
    mmdet's ``train_step`` at each iteration; ``label_map`` maps detectron2 labels to mmdet labels."""

    priority = "VERY_HIGH"

    def __init__(self, run_dir: str, name: str = "batch", rank: int = 0,
                 label_map: Sequence[int] | None = None) -> None:
        self.run_dir = run_dir
        self.name = name
        self.rank = rank
        self.label_map = label_map
        self._run = None

    def before_run(self, runner) -> None:
        """Open the recorded run (errors name the run dir)."""
        self._run = open_run(self.run_dir)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Replace ``data_batch`` in place by the recorded batch of this iteration."""
        if data_batch is None:
            raise BridgeError("BridgeReplayHook: mmengine passed no data_batch to replace")
        recorded = self._run.get(self.name, step=runner.iter, kind="batch", rank=self.rank)
        data_batch.clear()
        data_batch.update(d2_train_batch_to_mmdet(recorded, self.label_map))
