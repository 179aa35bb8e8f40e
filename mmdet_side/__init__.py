"""mmdet/mmengine adapters: config pieces for the one-sample subsets and the record hook.

Importing this package (e.g. ``custom_imports=dict(imports=['mmdet_side'])``) registers
``BridgeRecordHook`` and ``BridgeReplayHook`` in mmdet's ``HOOKS``.
"""

from mmdet_side.hooks import BridgeRecordHook
from mmdet_side import coco91  # registers CocoDataset91 / CocoMetric91
from mmdet_side.replay_hook import BridgeReplayHook

__all__ = ["BridgeRecordHook", "BridgeReplayHook"]
