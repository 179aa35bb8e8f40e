"""Replay: mmdet's Runner trains Mask R-CNN on the batches detectron2 recorded (BridgeReplayHook),
and what mmdet's model received equals detectron2's batch tensor for tensor after conversion."""
from __future__ import annotations

from pathlib import Path

import torch

from bridge import open_run
from bridge.onesample import OneSampleConfig
from tests.conftest import record_d2_mask_rcnn, small_mmdet_train_config


def test_mmdet_trains_on_detectron2_batches(onesample_config: OneSampleConfig, tmp_path: Path) -> None:
    from mmengine.runner import Runner

    record_d2_mask_rcnn(onesample_config, tmp_path / "d2")
    cfg = small_mmdet_train_config(
        "mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py", onesample_config, epochs=2, work_dir=str(tmp_path / "work"),
        hooks=[dict(type="BridgeReplayHook", run_dir=str(tmp_path / "d2")),
               dict(type="BridgeRecordHook", run_dir=str(tmp_path / "mmdet"), iterations=[0, 1])])
    Runner.from_cfg(cfg).train()

    d2_run, mm_run = open_run(tmp_path / "d2"), open_run(tmp_path / "mmdet")
    preprocessor = cfg.model.data_preprocessor
    mean = torch.tensor(preprocessor.mean).view(3, 1, 1)
    std = torch.tensor(preprocessor.std).view(3, 1, 1)
    for step in (0, 1):
        d2_item = d2_run.get("batch", step=step, kind="batch")[0]
        mm_batch = mm_run.get("batch", step=step, kind="batch")
        sample = mm_batch["data_samples"][0]
        instances = sample["data"]["gt_instances"]["data"]
        assert torch.equal(instances["bboxes"], d2_item["instances"]["gt_boxes"].float())
        assert torch.equal(instances["labels"], d2_item["instances"]["gt_classes"])
        assert instances["masks"].shape[0] == len(d2_item["instances"]["gt_masks"])
        image = d2_item["image"].float()  # BGR uint8, as mmdet's own pipeline would load it
        height, width = image.shape[1:]
        expected = (image.flip(0) - mean) / std  # mmdet's preprocessor: bgr_to_rgb, then mean/std
        assert torch.equal(mm_batch["inputs"][0, :, :height, :width], expected)
        assert tuple(sample["metainfo"]["img_shape"]) == (height, width)
    assert set(mm_run.get("losses", step=1, kind="loss")) >= {"loss_rpn_cls", "loss_mask"}
