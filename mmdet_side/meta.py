"""Export the evaluator metadata of an mmdet 3.x config's val dataset (schema: ``bridge.meta``).

``python -m mmdet_side.meta cfg.py -o mmdet.json``. The val dataset is built (and its annotation file
loaded) the way mmdet does, so ``dataset_id_to_label`` is mmdet's ``cat2label``: the annotation file's
categories whose names are in ``metainfo['classes']`` (``COCO.get_cat_ids(cat_names=...)``), numbered
in the file's order. What the code really does with void and zero-area segments:

- ``CocoPanopticMetric._parse_predictions`` treats semantic label ``len(classes)`` (and the
  prediction's ``ignore_index``) as VOID, so ``void_label = len(classes)``; panoptic ids are
  ``label + instance * INSTANCE_OFFSET`` (1000);
- ``CocoPanopticDataset.parse_data_info`` skips ground-truth segments with ``area <= 0`` or a box
  narrower / lower than 1 pixel (``drops_zero_area_segments = True``);
- ``LoadPanopticAnnotations`` fills unlabeled semantic pixels with ``ignore_index`` (255 by default).
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from mmengine.config import Config
from mmengine.registry import init_default_scope

from bridge.cli import check_outputs, examples, guarded_main, run_reporting_errors
from bridge.errors import BridgeError
from bridge.meta import make_metadata, write_metadata


def _coco_metric_max_dets() -> list[int]:
    """mmdet's CocoMetric ``proposal_nums`` default (used as COCOeval maxDets): (100, 300, 1000)."""
    from mmdet.evaluation.metrics import CocoMetric

    return [int(n) for n in inspect.signature(CocoMetric.__init__).parameters["proposal_nums"].default]


def _find_transform(pipeline: list, name: str) -> dict | None:
    for step in pipeline or []:
        if isinstance(step, dict) and step.get("type") == name:
            return step
    return None


def _load_config(config: str | Path | Config) -> tuple[Config, str]:
    if isinstance(config, Config):
        return config, str(config.filename or "<Config>")
    path = Path(config)
    if not path.is_file():
        raise BridgeError(f"{path}: no such config file")
    try:
        return Config.fromfile(str(path)), str(path)
    except Exception as error:  # mmengine raises many kinds on a broken config
        raise BridgeError(f"{path}: cannot load config ({type(error).__name__}: {error})") from None


def export_mmdet_metadata(config: str | Path | Config) -> dict[str, Any]:
    """Normalized evaluator metadata (``bridge.meta`` schema) of an mmdet config's val dataset."""
    from mmdet.evaluation.functional import INSTANCE_OFFSET
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    cfg, source = _load_config(config)
    register_all_modules(init_default_scope=False)
    init_default_scope(cfg.get("default_scope", "mmdet") or "mmdet")
    if "val_dataloader" not in cfg or "dataset" not in cfg.val_dataloader:
        raise BridgeError(f"{source}: config has no val_dataloader.dataset")
    dataset_cfg = cfg.val_dataloader.dataset.copy()
    try:
        dataset = DATASETS.build(dataset_cfg)
    except Exception as error:
        raise BridgeError(f"{source}: cannot build the val dataset ({type(error).__name__}: {error})") from None
    metainfo = dict(dataset.metainfo)
    classes = list(metainfo["classes"])
    thing_classes = list(metainfo.get("thing_classes", []))
    stuff_classes = list(metainfo.get("stuff_classes", []))
    cat2label = {int(k): int(v) for k, v in getattr(dataset, "cat2label", {}).items()}
    palette = metainfo.get("palette", None)
    colors = [list(c) for c in palette] if palette is not None and len(palette) == len(classes) else None

    evaluator_cfg = cfg.get("val_evaluator", {}) or {}
    if isinstance(evaluator_cfg, (list, tuple)):
        evaluator_cfg = evaluator_cfg[0] if evaluator_cfg else {}
    metric_type = str(evaluator_cfg.get("type", "")) or None
    proposal_nums = evaluator_cfg.get("proposal_nums", None)
    load_pan = _find_transform(dataset_cfg.get("pipeline", []), "LoadPanopticAnnotations")
    ignore_label = int(load_pan.get("ignore_index", 255)) if load_pan is not None else 255
    evaluator = {
        "type": metric_type,
        "max_dets": [int(n) for n in proposal_nums] if proposal_nums else _coco_metric_max_dets(),
        "drops_zero_area_segments": True,
        "void_panoptic_ids": [len(classes), ignore_label],
    }
    raw = {
        "num_classes": len(classes),
        "num_thing_classes": len(thing_classes),
        "num_stuff_classes": len(stuff_classes),
        "dataset_type": str(dataset_cfg.get("type")),
        "ann_file": str(getattr(dataset, "ann_file", "")),
        "void": "semantic label len(classes) or ignore_index in a prediction is VOID",
    }
    isthing = [name in set(thing_classes) for name in classes]
    return make_metadata(
        framework="mmdet",
        source=source,
        classes=classes,
        isthing=isthing,
        dataset_id_to_label=cat2label,
        colors=colors,
        void_label=len(classes),
        ignore_label=ignore_label,
        label_divisor=int(INSTANCE_OFFSET),
        evaluator=evaluator,
        raw=raw,
    )


@guarded_main
def main(argv: list[str] | None = None) -> int:
    """CLI: export a config's val-dataset metadata to JSON; exit 2 with a one-line error on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m mmdet_side.meta",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "python -m mmdet_side.meta mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py -o mmdet_meta.json"
        ),
    )
    parser.add_argument("config", help="mmdet config file")
    parser.add_argument("-o", "--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    check_outputs({"CONFIG": args.config if os.path.exists(args.config) else None}, {"-o": args.out})
    return run_reporting_errors(lambda: write_metadata(export_mmdet_metadata(args.config), args.out))


if __name__ == "__main__":
    sys.exit(main())
