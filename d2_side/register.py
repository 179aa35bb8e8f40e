"""``import d2_side.register`` in a detectron2 ``train_net.py`` registers the one-sample COCO datasets.

Configuration comes from the environment: ``BRIDGE_COCO_ROOT`` (required), ``BRIDGE_TRAIN_IMAGE_IDS``,
``BRIDGE_VAL_IMAGE_IDS`` (comma-separated; default: the first annotated image) and ``BRIDGE_CACHE_DIR``.
Users who prefer code call ``d2_side.datasets.register_onesample(OneSampleConfig.create(...))`` instead.
Importing twice is harmless (a module body runs once; registering again replaces the names).
"""

from __future__ import annotations

from bridge.errors import BridgeError
from d2_side.datasets import register_onesample

try:
    PREPARED = register_onesample()
except BridgeError as error:
    raise SystemExit(f"d2_side.register: {error}") from None
