"""Turn mmdet/mmengine values (DetDataSample, InstanceData, BitmapMasks, numpy) into what a
``bridge.Recorder`` stores: nested dicts/lists of tensors and plain scalars."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mmengine.structures import BaseDataElement


def to_recordable(value: Any) -> Any:
    """Recursively convert ``value``; data elements become ``{"metainfo": {...}, "data": {...}}``."""
    if isinstance(value, BaseDataElement):
        return {
            "metainfo": {k: to_recordable(v) for k, v in value.metainfo_items()},
            "data": {k: to_recordable(v) for k, v in value.items()},
        }
    if isinstance(value, torch.Tensor) or value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "to_tensor") and hasattr(value, "masks"):  # BitmapMasks / PolygonMasks
        return value.to_tensor(dtype=torch.uint8, device="cpu")
    if hasattr(value, "tensor") and isinstance(value.tensor, torch.Tensor):  # mmdet box types
        return value.tensor
    if isinstance(value, dict):
        return {str(k): to_recordable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_recordable(v) for v in value]
    return str(value)
