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

#: What the recipe names, for code that builds the demo pair without it (tests, benchmarks).
PRESET = "d2-panoptic-fpn-to-mmdet"
D2_CONFIG = "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"
MMDET_CONFIG = "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py"


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


def d2_model(seed: int, size: int) -> tuple[Any, nn.Module]:
    """detectron2's config and PanopticFPN R50 on the CPU, random weights from ``seed``, test size ``size``,
    in eval mode: the recipe's reference side, built in-process."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(D2_CONFIG))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.WEIGHTS",
            "",
            "INPUT.MIN_SIZE_TEST",
            str(size),
            "INPUT.MAX_SIZE_TEST",
            str(size * 2),
        ]
    )
    torch.manual_seed(seed)
    return cfg, build_d2(cfg).eval()


def mmdet_model_like_d2() -> nn.Module:
    """mmdet's PanopticFPN R50 configured like detectron2's (:func:`build_mmdet_like_d2`), in eval mode: the
    recipe's port side, built in-process."""
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    return build_mmdet_like_d2(Config.fromstring(f"_base_ = {MMDET_CONFIG!r}\n", ".py")).eval()


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
