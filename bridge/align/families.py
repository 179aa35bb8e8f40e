"""Defaults per known model family: the conversion preset, the module globs each framework records (whole
stages and heads, never the modules inside a stage: docs/OUTPUTS.md "Which activations"), detectron2's
one-sample dataset and mmdet's one-sample task."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """What a recipe gets by naming ``family:``."""

    preset: str
    record: dict[str, tuple[str, ...]]  # framework -> module globs
    d2_dataset: str
    mmdet_task: str


_FPN_D2 = (
    "backbone.bottom_up.res?",
    "backbone.fpn_output?",
    "proposal_generator.rpn_head.objectness_logits",
    "roi_heads.box_predictor.cls_score",
    "roi_heads.box_predictor.bbox_pred",
)
_FPN_MMDET = (
    "backbone.layer?",
    "neck.fpn_convs.*.conv",
    "rpn_head.rpn_cls",
    "roi_head.bbox_head.fc_cls",
    "roi_head.bbox_head.fc_reg",
)

#: The known families (``family:`` in a recipe).
FAMILIES = {
    "panoptic_fpn": Family(
        preset="d2-panoptic-fpn-to-mmdet",
        record={
            "detectron2": _FPN_D2 + ("sem_seg_head.predictor", "roi_heads.mask_head.predictor"),
            "mmdet": _FPN_MMDET + ("semantic_head.conv_logits", "roi_head.mask_head.conv_logits"),
        },
        d2_dataset="coco_2017_val_panoptic_onesample_separated",
        mmdet_task="panoptic",
    ),
    "mask_rcnn": Family(
        preset="d2-mask-rcnn-to-mmdet",
        record={
            "detectron2": _FPN_D2 + ("roi_heads.mask_head.predictor",),
            "mmdet": _FPN_MMDET + ("roi_head.mask_head.conv_logits",),
        },
        d2_dataset="coco_2017_val_onesample",
        mmdet_task="instances",
    ),
    "maskdino": Family(
        preset="maskdino-d2-to-mmdet",
        record={"detectron2": ("backbone.res?",), "mmdet": ("backbone.layer?",)},
        d2_dataset="coco_2017_val_panoptic_onesample_with_sem_seg",
        mmdet_task="panoptic",
    ),
}
