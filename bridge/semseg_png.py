"""Semantic-segmentation PNGs derived from COCO-panoptic PNGs, the two ways detectron2-based repos use.

- ``all_classes``: Mask2Former / Mask DINO: every category (thing or stuff) gets its contiguous index in
  the panoptic category list (0..132 for COCO), 255 = unlabeled.
- ``stuff_only``: detectron2 PanopticFPN (``prepare_panoptic_fpn.py``): things = 0, the stuff categories
  1..53 in category-list order, 255 = unlabeled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from bridge.atomic import atomic_path
from bridge.errors import BridgeError

IGNORE_LABEL = 255
MODES = ("all_classes", "stuff_only")


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Decode a COCO-panoptic RGB PNG array (H×W×3) into segment ids: R + 256·G + 256²·B."""
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def category_to_label(categories: Sequence[dict], mode: str) -> dict[int, int]:
    """Map dataset category ids to the semantic label that ``mode`` writes."""
    if mode == "all_classes":
        return {int(cat["id"]): index for index, cat in enumerate(categories)}
    if mode == "stuff_only":
        stuff = [int(cat["id"]) for cat in categories if not cat.get("isthing", 0)]
        mapping = {cat_id: index + 1 for index, cat_id in enumerate(stuff)}
        mapping.update({int(cat["id"]): 0 for cat in categories if cat.get("isthing", 0)})
        return mapping
    raise BridgeError(f"unknown semantic-seg mode {mode!r}; choose one of {MODES}")


def semantic_from_panoptic(panoptic_png: Path, segments_info: Sequence[dict], labels: dict[int, int]) -> np.ndarray:
    """Return the uint8 semantic map of one panoptic PNG given its ``segments_info`` and label map."""
    ids = rgb_to_id(np.asarray(Image.open(panoptic_png).convert("RGB")))
    semantic = np.full(ids.shape, IGNORE_LABEL, dtype=np.uint8)
    for segment in segments_info:
        category_id = int(segment["category_id"])
        if category_id not in labels:
            raise BridgeError(f"{panoptic_png}: segment {segment['id']} has category {category_id}, "
                              "which is not in the annotation file's categories")
        semantic[ids == int(segment["id"])] = labels[category_id]
    return semantic


def write_semantic_pngs(panoptic_json: dict, panoptic_dir: Path, out_dir: Path, mode: str) -> list[Path]:
    """Write the semantic PNG of every annotation in ``panoptic_json`` into ``out_dir`` when missing.

    Files are named like the panoptic PNGs; existing files are kept. Returns the paths, in order.
    """
    labels = category_to_label(panoptic_json["categories"], mode)
    written = []
    for annotation in panoptic_json["annotations"]:
        target = out_dir / annotation["file_name"]
        if not target.exists():
            source = panoptic_dir / annotation["file_name"]
            if not source.exists():
                raise BridgeError(f"panoptic PNG {source} (image {annotation['image_id']}) does not exist")
            semantic = semantic_from_panoptic(source, annotation["segments_info"], labels)
            with atomic_path(target) as tmp:
                Image.fromarray(semantic).save(tmp, format="PNG")
        written.append(target)
    return written
