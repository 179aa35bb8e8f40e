"""mmdet/mmengine adapters: config pieces for the one-sample subsets and the record hook.

Importing this package (e.g. ``custom_imports=dict(imports=['mmdet_side'])``) registers
``BridgeRecordHook``, ``BridgeReplayHook``, ``BridgeSaveWeightsHook`` and ``LabelSpaceCheckHook`` in mmdet's ``HOOKS`` and the
category-id datasets / metrics (``CocoDataset91``, ``CocoMetric91``, ``CocoPanopticDataset91``,
``CocoPanopticMetric91``) in ``DATASETS`` / ``METRICS``.
"""

from mmdet_side import (
    coco91,  # noqa: F401 - registers CocoDataset91 / CocoMetric91 / LabelSpaceCheckHook
    coco91_panoptic,  # noqa: F401 - registers CocoPanopticDataset91 / CocoPanopticMetric91
)
from mmdet_side.hooks import BridgeRecordHook
from mmdet_side.replay_hook import BridgeReplayHook
from mmdet_side.save_weights import BridgeSaveWeightsHook

__all__ = ["BridgeRecordHook", "BridgeReplayHook", "BridgeSaveWeightsHook"]
