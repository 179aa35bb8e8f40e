"""Replay a batch recorded by detectron2 in an mmdet model, skipping mmdet's data pipeline.

detectron2's mapper gives the model uint8 images in ``cfg.INPUT.FORMAT`` (BGR by default; RGB in Mask
DINO's and Mask2Former's configs), already resized, and the model normalises and pads them itself; mmdet's
pipeline always loads BGR uint8 images and leaves normalisation, the BGR→RGB flip and padding to its data
preprocessor. So the recorded images are fed as mmdet ``inputs`` in BGR (``input_format='RGB'`` flips them)
and the metainfo is rebuilt from the recorded sizes; the data preprocessor then normalises, flips and pads
as the mmdet config says (configure it like detectron2's model to compare).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmdet.structures import DetDataSample

from bridge.errors import BridgeError

INPUT_FORMATS = ("BGR", "RGB")


def d2_inputs_to_mmdet(batch: Sequence[dict], input_format: str = "BGR") -> dict:
    """Turn a detectron2 inference batch (``list[dict]`` with ``image``, ``height``, ``width``) into the
    ``{'inputs', 'data_samples'}`` dict that an mmdet model's data preprocessor takes.

    ``input_format`` is detectron2's ``cfg.INPUT.FORMAT``; RGB images are flipped to the BGR that mmdet's
    pipeline loads (its data preprocessor's ``bgr_to_rgb`` then applies as with its own batches)."""
    if input_format not in INPUT_FORMATS:
        raise BridgeError(
            f"input_format must be one of {INPUT_FORMATS} (detectron2's INPUT.FORMAT), got {input_format!r}"
        )
    inputs, samples = [], []
    for index, record in enumerate(batch):
        image = record.get("image")
        if not isinstance(image, torch.Tensor) or image.ndim != 3:
            raise BridgeError(f"batch item {index}: expected an 'image' tensor C×H×W, got {type(image).__name__}")
        height, width = int(image.shape[1]), int(image.shape[2])
        ori_height, ori_width = int(record.get("height", height)), int(record.get("width", width))
        metainfo = dict(
            img_id=record.get("image_id", index),
            img_path=record.get("file_name", ""),
            ori_shape=(ori_height, ori_width),
            img_shape=(height, width),
            scale_factor=(width / ori_width, height / ori_height),
            flip=False,
            flip_direction=None,
        )
        inputs.append(image.flip(0) if input_format == "RGB" else image)
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


def panoptic_fpn_sem_seg_label_map(num_things: int = 80, num_stuff: int = 53) -> list[int]:
    """``map[d2_label] = mmdet_label`` for PanopticFPN's semantic ground truth.

    detectron2's ``*_panoptic_separated`` data label every thing pixel 0 and stuff 1..``num_stuff``; mmdet's
    pipeline keeps the panoptic labels (things 0..``num_things``-1, stuff from ``num_things``) and its
    ``PanopticFPNHead`` merges the things itself, so d2's 0 becomes thing label 0 and stuff ``k`` becomes
    ``num_things + k - 1``."""
    return [0] + [num_things + k for k in range(num_stuff)]


def _map_sem_seg(sem_seg: torch.Tensor, label_map: Sequence[int], ignore_value: int) -> torch.Tensor:
    """Relabel a semantic map through ``label_map`` (``ignore_value`` stays); unknown labels are an error."""
    sem_seg = sem_seg.long()
    mapped = torch.full_like(sem_seg, ignore_value)
    lookup = torch.as_tensor(list(label_map), dtype=torch.long)
    known = (sem_seg >= 0) & (sem_seg < len(lookup))
    unknown = ~known & (sem_seg != ignore_value)
    if unknown.any():
        raise BridgeError(
            f"sem_seg label {int(sem_seg[unknown][0])} is not in sem_seg_label_map "
            f"(0..{len(lookup) - 1}) nor the ignore value {ignore_value}"
        )
    mapped[known] = lookup[sem_seg[known]]
    return mapped


def _split_panoptic_instances(
    instances: dict, num_things: int, height: int, width: int, ignore_value: int
) -> tuple[dict, torch.Tensor]:
    """Mask2Former / Mask DINO panoptic instances (things *and* stuff, bitmasks) → (thing instances, semantic
    map painted with every segment's label), the two pieces mmdet's MaskFormer heads rebuild them from."""
    labels, masks = instances["gt_classes"].long(), instances.get("gt_masks")
    if not isinstance(masks, torch.Tensor) or masks.ndim != 3 or masks.shape[0] != labels.shape[0]:
        raise BridgeError(
            "panoptic_num_things needs the instances' gt_masks as an N×H×W bitmask tensor "
            "(as Mask2Former / Mask DINO mappers give them)"
        )
    if tuple(masks.shape[1:]) != (height, width):
        raise BridgeError(f"gt_masks are {tuple(masks.shape[1:])}, the image is {(height, width)}")
    painted = torch.full((height, width), ignore_value, dtype=torch.long)
    for label, mask in zip(labels.tolist(), masks.bool()):
        painted[mask] = label
    is_thing = labels < num_things
    things = {
        name: value[is_thing] if isinstance(value, torch.Tensor) and value.shape[:1] == labels.shape else value
        for name, value in instances.items()
    }
    return things, painted


def _boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight x1y1x2y2 boxes of N×H×W bitmasks (detectron2's ``BitMasks.get_bounding_boxes``)."""
    boxes = torch.zeros(masks.shape[0], 4, dtype=torch.float32)
    rows, cols = masks.bool().any(dim=2), masks.bool().any(dim=1)
    for k in range(masks.shape[0]):
        ys, xs = torch.nonzero(rows[k]).flatten(), torch.nonzero(cols[k]).flatten()
        if len(ys) and len(xs):
            boxes[k] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
    return boxes


def d2_train_batch_to_mmdet(
    batch: Sequence[dict],
    label_map: Sequence[int] | None = None,
    sem_seg_label_map: Sequence[int] | None = None,
    panoptic_num_things: int | None = None,
    ignore_value: int = 255,
    input_format: str = "BGR",
) -> dict:
    """Turn a detectron2 *training* batch (the mapper's ``list[dict]`` with ``image`` and ``instances``,
    optionally ``sem_seg``) into mmdet's ``{'inputs', 'data_samples'}`` with ``gt_instances`` (boxes in
    the resized image, labels, masks) and ``gt_sem_seg``.

    ``label_map[d2_label] = mmdet_label`` when the instance label spaces differ (identity for COCO's 80 thing
    classes in both frameworks); ``sem_seg_label_map`` does the same for ``sem_seg`` (e.g.
    :func:`panoptic_fpn_sem_seg_label_map`). ``panoptic_num_things`` is for Mask2Former / Mask DINO batches,
    whose ``instances`` hold every panoptic segment: the things (label < ``panoptic_num_things``) stay
    instances, and all segments are painted into ``gt_sem_seg`` when the batch has no ``sem_seg`` of its own,
    as mmdet's ``LoadPanopticAnnotations`` would give them. ``input_format``: see :func:`d2_inputs_to_mmdet`."""
    from mmengine.structures import PixelData

    converted = d2_inputs_to_mmdet(batch, input_format)
    for index, (record, sample) in enumerate(zip(batch, converted["data_samples"])):
        height, width = sample.img_shape
        sem_seg = record.get("sem_seg") if isinstance(record.get("sem_seg"), torch.Tensor) else None
        if sem_seg is not None and sem_seg_label_map is not None:
            try:
                sem_seg = _map_sem_seg(sem_seg, sem_seg_label_map, ignore_value)
            except BridgeError as exc:
                raise BridgeError(f"batch item {index}: {exc}") from None
        if "instances" in record:
            instances = record["instances"]
            if panoptic_num_things is not None:
                try:
                    instances, painted = _split_panoptic_instances(
                        instances, panoptic_num_things, height, width, ignore_value
                    )
                except BridgeError as exc:
                    raise BridgeError(f"batch item {index}: {exc}") from None
                sem_seg = painted if sem_seg is None else sem_seg
                if "gt_boxes" not in instances:
                    instances = {**instances, "gt_boxes": _boxes_from_masks(instances["gt_masks"])}
            sample.gt_instances = _instances_to_mmdet(instances, height, width, label_map)
        if sem_seg is not None:
            sample.gt_sem_seg = PixelData(sem_seg=sem_seg.long()[None])
    return converted
