"""Replay: mmdet's Runner trains Mask R-CNN on the batches detectron2 recorded (BridgeReplayHook),
and what mmdet's model received equals detectron2's batch tensor for tensor after conversion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bridge import open_run
from bridge.coco.onesample import OneSampleConfig
from tests.conftest import record_d2_mask_rcnn, record_d2_training, small_mmdet_train_config


def test_mmdet_trains_on_detectron2_batches(onesample_config: OneSampleConfig, tmp_path: Path) -> None:
    from mmengine.runner import Runner

    record_d2_mask_rcnn(onesample_config, tmp_path / "d2")
    cfg = small_mmdet_train_config(
        "mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py",
        onesample_config,
        epochs=2,
        work_dir=str(tmp_path / "work"),
        hooks=[
            dict(type="BridgeReplayHook", run_dir=str(tmp_path / "d2")),
            dict(type="BridgeRecordHook", run_dir=str(tmp_path / "mmdet"), iterations=[0, 1]),
        ],
    )
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


def _mmdet_sample(run, step: int) -> dict:
    """The first data sample mmdet's model received at ``step`` (after its data preprocessor)."""
    return run.get("batch", step=step, kind="batch")["data_samples"][0]["data"]


def test_mmdet_panoptic_fpn_trains_on_detectron2_panoptic_batches(
    onesample_config: OneSampleConfig, tmp_path: Path
) -> None:
    """detectron2's PanopticFPN batch (``_separated``: things = 0, stuff 1..53) replayed in mmdet's PanopticFPN:
    after the head merges things, mmdet's semantic targets are d2's with the things row moved last, which is
    what the d2-panoptic-fpn-to-mmdet preset does to the semantic classifier's rows."""
    from mmdet.registry import MODELS
    from mmengine.runner import Runner

    record_d2_training(
        onesample_config,
        tmp_path / "d2",
        "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml",
        "coco_2017_train_panoptic_onesample_separated",
        iterations=[0],
    )
    cfg = small_mmdet_train_config(
        "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py",
        onesample_config,
        epochs=1,
        task="panoptic",
        work_dir=str(tmp_path / "work"),
        hooks=[
            dict(type="BridgeReplayHook", run_dir=str(tmp_path / "d2"), sem_seg_label_map="panoptic_fpn"),
            dict(type="BridgeRecordHook", run_dir=str(tmp_path / "mmdet"), iterations=[0]),
        ],
    )
    Runner.from_cfg(cfg).train()

    d2_item = open_run(tmp_path / "d2").get("batch", step=0, kind="batch")[0]
    mm_run = open_run(tmp_path / "mmdet")
    sample = _mmdet_sample(mm_run, 0)
    d2_sem = d2_item["sem_seg"]
    height, width = d2_sem.shape
    assert set(d2_sem.unique().tolist()) - {255} and 0 in d2_sem  # things and stuff on the one image
    mm_sem = sample["gt_sem_seg"]["data"]["sem_seg"][0, :height, :width]
    head = MODELS.build(cfg.model.semantic_head)
    merged = head._set_things_to_void(mm_sem)
    things_last = torch.where(d2_sem == 0, 53, torch.where(d2_sem == 255, 255, d2_sem - 1))
    assert torch.equal(merged.long(), things_last)
    assert torch.equal(sample["gt_instances"]["data"]["labels"], d2_item["instances"]["gt_classes"])
    assert "loss_seg" in mm_run.get("losses", step=0, kind="loss")


def _mask_dino_style_batch(onesample_config: OneSampleConfig) -> list[dict]:
    """What Mask DINO's / Mask2Former's panoptic mappers give the model, built with detectron2's own readers
    and structures from the one-sample ``_with_sem_seg`` registration: every non-crowd segment (things and
    stuff) as an instance with a contiguous label 0..132, a bitmask and its box; no ``sem_seg``."""
    import numpy as np
    from detectron2.data import DatasetCatalog
    from detectron2.data import detection_utils as utils
    from detectron2.structures import BitMasks, Instances
    from panopticapi.utils import rgb2id

    from d2_side.datasets import register_onesample

    register_onesample(onesample_config)
    record = DatasetCatalog.get("coco_2017_train_panoptic_onesample_with_sem_seg")[0]
    image = utils.read_image(record["file_name"], format="BGR")
    pan_seg = rgb2id(utils.read_image(record["pan_seg_file_name"], "RGB"))
    segments = [s for s in record["segments_info"] if not s["iscrowd"]]
    instances = Instances(image.shape[:2])
    instances.gt_classes = torch.tensor([s["category_id"] for s in segments], dtype=torch.int64)
    masks = BitMasks(torch.stack([torch.from_numpy(np.ascontiguousarray(pan_seg == s["id"])) for s in segments]))
    instances.gt_masks = masks.tensor
    instances.gt_boxes = masks.get_bounding_boxes()
    return [
        {
            "file_name": record["file_name"],
            "image_id": record["image_id"],
            "height": image.shape[0],
            "width": image.shape[1],
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "instances": instances,
        }
    ]


def test_mmdet_mask2former_trains_on_mask_dino_style_panoptic_batches(
    onesample_config: OneSampleConfig, tmp_path: Path
) -> None:
    """Mask DINO / Mask2Former batches hold stuff segments as instances; replayed with panoptic_num_things=80,
    mmdet's Mask2Former head rebuilds exactly d2's (label, mask) targets from gt_instances + gt_sem_seg."""
    from mmdet.models.utils import preprocess_panoptic_gt
    from mmdet.structures.mask import BitmapMasks
    from mmengine.runner import Runner

    from bridge import Recorder
    from d2_side.recordable import to_recordable

    batch = _mask_dino_style_batch(onesample_config)
    with Recorder(tmp_path / "d2", framework="detectron2") as recorder:
        recorder.record("batch", to_recordable(batch), step=0, kind="batch")
    cfg = small_mmdet_train_config(
        "mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py",
        onesample_config,
        epochs=1,
        task="panoptic",
        work_dir=str(tmp_path / "work"),
        hooks=[
            dict(type="BridgeReplayHook", run_dir=str(tmp_path / "d2"), panoptic_num_things=80),
            dict(type="BridgeRecordHook", run_dir=str(tmp_path / "mmdet"), iterations=[0]),
        ],
    )
    cfg.model.data_preprocessor.batch_augments = None  # LSJ pads to 1024²: too slow on the CPU, not needed here
    Runner.from_cfg(cfg).train()

    mm_run = open_run(tmp_path / "mmdet")
    sample = _mmdet_sample(mm_run, 0)
    d2_instances = batch[0]["instances"]
    height, width = d2_instances.image_size
    things = d2_instances.gt_classes < 80
    assert 0 < int(things.sum()) < len(d2_instances)  # the image has things and stuff
    gt = sample["gt_instances"]["data"]
    assert torch.equal(gt["labels"], d2_instances.gt_classes[things])
    assert torch.equal(gt["bboxes"], d2_instances.gt_boxes.tensor[things])
    sem_seg = sample["gt_sem_seg"]["data"]["sem_seg"][:, :height, :width]
    masks = BitmapMasks(gt["masks"][:, :height, :width].numpy(), height, width)
    labels, rebuilt = preprocess_panoptic_gt(gt["labels"], masks, sem_seg, 80, 53)
    expected = sorted(
        (int(label), mask.numpy().tobytes())
        for label, mask in zip(d2_instances.gt_classes, d2_instances.gt_masks.long())
    )
    assert sorted((int(label), mask.numpy().tobytes()) for label, mask in zip(labels, rebuilt.long())) == expected
    assert {"loss_cls", "loss_mask", "loss_dice"} <= set(mm_run.get("losses", step=0, kind="loss"))


def test_replay_conversion_names_bad_panoptic_input(onesample_config: OneSampleConfig) -> None:
    """A semantic label outside the map, or polygon masks where bitmasks are needed, name the batch item."""
    from bridge.errors import BridgeError
    from mmdet_side.replay import d2_train_batch_to_mmdet, panoptic_fpn_sem_seg_label_map

    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    with pytest.raises(BridgeError, match=r"batch item 0: sem_seg label 60 is not in sem_seg_label_map"):
        d2_train_batch_to_mmdet(
            [{"image": image, "sem_seg": torch.full((8, 8), 60)}], sem_seg_label_map=panoptic_fpn_sem_seg_label_map()
        )
    polygons = {
        "gt_classes": torch.tensor([3]),
        "gt_boxes": torch.zeros(1, 4),
        "gt_masks": [[torch.tensor([0.0, 0.0, 4.0, 0.0, 4.0, 4.0])]],
    }
    with pytest.raises(BridgeError, match=r"batch item 0: panoptic_num_things needs .* bitmask"):
        d2_train_batch_to_mmdet([{"image": image, "instances": polygons}], panoptic_num_things=80)


def test_mmdet_tests_on_detectron2_inference_batches(onesample_config: OneSampleConfig, tmp_path: Path) -> None:
    """Runner.test() with ``eval_run_dir``: mmdet's PanopticFPN evaluates detectron2's recorded inference batch
    (image tensor for tensor after mmdet's preprocessor), CocoPanopticMetric scores it, predictions come back
    at the original size and are recorded in the canonical panoptic form beside detectron2's: as the model
    made them, not as CocoPanopticMetric.process leaves them (it writes void 0 into ``pred_panoptic_seg``).
    The record hook records evaluation alone (no ``run_dir``); ``bridge.compare`` of the two evaluation runs
    names no path and no raw structure as a divergence, and compares the panoptic maps only as results."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.data import MetadataCatalog, build_detection_test_loader
    from detectron2.modeling import build_model
    from mmengine.config import Config
    from mmengine.runner import Runner

    from bridge import Recorder
    from d2_side.datasets import register_onesample
    from d2_side.hooks import record_inference
    from mmdet_side.config import onesample_overrides
    from mmdet_side.replay import d2_inputs_to_mmdet

    register_onesample(onesample_config)
    d2_cfg = get_cfg()
    d2_cfg.merge_from_file(model_zoo.get_config_file("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"))
    d2_cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "160"]
    )
    torch.manual_seed(0)
    dataset = "coco_2017_val_panoptic_onesample_separated"
    with Recorder(tmp_path / "d2_eval", framework="detectron2") as recorder, torch.no_grad():
        record_inference(
            build_model(d2_cfg),
            build_detection_test_loader(d2_cfg, dataset),
            recorder,
            metadata=MetadataCatalog.get(dataset),
        )

    cfg = Config.fromstring("_base_ = 'mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py'\n", ".py")
    cfg.merge_from_dict(onesample_overrides(onesample_config, task="panoptic"))
    cfg.model.backbone.init_cfg = None
    cfg.custom_imports = dict(imports=["mmdet_side"], allow_failed_imports=False)
    cfg.custom_hooks = [
        dict(type="BridgeReplayHook", eval_run_dir=str(tmp_path / "d2_eval")),
        dict(type="BridgeRecordHook", eval_run_dir=str(tmp_path / "mm_eval")),
    ]
    cfg.work_dir = str(tmp_path / "work")
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()

    assert "coco_panoptic/PQ" in metrics
    d2_run, mm_run = open_run(tmp_path / "d2_eval"), open_run(tmp_path / "mm_eval")
    d2_item = d2_run.get("batch", step=0, kind="batch")[0]
    with torch.no_grad():
        fresh = runner.model.test_step(d2_inputs_to_mmdet([d2_item]))[0].pred_panoptic_seg.sem_seg
    recorded = mm_run.get("outputs", step=0, kind="output")[0]["data"]["pred_panoptic_seg"]["data"]["sem_seg"]
    void = len(runner.test_dataloader.dataset.metainfo["classes"])
    assert (fresh == void).any() and torch.equal(recorded, fresh)
    image = d2_item["image"].float()
    height, width = image.shape[1:]
    preprocessor = cfg.model.data_preprocessor
    mean, std = torch.tensor(preprocessor.mean).view(3, 1, 1), torch.tensor(preprocessor.std).view(3, 1, 1)
    assert torch.equal(
        mm_run.get("batch", step=0, kind="batch")["inputs"][0, :, :height, :width], (image.flip(0) - mean) / std
    )
    panoptic_name = f"panoptic.{d2_item['image_id']}"
    d2_panoptic = d2_run.get(panoptic_name, step=0, kind="output")
    mm_panoptic = mm_run.get(panoptic_name, step=0, kind="output")
    assert mm_panoptic["category"].shape == d2_panoptic["category"].shape == (d2_item["height"], d2_item["width"])
    assert not (tmp_path / "mm").exists()

    from bridge.compare import compare_runs

    result = compare_runs(tmp_path / "d2_eval", tmp_path / "mm_eval", device="cpu")
    assert [pair.name for pair in result.panoptic] == [panoptic_name]
    assert not any(item.key.startswith("panoptic.") for item in result.items)
    assert {"batch.0.file_name", "outputs.0.panoptic_seg.0"} <= {loc.key for loc in result.by_nature}
    # PanopticFPN in mmdet returns panoptic results only; detectron2's also gives instances and sem_seg
    assert {loc.key for loc in result.a_only} == {f"instances.{d2_item['image_id']}", f"semantic.{d2_item['image_id']}"}
    assert not result.b_only and result.first_divergence.kind == "output"


def test_rgb_batches_are_fed_as_the_bgr_mmdet_loads() -> None:
    """Mask DINO / Mask2Former configs feed RGB (INPUT.FORMAT); mmdet's pipeline loads BGR and its data
    preprocessor flips: with input_format='RGB' the replayed input is the BGR image mmdet would have loaded."""
    from bridge.errors import BridgeError
    from mmdet_side.replay import d2_inputs_to_mmdet

    rgb = torch.arange(3 * 4 * 5, dtype=torch.uint8).reshape(3, 4, 5)
    assert torch.equal(d2_inputs_to_mmdet([{"image": rgb}], "RGB")["inputs"][0], rgb.flip(0))
    assert torch.equal(d2_inputs_to_mmdet([{"image": rgb}])["inputs"][0], rgb)
    with pytest.raises(BridgeError, match="input_format must be one of"):
        d2_inputs_to_mmdet([{"image": rgb}], "YUV")
