"""Init comparison of the two real PanopticFPN R50s, each built from its config with a seed, after the
`d2-panoptic-fpn-to-mmdet` name mapping: it finds the real differences of the shipped initialisations."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_initcheck_finds_mmdet_zero_init_residual_and_frozen_bn_eps(tmp_path: Path) -> None:
    d2_file, mm_file, report = tmp_path / "d2.safetensors", tmp_path / "mm.safetensors", tmp_path / "init.json"
    for command in (["d2_side.init_state", "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml", "-o", str(d2_file)],
                    ["mmdet_side.init_state", "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py", "-o", str(mm_file)]):
        built = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, timeout=300)
        assert built.returncode == 0, built.stderr[-3000:]
    check = subprocess.run([sys.executable, "-m", "bridge.initcheck", str(d2_file), str(mm_file),
                            "--preset", "d2-panoptic-fpn-to-mmdet", "--report", str(report)],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 1, check.stderr[-3000:]
    rows = {row["key"]: row for row in json.loads(report.read_text())["rows"]}
    # mmdet's ResNet zero-initialises the last BN of each residual branch (zero_init_residual=True)
    assert rows["backbone.layer1.0.bn3.weight"]["verdict"] == "different-distribution"
    assert rows["backbone.layer1.0.bn3.weight"]["b"]["zeros"] == 1.0
    # detectron2's FrozenBatchNorm2d starts running_var at 1 - eps, mmdet's BN at 1
    assert rows["backbone.bn1.running_var"]["verdict"] == "different-distribution"
    # same initialiser on both sides, different random draws
    assert rows["backbone.layer1.0.conv1.weight"]["verdict"] == "same-distribution"
    assert rows["rpn_head.rpn_conv.bias"]["verdict"] == "equal"
