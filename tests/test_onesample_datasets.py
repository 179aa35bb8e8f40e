"""The one-sample splits on both sides: detectron2 registration, mmdet config pieces, and both real
panoptic evaluators giving PQ = 100 when the subset's ground truth is fed back as the prediction."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bridge.coco.onesample import OneSampleConfig
from bridge.coco.semseg_png import read_panoptic_ids
from tests.conftest import SHARED_DATA, bridge_env, standard_root_from_shared

D2_NAMES = [
    "coco_2017_{}_onesample",
    "coco_2017_{}_panoptic_onesample",
    "coco_2017_{}_panoptic_onesample_with_sem_seg",
    "coco_2017_{}_panoptic_onesample_separated",
]


# The real COCO sample of ../shared/data joins the synthetic set when BRIDGE_SHARED names it (CI has it).
ROOTS = ["synthetic"] + (["shared"] if SHARED_DATA else [])


@pytest.fixture(scope="module", params=ROOTS)
def onesample(
    request: pytest.FixtureRequest, onesample_config: OneSampleConfig, tmp_path_factory: pytest.TempPathFactory
) -> OneSampleConfig:
    """The one-sample configuration over the synthetic root, then over the real COCO sample."""
    if request.param == "synthetic":
        return onesample_config
    root = standard_root_from_shared(Path(SHARED_DATA), tmp_path_factory.mktemp("shared_coco"))
    return OneSampleConfig.create(root, None, tmp_path_factory.mktemp("shared_cache"))


@pytest.fixture(scope="module")
def registered(onesample: OneSampleConfig) -> dict:
    from d2_side.datasets import register_onesample

    return register_onesample(onesample)


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("pattern", D2_NAMES)
def test_every_registered_name_returns_the_chosen_image(registered: dict, split: str, pattern: str) -> None:
    from detectron2.data import DatasetCatalog

    records = DatasetCatalog.get(pattern.format(split))
    assert [record["image_id"] for record in records] == list(registered[split].image_ids)
    assert all(Path(record["file_name"]).exists() for record in records)


def test_chosen_ids_come_from_the_environment(coco_root: Path, tmp_path: Path) -> None:
    env = bridge_env(coco_root, tmp_path) | {"BRIDGE_VAL_IMAGE_IDS": "102,103"}
    code = (
        "import d2_side.register, d2_side.register\n"
        "from detectron2.data import DatasetCatalog\n"
        "print([r['image_id'] for r in DatasetCatalog.get('coco_2017_val_panoptic_onesample_with_sem_seg')])"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[102, 103]"


def test_missing_root_names_the_variable(tmp_path: Path) -> None:
    env = bridge_env(tmp_path / "nowhere", tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", "import d2_side.register"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "BRIDGE_COCO_ROOT" in result.stderr and "nowhere" in result.stderr
    assert "Traceback" not in result.stderr


def test_with_sem_seg_metadata_is_mask_dino_style(registered: dict) -> None:
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get("coco_2017_val_panoptic_onesample_with_sem_seg")
    assert len(meta.thing_classes) == 80 and len(meta.stuff_classes) == 133
    assert len(meta.stuff_dataset_id_to_contiguous_id) == 133
    assert (meta.ignore_label, meta.label_divisor) == (255, 1000)
    semantic = np.asarray(Image.open(next(Path(meta.sem_seg_root).glob("*.png"))))
    assert semantic.dtype == np.uint8 and set(np.unique(semantic)) <= set(range(133)) | {255}
    for name in ("coco_2017_val_panoptic_onesample", "coco_2017_val_panoptic_onesample_separated"):
        assert len(MetadataCatalog.get(name).thing_classes) == 80  # COCOEvaluator's assertion


def _ground_truth(split_files) -> tuple[dict, np.ndarray]:
    panoptic = json.loads(split_files.panoptic_json.read_bytes())
    annotation = panoptic["annotations"][0]
    ids = read_panoptic_ids(split_files.panoptic_root / annotation["file_name"])
    return panoptic, ids


def test_detectron2_panoptic_evaluator_gives_pq_100_on_ground_truth(registered: dict, tmp_path: Path) -> None:
    from detectron2.data import DatasetCatalog
    from detectron2.evaluation import COCOPanopticEvaluator

    name = "coco_2017_val_panoptic_onesample_with_sem_seg"
    record = DatasetCatalog.get(name)[0]
    _, ids = _ground_truth(registered["val"])
    segments = [
        {"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]} for s in record["segments_info"]
    ]
    evaluator = COCOPanopticEvaluator(name, str(tmp_path))
    evaluator.reset()
    evaluator.process(
        [{"file_name": record["file_name"], "image_id": record["image_id"]}],
        [{"panoptic_seg": (torch.from_numpy(ids.astype(np.int64)), segments)}],
    )
    results = evaluator.evaluate()
    assert results["panoptic_seg"]["PQ"] == pytest.approx(100.0)


def test_mmdet_panoptic_metric_gives_pq_100_on_ground_truth(onesample: OneSampleConfig) -> None:
    from mmdet.datasets import CocoPanopticDataset
    from mmdet.evaluation import CocoPanopticMetric

    from mmdet_side.config import onesample_overrides

    overrides = onesample_overrides(onesample)
    evaluator_cfg = dict(overrides["val_evaluator"])
    assert evaluator_cfg.pop("_delete_") is True  # replaces the base's evaluator, dict or list
    evaluator_cfg.pop("type")
    metric = CocoPanopticMetric(**evaluator_cfg)
    classes = list(CocoPanopticDataset.METAINFO["classes"])
    metric.dataset_meta = dict(CocoPanopticDataset.METAINFO)
    from bridge.coco.onesample import prepare_split

    split_files = prepare_split(onesample, "val")
    panoptic, ids = _ground_truth(split_files)
    names = {c["id"]: c["name"] for c in panoptic["categories"]}
    encoded = np.full(ids.shape, len(classes), dtype=np.int64)
    for instance, segment in enumerate(panoptic["annotations"][0]["segments_info"], start=1):
        label = classes.index(names[segment["category_id"]])
        encoded[ids == segment["id"]] = label + instance * 1000
    image = panoptic["images"][0]
    sample = {
        "img_id": image["id"],
        "img_path": str(split_files.image_root / image["file_name"]),
        "ori_shape": ids.shape,
        "pred_panoptic_seg": {"sem_seg": torch.from_numpy(encoded)[None]},
    }
    metric.process({}, [sample])
    results = metric.evaluate(size=1)
    assert results["coco_panoptic/PQ"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    "base",
    [
        "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py",
        "mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py",
    ],
)
def test_mmdet_config_file_loads_with_mmengine(base: str, onesample_config: OneSampleConfig, tmp_path: Path) -> None:
    """Also on Mask2Former's panoptic config, whose evaluators are a list ([CocoPanopticMetric, CocoMetric])."""
    from mmengine.config import Config

    from mmdet_side.config import write_config

    path = write_config(base, tmp_path / "cfg.py", onesample_config)
    cfg = Config.fromfile(str(path))
    assert cfg.train_dataloader.dataset.ann_file.endswith(".json")
    for name in ("val_evaluator", "test_evaluator"):
        assert Path(cfg[name].ann_file).exists() and cfg[name].type == "CocoPanopticMetric"
        assert "_delete_" not in cfg[name]
    assert cfg.train_dataloader.dataset.pipeline  # inherited from mmdet's config


def test_mmdet_config_cli_writes_a_config_or_names_the_bad_root(coco_root: Path, tmp_path: Path) -> None:
    base = ["--base", "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py", "--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "cfg.py"
    good = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmdet_side.config",
            *base,
            "-o",
            str(out),
            "--coco-root",
            str(coco_root),
            "--val-ids",
            "102",
            "--record-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert good.returncode == 0, good.stderr[-2000:]
    text = out.read_text()
    assert "subset_ids_102" in text and "BridgeRecordHook" in text
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmdet_side.config",
            *base,
            "-o",
            str(tmp_path / "x.py"),
            "--coco-root",
            str(tmp_path / "nowhere"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "nowhere" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x.py").exists()


def test_mmdet_config_cli_adds_bridge_hooks_to_the_base_config_own(coco_root: Path, tmp_path: Path) -> None:
    """A project config (like Mask DINO's port) has custom_imports and custom_hooks of its own: the written
    config keeps them and adds mmdet_side, the replay hook and the record hook; a bad base writes nothing."""
    from mmengine.config import Config

    project = tmp_path / "project.py"
    project.write_text(
        "_base_ = 'mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py'\n"
        "custom_imports = dict(imports=['mmdet_side.coco91'], allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='EMAHook', momentum=0.0002)]\n"
    )
    out = tmp_path / "cfg.py"
    args = [
        sys.executable,
        "-m",
        "mmdet_side.config",
        "--base",
        str(project),
        "-o",
        str(out),
        "--coco-root",
        str(coco_root),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--record-dir",
        str(tmp_path / "run"),
        "--replay-dir",
        str(tmp_path / "d2"),
        "--input-format",
        "RGB",
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    cfg = Config.fromfile(str(out), import_custom_modules=False)
    assert cfg.custom_imports.imports == ["mmdet_side.coco91", "mmdet_side"]
    assert [hook["type"] for hook in cfg.custom_hooks] == [
        "EMAHook",
        "BridgeReplayHook",
        "BridgeRecordHook",
        "BridgeSaveWeightsHook",
    ]
    assert cfg.custom_hooks[1] == dict(type="BridgeReplayHook", input_format="RGB", run_dir=str(tmp_path / "d2"))
    missing = [
        sys.executable,
        "-m",
        "mmdet_side.config",
        "--base",
        str(tmp_path / "nowhere.py"),
        "-o",
        str(tmp_path / "x.py"),
        "--coco-root",
        str(coco_root),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--record-dir",
        str(tmp_path / "run"),
    ]
    bad = subprocess.run(missing, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "nowhere.py" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x.py").exists()
