"""91-slot COCO labels in real mmdet: CocoDataset91, CocoMetric91, apply_coco91 and the label-space check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

import mmdet_side  # noqa: F401  (registers the modules)
from bridge.coco.coco91 import COCO91_SLOT_NAMES
from bridge.coco.synthetic import SyntheticCoco, write_synthetic_coco
from bridge.errors import BridgeError
from mmdet_side.coco91 import CocoDataset91, CocoMetric91, LabelSpaceCheckHook, check_label_space, head_num_classes
from mmdet_side.coco91_config import apply_coco91, coco91_config_overrides
from tests.conftest import bridge_env, small_mmdet_train_config

DETR_CFG = "mmdet::detr/detr_r50_8xb2-150e_coco.py"
#: categories of the wide test set: ids across 1..90, gaps and ids >= 81 included
WIDE_CATEGORY_IDS = (1, 13, 20, 44, 62, 70, 80, 81, 84, 85, 88, 90)


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCoco:
    return write_synthetic_coco(tmp_path_factory.mktemp("coco91"), num_images=2)


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(instances json, image folder): 4 synthetic images, 3 objects each, one per id of WIDE_CATEGORY_IDS;
    rectangles and 12-point ellipse polygons side by side."""
    from bridge.coco.coco91 import instance_categories

    root = write_synthetic_coco(tmp_path_factory.mktemp("coco91_wide"), num_images=4)
    data = json.loads(root.instances_json("val2017").read_text())
    annotations = []
    for k, cat_id in enumerate(WIDE_CATEGORY_IDS):
        image = data["images"][k // 3]
        x0, y0, x1, y1 = 4 + (k % 3) * 40, 10 + (k % 2) * 8, 36 + (k % 3) * 40, 70 + (k % 2) * 8
        if k % 2:
            t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
            poly = np.stack([(x0 + x1) / 2 + (x1 - x0) / 2 * np.cos(t), (y0 + y1) / 2 + (y1 - y0) / 2 * np.sin(t)], 1)
            poly = [round(float(v), 2) for v in poly.reshape(-1)]
        else:
            poly = [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]
        rle = mask_util.merge(mask_util.frPyObjects([poly], image["height"], image["width"]))
        annotations.append(
            {
                "id": 1 + k,
                "image_id": image["id"],
                "category_id": cat_id,
                "segmentation": [poly],
                "area": float(mask_util.area(rle)),
                "bbox": mask_util.toBbox(rle).tolist(),
                "iscrowd": 0,
            }
        )
    data.update(annotations=annotations, categories=instance_categories())
    path = root.root / "annotations" / "instances_wide.json"
    path.write_text(json.dumps(data))
    return path, root.images_dir("val2017")


def _predictions_from_dataset(dataset: CocoDataset91) -> list[dict]:
    """The dataset's own ground truth (``get_data_info``: xyxy boxes, labels, polygons) as mmdet predictions."""
    samples = []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        h, w, instances = info["height"], info["width"], info["instances"]
        samples.append(
            dict(
                img_id=info["img_id"],
                ori_shape=(h, w),
                pred_instances=dict(
                    bboxes=torch.tensor([inst["bbox"] for inst in instances], dtype=torch.float32).reshape(-1, 4),
                    scores=torch.ones(len(instances)),
                    labels=torch.tensor([inst["bbox_label"] for inst in instances], dtype=torch.int64),
                    masks=[mask_util.merge(mask_util.frPyObjects(inst["mask"], h, w)) for inst in instances],
                ),
            )
        )
    return samples


def _anns_by_image(path: Path) -> tuple[dict, dict[int, list[dict]]]:
    data = json.loads(path.read_text())
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    return {img["id"]: img for img in data["images"]}, by_image


def _gt_as_predictions(path: Path, keep=lambda ann: True) -> list[dict]:
    """Ground truth of ``path`` as mmdet data samples: xyxy boxes, label = category id, score 1, RLE masks."""
    images, by_image = _anns_by_image(path)
    samples = []
    for img_id, anns in by_image.items():
        anns = [a for a in anns if keep(a)]
        h, w = images[img_id]["height"], images[img_id]["width"]
        masks = [mask_util.merge(mask_util.frPyObjects(a["segmentation"], h, w)) for a in anns]
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        samples.append(
            dict(
                img_id=img_id,
                ori_shape=(h, w),
                pred_instances=dict(
                    bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    scores=torch.ones(len(anns)),
                    labels=torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
                    masks=masks,
                ),
            )
        )
    return samples


def _evaluate(metric, samples: list[dict]) -> dict[str, float]:
    metric.dataset_meta = {"classes": tuple(COCO91_SLOT_NAMES)}
    metric.process({}, samples)
    return metric.evaluate(len(samples))


def test_synthetic_file_has_ids_above_80(coco: SyntheticCoco) -> None:
    ids = {
        a["category_id"]
        for split in ("val2017", "train2017")
        for a in json.loads(coco.instances_json(split).read_text())["annotations"]
    }
    assert any(i >= 81 for i in ids) and any(i < 80 for i in ids)


@pytest.mark.parametrize("split", ["val2017", "train2017"])
def test_dataset91_labels_are_category_ids(coco: SyntheticCoco, split: str) -> None:
    ds = CocoDataset91(
        ann_file=str(coco.instances_json(split)),
        data_prefix=dict(img=str(coco.images_dir(split))),
        pipeline=[],
        test_mode=True,
    )
    assert ds.metainfo["classes"] == tuple(COCO91_SLOT_NAMES) and len(ds.metainfo["palette"]) == 91
    assert ds.cat2label == {c: c for c in ds.cat_ids} and len(ds.cat_ids) == 80 and max(ds.cat_ids) == 90
    _, by_image = _anns_by_image(coco.instances_json(split))
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        got = sorted(inst["bbox_label"] for inst in info["instances"])
        assert got == sorted(a["category_id"] for a in by_image[info["img_id"]])
        assert got  # every synthetic image has instances


def test_dataset91_feeds_metric91_bbox_and_segm_ap_one_across_ids(wide: tuple[Path, Path]) -> None:
    """12 categories with ids across 1..90 (13, 44, 81, 84, 90 among them): the dataset's own instances fed
    back as predictions give bbox and segm AP 1.0 on each of them."""
    ann, images = wide
    dataset = CocoDataset91(ann_file=str(ann), data_prefix=dict(img=str(images)), pipeline=[], test_mode=True)
    samples = _predictions_from_dataset(dataset)
    labels = sorted(int(label) for s in samples for label in s["pred_instances"]["labels"])
    assert labels == list(WIDE_CATEGORY_IDS)  # label == category id, every category once
    metric = CocoMetric91(ann_file=str(ann), metric=["bbox", "segm"], classwise=True)
    metric.dataset_meta = dataset.metainfo
    metric.process({}, samples)
    res = metric.evaluate(len(samples))
    assert res["coco/bbox_mAP"] == pytest.approx(1.0) and res["coco/segm_mAP"] == pytest.approx(1.0)
    for cat_id in WIDE_CATEGORY_IDS:
        assert res[f"coco/{COCO91_SLOT_NAMES[cat_id]}_precision"] == pytest.approx(1.0), cat_id
    from mmdet.evaluation import CocoMetric

    stock = CocoMetric(ann_file=str(ann), metric="bbox")
    stock.dataset_meta = dataset.metainfo
    stock.process({}, _predictions_from_dataset(dataset))
    with pytest.raises(IndexError):  # labels >= 80 index the 80 name-matched ids
        stock.evaluate(len(samples))


@pytest.mark.parametrize("with_ann_file", [True, False])
def test_metric91_refuses_the_stock_80_class_meta(wide: tuple[Path, Path], with_ann_file: bool) -> None:
    """Finding: with the stock CocoDataset's 80 contiguous names, CocoMetric91 wrote label l as id l and scored
    bbox mAP 0.0 silently; now setting that dataset_meta raises."""
    from mmdet.datasets import CocoDataset

    metric = CocoMetric91(ann_file=str(wide[0]) if with_ann_file else None, metric="bbox")
    with pytest.raises(
        BridgeError,
        match=r"CocoMetric91: dataset_meta\['classes'\] is not the id-slot layout.*"
        r"category 1 'person' has 'bicycle' in slot 1 \(80 categories.*CocoDataset91",
    ):
        metric.dataset_meta = CocoDataset.METAINFO
    metric.dataset_meta = CocoDataset91.METAINFO
    assert metric.dataset_meta["classes"][90] == "toothbrush"


def test_metric91_without_ann_file_uses_converted_gt(coco: SyntheticCoco) -> None:
    ann = coco.instances_json("val2017")
    samples = _gt_as_predictions(ann)
    _, by_image = _anns_by_image(ann)
    for s in samples:  # ground truth as the dataset pipeline gives it (labels = category ids)
        s["instances"] = [
            dict(
                bbox=[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]],
                bbox_label=a["category_id"],
                ignore_flag=0,
            )
            for a in by_image[s["img_id"]]
        ]
    res = _evaluate(CocoMetric91(metric="bbox"), samples)
    assert res["coco/bbox_mAP"] == pytest.approx(1.0)


def test_metric91_rejects_out_of_range_label(coco: SyntheticCoco) -> None:
    ann = coco.instances_json("val2017")
    samples = _gt_as_predictions(ann)
    samples[0]["pred_instances"]["labels"][0] = 91
    with pytest.raises(BridgeError, match="outside the 91 label slots"):
        _evaluate(CocoMetric91(ann_file=str(ann), metric="bbox"), samples)


def test_stock_metric_with_91_names_breaks(coco: SyntheticCoco) -> None:
    """Finding: stock CocoMetric maps labels through cat_ids looked up by name (80 ids, 'N/A' dropped), so a
    label >= 80 raises IndexError and labels < 80 are written as the wrong category (AP 0 here)."""
    from mmdet.evaluation import CocoMetric

    ann = coco.instances_json("val2017")
    with pytest.raises(IndexError):
        _evaluate(CocoMetric(ann_file=str(ann), metric="bbox"), _gt_as_predictions(ann))
    low = lambda a: a["category_id"] < 80  # noqa: E731
    stock = _evaluate(CocoMetric(ann_file=str(ann), metric="bbox"), _gt_as_predictions(ann, low))
    ours = _evaluate(CocoMetric91(ann_file=str(ann), metric="bbox"), _gt_as_predictions(ann, low))
    # the category >= 80 has no prediction left: 2 of the 3 ground-truth categories are perfect
    assert ours["coco/bbox_mAP"] == pytest.approx(2 / 3, abs=1e-3)
    assert stock["coco/bbox_mAP"] < ours["coco/bbox_mAP"]
    assert stock["coco/bbox_mAP"] == pytest.approx(0.0)  # label 1 -> cat_ids[1] == 2 ('bicycle'), etc.


def test_check_label_space() -> None:
    from mmdet.datasets import CocoDataset

    check_label_space(91, CocoDataset91.METAINFO, max_label=90)
    check_label_space(80, CocoDataset.METAINFO, max_label=79)
    with pytest.raises(BridgeError, match="num_classes=91 but the dataset has 80 classes.*apply_coco91"):
        check_label_space(91, CocoDataset.METAINFO)
    with pytest.raises(BridgeError, match="label 90"):
        check_label_space(80, {"classes": tuple(range(80))}, max_label=90)


def _detr_cfg():
    from mmengine.config import Config

    cfg = Config.fromstring(f"_base_ = '{DETR_CFG}'\n", ".py")  # mmdet:: resolves through _base_
    cfg.model.backbone.init_cfg = None
    return cfg


def test_apply_coco91_adds_import_and_check_hook_once() -> None:
    cfg = _detr_cfg()
    cfg.custom_imports = dict(imports=["projects.example"], allow_failed_imports=True)
    cfg.custom_hooks = [dict(type="EMAHook")]
    apply_coco91(apply_coco91(cfg))  # twice: nothing doubled
    assert cfg.custom_imports == dict(imports=["projects.example", "mmdet_side"], allow_failed_imports=True)
    assert [hook["type"] for hook in cfg.custom_hooks] == ["EMAHook", "LabelSpaceCheckHook"]
    bare = apply_coco91(_detr_cfg())
    assert bare.custom_imports == dict(imports=["mmdet_side"], allow_failed_imports=False)
    assert bare.custom_hooks == [dict(type="LabelSpaceCheckHook")]


def test_apply_coco91_resizes_uniform_class_weights_only() -> None:
    from mmengine.config import Config

    cfg = Config.fromstring("_base_ = 'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py'\n", ".py")
    apply_coco91(cfg)
    head = cfg.model.panoptic_head
    assert (head.num_things_classes, head.num_stuff_classes) == (91, 0)
    assert head.loss_cls.class_weight == [1.0] * 91 + [0.1]
    assert cfg.model.panoptic_fusion_head.num_things_classes == 91
    cfg = Config.fromstring("_base_ = 'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py'\n", ".py")
    cfg.model.panoptic_head.loss_cls.class_weight = [float(i) for i in range(80)] + [0.1]
    with pytest.raises(BridgeError, match="model.panoptic_head.loss_cls.class_weight has per-class weights"):
        apply_coco91(cfg)


def test_apply_coco91_on_detr_config() -> None:
    cfg = _detr_cfg()
    assert cfg.model.bbox_head.num_classes == 80
    over = coco91_config_overrides()
    out = apply_coco91(cfg)
    assert out is cfg and cfg.model.bbox_head.num_classes == over["num_classes"] == 91
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert cfg[name].dataset.type == over["dataset_type"] == "CocoDataset91"
    for name in ("val_evaluator", "test_evaluator"):
        assert cfg[name].type == over["metric_type"] == "CocoMetric91"
    # a dataset wrapper is followed to the inner dataset; a non-COCO dataset is refused
    cfg.train_dataloader.dataset = dict(type="RepeatDataset", times=2, dataset=dict(type="CocoDataset"))
    apply_coco91(cfg)
    assert cfg.train_dataloader.dataset.dataset.type == "CocoDataset91"
    cfg.train_dataloader.dataset = dict(type="LVISV1Dataset")
    with pytest.raises(BridgeError, match="only CocoDataset and CocoPanopticDataset"):
        apply_coco91(cfg)


def _runner(cfg, coco: SyntheticCoco, dataset_type: str, work_dir: Path):
    from mmengine.runner import Runner

    dataset = dict(
        type=dataset_type,
        ann_file=str(coco.instances_json("train2017")),
        data_prefix=dict(img=str(coco.images_dir("train2017"))),
        pipeline=[
            dict(type="LoadImageFromFile"),
            dict(type="LoadAnnotations", with_bbox=True),
            dict(type="PackDetInputs"),
        ],
    )
    return Runner(
        model=cfg.model,
        work_dir=str(work_dir),
        default_scope="mmdet",
        train_dataloader=dict(
            batch_size=1, num_workers=0, dataset=dataset, sampler=dict(type="DefaultSampler", shuffle=False)
        ),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=1),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.0)),
        custom_hooks=[dict(type="LabelSpaceCheckHook")],
        default_hooks=dict(logger=None, checkpoint=None),
        log_level="WARNING",
    )


def test_hook_stops_91_head_with_80_class_dataset_before_training(coco: SyntheticCoco, tmp_path: Path) -> None:
    cfg = apply_coco91(_detr_cfg())
    runner = _runner(cfg, coco, "CocoDataset", tmp_path)
    with pytest.raises(BridgeError, match="bbox_head: label space mismatch: the model head has num_classes=91"):
        runner.train()
    assert runner.iter == 0
    # the matching pair passes the same check
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    assert head_num_classes(model) == {"bbox_head": 91}
    ds = CocoDataset91(
        ann_file=str(coco.instances_json("train2017")),
        data_prefix=dict(img=str(coco.images_dir("train2017"))),
        pipeline=[],
        test_mode=True,
    )
    check_label_space(91, ds.metainfo, max(ds.cat2label.values()))
    assert isinstance(LabelSpaceCheckHook(), LabelSpaceCheckHook)


def test_two_iterations_on_dataset91_train_with_original_ids_as_labels(tmp_path: Path) -> None:
    """mmengine's Runner trains Faster R-CNN (91 classes) 2 iterations on CocoDataset91; the record hook
    shows the packed data samples carry the original COCO ids as labels."""
    from mmengine.runner import Runner

    from bridge import open_run
    from bridge.coco.onesample import OneSampleConfig
    from bridge.coco.synthetic import write_synthetic_coco

    root = tmp_path / "coco"
    write_synthetic_coco(root, num_images=2)
    annotations = json.loads((root / "annotations" / "instances_train2017.json").read_text())["annotations"]
    image_id = max(annotations, key=lambda a: a["category_id"])["image_id"]  # an image with an id > 80
    onesample = OneSampleConfig.create(root, {"train": [image_id]}, tmp_path / "cache")
    cfg = small_mmdet_train_config(
        "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
        onesample,
        epochs=2,
        work_dir=str(tmp_path / "work"),
        hooks=[
            dict(type="LabelSpaceCheckHook"),
            dict(type="BridgeRecordHook", run_dir=str(tmp_path / "run"), iterations=[0, 1]),
        ],
    )
    apply_coco91(cfg)
    Runner.from_cfg(cfg).train()

    expected = sorted(a["category_id"] for a in annotations if a["image_id"] == image_id)
    run = open_run(tmp_path / "run")
    for step in (0, 1):
        sample = run.get("batch", step=step, kind="batch")["data_samples"][0]
        assert sorted(sample["data"]["gt_instances"]["data"]["labels"].tolist()) == expected
    assert max(expected) > 80


def test_cli_detection_task_with_coco91_runs_dino_test_loop(coco: SyntheticCoco, tmp_path: Path) -> None:
    """DETR-style box-only models: ``python -m mmdet_side.config --task detection --coco91`` on mmdet's DINO
    config evaluates bbox only (``--task instances`` would also ask CocoMetric for segm, which a box-only
    model does not predict) with labels = original ids, and mmengine's test loop runs through it."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    out = tmp_path / "dino91.py"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmdet_side.config",
            "--base",
            "mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py",
            "--task",
            "detection",
            "--coco91",
            "-o",
            str(out),
        ],
        env=bridge_env(coco.root, tmp_path / "cache"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    cfg = Config.fromfile(str(out))
    assert cfg.test_evaluator.type == "CocoMetric91" and cfg.test_evaluator.metric == ["bbox"]
    assert cfg.test_dataloader.dataset.type == "CocoDataset91" and cfg.model.bbox_head.num_classes == 91
    for transform in cfg.test_dataloader.dataset.pipeline:
        if transform["type"] == "Resize":
            transform["scale"] = (400, 300)  # small for the CPU, still more encoder tokens than DINO's 900 queries
    cfg.model.backbone.init_cfg = None
    cfg.work_dir = str(tmp_path / "work")
    metrics = Runner.from_cfg(cfg).test()
    assert "coco/bbox_mAP" in metrics and not any("segm" in key for key in metrics)
