"""N-step parity with the real trainers: detectron2's ResNet-50 (SimpleTrainer + RecordHook) against mmdet's
caffe-style ResNet-50 loaded with the weights converted by ``d2-resnet-to-mmdet`` (mmengine's Runner +
BridgeRecordHook), the same 64x64 image, loss = sum over levels of the mean squared feature, SGD with
momentum and weight decay built by each framework's own builder. Parameters after each of 3 steps agree;
a learning rate dropped at iteration 1 on one side is located at step 1."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from torch import nn

from bridge import open_run
from bridge.compare import compare_runs
from bridge.convert import convert_state_dict

D2_CONFIG = "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"
MMDET_CONFIG = "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py"
STEPS = 3
LR = 0.001
D2_PARAMS = ["backbone.res3.0.*", "backbone.res5.2.conv3.*"]
MMDET_PARAMS = ["backbone.layer2.0.*", "backbone.layer4.2.conv3.*"]
#: float32 convolutions of two code bases round differently; an lr 10x off moves parameters by far more
ATOL, RTOL = 1e-6, 1e-4


def _image() -> torch.Tensor:
    return torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(3))


def _feature_loss(features) -> dict[str, torch.Tensor]:
    return {"loss": sum(f.pow(2).mean() for f in features)}


class D2Net(nn.Module):
    """A detectron2 ResNet whose training loss is the mean squared feature of every level."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        return _feature_loss(self.backbone(torch.stack([b["image"] for b in batch])).values())


@pytest.fixture(scope="module")
def weights() -> tuple[dict, dict, object]:
    """detectron2's ResNet-50 state dict (seed 0), its mmdet conversion, and detectron2's cfg."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone import build_resnet_backbone

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(D2_CONFIG))
    cfg.merge_from_list(
        [
            "MODEL.RESNETS.OUT_FEATURES",
            ["res2", "res3", "res4", "res5"],
            "SOLVER.BASE_LR",
            LR,
            "SOLVER.MOMENTUM",
            0.9,
            "SOLVER.WEIGHT_DECAY",
            1e-4,
            "SOLVER.WARMUP_ITERS",
            0,
            "SOLVER.MAX_ITER",
            100,
            "SOLVER.STEPS",
            (50,),
        ]
    )
    torch.manual_seed(0)
    source = build_resnet_backbone(cfg, ShapeSpec(channels=3)).state_dict()
    converted = convert_state_dict(source, "d2-resnet-to-mmdet").state_dict
    return source, converted, cfg


def train_d2(weights, run_dir: Path) -> None:
    """detectron2: SimpleTrainer, build_optimizer + build_lr_scheduler (constant lr over these 3 steps)."""
    from detectron2.engine import SimpleTrainer, hooks
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone import build_resnet_backbone
    from detectron2.solver import build_lr_scheduler, build_optimizer

    from d2_side.hooks import RecordHook

    source, _, cfg = weights
    model = D2Net(build_resnet_backbone(cfg, ShapeSpec(channels=3)))
    model.backbone.load_state_dict(source)
    optimizer = build_optimizer(cfg, model)
    trainer = SimpleTrainer(model, itertools.repeat([{"image": _image()}]), optimizer)
    trainer.register_hooks(
        [
            hooks.LRScheduler(optimizer, build_lr_scheduler(cfg, optimizer)),
            RecordHook(
                str(run_dir),
                iterations=range(STEPS),
                record_batch=False,
                optimizer_steps=STEPS,
                params=D2_PARAMS,
                grad_norm=True,
            ),
        ]
    )
    trainer.train(0, STEPS)


def train_mmdet(weights, run_dir: Path, work_dir: Path, milestones: tuple[int, ...] = (100,)) -> None:
    """mmdet: mmengine's Runner, build_optim_wrapper and a MultiStepLR (lr x0.1 at each of ``milestones``)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    import mmdet_side  # noqa: F401  (registers BridgeRecordHook)
    from mmdet_side.target import load_config

    register_all_modules()
    backbone_cfg = load_config(MMDET_CONFIG).model.backbone
    backbone_cfg.update(style="caffe", init_cfg=None, norm_cfg=dict(type="BN", requires_grad=False))

    class MMNet(BaseModel):
        """An mmdet ResNet whose training loss is the mean squared feature of every level."""

        def __init__(self) -> None:
            super().__init__()
            self.backbone = MODELS.build(backbone_cfg)
            self.backbone.load_state_dict(weights[1])

        def init_weights(self) -> None:
            """Keep the converted weights (the Runner initialises models before training)."""

        def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = "loss") -> dict[str, torch.Tensor]:
            return _feature_loss(self.backbone(inputs))

    runner = Runner(
        model=MMNet(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=[dict(inputs=_image())],
            sampler=dict(type="DefaultSampler", shuffle=False),
            batch_size=1,
            num_workers=0,
            collate_fn=dict(type="default_collate"),
        ),
        train_cfg=dict(by_epoch=False, max_iters=STEPS),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=LR, momentum=0.9, weight_decay=1e-4)),
        param_scheduler=[dict(type="MultiStepLR", by_epoch=False, milestones=list(milestones), gamma=0.1)],
        default_hooks=dict(checkpoint=None),
        custom_hooks=[
            dict(
                type="BridgeRecordHook",
                run_dir=str(run_dir),
                iterations=list(range(STEPS)),
                record_batch=False,
                optimizer_steps=STEPS,
                params=MMDET_PARAMS,
                grad_norm=True,
            )
        ],
        default_scope="mmdet",
        log_level="WARNING",
    )
    runner.train()


@pytest.fixture(scope="module")
def reference(weights, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """detectron2's 3 recorded steps."""
    run = tmp_path_factory.mktemp("d2") / "run"
    train_d2(weights, run)
    return run


def test_three_steps_equal_parameters_losses_grad_norms(weights, reference: Path, tmp_path: Path) -> None:
    train_mmdet(weights, tmp_path / "mm", tmp_path / "work")
    run = open_run(tmp_path / "mm")
    assert run.steps() == [0, 1, 2]
    for step in range(STEPS):
        assert run.get("grad_norm", step=step, kind="grad") > 0
        assert {e.name for e in run.entries(step=step, kind="param")} >= {
            "backbone.layer2.0.conv1.weight",
            "backbone.layer4.2.conv3.weight",
        }
    result = compare_runs(reference, tmp_path / "mm", name_map="d2-resnet-to-mmdet", atol=ATOL, rtol=RTOL)
    assert result.a_only == [] and result.b_only == []
    kinds = {(i.kind, i.step) for i in result.items}
    assert kinds == {(k, s) for k in ("param", "grad", "loss") for s in range(STEPS)}
    assert result.passed, [(i.step, i.key, i.reason) for i in result.items if not i.passed]
    # the parameters moved: step 2's differ from step 0's by far more than the tolerance
    before = open_run(reference).get("backbone.res5.2.conv3.weight", step=0, kind="param")
    after = open_run(reference).get("backbone.res5.2.conv3.weight", step=2, kind="param")
    assert (after - before).abs().max() > 1e-4


def test_lr_dropped_at_iteration_1_on_one_side_is_located_at_step_1(weights, reference: Path, tmp_path: Path) -> None:
    train_mmdet(weights, tmp_path / "mm", tmp_path / "work", milestones=(1,))
    result = compare_runs(reference, tmp_path / "mm", name_map="d2-resnet-to-mmdet", atol=ATOL, rtol=RTOL)
    first = result.first_divergence
    assert first is not None and first.step == 1 and first.kind == "param"
    assert first.key == "backbone.layer2.0.downsample.0.weight"  # detectron2's first recorded: res3.0.shortcut
    step_0 = [i for i in result.items if i.step == 0]
    assert step_0 and all(i.passed for i in step_0)
    [optim] = result.optim
    assert optim.settings == [] and optim.schedule_first_diff == 1
    [group] = optim.schedule
    assert group.value_a == pytest.approx(LR) and group.value_b == pytest.approx(LR * 0.1)
