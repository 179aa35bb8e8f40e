"""``BridgeSaveWeightsHook``: at the end of training, write the model's weights as a checkpoint that mmdet's
``tools/test.py`` loads under torch's safe default (``weights_only=True``).

mmengine 0.10.7's own checkpoints carry its ``HistoryBuffer`` objects in ``message_hub``, which
``torch.load(weights_only=True)`` (torch >= 2.6's default) refuses. This file holds only ``state_dict`` (tensors)
and an empty ``meta``::

    python tools/train.py cfg.py --work-dir work
    python tools/test.py cfg.py work/weights_only.pth
"""

from __future__ import annotations

from pathlib import Path

import torch
from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from bridge.atomic import atomic_path
from mmdet_side.hooks import unwrap


@HOOKS.register_module()
class BridgeSaveWeightsHook(Hook):
    """Save ``{'state_dict': ..., 'meta': {}}`` to ``<work_dir>/<filename>`` after training (main process only,
    written to a temporary file and renamed)."""

    priority = "VERY_LOW"

    def __init__(self, filename: str = "weights_only.pth") -> None:
        self.filename = filename

    def after_train(self, runner) -> None:
        """Write the weights-only checkpoint of the trained model."""
        if not is_main_process():
            return
        state = {key: value.detach().cpu() for key, value in unwrap(runner.model).state_dict().items()}
        target = Path(runner.work_dir) / self.filename
        with atomic_path(target) as tmp:
            torch.save({"state_dict": state, "meta": {}}, tmp)
        runner.logger.info(f"BridgeSaveWeightsHook: weights-only checkpoint for tools/test.py: {target}")
