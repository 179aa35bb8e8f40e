"""COCO-panoptic with label = category id in real mmdet: CocoPanopticDataset91, CocoPanopticMetric91, apply_coco91."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mmdet_side  # noqa: F401  (registers the modules)
from bridge.coco.synthetic import SyntheticCoco, write_synthetic_coco
from bridge.errors import BridgeError
from mmdet_side.coco91 import CocoDataset91, check_label_space, head_num_classes
from mmdet_side.coco91_config import apply_coco91
from mmdet_side.coco91_panoptic import (
    NUM_STUFF_SLOTS,
    NUM_THING_SLOTS,
    PANOPTIC_SLOT_NAMES,
    CocoPanopticDataset91,
    CocoPanopticMetric91,
)
from tests.conftest import bridge_env, small_mmdet_train_config

PANOPTIC_FPN = "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py"
MASK2FORMER = "mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py"
VOID = len(PANOPTIC_SLOT_NAMES)  # the label mmdet's fusion heads give void pixels: num_things + num_stuff


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCoco:
    return write_synthetic_coco(tmp_path_factory.mktemp("coco91_panoptic"), num_images=3)


@pytest.fixture(scope="module")
def dataset(coco: SyntheticCoco) -> CocoPanopticDataset91:
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets.transforms import LoadPanopticAnnotations

    return CocoPanopticDataset91(
        ann_file=str(coco.panoptic_json()),
        data_prefix=dict(img=str(coco.images_dir()), seg=str(coco.panoptic_dir())),
        pipeline=[LoadImageFromFile(), LoadPanopticAnnotations()],
        test_mode=True,
    )


def test_slot_layout_keeps_things_first_with_label_equal_to_id() -> None:
    assert (len(PANOPTIC_SLOT_NAMES), NUM_THING_SLOTS, NUM_STUFF_SLOTS) == (201, 91, 110)
    official = json.loads((Path(__file__).parents[1] / "bridge/coco/data/coco_panoptic_categories.json").read_text())
    for cat in official:
        assert PANOPTIC_SLOT_NAMES[cat["id"]] == cat["name"] and (cat["id"] < 91) == bool(cat["isthing"])
    assert sum(name != "N/A" for name in PANOPTIC_SLOT_NAMES) == 133
    meta = CocoPanopticDataset91.METAINFO
    assert meta["thing_classes"] == PANOPTIC_SLOT_NAMES[:91] and meta["stuff_classes"] == PANOPTIC_SLOT_NAMES[91:]
    assert len(meta["palette"]) == 201


def _ground_truth_as_prediction(result: dict) -> dict:
    """A loaded item's ground truth (thing masks + labels, semantic map) as mmdet's panoptic prediction:
    thing pixels ``label + k * 1000``, stuff pixels ``label``, void ``len(classes)``."""
    seg = result["gt_seg_map"]
    pan = np.full(seg.shape, VOID, dtype=np.int64)
    stuff = (seg >= NUM_THING_SLOTS) & (seg < VOID)
    pan[stuff] = seg[stuff]
    for k, (mask, label) in enumerate(zip(result["gt_masks"].masks, result["gt_bboxes_labels"]), start=1):
        pan[mask.astype(bool)] = int(label) + k * 1000
    return dict(
        img_id=result["img_id"],
        img_path=result["img_path"],
        ori_shape=result["ori_shape"],
        seg_map_path=result["seg_map_path"],
        segments_info=result["segments_info"],
        pred_panoptic_seg=dict(sem_seg=torch.from_numpy(pan)[None]),
    )


def test_dataset_labels_are_category_ids(dataset: CocoPanopticDataset91, coco: SyntheticCoco) -> None:
    panoptic = json.loads(coco.panoptic_json().read_text())
    by_image = {a["image_id"]: a["segments_info"] for a in panoptic["annotations"]}
    assert dataset.cat2label == {c: c for c in dataset.cat_ids} and len(dataset.cat_ids) == 133
    for i in range(len(dataset)):
        result = dataset[i]
        segments = by_image[result["img_id"]]
        things = sorted(s["category_id"] for s in segments if s["category_id"] < 91)
        assert sorted(result["gt_bboxes_labels"].tolist()) == things
        painted = set(np.unique(result["gt_seg_map"]).tolist()) - {255}
        assert painted == {s["category_id"] for s in segments}
        assert any(label > 91 for label in painted)  # stuff ids (92..200) painted as they are


@pytest.mark.parametrize("mode", ["ann_file", "dataset_gt", "outfile_prefix"])
def test_metric91_ground_truth_as_prediction_gives_pq_100(
    dataset: CocoPanopticDataset91, coco: SyntheticCoco, mode: str, tmp_path: Path
) -> None:
    """The three paths of CocoPanopticMetric: ground truth from the annotation file, from the dataset's own
    segments (no ann_file), and written files first (outfile_prefix, no ann_file)."""
    kwargs = dict(seg_prefix=str(coco.panoptic_dir()), nproc=1)
    if mode == "ann_file":
        kwargs["ann_file"] = str(coco.panoptic_json())
    if mode == "outfile_prefix":
        kwargs["outfile_prefix"] = str(tmp_path / "out")
    metric = CocoPanopticMetric91(**kwargs)
    metric.dataset_meta = dataset.metainfo
    with pytest.raises(BridgeError, match="classwise=True is not supported"):
        CocoPanopticMetric91(ann_file=str(coco.panoptic_json()), seg_prefix=str(coco.panoptic_dir()), classwise=True)
    samples = [_ground_truth_as_prediction(dataset[i]) for i in range(len(dataset))]
    metric.process({}, samples)
    res = metric.evaluate(len(samples))
    assert res["coco_panoptic/PQ"] == pytest.approx(100.0)
    assert res["coco_panoptic/PQ_th"] == pytest.approx(100.0) and res["coco_panoptic/PQ_st"] == pytest.approx(100.0)


def test_stock_panoptic_metric_with_id_slots_fails(dataset: CocoPanopticDataset91, coco: SyntheticCoco) -> None:
    """Finding: stock CocoPanopticMetric with an ann_file maps label i to the i-th category found by name
    (133 of them): a stuff label >= 133 raises KeyError; the others would be written as wrong categories."""
    from mmdet.evaluation import CocoPanopticMetric

    metric = CocoPanopticMetric(ann_file=str(coco.panoptic_json()), seg_prefix=str(coco.panoptic_dir()), nproc=1)
    metric.dataset_meta = dataset.metainfo
    with pytest.raises(KeyError):
        metric.process({}, [_ground_truth_as_prediction(dataset[i]) for i in range(len(dataset))])


def test_metric91_drops_unused_slot_predictions_and_refuses_stock_meta(
    dataset: CocoPanopticDataset91, coco: SyntheticCoco
) -> None:
    from mmdet.datasets import CocoPanopticDataset

    metric = CocoPanopticMetric91(ann_file=str(coco.panoptic_json()), seg_prefix=str(coco.panoptic_dir()), nproc=1)
    with pytest.raises(
        BridgeError, match="CocoPanopticMetric91: .* not the id-slot layout.*category 1 'person' has 'bicycle'"
    ):
        metric.dataset_meta = CocoPanopticDataset.METAINFO
    with pytest.raises(BridgeError, match="category 92 'banner' has no slot"):  # instances-only slots
        metric.dataset_meta = CocoDataset91.METAINFO
    with pytest.raises(BridgeError, match="thing_classes"):
        metric.dataset_meta = dict(dataset.metainfo, thing_classes=dataset.metainfo["classes"][:80])
    metric.dataset_meta = dataset.metainfo
    with pytest.raises(BridgeError, match="classwise=True is not supported"):
        CocoPanopticMetric91(ann_file=str(coco.panoptic_json()), seg_prefix=str(coco.panoptic_dir()), classwise=True)
    samples = [_ground_truth_as_prediction(dataset[i]) for i in range(len(dataset))]
    pan = samples[0]["pred_panoptic_seg"]["sem_seg"]
    pan[0, :2, :] = 12 + 999 * 1000  # a segment of the unused thing slot 12: no ground truth has it
    metric.process({}, samples)
    assert metric.evaluate(len(samples))["coco_panoptic/PQ"] == pytest.approx(100.0)


def _panoptic_cfg(base: str):
    from mmengine.config import Config

    cfg = Config.fromstring(f"_base_ = {base!r}\n", ".py")
    cfg.model.backbone.init_cfg = None
    return cfg


def test_apply_coco91_on_panoptic_fpn_builds_consistent_heads() -> None:
    from mmdet.registry import MODELS

    cfg = apply_coco91(_panoptic_cfg(PANOPTIC_FPN))
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert cfg[name].dataset.type == "CocoPanopticDataset91"
    assert cfg.val_evaluator.type == cfg.test_evaluator.type == "CocoPanopticMetric91"
    model = MODELS.build(cfg.model)
    assert head_num_classes(model) == {
        "roi_head.bbox_head": 91,
        "roi_head.mask_head": 91,
        "semantic_head": 201,
        "panoptic_fusion_head": 201,
    }
    assert model.semantic_head.conv_logits.out_channels == NUM_STUFF_SLOTS + 1  # stuff + one "things" class
    assert model.roi_head.bbox_head.fc_cls.out_features == 92  # 91 thing slots + background
    check_label_space(91, CocoPanopticDataset91.METAINFO, key="thing_classes")
    check_label_space(201, CocoPanopticDataset91.METAINFO, max_label=200)
    from mmdet.datasets import CocoPanopticDataset

    with pytest.raises(BridgeError, match="num_classes=91 but the dataset has 80 thing classes.*apply_coco91"):
        check_label_space(91, CocoPanopticDataset.METAINFO, key="thing_classes")


def test_apply_coco91_on_mask2former_panoptic_config() -> None:
    cfg = apply_coco91(_panoptic_cfg(MASK2FORMER))
    head = cfg.model.panoptic_head
    assert (head.num_things_classes, head.num_stuff_classes) == (91, 110)
    assert head.loss_cls.class_weight == [1.0] * 201 + [0.1]
    fusion = cfg.model.panoptic_fusion_head
    assert (fusion.num_things_classes, fusion.num_stuff_classes) == (91, 110)
    assert [m.type for m in cfg.val_evaluator] == ["CocoPanopticMetric91", "CocoMetric91"]
    cfg.train_dataloader.dataset = dict(
        type="ConcatDataset", datasets=[dict(type="CocoPanopticDataset"), dict(type="CocoDataset")]
    )
    with pytest.raises(BridgeError, match="mix instances and panoptic"):
        apply_coco91(cfg)


def test_panoptic_fpn_trains_on_category_ids(coco_root: Path, tmp_path: Path) -> None:
    """mmengine's Runner trains PanopticFPN (apply_coco91) 2 iterations on CocoPanopticDataset91; the check
    hook passes and the recorded batch carries the category ids as thing labels and in the semantic map."""
    from mmengine.runner import Runner

    from bridge import open_run
    from bridge.coco.onesample import OneSampleConfig, prepare_split

    onesample = OneSampleConfig.create(coco_root, None, tmp_path / "cache")
    cfg = small_mmdet_train_config(
        PANOPTIC_FPN,
        onesample,
        epochs=2,
        work_dir=str(tmp_path / "work"),
        task="panoptic",
        hooks=[dict(type="BridgeRecordHook", run_dir=str(tmp_path / "run"), iterations=[0, 1])],
    )
    apply_coco91(cfg)
    assert [hook["type"] for hook in cfg.custom_hooks] == ["BridgeRecordHook", "LabelSpaceCheckHook"]
    Runner.from_cfg(cfg).train()

    segments = json.loads(prepare_split(onesample, "train").panoptic_json.read_text())["annotations"][0][
        "segments_info"
    ]
    for step in (0, 1):
        sample = open_run(tmp_path / "run").get("batch", step=step, kind="batch")["data_samples"][0]["data"]
        assert sorted(sample["gt_instances"]["data"]["labels"].tolist()) == sorted(
            s["category_id"] for s in segments if s["category_id"] < NUM_THING_SLOTS
        )
        painted = set(torch.unique(sample["gt_sem_seg"]["data"]["sem_seg"]).tolist()) - {255}
        assert painted == {s["category_id"] for s in segments}


def test_cli_coco91_config_runs_mmdet_test_loop(coco_root: Path, tmp_path: Path) -> None:
    """``python -m mmdet_side.config --coco91`` writes a config whose test loop (random PanopticFPN weights)
    runs through CocoPanopticDataset91 and CocoPanopticMetric91."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    out = tmp_path / "cfg.py"
    result = subprocess.run(
        [sys.executable, "-m", "mmdet_side.config", "--base", PANOPTIC_FPN, "-o", str(out), "--coco91"],
        env=bridge_env(coco_root, tmp_path / "cache"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    cfg = Config.fromfile(str(out))
    assert cfg.test_dataloader.dataset.type == "CocoPanopticDataset91"
    assert cfg.test_evaluator.type == "CocoPanopticMetric91" and cfg.model.semantic_head.num_stuff_classes == 110
    assert cfg.custom_imports.imports == ["mmdet_side"] and cfg.custom_hooks == [
        dict(type="BridgeSaveWeightsHook"),
        dict(type="LabelSpaceCheckHook"),
    ]
    for transform in cfg.test_dataloader.dataset.pipeline:
        if transform["type"] == "Resize":
            transform["scale"] = (160, 96)
    cfg.model.backbone.init_cfg = None
    cfg.work_dir = str(tmp_path / "work")
    metrics = Runner.from_cfg(cfg).test()
    assert 0.0 <= metrics["coco_panoptic/PQ"] <= 100.0


def test_metric91_leaves_no_exception_when_refused_nor_at_exit(tmp_path: Path) -> None:
    """A metric refused in ``__init__`` and one alive at interpreter exit clean up silently (mmdet's ``__del__``
    would print ``Exception ignored ... AttributeError``), and the metric's temporary directory is gone."""
    script = (
        "import mmdet_side.coco91_panoptic as m\n"
        "try:\n    m.CocoPanopticMetric91(classwise=True)\nexcept m.BridgeError:\n    pass\n"
        "metric = m.CocoPanopticMetric91(nproc=1)\nprint(metric.tmp_dir.name)\n"
    )
    env = bridge_env(tmp_path / "coco", tmp_path / "cache")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
    tmp_dir = Path(done.stdout.strip().splitlines()[-1])
    assert tmp_dir.name.startswith("tmp") and not tmp_dir.exists()
