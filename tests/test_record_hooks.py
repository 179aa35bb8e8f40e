"""Recording on both sides with the real trainers: detectron2's SimpleTrainer with RecordHook, and
mmdet's own tools/train.py + tools/test.py with BridgeRecordHook switched on from the config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bridge import Recorder, open_run
from bridge.coco.onesample import OneSampleConfig
from bridge.panoptic import from_record
from tests.conftest import REPO, record_d2_mask_rcnn


def test_detectron2_record_hook_records_batch_losses_activations_grads(
    onesample_config: OneSampleConfig, tmp_path: Path
) -> None:
    record_d2_mask_rcnn(onesample_config, tmp_path / "run")
    run = open_run(tmp_path / "run")
    assert run.steps() == [0, 1] and run.meta["framework"] == "detectron2"
    for step in (0, 1):
        batch = run.get("batch", step=step, kind="batch")
        assert batch[0]["image"].dtype == torch.uint8 and batch[0]["image"].shape[0] == 3
        assert batch[0]["instances"]["gt_boxes"].shape[1] == 4
        losses = run.get("losses", step=step, kind="loss")
        assert {"loss_cls", "loss_mask", "loss_rpn_cls"} <= set(losses)
        assert run.get("backbone.bottom_up.res2", step=step, kind="activation").shape[1] == 256
        grad = run.get("backbone.bottom_up.res5.2.conv3.weight", step=step, kind="grad")
        assert grad.shape == (2048, 512, 1, 1)


def _mmdet_tool(name: str) -> str:
    import mmdet

    return str(Path(mmdet.__file__).parent / ".mim" / "tools" / f"{name}.py")


@pytest.fixture(scope="module")
def small_mmdet_config(onesample_config: OneSampleConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mmdet's PanopticFPN config on the one-sample subset, with the record hook and small images."""
    from mmengine.config import Config

    from mmdet_side.config import write_config

    work = tmp_path_factory.mktemp("mmdet_cfg")
    record_hook = dict(
        type="BridgeRecordHook",
        run_dir=str(work / "run_train"),
        iterations=[0, 1],
        activations=["backbone.layer1"],
        eval_run_dir=str(work / "run_eval"),
        inputs=["neck.fpn_convs.0.conv"],
        functions={"rpn_decode": "rpn_head.bbox_coder.decode"},
    )
    path = write_config(
        "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py", work / "base.py", onesample_config, hooks=[record_hook]
    )
    cfg = Config.fromfile(str(path))
    for pipeline in (
        cfg.train_dataloader.dataset.pipeline,
        cfg.val_dataloader.dataset.pipeline,
        cfg.test_dataloader.dataset.pipeline,
    ):
        for transform in pipeline:
            if transform["type"] == "Resize":
                transform["scale"] = (160, 96)
    cfg.model.backbone.init_cfg = None
    cfg.train_cfg.max_epochs = 2
    cfg.train_cfg.val_interval = 100
    cfg.train_cfg.val_begin = 100
    cfg.default_hooks.checkpoint.interval = 2
    out = work / "onesample_panoptic_fpn.py"
    cfg.dump(str(out))
    return out


def test_mmdet_tools_train_then_test_with_record_hook(small_mmdet_config: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    work_dir = tmp_path / "work"
    train = subprocess.run(
        [sys.executable, _mmdet_tool("train"), str(small_mmdet_config), "--work-dir", str(work_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert train.returncode == 0, (train.stdout + train.stderr)[-6000:]
    run = open_run(small_mmdet_config.parent / "run_train")
    assert run.steps() == [0, 1] and run.meta["framework"] == "mmdet"
    batch = run.get("batch", step=0, kind="batch")
    assert batch["inputs"].ndim == 4 and batch["inputs"].dtype == torch.float32  # normalised by the preprocessor
    assert batch["data_samples"][0]["metainfo"]["batch_input_shape"]
    losses = run.get("losses", step=1, kind="loss")
    assert {"loss", "loss_cls", "loss_bbox", "loss_mask"} <= set(losses)
    assert run.get("backbone.layer1", step=0, kind="activation").shape[1] == 256
    recorded = run.get("neck.fpn_convs.0.conv", step=0, kind="input")  # inputs=: the call's arguments and mode
    assert recorded["training"] is True and recorded["args"][0].shape[1] == 256 and recorded["kwargs"] == {}
    decoded = run.get("rpn_decode", step=0, kind="input")  # functions=: the RPN's proposal decoding
    assert decoded["function"] == "rpn_head.bbox_coder.decode" and set(decoded["kwargs"]) == {"max_shape"}
    assert run.get("rpn_decode", step=0, kind="activation").shape == decoded["args"][1].shape

    # torch >= 2.6 loads with weights_only=True by default, and mmengine 0.10.7 checkpoints carry its
    # HistoryBuffer in 'message_hub': keep only the weights (this checkpoint was made by this test).
    trained = torch.load(work_dir / "epoch_2.pth", map_location="cpu", weights_only=False)
    checkpoint = tmp_path / "weights_only.pth"
    torch.save({"state_dict": trained["state_dict"], "meta": {}}, checkpoint)
    test = subprocess.run(
        [
            sys.executable,
            _mmdet_tool("test"),
            str(small_mmdet_config),
            str(checkpoint),
            "--work-dir",
            str(tmp_path / "test"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = test.stdout + test.stderr
    assert test.returncode == 0, output[-6000:]
    assert "coco_panoptic/PQ" in output
    eval_run = open_run(small_mmdet_config.parent / "run_eval")
    predictions = eval_run.get("outputs", step=0, kind="output")
    assert predictions[0]["data"]["pred_panoptic_seg"]["data"]["sem_seg"].ndim == 3
    # next to the raw tensors, the prediction in the canonical panoptic form (bridge.panoptic)
    image_id = predictions[0]["metainfo"]["img_id"]
    canonical = from_record(eval_run.get(f"panoptic.{image_id}", step=0, kind="output"))
    assert canonical.category.shape == tuple(predictions[0]["metainfo"]["ori_shape"])
    assert eval_run.get("neck.fpn_convs.0.conv", step=0, kind="input")["training"] is False
    assert eval_run.get("rpn_decode", step=0, kind="input")["function"] == "rpn_head.bbox_coder.decode"


def test_seed_modules_line_up_random_sampling_across_runs(onesample_config: OneSampleConfig, tmp_path: Path) -> None:
    """Mask R-CNN's RPN and ROI heads sample anchors / proposals at random: two runs in different RNG states give
    different losses, and the same losses once RecordHook reseeds before those modules (seed_modules)."""
    from tests.conftest import record_d2_training

    def losses(name: str, draws: int, seed_modules: list[str]) -> dict:
        record_d2_training(
            onesample_config,
            tmp_path / name,
            "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
            "coco_2017_train_onesample",
            iterations=[0],
            seed_modules=seed_modules,
            extra_opts=["INPUT.RANDOM_FLIP", "none"],
            rng_draws_before_training=draws,
        )
        return open_run(tmp_path / name).get("losses", step=0, kind="loss")

    sampled = ["proposal_generator", "roi_heads"]
    unseeded = [losses("a", 1, []), losses("b", 2, [])]
    seeded = [losses("c", 1, sampled), losses("d", 2, sampled)]
    assert any(not torch.equal(unseeded[0][k], unseeded[1][k]) for k in unseeded[0])
    assert all(torch.equal(seeded[0][k], seeded[1][k]) for k in seeded[0])


def test_model_taps_seed_only_during_recorded_steps(tmp_path: Path) -> None:
    """A module that draws random numbers draws the same ones in every recorded step call, whatever the RNG
    state before; outside recorded steps the RNG is left alone."""
    from torch import nn

    from bridge.taps import ModelTaps

    class Noisy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.rand(3)

    model = nn.Sequential(Noisy())
    step: list[int | None] = [0]
    with Recorder(tmp_path / "run", framework="test") as recorder:
        taps = ModelTaps(model, recorder, lambda: step[0], seed_modules=["0"], seed=11)
        torch.rand(5)
        first = model(torch.zeros(3))
        torch.rand(7)
        assert torch.equal(model(torch.zeros(3)), first)
        step[0] = None
        assert not torch.equal(model(torch.zeros(3)), first)
        taps.remove()
