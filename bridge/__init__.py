"""d2-mmdet-bridge neutral package: shared tensor format (no detectron2 / mmdet imports here).

Public API::

    from bridge import Recorder, open_run, Run, Entry, FormatError, KINDS
    from bridge import record_optimizer          # optimizer settings per parameter (bridge.optim)

The format names are imported on first use (PEP 562), so ``python -m bridge.subset`` does not pay
for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import BridgeError, FormatError

_FROM_RUNS = ("FORMAT_VERSION", "KINDS", "Entry", "Recorder", "Run", "open_run")
_FROM_OPTIM = ("record_optimizer",)
__all__ = [
    "KINDS",
    "FORMAT_VERSION",
    "Entry",
    "Recorder",
    "Run",
    "open_run",
    "BridgeError",
    "FormatError",
    "record_optimizer",
]


def __getattr__(name: str) -> Any:
    if name in _FROM_RUNS:
        return getattr(importlib.import_module("bridge.runs"), name)
    if name in _FROM_OPTIM:
        return getattr(importlib.import_module("bridge.optim"), name)
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
