"""``d2_side`` and ``mmdet_side`` mirror each other: the same modules, functions and hook arguments (names,
kinds, defaults, annotations, order), apart from the framework-specific ones listed here with their reason."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import d2_side
import mmdet_side
from d2_side.hooks import RecordHook
from d2_side.replay_hook import ReplayHook
from mmdet_side.hooks import BridgeRecordHook
from mmdet_side.replay_hook import BridgeReplayHook

#: Modules one side has and the other has not, and why.
SIDE_ONLY_MODULES = {
    "d2_side": {
        "datasets": "detectron2's catalogs are filled in code; mmdet's datasets are named in a config",
        "register": "the one import line of a detectron2 train_net.py",
    },
    "mmdet_side": {
        "config": "mmdet is switched on from config files, which this module writes",
        "coco91": "91-id labels in mmdet's datasets and metrics (detectron2 maps ids in its metadata)",
        "coco91_config": "the config lines of coco91",
        "coco91_panoptic": "the panoptic datasets and metrics of coco91",
        "replay": "detectron2's batches converted into mmdet's (replay runs one way: d2 -> mmdet)",
        "save_weights": "mmengine's own checkpoints do not load with weights_only=True",
        "target": "mmdet as a conversion target of bridge.convert --target",
    },
}

#: Public functions / classes of mirrored modules that one side has only, and why.
SIDE_ONLY_NAMES = {
    ("d2_side", "meta", "ensure_registered"): "detectron2 datasets must be registered before their metadata exists",
    ("mmdet_side", "canonical", "annotation_categories"): "mmdet maps labels to ids by the annotation file's names",
    ("mmdet_side", "panoptic_eval", "normalise_mmdet_keys"): "mmdet prefixes its metric keys with coco_panoptic/",
    ("d2_side", "record_model", "load_config"): "mmdet_side.record_model uses mmdet_side.target.load_config",
    ("d2_side", "semantic", "label_lookup"): "detectron2 maps semantic channels through the stuff map; mmdet maps "
    "labels by class name, as its instances (mmdet_side.instances)",
}

#: Hook arguments that one side has only, and why.
RECORD_HOOK_ONLY = {"eval_run_dir": "mmdet records val/test inside its own loop; detectron2 uses record_inference"}
REPLAY_HOOK_ONLY = {
    name: "mmdet is fed detectron2's batches; the detectron2 hook replays the RNG tape only"
    for name in (
        "run_dir",
        "name",
        "label_map",
        "sem_seg_label_map",
        "panoptic_num_things",
        "eval_run_dir",
        "input_format",
    )
}


def _modules(package) -> set[str]:
    return {module.name for module in pkgutil.iter_modules(package.__path__)}


def _public(module) -> dict[str, object]:
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    }


def _neutral(name: str) -> str:
    """A name with its framework spelled out replaced (``canonical_from_d2`` -> ``canonical_from_FW``) and the
    mmdet hooks' ``Bridge`` prefix dropped."""
    return name.removeprefix("Bridge").replace("mmdet", "FW").replace("d2", "FW")


def _arguments(cls: type) -> dict[str, inspect.Parameter]:
    return {name: p for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"}


def test_both_sides_have_the_same_modules_apart_from_the_listed_ones() -> None:
    d2, mm = _modules(d2_side), _modules(mmdet_side)
    assert d2 - mm == set(SIDE_ONLY_MODULES["d2_side"])
    assert mm - d2 == set(SIDE_ONLY_MODULES["mmdet_side"])


def test_mirrored_modules_define_the_same_public_names() -> None:
    for name in sorted(_modules(d2_side) & _modules(mmdet_side)):
        sides = {side: importlib.import_module(f"{side}.{name}") for side in ("d2_side", "mmdet_side")}
        names = {
            side: {_neutral(n) for n in _public(module) if (side, name, n) not in SIDE_ONLY_NAMES}
            for side, module in sides.items()
        }
        assert names["d2_side"] == names["mmdet_side"], name


def test_record_hooks_take_the_same_keyword_arguments() -> None:
    d2, mm = _arguments(RecordHook), _arguments(BridgeRecordHook)
    assert list(d2)[0] == list(mm)[0] == "run_dir"
    assert set(mm) - set(d2) == set(RECORD_HOOK_ONLY) and not set(d2) - set(mm)
    shared = [name for name in mm if name in d2]
    assert shared == list(d2)  # the same order
    for name in shared[1:]:
        a, b = d2[name], mm[name]
        assert a.kind == b.kind == inspect.Parameter.KEYWORD_ONLY, name
        assert (a.default, a.annotation) == (b.default, b.annotation), name
    # run_dir: required by detectron2's hook; mmdet's may be left out for an evaluation-only run
    assert d2["run_dir"].default is inspect.Parameter.empty and mm["run_dir"].default is None


def test_both_sides_record_inference_with_the_same_arguments() -> None:
    """``record_inference``: the same arguments, but the dataset's labels come from detectron2's ``metadata``
    (MetadataCatalog) and from mmdet's test ``dataset`` (its classes and annotation file)."""
    from d2_side.hooks import record_inference as d2_record
    from mmdet_side.hooks import record_inference as mm_record

    d2, mm = inspect.signature(d2_record).parameters, inspect.signature(mm_record).parameters
    rename = {"metadata": "dataset"}
    assert [rename.get(name, name) for name in d2] == list(mm)
    for name, p in d2.items():
        q = mm[rename.get(name, name)]
        assert (p.kind, p.default) == (q.kind, q.default), name


def test_replay_hooks_take_the_same_rng_arguments() -> None:
    d2, mm = _arguments(ReplayHook), _arguments(BridgeReplayHook)
    assert set(mm) - set(d2) == set(REPLAY_HOOK_ONLY) and not set(d2) - set(mm)
    for name in d2:
        assert (d2[name].default, d2[name].annotation) == (mm[name].default, mm[name].annotation), name
    assert all(p.kind == inspect.Parameter.KEYWORD_ONLY for name, p in mm.items() if name != "run_dir")


def test_both_sides_unwrap_their_framework_wrappers_with_one_helper() -> None:
    """DistributedDataParallel-style wrappers are unwrapped by ``hooks.unwrap`` on both sides."""
    from mmengine.model import MMDistributedDataParallel
    from torch import nn
    from torch.nn.parallel import DataParallel

    from d2_side.hooks import unwrap as d2_unwrap
    from mmdet_side.hooks import unwrap as mm_unwrap

    module = nn.Linear(2, 2)
    assert d2_unwrap(DataParallel(module)) is module and d2_unwrap(module) is module
    wrapped = MMDistributedDataParallel.__new__(MMDistributedDataParallel)
    nn.Module.__init__(wrapped)
    wrapped.module = module
    assert mm_unwrap(wrapped) is module and mm_unwrap(module) is module


def _record_d2(run_dir, **hook_args) -> None:
    """Two iterations of detectron2's SimpleTrainer on a one-conv model, with ``RecordHook(**hook_args)``."""
    import itertools

    import torch
    from detectron2.engine import SimpleTrainer
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, batch: list[dict]) -> dict[str, torch.Tensor]:
            return {"loss_feature": self.conv(torch.stack([item["image"] for item in batch])).pow(2).mean()}

    model = Net()
    trainer = SimpleTrainer(
        model, itertools.repeat([{"image": torch.ones(3, 8, 8)}]), torch.optim.SGD(model.parameters(), lr=0.1)
    )
    trainer.register_hooks([RecordHook(str(run_dir), iterations=[0, 1], **hook_args)])
    trainer.train(0, 2)


def _record_mmdet(run_dir, work_dir, **hook_args) -> None:
    """Two iterations of mmengine's Runner on a one-conv model, with ``BridgeRecordHook(**hook_args)``."""
    import torch
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    from torch import nn

    class Net(BaseModel):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = "loss") -> dict[str, torch.Tensor]:
            return {"loss_feature": self.conv(inputs).pow(2).mean()}

    Runner(
        model=Net(),
        work_dir=str(work_dir),
        experiment_name=f"symmetry_{work_dir.name}",  # one per Runner
        train_dataloader=dict(
            dataset=[dict(inputs=torch.ones(3, 8, 8))] * 2,
            batch_size=1,
            num_workers=0,
            sampler=dict(type="DefaultSampler", shuffle=False),
            collate_fn=dict(type="default_collate"),
        ),
        train_cfg=dict(by_epoch=False, max_iters=2),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)),
        default_hooks=dict(checkpoint=None),
        default_scope="mmdet",
        log_level="WARNING",
        custom_hooks=[dict(type="BridgeRecordHook", run_dir=str(run_dir), iterations=[0, 1], **hook_args)],
    ).train()


def test_record_batch_and_record_losses_switch_the_same_records_off_on_both_sides(tmp_path) -> None:
    from bridge.runs import open_run

    for name, args in (("both", {}), ("no_losses", {"record_losses": False}), ("no_batch", {"record_batch": False})):
        _record_d2(tmp_path / "d2" / name, **args)
        _record_mmdet(tmp_path / "mmdet" / name, tmp_path / "work" / name, **args)
        for side in ("d2", "mmdet"):
            run = open_run(tmp_path / side / name)
            names = {(e.name, e.step, e.kind) for e in run.entries()}
            expected = {("batch", step, "batch") for step in (0, 1) if args.get("record_batch", True)}
            expected |= {("losses", step, "loss") for step in (0, 1) if args.get("record_losses", True)}
            assert names == expected, (side, name)
            if args.get("record_losses", True):
                assert set(run.get("losses", step=1, kind="loss")) >= {"loss_feature"}, side


def test_both_config_loaders_merge_overrides_in_their_framework_syntax() -> None:
    """``--opts`` of ``init_state`` / ``local`` / ``record_model``: detectron2's ``KEY VALUE`` pairs, mmdet's
    ``KEY=VALUE`` (as ``--cfg-options``); an override the loader cannot take is a BridgeError naming it."""
    import pytest

    from bridge.errors import BridgeError
    from d2_side.record_model import load_config as d2_load_config
    from mmdet_side.target import load_config as mm_load_config

    d2 = d2_load_config("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml", ["MODEL.RESNETS.DEPTH", "101"])
    assert d2.MODEL.RESNETS.DEPTH == 101
    mm = mm_load_config("mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py", ["model.backbone.depth=101"])
    assert mm.model.backbone.depth == 101
    with pytest.raises(
        BridgeError,
        match=r"panoptic_fpn_R_50_1x\.yaml: cannot load the detectron2 config "
        r"\(AssertionError: Non-existent key: MODEL\.NOPE\)",
    ):
        d2_load_config("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml", ["MODEL.NOPE", "1"])
    with pytest.raises(BridgeError, match="^options nokeyvalue: expected KEY=VALUE pairs$"):
        mm_load_config("mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py", ["nokeyvalue"])
