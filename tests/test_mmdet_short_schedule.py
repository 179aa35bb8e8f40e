"""The one-sample config from ``python -m mmdet_side.config`` is a short run: mmdet's own tools/train.py trains
``--iters`` iterations with a log line each and no download, and tools/test.py loads the weights-only
checkpoint that BridgeSaveWeightsHook wrote (torch's default weights_only=True load)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bridge.coco.onesample import OneSampleConfig
from tests.conftest import REPO, bridge_env

FASTER_RCNN = "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"


def _tool(name: str) -> str:
    import mmdet

    return str(Path(mmdet.__file__).parent / ".mim" / "tools" / f"{name}.py")


def test_config_cli_short_schedule_trains_then_tests_with_saved_weights(
    onesample_config: OneSampleConfig, coco_root: Path, tmp_path: Path
) -> None:
    env = bridge_env(coco_root, tmp_path / "cache")
    env.update(PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", TORCH_HOME=str(tmp_path / "torch"))
    cfg = tmp_path / "cfg.py"
    write = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmdet_side.config",
            "--base",
            FASTER_RCNN,
            "--task",
            "detection",
            "-o",
            str(cfg),
            "--iters",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert write.returncode == 0, write.stderr[-3000:]
    text = cfg.read_text()
    assert "IterBasedTrainLoop" in text and "BridgeSaveWeightsHook" in text and "'interval': 1" in text
    work = tmp_path / "work"
    train = subprocess.run(
        [sys.executable, _tool("train"), str(cfg), "--work-dir", str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = train.stdout + train.stderr
    assert train.returncode == 0, output[-6000:]
    assert "Iter(train) [1/2]" in output and "Iter(train) [2/2]" in output
    assert "torchvision://" not in output and not (tmp_path / "torch").exists()  # nothing downloaded
    weights = work / "weights_only.pth"
    assert weights.is_file()
    test = subprocess.run(
        [sys.executable, _tool("test"), str(cfg), str(weights), "--work-dir", str(tmp_path / "t")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert test.returncode == 0, (test.stdout + test.stderr)[-6000:]
    assert "Iter(test) [1/1]" in test.stdout + test.stderr
