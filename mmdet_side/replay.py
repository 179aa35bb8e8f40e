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


def _instances_to_mmdet(instances: dict, height: int, width: int, label_map: Sequence[int] | None):
    """detectron2 Instances fields (as recorded) → mmdet ``InstanceData`` (boxes, labels, masks)."""
    import numpy as np
    from mmdet.structures.mask import BitmapMasks, PolygonMasks
    from mmengine.structures import InstanceData

    gt = InstanceData()
    gt.bboxes = instances["gt_boxes"].float().reshape(-1, 4)
    labels = instances["gt_classes"].long()
    if label_map is not None:
        labels = torch.as_tensor(label_map, dtype=torch.long)[labels]
    gt.labels = labels
    masks = instances.get("gt_masks")
    if isinstance(masks, torch.Tensor):
        gt.masks = BitmapMasks(masks.to(torch.uint8).numpy(), height, width)
    elif masks is not None:
        polygons = [[np.asarray(polygon, dtype=np.float64) for polygon in instance] for instance in masks]
        gt.masks = PolygonMasks(polygons, height, width)
    return gt


def d2_train_batch_to_mmdet(batch: Sequence[dict], label_map: Sequence[int] | None = None) -> dict:
    """Turn a detectron2 *training* batch (the mapper's ``list[dict]`` with ``image`` and ``instances``,
    optionally ``sem_seg``) into mmdet's ``{'inputs', 'data_samples'}`` with ``gt_instances`` (boxes in
    the resized image, labels, masks) and ``gt_sem_seg``. ``label_map[d2_label] = mmdet_label`` when the
    two label spaces differ (identity for COCO's 80 thing classes in both frameworks)."""
    from mmengine.structures import PixelData

    converted = d2_inputs_to_mmdet(batch)
    for record, sample in zip(batch, converted["data_samples"]):
        height, width = sample.img_shape
        if "instances" in record:
            sample.gt_instances = _instances_to_mmdet(record["instances"], height, width, label_map)
        if isinstance(record.get("sem_seg"), torch.Tensor):
            sample.gt_sem_seg = PixelData(sem_seg=record["sem_seg"].long()[None])
    return converted
