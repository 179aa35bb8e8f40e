"""The ``--device auto|cpu|cuda`` option shared by ``bridge.compare`` and ``bridge.panoptic``."""

from __future__ import annotations

import torch

from bridge.errors import BridgeError


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is a BridgeError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BridgeError("--device cuda asked for, but torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise BridgeError(f"unknown device {device!r} (auto, cpu or cuda)")
    return torch.device(device)


__all__ = ["resolve_device"]
