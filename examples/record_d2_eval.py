"""Record detectron2's evaluation of a model-zoo model on the one-sample split, ready for ``bridge.compare``.

Builds the model of ``--config-file`` (detectron2's model zoo, or a path), loads ``--weights`` (random
initialisation when none), registers the one-sample splits (``BRIDGE_COCO_ROOT`` or ``--coco-root``) and runs
``d2_side.hooks.record_inference`` over ``--dataset`` with the dataset's metadata: the run holds each image's
batch, raw outputs, chosen activations and the canonical ``panoptic.<id>`` / ``instances.<id>`` /
``semantic.<id>`` results (docs/OUTPUTS.md) that pair with mmdet's (``BridgeRecordHook(eval_run_dir=...)``).

    python examples/record_d2_eval.py --out runs/d2_eval --coco-root COCO \\
        --config-file COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml \\
        --dataset coco_2017_val_panoptic_onesample_separated MODEL.DEVICE cpu
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from bridge import Recorder
from bridge.cli import run_reporting_errors
from bridge.coco.onesample import OneSampleConfig

DEFAULT_CONFIG = "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"
DEFAULT_DATASET = "coco_2017_val_panoptic_onesample_separated"
#: The ResNet stages of detectron2's FPN backbones: one character after ``res`` keeps their inner modules out.
DEFAULT_ACTIVATIONS = "backbone.bottom_up.res?"


def build_cfg(config_file: str, weights: str, size: int, opts: list[str]):
    """detectron2 config of a model-zoo name (or a config path) with ``weights``, test size ``size`` and ``opts``."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(config_file if Path(config_file).is_file() else model_zoo.get_config_file(config_file))
    cfg.merge_from_list(
        [
            "MODEL.WEIGHTS",
            weights,
            "INPUT.MIN_SIZE_TEST",
            str(size),
            "INPUT.MAX_SIZE_TEST",
            str(size * 2),
            "DATALOADER.NUM_WORKERS",
            "0",
            *opts,
        ]
    )
    return cfg


def record(
    out: Path,
    config_file: str,
    dataset: str,
    *,
    weights: str = "",
    size: int = 800,
    seed: int = 0,
    activations: list[str] = (),
    coco_root: str | None = None,
    cache_dir: str | None = None,
    opts: list[str] = (),
) -> Path:
    """Record the evaluation into ``out``; return ``out``."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import MetadataCatalog, build_detection_test_loader
    from detectron2.modeling import build_model

    from d2_side.datasets import register_onesample
    from d2_side.hooks import record_inference

    register_onesample(OneSampleConfig.create(coco_root, None, cache_dir) if coco_root else None)
    cfg = build_cfg(config_file, weights, size, list(opts))
    torch.manual_seed(seed)
    model = build_model(cfg)
    if weights:
        DetectionCheckpointer(model).load(weights)
    with Recorder(out, framework="detectron2") as recorder:
        record_inference(
            model,
            build_detection_test_loader(cfg, dataset),
            recorder,
            activations=list(activations),
            metadata=MetadataCatalog.get(dataset),
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI; exit 2 with one ``error:`` line on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="run directory to write (must not hold a run)")
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, help="model-zoo config name or config path")
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help="one-sample registration to evaluate")
    parser.add_argument("--weights", default="", help="checkpoint to load (default: random initialisation)")
    parser.add_argument("--coco-root", help="COCO root (default: $BRIDGE_COCO_ROOT)")
    parser.add_argument("--cache-dir", help="where the subset goes (default: $BRIDGE_CACHE_DIR or ~/.cache)")
    parser.add_argument("--size", type=int, default=800, help="INPUT.MIN_SIZE_TEST (max: twice that)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed before building the model")
    parser.add_argument("--activations", default=DEFAULT_ACTIVATIONS, help="comma-separated module globs ('' for none)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="detectron2 config options, e.g. MODEL.DEVICE cpu")
    args = parser.parse_args(argv)
    return run_reporting_errors(
        lambda: record(
            args.out,
            args.config_file,
            args.dataset,
            weights=args.weights,
            size=args.size,
            seed=args.seed,
            activations=[glob for glob in args.activations.split(",") if glob],
            coco_root=args.coco_root,
            cache_dir=args.cache_dir or os.environ.get("BRIDGE_CACHE_DIR") or None,
            opts=args.opts,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
