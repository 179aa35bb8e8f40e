"""The converter against the real frameworks: an mmdet config as ``--target`` (manifest + strict load through
``python -m mmdet_side.target``), and the ``d2-resnet-to-mmdet`` preset on a real detectron2 ResNet whose
features must agree with mmdet's caffe-style ResNet loaded with the converted weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bridge.convert import convert_state_dict, load_checkpoint
from d2_side.init_state import init_state_dict
from tests.conftest import REPO

D2_CONFIG = "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"
MMDET_CONFIG = "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py"


def convert(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bridge.convert *args`` from the repository root."""
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "bridge.convert", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def d2_panoptic_fpn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """detectron2's PanopticFPN R50 (seed 0, CPU) saved the way detectron2's trainer saves it: ``{'model': ...}``."""
    path = tmp_path_factory.mktemp("d2") / "model_final.pth"
    torch.save({"model": init_state_dict(D2_CONFIG, seed=0), "iteration": 0}, path)
    return path


def test_mmdet_config_target_converts_and_loads_strict(d2_panoptic_fpn: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "mmdet.pth", tmp_path / "report.json"
    proc = convert(
        str(d2_panoptic_fpn),
        "-o",
        str(out),
        "--preset",
        "d2-panoptic-fpn-to-mmdet",
        "--target",
        MMDET_CONFIG,
        "--report",
        str(report),
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    data = json.loads(report.read_text())
    assert data["ok"] and data["counts"]["missing"] == 0 and data["counts"]["unexpected"] == 0
    assert data["strict_check"] == {"ok": True, "missing": [], "unexpected": [], "size_mismatch": [], "error": None}
    assert data["meta"]["target"] == MMDET_CONFIG and data["counts"]["converted"] == 383 - 53
    assert "strict load into the target model: ok" in proc.stdout
    assert data["unused_rules"] == [] and "matched no key" not in proc.stdout
    assert len(load_checkpoint(out)) == 383  # every key of mmdet's model, num_batches_tracked added


def test_mmdet_config_target_failing_strict_load_exits_1(d2_panoptic_fpn: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    proc = convert(
        str(d2_panoptic_fpn),
        "-o",
        str(tmp_path / "backbone_only.pth"),
        "--preset",
        "d2-resnet-to-mmdet",
        "--target",
        MMDET_CONFIG,
        "--report",
        str(report),
    )
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-4000:]
    check = json.loads(report.read_text())["strict_check"]
    assert not check["ok"] and "Error(s) in loading state_dict" in check["error"]
    assert "neck.lateral_convs.0.conv.weight" in check["missing"]
    assert "backbone.fpn_lateral2.weight" in check["unexpected"]
    assert "strict load into the target model: FAILED" in proc.stdout


def test_mmdet_config_target_bad_config_exit_2(d2_panoptic_fpn: Path, tmp_path: Path) -> None:
    for target in ("mmdet::no_such/config.py", str(tmp_path / "absent.py")):
        proc = convert(
            str(d2_panoptic_fpn), "-o", str(tmp_path / "o.pth"), "--preset", "d2-resnet-to-mmdet", "--target", target
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.startswith("error: target ") and target in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert not (tmp_path / "o.pth").exists()


def _randomise_frozen_bn(module: torch.nn.Module, seed: int) -> None:
    """Random affine parameters and statistics for every FrozenBN (detectron2 initialises them to 1, 0, 0, 1-eps)."""
    gen = torch.Generator().manual_seed(seed)
    for name, buffer in module.named_buffers():
        if ".norm." not in f".{name}":
            continue
        values = torch.rand(buffer.shape, generator=gen)
        buffer.copy_(values * 0.5 + 0.75 if name.endswith(("weight", "running_var")) else values * 0.2 - 0.1)


def test_d2_resnet_bare_backbone_to_mmdet_caffe_resnet_same_features() -> None:
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone import build_resnet_backbone
    from mmdet.registry import MODELS

    from mmdet_side.target import load_config

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(D2_CONFIG))
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    torch.manual_seed(0)
    d2_resnet = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    _randomise_frozen_bn(d2_resnet, seed=1)
    source = d2_resnet.state_dict()
    assert "stem.conv1.weight" in source and "res2.0.conv1.norm.running_var" in source  # bare: no backbone.

    # mmdet's ResNet as the preset's mmdet config has it, made caffe-style like detectron2's (stride on the 1x1)
    backbone_cfg = load_config(MMDET_CONFIG).model.backbone
    backbone_cfg.update(style="caffe", init_cfg=None, norm_cfg=dict(type="BN", requires_grad=False))
    mm_resnet = MODELS.build(backbone_cfg)
    mm_resnet.eval()  # mmdet's ResNet.train() returns None: no chaining

    result = convert_state_dict(source, "d2-resnet-to-mmdet")
    assert result.unused_rules == [] and len(result.added) == 53
    mm_resnet.load_state_dict(result.state_dict, strict=True)

    image = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        d2_features = d2_resnet(image)
        mm_features = mm_resnet(image)
    for level, mm_feature in zip(("res2", "res3", "res4", "res5"), mm_features):
        d2_feature = d2_features[level]
        assert d2_feature.shape == mm_feature.shape and d2_feature.abs().max() > 0.1, level
        torch.testing.assert_close(mm_feature, d2_feature, rtol=1e-4, atol=1e-4 * float(d2_feature.abs().max()))


def test_missing_framework_is_named_from_the_subprocess_stderr() -> None:
    from bridge.frameworks import missing_framework

    assert (
        missing_framework("mmdet_side.target", ["Traceback ...", "ModuleNotFoundError: No module named 'mmdet'"])
        == "mmdet"
    )
    assert (
        missing_framework("mmdet_side.target", ["ModuleNotFoundError: No module named 'mmengine'"])
        == "mmdet (module 'mmengine')"
    )
    assert (
        missing_framework("d2_side.init_state", ["ModuleNotFoundError: No module named 'detectron2'"]) == "detectron2"
    )
    assert missing_framework("mmdet_side.target", ["ModuleNotFoundError: No module named 'mmdet.nope'"]) is None
    assert missing_framework("mmdet_side.target", ["error: x.py: no such mmdet config file"]) is None
