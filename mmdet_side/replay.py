"""Replay a batch recorded by detectron2 in an mmdet model, skipping mmdet's data pipeline.

detectron2's mapper gives the model uint8 images in ``cfg.INPUT.FORMAT`` (BGR by default), already
resized, and the model normalises and pads them itself; mmdet's pipeline also loads BGR uint8 images and
leaves normalisation, the BGR→RGB flip and padding to its data preprocessor. So the recorded images are fed
as mmdet ``inputs`` unchanged and the metainfo is rebuilt from the recorded sizes; the data preprocessor
then normalises, flips and pads as the mmdet config says (configure it like detectron2's model to compare).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmdet.structures import DetDataSample

from bridge.errors import BridgeError


def d2_inputs_to_mmdet(batch: Sequence[dict]) -> dict:
    """Turn a detectron2 inference batch (``list[dict]`` with ``image``, ``height``, ``width``) into the
    ``{'inputs', 'data_samples'}`` dict that an mmdet model's data preprocessor takes."""
    inputs, samples = [], []
    for index, record in enumerate(batch):
        image = record.get("image")
        if not isinstance(image, torch.Tensor) or image.ndim != 3:
            raise BridgeError(f"batch item {index}: expected an 'image' tensor C×H×W, got {type(image).__name__}")
        height, width = int(image.shape[1]), int(image.shape[2])
        ori_height, ori_width = int(record.get("height", height)), int(record.get("width", width))
        metainfo = dict(img_id=record.get("image_id", index), img_path=record.get("file_name", ""),
                        ori_shape=(ori_height, ori_width), img_shape=(height, width),
                        scale_factor=(width / ori_width, height / ori_height), flip=False, flip_direction=None)
        inputs.append(image)
        samples.append(DetDataSample(metainfo=metainfo))
    return {"inputs": inputs, "data_samples": samples}
