"""Init comparison of the two real PanopticFPN R50s, each built from its config with a seed, after the
`d2-panoptic-fpn-to-mmdet` name mapping: it finds the real differences of the shipped initialisations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

D2_CONFIG = "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"
MMDET_CONFIG = "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py"


def initcheck(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bridge.initcheck *args`` from the repository root."""
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "bridge.initcheck", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_initcheck_from_configs_finds_zero_init_residual_and_frozen_bn_eps(tmp_path: Path) -> None:
    report = tmp_path / "init.json"
    check = initcheck(
        D2_CONFIG, MMDET_CONFIG, "--preset", "d2-panoptic-fpn-to-mmdet", "--seed", "0", "--report", str(report)
    )
    assert check.returncode == 1, (check.stdout + check.stderr)[-3000:]
    data = json.loads(report.read_text())
    rows = {row["key"]: row for row in data["rows"]}
    # mmdet's ResNet zero-initialises the last BN of each residual branch (zero_init_residual=True)
    assert rows["backbone.layer1.0.bn3.weight"]["verdict"] == "different-distribution"
    assert rows["backbone.layer1.0.bn3.weight"]["b"]["zeros"] == 1.0
    # detectron2's FrozenBatchNorm2d starts running_var at 1 - eps, mmdet's BN at 1
    assert rows["backbone.bn1.running_var"]["verdict"] == "different-distribution"
    # same initialiser on both sides, different random draws
    assert rows["backbone.layer1.0.conv1.weight"]["verdict"] == "same-distribution"
    assert rows["rpn_head.rpn_conv.bias"]["verdict"] == "equal"
    # the preset's num_batches_tracked have no detectron2 value: listed apart, not compared
    assert len(data["added"]) == 53 and all(k.endswith(".num_batches_tracked") for k in data["added"])
    assert not [k for k in rows if k.endswith("num_batches_tracked")]
    assert len(rows) == 383 - 53 and data["seed"] == 0
    # the terminal summary is folded like the converter's
    assert "backbone.layer1.{0..2}.bn3.weight" in check.stdout
    assert "added by the rules, not compared: backbone.bn1.num_batches_tracked" in check.stdout


def test_initcheck_same_config_and_seed_is_equal(tmp_path: Path) -> None:
    report = tmp_path / "same.json"
    check = initcheck(D2_CONFIG, D2_CONFIG, "--seed", "3", "--report", str(report))
    assert check.returncode == 0, (check.stdout + check.stderr)[-3000:]
    assert {row["verdict"] for row in json.loads(report.read_text())["rows"]} == {"equal"}


def test_initcheck_bad_sources_exit_2(tmp_path: Path) -> None:
    for a, needle in (
        (str(tmp_path / "notes.txt"), "neither a state-dict file"),
        ("COCO-Nothing/absent.yaml", "COCO-Nothing/absent.yaml: building the detectron2 model"),
        ("mmdet::no_such/config.py", "mmdet::no_such/config.py: building the mmdet model"),
    ):
        check = initcheck(a, MMDET_CONFIG)
        assert check.returncode == 2, check.stdout + check.stderr
        assert check.stderr.startswith("error: ") and needle in check.stderr, check.stderr
        assert len(check.stderr.strip().splitlines()) == 1
