"""Export the evaluator metadata of a registered detectron2 panoptic dataset (schema: ``bridge.meta``).

``python -m d2_side.meta coco_2017_val_panoptic_onesample_with_sem_seg -o d2.json``; when the name is
not registered yet, the one-sample datasets are registered first from the ``BRIDGE_*`` environment
(as ``import d2_side.register`` does).

Labels are the contiguous ids ``COCOPanopticEvaluator._convert_category_id`` maps back to dataset
ids: a thing segment's label goes through ``thing_dataset_id_to_contiguous_id``, a stuff segment's
through ``stuff_dataset_id_to_contiguous_id``. When both maps share one contiguous space (Mask DINO's
``_with_sem_seg`` metadata, 133 ``stuff_classes`` = all classes; detectron2's ``coco_panoptic_standard``)
``classes`` is that space. When they overlap with different meanings (PanopticFPN's separated
metadata: things 0..79, stuff 1..53 with 0 = "things") things come first and the stuff labels follow.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from typing import Any

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator

from bridge.cli import check_outputs, examples, guarded_main, run_reporting_errors
from bridge.errors import BridgeError
from bridge.meta import make_metadata, write_metadata


def _default_max_dets() -> list[int]:
    """detectron2's COCOEvaluator maxDets when ``max_dets_per_image`` is left at None: [1, 10, 100]."""
    default = inspect.signature(COCOEvaluator.__init__).parameters["max_dets_per_image"].default
    return [1, 10, 100] if default is None else [1, 10, int(default)]


def ensure_registered(dataset_name: str) -> None:
    """Register the bridge's one-sample datasets from ``BRIDGE_*`` when ``dataset_name`` is unknown."""
    if dataset_name in DatasetCatalog.list():
        return
    from d2_side.datasets import register_onesample

    register_onesample()
    if dataset_name not in DatasetCatalog.list():
        raise BridgeError(f"dataset {dataset_name!r} is not registered in detectron2's DatasetCatalog")


def _labels(meta: Any) -> tuple[list[str], list[bool], dict[int, int], list | None, str]:
    thing_map = {int(k): int(v) for k, v in meta.get("thing_dataset_id_to_contiguous_id", {}).items()}
    stuff_map = {int(k): int(v) for k, v in meta.get("stuff_dataset_id_to_contiguous_id", {}).items()}
    thing_classes = list(meta.get("thing_classes", []))
    stuff_classes = list(meta.get("stuff_classes", []))
    thing_colors = meta.get("thing_colors", None)
    stuff_colors = meta.get("stuff_colors", None)
    if not thing_map and not stuff_map:
        raise BridgeError("metadata has neither thing_ nor stuff_dataset_id_to_contiguous_id")
    # One space when every contiguous id used by both maps means the same dataset id.
    stuff_inverse = {v: k for k, v in stuff_map.items()}
    unified = all(stuff_inverse.get(v, k) == k for k, v in thing_map.items())
    if unified:
        size = max(list(thing_map.values()) + list(stuff_map.values())) + 1
        thing_labels = set(thing_map.values())
        classes, colors = [], []
        for label in range(size):
            if label in stuff_inverse and label < len(stuff_classes):
                classes.append(stuff_classes[label])
                colors.append(stuff_colors[label] if stuff_colors and label < len(stuff_colors) else None)
            elif label < len(thing_classes):
                classes.append(thing_classes[label])
                colors.append(thing_colors[label] if thing_colors and label < len(thing_colors) else None)
            else:
                classes.append(f"<unnamed {label}>")
                colors.append(None)
        isthing = [label in thing_labels for label in range(size)]
        id_map = {**stuff_map, **thing_map}
        return classes, isthing, id_map, None if None in colors else colors, "unified"
    # Separated: things first, then the stuff labels that carry a dataset id.
    num_things = len(thing_classes)
    stuff_used = sorted(set(stuff_map.values()))
    classes = thing_classes + [stuff_classes[c] for c in stuff_used]
    isthing = [True] * num_things + [False] * len(stuff_used)
    id_map = dict(thing_map)
    id_map.update({k: num_things + stuff_used.index(v) for k, v in stuff_map.items()})
    colors = None
    if thing_colors and stuff_colors:
        colors = list(thing_colors) + [stuff_colors[c] for c in stuff_used]
    return classes, isthing, id_map, colors, "separated"


def export_d2_metadata(dataset_name: str) -> dict[str, Any]:
    """Normalized evaluator metadata (``bridge.meta`` schema) of a registered detectron2 dataset."""
    ensure_registered(dataset_name)
    meta = MetadataCatalog.get(dataset_name)
    classes, isthing, id_map, colors, space = _labels(meta)
    evaluator_type = meta.get("evaluator_type", None)
    evaluator = {
        "type": "COCOPanopticEvaluator" if evaluator_type in (None, "coco_panoptic_seg") else str(evaluator_type),
        "max_dets": _default_max_dets(),
        # COCOPanopticEvaluator writes every predicted segment and loads ground truth as it is on disk.
        "drops_zero_area_segments": False,
        "void_panoptic_ids": [0, -1],
    }
    raw = {
        "evaluator_type": evaluator_type,
        "num_thing_classes": len(meta.get("thing_classes", [])),
        "num_stuff_classes": len(meta.get("stuff_classes", [])),
        "num_thing_dataset_ids": len(meta.get("thing_dataset_id_to_contiguous_id", {})),
        "num_stuff_dataset_ids": len(meta.get("stuff_dataset_id_to_contiguous_id", {})),
        "label_space": space,
        "void": "panoptic id 0 when segments_info is given, -1 in the label_divisor form",
    }
    return make_metadata(
        framework="detectron2",
        source=dataset_name,
        classes=classes,
        isthing=isthing,
        dataset_id_to_label=id_map,
        colors=colors,
        void_label=None,
        ignore_label=meta.get("ignore_label", None),
        label_divisor=meta.get("label_divisor", None),
        evaluator=evaluator,
        raw=raw,
    )


@guarded_main
def main(argv: list[str] | None = None) -> int:
    """CLI: export a dataset's metadata to JSON; exit 2 with a one-line error on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m d2_side.meta",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples("python -m d2_side.meta coco_2017_val_panoptic_separated -o d2_meta.json"),
    )
    parser.add_argument("dataset", help="registered detectron2 dataset name")
    parser.add_argument("-o", "--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    check_outputs({}, {"-o": args.out})
    return run_reporting_errors(lambda: write_metadata(export_d2_metadata(args.dataset), args.out))


if __name__ == "__main__":
    sys.exit(main())
