"""detectron2's own tools/train_net.py, unchanged but for `import d2_side.register`, on a one-image root.

These are the runs a user makes; each one would fail again if a fix described in docs/STACK.md regressed
(_C version queries, COCOeval fallback, numpy 2 aliases, tensorboard)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import bridge_env, detectron2_tools_dir

# Random weights: ResNet-50 with identity FrozenBN grows activations ~1e4-fold, so the RPN's box deltas clip most
# proposals to empty boxes and, for some seeds, no detection is left to evaluate ("No predictions from the model!").
# The network is positively homogeneous (zero biases), so a large PIXEL_STD scales every feature down and keeps
# hundreds of proposals whatever the seed; SEED makes each run repeatable.
SMALL = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.WEIGHTS",
    "",
    "SEED",
    "0",
    "MODEL.PIXEL_STD",
    "[1000.0, 1000.0, 1000.0]",
    "INPUT.MIN_SIZE_TRAIN",
    "(96,)",
    "INPUT.MAX_SIZE_TRAIN",
    "160",
    "INPUT.MIN_SIZE_TEST",
    "96",
    "INPUT.MAX_SIZE_TEST",
    "160",
    "DATALOADER.NUM_WORKERS",
    "0",
    "SOLVER.IMS_PER_BATCH",
    "1",
    "SOLVER.MAX_ITER",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    "1000",
    "TEST.EVAL_PERIOD",
    "0",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "0.0",
]
MASK_RCNN = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
PANOPTIC_FPN = "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"


@pytest.fixture(scope="module")
def train_net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """detectron2's train_net.py with the one added line."""
    source = (detectron2_tools_dir() / "train_net.py").read_text()
    anchor = "import detectron2.utils.comm as comm\n"
    assert anchor in source
    script = tmp_path_factory.mktemp("tools") / "train_net.py"
    script.write_text(source.replace(anchor, "import d2_side.register\n" + anchor, 1))
    return script


def run_train_net(
    train_net: Path, config: str, train: str, test: str, out: Path, coco_root: Path, eval_only: bool
) -> str:
    """Run train_net.py as a user would and return its output; fail with the output if it exits non-zero."""
    from detectron2 import model_zoo

    args = [sys.executable, str(train_net), "--config-file", model_zoo.get_config_file(config)]
    if eval_only:
        args.append("--eval-only")
    args += SMALL + ["OUTPUT_DIR", str(out), "DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{test}',)"]
    result = subprocess.run(args, env=bridge_env(coco_root, out / "cache"), capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def test_mask_rcnn_eval_only_on_onesample(train_net: Path, coco_root: Path, tmp_path: Path) -> None:
    output = run_train_net(
        train_net,
        MASK_RCNN,
        "coco_2017_train_onesample",
        "coco_2017_val_onesample",
        tmp_path,
        coco_root,
        eval_only=True,
    )
    assert "official COCOeval" in output and "No predictions from the model" not in output
    assert "Evaluation results for bbox" in output and "Evaluation results for segm" in output


def test_panoptic_fpn_eval_only_on_with_sem_seg(train_net: Path, coco_root: Path, tmp_path: Path) -> None:
    output = run_train_net(
        train_net,
        PANOPTIC_FPN,
        "coco_2017_train_panoptic_onesample_separated",
        "coco_2017_val_panoptic_onesample_with_sem_seg",
        tmp_path,
        coco_root,
        eval_only=True,
    )
    assert "Panoptic Evaluation Results" in output
    assert "mIoU" in output  # SemSegEvaluator ran (it used np.int / np.float before the patch)


def test_mask_rcnn_trains_two_iterations(train_net: Path, coco_root: Path, tmp_path: Path) -> None:
    output = run_train_net(
        train_net,
        MASK_RCNN,
        "coco_2017_train_onesample",
        "coco_2017_val_onesample",
        tmp_path,
        coco_root,
        eval_only=False,
    )
    assert "iter: 1" in output and "total_loss" in output
    assert "category" in output  # the class histogram of the training loader (np.int before the patch)
    assert list(tmp_path.glob("events.out.tfevents.*"))  # tensorboard writer


def test_panoptic_fpn_trains_on_separated_then_evaluates(train_net: Path, coco_root: Path, tmp_path: Path) -> None:
    output = run_train_net(
        train_net,
        PANOPTIC_FPN,
        "coco_2017_train_panoptic_onesample_separated",
        "coco_2017_val_panoptic_onesample_separated",
        tmp_path,
        coco_root,
        eval_only=False,
    )
    assert "total_loss" in output
    assert "Panoptic Evaluation Results" in output
