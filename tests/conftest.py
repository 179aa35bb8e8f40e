"""Shared fixtures: a synthetic COCO tree written by code (real JPEGs, real panoptic PNG encoding)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.coco.onesample import OneSampleConfig
from bridge.coco.synthetic import write_synthetic_coco

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic COCO root with train and val splits, instances and panoptic annotations."""
    root = tmp_path_factory.mktemp("coco")
    write_synthetic_coco(root, num_images=3)
    return root


@pytest.fixture(scope="session")
def onesample_config(coco_root: Path, tmp_path_factory: pytest.TempPathFactory) -> OneSampleConfig:
    """One-sample configuration over the synthetic root (first annotated image of each split)."""
    return OneSampleConfig.create(coco_root, None, tmp_path_factory.mktemp("bridge_cache"))


def bridge_env(coco_root: Path, cache_dir: Path) -> dict[str, str]:
    """The environment a user sets for `import d2_side.register` (plus the repo on PYTHONPATH)."""
    env = dict(os.environ)
    env.update(
        BRIDGE_COCO_ROOT=str(coco_root),
        BRIDGE_CACHE_DIR=str(cache_dir),
        PYTHONPATH=f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}",
    )
    env.pop("BRIDGE_TRAIN_IMAGE_IDS", None)
    env.pop("BRIDGE_VAL_IMAGE_IDS", None)
    return env


def detectron2_tools_dir() -> Path:
    """detectron2's own tools/ from the sdist that `make setup` built (kept in the venv)."""
    tools = Path(sys.prefix) / "share" / "detectron2-0.6-tools"
    assert (tools / "train_net.py").exists(), f"{tools}/train_net.py is missing: run `make setup`"
    return tools


def record_d2_mask_rcnn(onesample_config: OneSampleConfig, run_dir: Path) -> None:
    """Train detectron2's Mask R-CNN 2 iterations (SimpleTrainer, CPU, small images) on the one-sample
    train split with RecordHook on: batch, losses, res2 activations and one gradient at steps 0 and 1."""
    record_d2_training(
        onesample_config,
        run_dir,
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
        "coco_2017_train_onesample",
        iterations=[0, 1],
        activations=["backbone.bottom_up.res2"],
        grads=["backbone.bottom_up.res5.2.conv3.weight"],
    )


def record_d2_training(
    onesample_config: OneSampleConfig,
    run_dir: Path,
    config_file: str,
    dataset: str,
    *,
    iterations: list[int],
    activations: Sequence[str] = (),
    grads: Sequence[str] = (),
    seed_modules: Sequence[str] = (),
    extra_opts: Sequence[str] = (),
    rng_draws_before_training: int = 0,
    matchers: dict[str, str] | None = None,
    rng_scopes: Sequence[str] = (),
    rng_replay_dir: str = "",
    rng_replay_scopes: Sequence[str] = (),
) -> None:
    """Train a detectron2 model-zoo model (random weights, seed 0, SimpleTrainer, CPU, small images) for
    ``len(iterations)`` iterations on ``dataset`` with RecordHook on at ``iterations``. Python's and numpy's
    RNGs are seeded too (the random flip and the sampler's seed), so runs differ only in torch's draws.
    ``rng_draws_before_training`` moves torch's RNG on before training (a run with another random state).
    ``rng_scopes`` records the RNG tape; ``rng_replay_dir`` replays one (ReplayHook, ``rng_replay_scopes``)."""
    import torch
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.data import build_detection_train_loader
    from detectron2.engine import SimpleTrainer
    from detectron2.modeling import build_model
    from detectron2.utils.env import seed_all_rng

    from d2_side.datasets import register_onesample
    from d2_side.hooks import RecordHook
    from d2_side.replay_hook import ReplayHook

    register_onesample(onesample_config)
    seed_all_rng(0)
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(config_file))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.WEIGHTS",
            "",
            "INPUT.MIN_SIZE_TRAIN",
            "(96,)",
            "INPUT.MAX_SIZE_TRAIN",
            "160",
            "DATALOADER.NUM_WORKERS",
            "0",
            "SOLVER.IMS_PER_BATCH",
            "1",
            "DATASETS.TRAIN",
            f"('{dataset}',)",
            *extra_opts,
        ]
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    trainer = SimpleTrainer(model, build_detection_train_loader(cfg), torch.optim.SGD(model.parameters(), lr=1e-4))
    hooks = [
        RecordHook(
            str(run_dir),
            iterations=iterations,
            activations=list(activations),
            grads=list(grads),
            seed_modules=list(seed_modules),
            matchers=matchers or {},
            rng_scopes=list(rng_scopes),
        )
    ]
    if rng_replay_dir:
        hooks.append(ReplayHook(rng_replay_dir, rng_scopes=list(rng_replay_scopes)))
    trainer.register_hooks(hooks)
    torch.rand(rng_draws_before_training)
    trainer.train(0, len(iterations))


def _shared_dir(name: str) -> str:
    """``$BRIDGE_SHARED/<name>`` (the reference data beside a checkout: ``make test`` sets it when
    ``../shared`` exists, CI always has it), or "" when the variable is unset. A set variable that does
    not lead to the folder stops the run: the real-data checks must not vanish silently."""
    root = os.environ.get("BRIDGE_SHARED", "").strip()
    if not root:
        return ""
    folder = Path(root) / name
    if not folder.is_dir():
        raise RuntimeError(f"BRIDGE_SHARED={root}: no folder {name!r} there (expected {folder})")
    return str(folder)


SHARED_DATA = _shared_dir("data")
SHARED_MANIFESTS = _shared_dir("manifests")


def standard_root_from_shared(shared: Path, root: Path) -> Path:
    """A standard COCO root (both splits) from the real COCO-panoptic sample in ``../shared/data``.

    The sample has panoptic ground truth only: the instances files are derived from its thing segments
    (RLE masks cut from the panoptic PNGs, the original bbox / area / iscrowd)."""
    import json
    import shutil

    import numpy as np
    from pycocotools import mask as mask_util

    from bridge.coco.semseg_png import read_panoptic_ids

    sample = shared / "coco_panoptic_sample"
    panoptic = json.loads((sample / "panoptic_examples.json").read_text())
    things = {c["id"] for c in panoptic["categories"] if c["isthing"]}
    instance_categories = json.loads((shared / "coco_instances_categories_80.json").read_text())
    if isinstance(instance_categories, dict):
        instance_categories = instance_categories["categories"]
    annotations = []
    for annotation in panoptic["annotations"]:
        ids = read_panoptic_ids(sample / "panoptic_examples" / annotation["file_name"])
        for segment in annotation["segments_info"]:
            if segment["category_id"] in things:
                rle = mask_util.encode(np.asfortranarray((ids == segment["id"]).astype(np.uint8)))
                rle["counts"] = rle["counts"].decode()
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": annotation["image_id"],
                        "category_id": segment["category_id"],
                        "segmentation": rle,
                        "area": segment["area"],
                        "bbox": segment["bbox"],
                        "iscrowd": segment["iscrowd"],
                    }
                )
    instances = {key: panoptic[key] for key in ("info", "licenses", "images")}
    instances.update(annotations=annotations, categories=instance_categories)
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        shutil.copytree(sample / "input_images", root / f"{split}2017")
        shutil.copytree(sample / "panoptic_examples", root / f"panoptic_{split}2017")
        (root / "annotations" / f"panoptic_{split}2017.json").write_text(json.dumps(panoptic))
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(instances))
    return root


def small_mmdet_train_config(
    base: str, onesample: OneSampleConfig, *, epochs: int, hooks: list[dict], work_dir: str, task: str = "instances"
) -> "mmengine.config.Config":  # noqa: F821
    """An mmdet config (``mmdet::...``, ``task`` 'instances' or 'panoptic') training ``epochs`` iterations on the
    one-sample split on the CPU: small images, random backbone, no validation/test, ``mmdet_side`` imported,
    ``hooks`` as custom hooks."""
    from mmengine.config import Config

    from mmdet_side.config import onesample_overrides

    cfg = Config.fromstring(f"_base_ = {base!r}\n", ".py")
    cfg.merge_from_dict(onesample_overrides(onesample, task=task))
    for transform in cfg.train_dataloader.dataset.pipeline:
        if transform["type"] == "Resize":
            transform["scale"] = (160, 96)
    cfg.model.backbone.init_cfg = None
    cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=epochs, val_interval=100, val_begin=100)
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    cfg.custom_imports = dict(imports=["mmdet_side"], allow_failed_imports=False)
    cfg.custom_hooks = hooks
    cfg.work_dir = work_dir
    cfg.default_hooks.checkpoint.interval = 100
    return cfg
