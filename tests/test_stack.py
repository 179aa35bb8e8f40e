"""The real stack that `make setup` builds: each framework imports, runs on the CPU, and the
five breakages of detectron2 0.6 on this stack (README "The stack") stay fixed."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch


def test_mmcv_compiled_ops_run_on_cpu() -> None:
    from mmcv import _ext  # noqa: F401  (the compiled extension itself)
    from mmcv.ops import nms, roi_align

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    features = torch.arange(64.0).reshape(1, 1, 8, 8)
    pooled = roi_align(features, torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]]), (2, 2), 1.0, 0, "avg", True)
    assert pooled.shape == (1, 1, 2, 2)


def test_frameworks_import() -> None:
    import detectron2.data  # noqa: F401
    import mmdet.datasets  # noqa: F401
    import panopticapi.evaluation  # noqa: F401
    import pycocotools.coco  # noqa: F401

    import detectron2
    import mmcv
    import mmdet
    import mmengine

    assert (detectron2.__version__, mmcv.__version__, mmdet.__version__, mmengine.__version__) == (
        "0.6", "2.1.0", "3.3.0", "0.10.7")


def test_detectron2_panoptic_fpn_builds_and_runs_on_cpu() -> None:
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        outputs = model([{"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8), "height": 64, "width": 96}])
    assert set(outputs[0]) >= {"panoptic_seg", "instances", "sem_seg"}


def test_mmdet_panoptic_fpn_builds_from_an_inheriting_config() -> None:
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    # `mmdet::` inheritance resolves through pkg_resources: setuptools must stay < 81
    cfg = Config.fromstring("_base_ = 'mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py'\n", ".py")
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert len(model.state_dict()) > 300


def test_detectron2_C_stand_in_answers_collect_env_and_names_missing_ops() -> None:
    from detectron2 import _C
    from detectron2.utils.collect_env import collect_env_info

    assert "not compiled" in _C.get_compiler_version()
    assert _C.has_cuda() is False
    assert "detectron2._C" in collect_env_info() or "Compiler" in collect_env_info()
    with pytest.raises(ImportError, match="deform_conv_forward"):
        _C.deform_conv_forward  # noqa: B018


def test_detectron2_numpy2_aliases_are_gone() -> None:
    from detectron2.data.build import print_instances_class_histogram
    from detectron2.evaluation import SemSegEvaluator
    from detectron2.structures import BitMasks, PolygonMasks

    print_instances_class_histogram([{"annotations": [{"category_id": 0}, {"category_id": 1}]}], ["a", "b"])
    masks = PolygonMasks([[np.array([0.0, 0.0, 4.0, 0.0, 4.0, 4.0])]])
    assert BitMasks.from_polygon_masks(masks, 8, 8).tensor.dtype == torch.bool
    assert SemSegEvaluator.__init__ is not None


def test_coco_evaluator_falls_back_to_pycocotools(caplog: pytest.LogCaptureFixture, tmp_path) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import COCOEvaluator
    from bridge.synthetic_coco import write_synthetic_coco

    coco = write_synthetic_coco(tmp_path, num_images=1)
    name = "bridge_test_stack_fallback"
    if name not in DatasetCatalog.list():
        from detectron2.data.datasets import register_coco_instances

        register_coco_instances(name, {}, str(coco.root / "annotations" / "instances_val2017.json"),
                                str(coco.root / "val2017"))
    with caplog.at_level(logging.WARNING):
        evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "eval"))
    assert evaluator._use_fast_impl is False
    assert "official COCOeval" in caplog.text
    MetadataCatalog.remove(name)
    DatasetCatalog.remove(name)


def test_detectron2_projects_and_tensorboard_are_installed() -> None:
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config
    from detectron2.projects.point_rend import add_pointrend_config  # noqa: F401
    from detectron2.projects.panoptic_deeplab import add_panoptic_deeplab_config  # noqa: F401
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401

    cfg = get_cfg()
    add_deeplab_config(cfg)
    assert "POLY_LR_POWER" in cfg.SOLVER
