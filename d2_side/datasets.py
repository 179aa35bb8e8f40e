"""Register one-sample COCO splits in detectron2's catalogs, the three ways detectron2 repos use.

Names registered for each split in ``train`` / ``val``:
- ``coco_2017_{split}_onesample``: instances (``register_coco_instances``, builtin ``coco`` metadata);
- ``coco_2017_{split}_panoptic_onesample``: detectron2's ``register_coco_panoptic`` (its loader, the standard
  panoptic metadata) made to pass the evaluators detectron2's ``tools/train_net.py`` builds for it
  (``evaluator_type`` ``coco_panoptic_seg``: SemSeg, COCO and COCOPanoptic evaluators): ``thing_classes``
  cut to the 80 things (``COCOEvaluator``), a stuff map over all 133 ids and each record's
  ``sem_seg_file_name`` pointing at the 133-class semantic PNGs (``SemSegEvaluator``). detectron2's builtin
  ``coco_2017_val_panoptic`` has neither and fails there with ``KeyError: 'sem_seg_file_name'``;
- ``coco_2017_{split}_panoptic_onesample_with_sem_seg``: the Mask2Former / Mask DINO registration
  (133 ``stuff_classes``, a stuff map over all ids, 133-class semantic PNGs, ignore 255, divisor 1000);
- ``coco_2017_{split}_panoptic_onesample_separated`` (and ``_stuffonly``): detectron2's PanopticFPN
  registration with stuff-only semantic PNGs (things = 0, stuff 1..53, 255 unlabeled).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_coco_panoptic_separated
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES, _get_builtin_metadata
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json

from bridge.coco.onesample import SPLITS, OneSampleConfig, OneSampleSplit, prepare_split

LABEL_DIVISOR = 1000
IGNORE_LABEL = 255


def registered_names(split: str) -> list[str]:
    """The dataset names this module registers for ``split``."""
    base = f"coco_2017_{split}_panoptic_onesample"
    return [f"coco_2017_{split}_onesample", base, f"{base}_with_sem_seg", f"{base}_separated", f"{base}_stuffonly"]


def with_sem_seg_metadata() -> dict:
    """Mask2Former / Mask DINO COCO-panoptic metadata: 80 thing classes, 133 stuff classes over all ids."""
    things = [cat for cat in COCO_CATEGORIES if cat["isthing"]]
    return {
        "thing_classes": [cat["name"] for cat in things],
        "thing_colors": [cat["color"] for cat in things],
        "stuff_classes": [cat["name"] for cat in COCO_CATEGORIES],
        "stuff_colors": [cat["color"] for cat in COCO_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {cat["id"]: i for i, cat in enumerate(COCO_CATEGORIES) if cat["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {cat["id"]: i for i, cat in enumerate(COCO_CATEGORIES)},
    }


def standard_panoptic_metadata() -> dict:
    """detectron2's ``coco_panoptic_standard`` metadata, fit for detectron2's own evaluators.

    ``thing_classes`` is cut to the 80 things: ``COCOEvaluator`` asserts one name per category of the
    instances json. ``stuff_dataset_id_to_contiguous_id`` covers all 133 ids with the contiguous ids the
    standard metadata already uses (index in ``COCO_CATEGORIES``), as Mask2Former's registration does:
    ``SemSegEvaluator`` maps every predicted label back through it and asserts it is there, and detectron2's
    map covers the 53 stuff ids only. The panoptic loader and ``COCOPanopticEvaluator`` look things up in the
    thing map first, so their results do not change.
    """
    metadata = copy.deepcopy(_get_builtin_metadata("coco_panoptic_standard"))
    things = [cat for cat in COCO_CATEGORIES if cat["isthing"]]
    metadata["thing_classes"] = [cat["name"] for cat in things]
    metadata["thing_colors"] = [cat["color"] for cat in things]
    metadata["stuff_dataset_id_to_contiguous_id"] = {cat["id"]: i for i, cat in enumerate(COCO_CATEGORIES)}
    return metadata


def load_standard_panoptic(prepared: OneSampleSplit, metadata: dict) -> list[dict]:
    """detectron2's ``load_coco_panoptic_json`` records, each with the ``sem_seg_file_name`` of its
    133-class semantic PNG (labels = the standard metadata's contiguous ids, 255 unlabeled)."""
    records = load_coco_panoptic_json(
        str(prepared.panoptic_json), str(prepared.image_root), str(prepared.panoptic_root), metadata
    )
    for record in records:
        record["sem_seg_file_name"] = str(prepared.sem_seg_root / os.path.basename(record["pan_seg_file_name"]))
    return records


def load_panoptic_with_sem_seg(prepared: OneSampleSplit, metadata: dict) -> list[dict]:
    """Dataset dicts of the ``_with_sem_seg`` registration (category ids made contiguous, as Mask DINO does)."""
    annotations = json.loads(prepared.panoptic_json.read_bytes())["annotations"]
    things = metadata["thing_dataset_id_to_contiguous_id"]
    stuff = metadata["stuff_dataset_id_to_contiguous_id"]
    records = []
    for annotation in annotations:
        stem = os.path.splitext(annotation["file_name"])[0]
        segments = []
        for segment in annotation["segments_info"]:
            segment = dict(segment)
            category_id = segment["category_id"]
            segment["isthing"] = category_id in things
            segment["category_id"] = things[category_id] if segment["isthing"] else stuff[category_id]
            segments.append(segment)
        records.append(
            {
                "file_name": str(prepared.image_root / f"{stem}.jpg"),
                "image_id": int(annotation["image_id"]),
                "pan_seg_file_name": str(prepared.panoptic_root / annotation["file_name"]),
                "sem_seg_file_name": str(prepared.sem_seg_root / annotation["file_name"]),
                "segments_info": segments,
            }
        )
    return records


def _unregister(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def _register_panoptic_with_sem_seg(
    name: str, prepared: OneSampleSplit, metadata: dict, loader: Callable[[], list[dict]]
) -> None:
    """Register ``name`` with the metadata detectron2's ``register_coco_panoptic`` sets, plus ``sem_seg_root``
    (the 133-class semantic PNGs that ``loader``'s records name in ``sem_seg_file_name``)."""
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(
        sem_seg_root=str(prepared.sem_seg_root),
        panoptic_root=str(prepared.panoptic_root),
        image_root=str(prepared.image_root),
        panoptic_json=str(prepared.panoptic_json),
        json_file=str(prepared.instances_json),
        evaluator_type="coco_panoptic_seg",
        ignore_label=IGNORE_LABEL,
        label_divisor=LABEL_DIVISOR,
        **metadata,
    )


def register_split(prepared: OneSampleSplit) -> list[str]:
    """Register every name of one prepared split (re-registering replaces earlier ones); return them."""
    split = prepared.split
    names = registered_names(split)
    for name in names:
        _unregister(name)
    instances_name, base = names[0], names[1]
    register_coco_instances(
        instances_name, _get_builtin_metadata("coco"), str(prepared.instances_json), str(prepared.image_root)
    )
    standard = standard_panoptic_metadata()
    _register_panoptic_with_sem_seg(base, prepared, standard, lambda: load_standard_panoptic(prepared, standard))
    register_coco_panoptic_separated(
        base,
        _get_builtin_metadata("coco_panoptic_separated"),
        str(prepared.image_root),
        str(prepared.panoptic_root),
        str(prepared.panoptic_json),
        str(prepared.stuff_sem_seg_root),
        str(prepared.instances_json),
    )
    metadata = with_sem_seg_metadata()
    _register_panoptic_with_sem_seg(
        f"{base}_with_sem_seg", prepared, metadata, lambda: load_panoptic_with_sem_seg(prepared, metadata)
    )
    return names


def register_onesample(config: OneSampleConfig | None = None) -> dict[str, OneSampleSplit]:
    """Prepare and register the train and val one-sample splits; ``config`` defaults to the environment."""
    config = OneSampleConfig.from_env() if config is None else config
    prepared = {split: prepare_split(config, split) for split in SPLITS}
    for split_files in prepared.values():
        register_split(split_files)
    return prepared
