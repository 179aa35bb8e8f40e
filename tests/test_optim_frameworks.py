"""Optimizer parity on the real frameworks: detectron2's Mask R-CNN R50-FPN (model zoo, its SOLVER settings,
``build_optimizer`` + ``build_lr_scheduler``) against mmdet's caffe-style Mask R-CNN (``build_optim_wrapper`` +
its ``param_scheduler``), names paired through the ``d2-mask-rcnn-to-mmdet`` preset. The models are only built,
never run: the optimizer record needs nothing else."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from bridge import Recorder
from bridge.compare import compare_runs, write_html, write_json
from bridge.compare.__main__ import main as compare_main
from bridge.optim import OptimizerTap

D2_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
MMDET_CONFIG = "mmdet::mask_rcnn/mask-rcnn_r50-caffe_fpn_1x_coco.py"
PRESET = "d2-mask-rcnn-to-mmdet"
ITERATIONS = 4
#: detectron2 with trainable BN in the backbone (its default WEIGHT_DECAY_NORM 0 then matters) and the
#: warmup of mmdet's schedule_1x would be 1000 vs 500 iterations: both sides are configured alike here.
D2_OPTS = ["MODEL.RESNETS.NORM", "BN"]


@pytest.fixture(scope="module")
def d2_model() -> torch.nn.Module:
    """detectron2's Mask R-CNN R50-FPN with trainable BN in res3..res5 (CPU, built, not run)."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(D2_CONFIG))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *D2_OPTS])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.cfg = cfg
    return model


@pytest.fixture(scope="module")
def mmdet_model() -> tuple[torch.nn.Module, Any]:
    """mmdet's caffe-style Mask R-CNN with trainable BN (frozen stem and layer1, as detectron2's FREEZE_AT 2)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from mmdet_side.target import load_config

    register_all_modules()
    cfg = load_config(MMDET_CONFIG)
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.norm_cfg = dict(type="BN", requires_grad=True)
    return MODELS.build(cfg.model), cfg


def record_d2(model: torch.nn.Module, run_dir: Path, opts: Sequence[str] = ()) -> None:
    """Record detectron2's optimizer (built from the model's cfg plus ``opts``) over ITERATIONS iterations."""
    from detectron2.solver import build_lr_scheduler, build_optimizer

    from d2_side.optim import clip_setting, schedule_stepper

    cfg = model.cfg.clone()
    cfg.merge_from_list(list(opts))
    optimizer = build_optimizer(cfg, model)
    step = schedule_stepper(build_lr_scheduler(cfg, optimizer))
    with Recorder(run_dir, framework="detectron2") as recorder:
        tap = OptimizerTap(recorder, ITERATIONS)
        for iteration in range(ITERATIONS):
            tap.before_iteration(iteration, optimizer, model, clip_setting(optimizer))
            step()


def record_mmdet(
    built: tuple[torch.nn.Module, Any],
    run_dir: Path,
    *,
    paramwise_cfg: dict | None = None,
    warmup_end: int = 1001,
    clip_grad: dict | None = None,
) -> None:
    """Record mmdet's optim wrapper and param schedulers (mmdet's schedule_1x, LinearLR ``end=warmup_end``).

    mmengine's LinearLR reaches the full lr at iteration ``end - 1``, detectron2's warmup at ``WARMUP_ITERS``:
    detectron2's 1000 warmup iterations are ``end=1001`` in mmengine."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS

    from mmdet_side.optim import clip_setting, schedule_stepper

    model, cfg = built
    wrapper_cfg = cfg.optim_wrapper.copy()
    if paramwise_cfg is not None:
        wrapper_cfg["paramwise_cfg"] = paramwise_cfg
    if clip_grad is not None:
        wrapper_cfg["clip_grad"] = clip_grad
    wrapper = build_optim_wrapper(model, wrapper_cfg)
    schedulers = []
    for scheduler_cfg in cfg.param_scheduler:
        scheduler_cfg = dict(scheduler_cfg, optimizer=wrapper)
        if scheduler_cfg["type"] == "LinearLR":
            scheduler_cfg["end"] = warmup_end
        schedulers.append(PARAM_SCHEDULERS.build(scheduler_cfg))
    step = schedule_stepper(schedulers)
    with Recorder(run_dir, framework="mmdet") as recorder:
        tap = OptimizerTap(recorder, ITERATIONS)
        for iteration in range(ITERATIONS):
            tap.before_iteration(iteration, wrapper, model, clip_setting(wrapper))
            step()


ALIKE = dict(norm_decay_mult=0.0)  # detectron2's SOLVER.WEIGHT_DECAY_NORM is 0.0


def test_mask_rcnn_configured_alike_every_setting_equal(d2_model, mmdet_model, tmp_path: Path) -> None:
    record_d2(d2_model, tmp_path / "a")
    record_mmdet(mmdet_model, tmp_path / "b", paramwise_cfg=ALIKE)
    result = compare_runs(tmp_path / "a", tmp_path / "b", name_map=PRESET)
    [optim] = result.optim
    trainable = [n for n, p in d2_model.named_parameters() if p.requires_grad]
    assert optim.paired == len(trainable) > 150 and any(".norm." in n for n in trainable)
    assert optim.a_only == [] and optim.b_only == [] and optim.settings == []
    assert optim.type_a == optim.type_b == "SGD" and optim.clip_a is None and optim.clip_b is None
    assert optim.schedule_iterations == (ITERATIONS, ITERATIONS) and optim.schedule_first_diff is None
    assert optim.passed and result.passed, "\n".join(optim.lines())


def test_backbone_lr_mult_is_caught_naming_parameters_and_values(d2_model, mmdet_model, tmp_path: Path) -> None:
    record_d2(d2_model, tmp_path / "a")
    record_mmdet(mmdet_model, tmp_path / "b", paramwise_cfg=dict(ALIKE, custom_keys={"backbone": dict(lr_mult=0.1)}))
    result = compare_runs(tmp_path / "a", tmp_path / "b", name_map=PRESET)
    [optim] = result.optim
    assert not result.passed and not optim.passed
    [initial] = [g for g in optim.settings if g.setting == "initial_lr"]
    assert initial.label == "backbone.*" and initial.value_a == pytest.approx(0.02)
    assert initial.value_b == pytest.approx(0.002)
    assert (
        "backbone.layer2.0.conv1.weight" in initial.names
        and "backbone.bottom_up.res3.0.conv1.weight" in initial.names_a
    )
    assert all(n.startswith("backbone.") for n in initial.names)
    line = initial.line()
    assert line.startswith("backbone.*: initial_lr 0.02 vs 0.002 (") and "parameters" in line
    assert optim.schedule_first_diff == 0  # the whole backbone schedule is 10x lower from the start
    write_json(result, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    settings = data["optim"][0]["settings"]
    assert any(s["setting"] == "lr" and "backbone.layer4.2.conv3.weight" in s["names"] for s in settings)


def test_norm_decay_mult_is_caught(d2_model, mmdet_model, tmp_path: Path) -> None:
    record_d2(d2_model, tmp_path / "a")
    record_mmdet(mmdet_model, tmp_path / "b", paramwise_cfg={})  # mmdet's default: norms decayed like weights
    result = compare_runs(tmp_path / "a", tmp_path / "b", name_map=PRESET)
    [optim] = result.optim
    [decay] = optim.settings
    assert decay.setting == "weight_decay" and decay.value_a == 0.0 and decay.value_b == pytest.approx(1e-4)
    assert "backbone.layer2.0.bn1.weight" in decay.names and "backbone.layer4.2.bn3.bias" in decay.names
    assert all(".bn" in n or ".downsample.1." in n for n in decay.names)
    assert decay.of > len(decay.names)  # only the norms of the backbone differ, not its convs
    assert optim.schedule_first_diff is None


def test_other_warmup_is_caught_at_first_differing_iteration(d2_model, mmdet_model, tmp_path: Path) -> None:
    record_d2(d2_model, tmp_path / "a")
    record_mmdet(mmdet_model, tmp_path / "b", paramwise_cfg=ALIKE, warmup_end=500)  # schedule_1x as shipped
    result = compare_runs(tmp_path / "a", tmp_path / "b", name_map=PRESET)
    [optim] = result.optim
    assert optim.settings == [] and optim.schedule_first_diff == 1
    assert sum(len(g.names) for g in optim.schedule) == optim.paired
    assert {g.label for g in optim.schedule} == {"backbone.*", "neck.*", "rpn_head.*", "roi_head.*"}
    for group in optim.schedule:  # mmengine's LinearLR(end=500) reaches the full lr at iteration 499
        assert group.iteration == 1 and group.value_a == pytest.approx(0.02 * (0.001 + 0.999 / 1000))
        assert group.value_b == pytest.approx(0.02 * (0.001 + 0.999 / 499))
    write_html(result, tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    assert "lr schedule first differs at iteration 1" in text and "Optimizer (step 0, rank 0): FAIL" in text


def test_clipping_per_parameter_vs_full_model_is_caught(d2_model, mmdet_model, tmp_path: Path, capsys) -> None:
    record_d2(
        d2_model,
        tmp_path / "a",
        [
            "SOLVER.CLIP_GRADIENTS.ENABLED",
            "True",
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE",
            "norm",
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE",
            "1.0",
        ],
    )
    record_mmdet(mmdet_model, tmp_path / "b", paramwise_cfg=ALIKE, clip_grad=dict(max_norm=1.0, norm_type=2))
    code = compare_main([str(tmp_path / "a"), str(tmp_path / "b"), "--map", PRESET, "--quiet"])
    assert code == 1
    result = compare_runs(tmp_path / "a", tmp_path / "b", name_map=PRESET)
    [optim] = result.optim
    assert optim.clip_a == {"type": "norm", "max": 1.0, "norm_type": 2.0, "scope": "per_param"}
    assert optim.clip_b == {"type": "norm", "max": 1.0, "norm_type": 2.0, "scope": "full_model"}
    assert "  clipping: norm 1 (per_param, norm_type 2) vs norm 1 (full_model, norm_type 2)" in optim.lines()
    assert optim.settings == [] and "optimizer records differ at step 0" in capsys.readouterr().out
