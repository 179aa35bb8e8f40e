"""Evaluator metadata: both real frameworks export to the normalized JSON, the diff names what differs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.coco.onesample import OneSampleConfig
from bridge.coco.synthetic import write_synthetic_coco
from bridge.meta import MetadataError, diff_metadata, load_metadata, validate_metadata, write_metadata

REPO = Path(__file__).resolve().parents[1]
D2_NAME = "coco_2017_val_panoptic_onesample_with_sem_seg"
MMDET_BASE = "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py"


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Both sides exported from one synthetic two-image COCO root (real detectron2 and mmdet)."""
    from d2_side.datasets import register_onesample
    from d2_side.meta import export_d2_metadata
    from mmdet_side.config import write_config
    from mmdet_side.meta import export_mmdet_metadata

    tmp = tmp_path_factory.mktemp("meta")
    write_synthetic_coco(tmp / "coco", num_images=2)
    config = OneSampleConfig.create(tmp / "coco", None, tmp / "cache")
    register_onesample(config)
    d2 = export_d2_metadata(D2_NAME)
    cfg_path = write_config(MMDET_BASE, tmp / "cfg.py", config)
    mm = export_mmdet_metadata(cfg_path)
    d2_json = write_metadata(d2, tmp / "d2.json")
    mm_json = write_metadata(mm, tmp / "mmdet.json")
    return {"tmp": tmp, "d2": d2, "mmdet": mm, "d2_json": d2_json, "mmdet_json": mm_json}


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run(
        [sys.executable, "-m", "bridge.meta", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_d2_export_is_normalized(exports: dict) -> None:
    d2 = exports["d2"]
    assert d2["framework"] == "detectron2" and d2["source"] == D2_NAME
    assert len(d2["classes"]) == 133 and sum(d2["isthing"]) == 80
    assert d2["classes"][0] == "person" and d2["isthing"][0] is True
    assert d2["dataset_id_to_label"]["1"] == 0 and d2["dataset_id_to_label"]["92"] == 80
    assert d2["raw"]["num_stuff_classes"] == 133 and d2["raw"]["num_thing_classes"] == 80
    assert d2["evaluator"]["max_dets"] == [1, 10, 100]
    assert d2["evaluator"]["drops_zero_area_segments"] is False
    assert d2["void_label"] is None and d2["ignore_label"] == 255 and d2["label_divisor"] == 1000
    assert d2["colors"] is not None and len(d2["colors"]) == 133
    assert load_metadata(exports["d2_json"]) == d2


def test_mmdet_export_is_normalized(exports: dict) -> None:
    mm = exports["mmdet"]
    assert mm["framework"] == "mmdet" and mm["evaluator"]["type"] == "CocoPanopticMetric"
    assert len(mm["classes"]) == 133 and sum(mm["isthing"]) == 80
    assert mm["raw"]["num_stuff_classes"] == 53
    assert mm["evaluator"]["max_dets"] == [100, 300, 1000]
    assert mm["evaluator"]["drops_zero_area_segments"] is True
    assert mm["void_label"] == 133 and mm["label_divisor"] == 1000
    assert len(mm["dataset_id_to_label"]) == 133 and mm["dataset_id_to_label"]["200"] == 132


def test_diff_finds_known_differences(exports: dict) -> None:
    diffs = {d.field: d for d in diff_metadata(exports["d2"], exports["mmdet"])}
    assert diffs["evaluator.max_dets"].a_value == [1, 10, 100]
    assert diffs["evaluator.max_dets"].b_value == [100, 300, 1000]
    assert diffs["raw.num_stuff_classes"].sentence == "stuff classes: detectron2 has 133 names where mmdet has 53"
    assert (diffs["void_label"].a_value, diffs["void_label"].b_value) == (None, 133)
    assert diffs["evaluator.drops_zero_area_segments"].b_value is True
    # Same 133 names, same order, same id map: the label spaces themselves agree.
    assert not {"classes.length", "classes.names", "classes.order", "isthing", "dataset_id_to_label"} & set(diffs)
    assert "evaluator.type" not in diffs


def test_cli_exit_codes(exports: dict) -> None:
    different = _cli(str(exports["d2_json"]), str(exports["mmdet_json"]), "--plain")
    assert different.returncode == 1, different.stderr
    assert "max_dets" in different.stdout and "133 names where mmdet has 53" in different.stdout
    table = _cli(str(exports["d2_json"]), str(exports["mmdet_json"]))
    assert table.returncode == 1 and "max_dets" in table.stdout
    same = _cli(str(exports["d2_json"]), str(exports["d2_json"]))
    assert same.returncode == 0, same.stdout + same.stderr


def test_cli_bad_input(exports: dict) -> None:
    tmp = exports["tmp"]
    missing = _cli(str(tmp / "nope.json"), str(exports["d2_json"]))
    (tmp / "bad.json").write_text("{not json")
    not_json = _cli(str(tmp / "bad.json"), str(exports["d2_json"]))
    partial = dict(exports["d2"])
    del partial["classes"]
    (tmp / "partial.json").write_text(json.dumps(partial))
    no_keys = _cli(str(exports["d2_json"]), str(tmp / "partial.json"))
    for result, line in (
        (missing, f"{tmp / 'nope.json'}: no such file"),
        (not_json, f"{tmp / 'bad.json'}: not JSON (Expecting property name enclosed in double quotes at line 1)"),
        (no_keys, f"{tmp / 'partial.json'}: missing required key(s) classes"),
    ):
        assert (result.returncode, result.stderr) == (2, f"error: {line}\n")


def test_changed_class_order_and_split_are_named(exports: dict) -> None:
    a = exports["mmdet"]
    b = json.loads(json.dumps(a))
    b["classes"][0], b["classes"][1] = b["classes"][1], b["classes"][0]
    b["isthing"][0] = False
    fields = {d.field for d in diff_metadata(a, b)}
    assert fields == {"classes.order", "isthing"}
    with pytest.raises(
        MetadataError,
        match=r"^metadata: missing required key\(s\) source, classes, isthing, "
        r"dataset_id_to_label, colors, void_label, ignore_label, label_divisor, "
        r"evaluator, raw$",
    ):
        validate_metadata({"framework": "x"})


def test_bridge_meta_is_framework_free() -> None:
    code = (
        "import sys, bridge.meta; bad = [m for m in ('detectron2', 'mmdet', 'mmengine', 'mmcv') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_exporter_clis(exports: dict) -> None:
    tmp = exports["tmp"]
    env = dict(
        os.environ,
        BRIDGE_COCO_ROOT=str(tmp / "coco"),
        BRIDGE_CACHE_DIR=str(tmp / "cache"),
        PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    )
    env.pop("BRIDGE_TRAIN_IMAGE_IDS", None)
    env.pop("BRIDGE_VAL_IMAGE_IDS", None)
    d2 = subprocess.run(
        [sys.executable, "-m", "d2_side.meta", D2_NAME, "-o", str(tmp / "cli_d2.json")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert d2.returncode == 0, d2.stderr
    assert load_metadata(tmp / "cli_d2.json") == exports["d2"]
    mm = subprocess.run(
        [sys.executable, "-m", "mmdet_side.meta", str(tmp / "cfg.py"), "-o", str(tmp / "cli_mm.json")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert mm.returncode == 0, mm.stderr
    assert load_metadata(tmp / "cli_mm.json")["classes"] == exports["mmdet"]["classes"]
    bad = subprocess.run(
        [sys.executable, "-m", "mmdet_side.meta", str(tmp / "nope.py"), "-o", str(tmp / "x.json")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
