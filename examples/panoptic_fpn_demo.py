"""The builders ``examples/panoptic_fpn_demo.yaml`` names (`make demo`): detectron2's PanopticFPN R50 against
mmdet's, on one COCO image, run by ``python -m bridge.align`` (docs/ALIGN.md, docs/case-studies/DEMO.md).

``python -m d2_side.record_model`` calls :func:`build_d2` with detectron2's config (CPU, no weights: random
init from the seed), ``python -m mmdet_side.record_model`` calls :func:`build_mmdet_like_d2` with mmdet's
one-sample config; everything else (subset, conversion with the ``d2-panoptic-fpn-to-mmdet`` preset, replay of
detectron2's batch in mmdet, recording, compare, report) is the recipe's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def build_d2(cfg: Any) -> nn.Module:
    """detectron2's PanopticFPN R50 of ``cfg`` (the recipe sets the CPU, no weights and the test size)."""
    from detectron2.modeling import build_model

    return build_model(cfg)


def build_mmdet_like_d2(cfg: Any) -> nn.Module:
    """mmdet's PanopticFPN R50 of ``cfg``, with the settings that make it compute what detectron2's computes:
    caffe-style ResNet with frozen BN, BGR input and caffe mean / std, no pretrained backbone."""
    from mmdet.registry import MODELS

    cfg.model.backbone.update(style="caffe", init_cfg=None, norm_cfg=dict(type="BN", requires_grad=False))
    cfg.model.data_preprocessor.update(mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False)
    model = MODELS.build(cfg.model)
    return_instances_and_semantics(model, num_things=cfg.model.semantic_head.num_things_classes)
    return model


def return_instances_and_semantics(model: nn.Module, num_things: int) -> None:
    """Make mmdet's PanopticFPN return, beside ``pred_panoptic_seg``, the instance and semantic results its
    panoptic fusion starts from (``pred_instances``; ``pred_sem_seg`` as dataset-class labels: the semantic
    head's stuff channels are classes ``num_things..``, its last channel, "things", is the ignore label 255),
    as detectron2's PanopticFPN returns ``instances`` and ``sem_seg``: so all three canonical results pair."""
    from mmengine.structures import PixelData

    kept: dict[str, list] = {}
    roi_predict, semantic_predict, predict = model.roi_head.predict, model.semantic_head.predict, model.predict

    def keep(name: str, method):
        def wrapped(*args, **kwargs):
            kept[name] = method(*args, **kwargs)
            return kept[name]
        return wrapped

    def predict_all(*args, **kwargs):
        samples = predict(*args, **kwargs)
        for sample, instances, logits in zip(samples, kept.pop("instances"), kept.pop("semantic")):
            labels = logits.argmax(0)
            stuff = labels < logits.shape[0] - 1
            sample.pred_instances = instances
            sample.pred_sem_seg = PixelData(sem_seg=torch.where(stuff, labels + num_things, 255)[None])
        return samples

    model.roi_head.predict = keep("instances", roi_predict)
    model.semantic_head.predict = keep("semantic", semantic_predict)
    model.predict = predict_all
