"""Turn detectron2 values (Instances, Boxes, BitMasks, PolygonMasks, numpy) into what a
``bridge.Recorder`` stores: nested dicts/lists of tensors and plain scalars."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from detectron2.structures import Instances, PolygonMasks


def to_recordable(value: Any) -> Any:
    """Recursively convert ``value``: Instances → dict of fields, Boxes/BitMasks → their tensor,
    PolygonMasks → per instance a list of float64 polygon tensors, numpy → tensors."""
    if isinstance(value, torch.Tensor) or value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Instances):
        return {name: to_recordable(field) for name, field in value.get_fields().items()}
    if isinstance(value, PolygonMasks):
        return [
            [torch.from_numpy(np.asarray(polygon, dtype=np.float64)) for polygon in polygons]
            for polygons in value.polygons
        ]
    if hasattr(value, "tensor") and isinstance(value.tensor, torch.Tensor):  # Boxes, BitMasks, ...
        return value.tensor
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): to_recordable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_recordable(v) for v in value]
    return str(value)
