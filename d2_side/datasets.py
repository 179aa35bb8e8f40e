"""Register one-sample COCO splits in detectron2's catalogs, the three ways detectron2 repos use.

Names registered for each split in ``train`` / ``val``:
- ``coco_2017_{split}_onesample``: instances (``register_coco_instances``, builtin ``coco`` metadata);
- ``coco_2017_{split}_panoptic_onesample``: detectron2's ``register_coco_panoptic`` with the standard
  panoptic metadata, ``thing_classes`` cut to the 80 things so ``COCOEvaluator`` accepts it;
- ``coco_2017_{split}_panoptic_onesample_with_sem_seg``: the Mask2Former / Mask DINO registration
  (133 ``stuff_classes``, a stuff map over all ids, 133-class semantic PNGs, ignore 255, divisor 1000);
- ``coco_2017_{split}_panoptic_onesample_separated`` (and ``_stuffonly``): detectron2's PanopticFPN
  registration with stuff-only semantic PNGs (things = 0, stuff 1..53, 255 unlabeled).
"""

from __future__ import annotations

import copy
import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_coco_panoptic, register_coco_panoptic_separated
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES, _get_builtin_metadata

from bridge.onesample import SPLITS, OneSampleConfig, OneSampleSplit, prepare_split

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
    """detectron2's ``coco_panoptic_standard`` metadata with ``thing_classes`` cut to the 80 things."""
    metadata = copy.deepcopy(_get_builtin_metadata("coco_panoptic_standard"))
    things = [cat for cat in COCO_CATEGORIES if cat["isthing"]]
    metadata["thing_classes"] = [cat["name"] for cat in things]
    metadata["thing_colors"] = [cat["color"] for cat in things]
    return metadata


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
        records.append({
            "file_name": str(prepared.image_root / f"{stem}.jpg"),
            "image_id": int(annotation["image_id"]),
            "pan_seg_file_name": str(prepared.panoptic_root / annotation["file_name"]),
            "sem_seg_file_name": str(prepared.sem_seg_root / annotation["file_name"]),
            "segments_info": segments,
        })
    return records


def _unregister(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def register_split(prepared: OneSampleSplit) -> list[str]:
    """Register every name of one prepared split (re-registering replaces earlier ones); return them."""
    split = prepared.split
    names = registered_names(split)
    for name in names:
        _unregister(name)
    instances_name, base = names[0], names[1]
    register_coco_instances(instances_name, _get_builtin_metadata("coco"), str(prepared.instances_json),
                            str(prepared.image_root))
    register_coco_panoptic(base, standard_panoptic_metadata(), str(prepared.image_root), str(prepared.panoptic_root),
                           str(prepared.panoptic_json), str(prepared.instances_json))
    register_coco_panoptic_separated(base, _get_builtin_metadata("coco_panoptic_separated"), str(prepared.image_root),
                                     str(prepared.panoptic_root), str(prepared.panoptic_json),
                                     str(prepared.stuff_sem_seg_root), str(prepared.instances_json))
    metadata = with_sem_seg_metadata()
    sem_seg_name = f"{base}_with_sem_seg"
    DatasetCatalog.register(sem_seg_name, lambda: load_panoptic_with_sem_seg(prepared, metadata))
    MetadataCatalog.get(sem_seg_name).set(
        sem_seg_root=str(prepared.sem_seg_root), panoptic_root=str(prepared.panoptic_root),
        image_root=str(prepared.image_root), panoptic_json=str(prepared.panoptic_json),
        json_file=str(prepared.instances_json), evaluator_type="coco_panoptic_seg",
        ignore_label=IGNORE_LABEL, label_divisor=LABEL_DIVISOR, **metadata)
    return names


def register_onesample(config: OneSampleConfig | None = None) -> dict[str, OneSampleSplit]:
    """Prepare and register the train and val one-sample splits; ``config`` defaults to the environment."""
    config = OneSampleConfig.from_env() if config is None else config
    prepared = {split: prepare_split(config, split) for split in SPLITS}
    for split_files in prepared.values():
        register_split(split_files)
    return prepared
