"""Write a small, really encoded synthetic COCO tree (JPEGs, panoptic PNGs, panoptic and instances JSON).

Layout (the standard COCO one)::

    root/{train2017,val2017}/<id:012d>.jpg
    root/panoptic_{train,val}2017/<id:012d>.png      RGB id map, id = R + 256*G + 256*256*B, 0 = void
    root/annotations/panoptic_{train,val}2017.json
    root/annotations/instances_{train,val}2017.json

Images are small; the content is fully determined by ``seed``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bridge.atomic import atomic_write_bytes
from bridge.coco.coco91 import instance_categories, panoptic_categories
from bridge.coco.semseg_png import id_to_rgb

SPLITS: tuple[str, ...] = ("val2017", "train2017")
_FIRST_ID = {"val2017": 101, "train2017": 201}
THING_IDS: tuple[int, ...] = (1, 3, 18, 62, 88, 90, 44, 85)
STUFF_IDS: tuple[int, ...] = (187, 190, 193, 199, 184)
_INFO = {"description": "d2-mmdet-bridge synthetic COCO", "version": "1.0", "year": 2026}
_LICENSES = [{"id": 1, "name": "synthetic", "url": ""}]


@dataclass(frozen=True)
class SyntheticCoco:
    """Paths and image ids of a tree written by :func:`write_synthetic_coco`."""

    root: Path
    image_ids: dict[str, list[int]] = field(default_factory=dict)
    empty_image_ids: tuple[int, ...] = ()

    def images_dir(self, split: str = "val2017") -> Path:
        """Folder of the JPEG images of ``split``."""
        return self.root / split

    def panoptic_dir(self, split: str = "val2017") -> Path:
        """Folder of the panoptic PNG id maps of ``split``."""
        return self.root / f"panoptic_{split}"

    def panoptic_json(self, split: str = "val2017") -> Path:
        """Panoptic annotation file of ``split``."""
        return self.root / "annotations" / f"panoptic_{split}.json"

    def instances_json(self, split: str = "val2017") -> Path:
        """Instances annotation file of ``split``."""
        return self.root / "annotations" / f"instances_{split}.json"


def _bbox_area(mask: np.ndarray) -> tuple[list[int], int]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1], int(mask.sum())


def _shape_mask(h: int, w: int, box: tuple[int, int, int, int], ellipse: bool) -> np.ndarray:
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[0:h, 0:w]
    if not ellipse:
        return (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
    cx, cy, rx, ry = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _polygon(box: tuple[int, int, int, int], ellipse: bool) -> list[float]:
    x0, y0, x1, y1 = box
    if not ellipse:
        return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    pts = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)
    return [round(float(v), 2) for v in pts.reshape(-1)]


def _draw_image(rng: np.random.Generator, image_id: int, h: int, w: int, empty: bool):
    """Return (id_map, segments, instance annotations without ids) for one image."""
    id_map = np.zeros((h, w), dtype=np.int64)
    segments: list[dict[str, Any]] = []
    instances: list[dict[str, Any]] = []
    if empty:
        return id_map, segments, instances
    seg_ids = rng.choice(np.arange(1, 2**24), size=8, replace=False)
    stuff = rng.choice(STUFF_IDS, size=2, replace=False)
    half = h // 2
    regions = [(int(stuff[0]), slice(2, half)), (int(stuff[1]), slice(half, h - 2))]
    for k, (_cat, rows) in enumerate(regions):  # two stuff bands; 2-pixel void border top/bottom/left
        id_map[rows, 2:] = seg_ids[k]
    cols = 3
    cell_w = (w - 2) // cols
    for k in range(int(rng.integers(2, cols + 1))):
        cat = int(rng.choice(THING_IDS))
        x0 = 2 + k * cell_w + int(rng.integers(1, 4))
        y0 = int(rng.integers(4, h // 3))
        box = (x0, y0, x0 + int(rng.integers(cell_w // 2, cell_w - 4)), y0 + int(rng.integers(h // 4, h // 2)))
        ellipse = bool(k % 2)
        mask = _shape_mask(h, w, box, ellipse)
        id_map[mask] = seg_ids[2 + k]
        bbox, area = _bbox_area(mask)
        segments.append({"id": int(seg_ids[2 + k]), "category_id": cat, "iscrowd": 0, "bbox": bbox, "area": area})
        instances.append(
            {
                "image_id": image_id,
                "category_id": cat,
                "segmentation": [_polygon(box, ellipse)],
                "bbox": [float(v) for v in bbox],
                "area": float(area),
                "iscrowd": 0,
            }
        )
    for k, (cat, _rows) in enumerate(regions):
        mask = id_map == seg_ids[k]
        bbox, area = _bbox_area(mask)
        segments.append({"id": int(seg_ids[k]), "category_id": cat, "iscrowd": 0, "bbox": bbox, "area": area})
    return id_map, segments, instances


def _png_bytes(id_map: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(id_to_rgb(id_map), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes(rng: np.random.Generator, id_map: np.ndarray) -> bytes:
    palette = rng.integers(0, 256, size=(16, 3))
    rgb = palette[id_map % 16] + rng.integers(-12, 13, size=id_map.shape + (3,))
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, indent=1).encode()


def _write_split(
    root: Path, split: str, num_images: int, size: tuple[int, int], seed: int, empty: set[int]
) -> list[int]:
    h, w = size
    rng = np.random.default_rng([seed, _FIRST_ID[split]])
    ids = list(range(_FIRST_ID[split], _FIRST_ID[split] + num_images))
    images, pan_anns, inst_anns = [], [], []
    for image_id in ids:
        id_map, segments, instances = _draw_image(rng, image_id, h, w, image_id in empty)
        name = f"{image_id:012d}"
        atomic_write_bytes(root / split / f"{name}.jpg", _jpeg_bytes(rng, id_map))
        atomic_write_bytes(root / f"panoptic_{split}" / f"{name}.png", _png_bytes(id_map))
        images.append({"license": 1, "file_name": f"{name}.jpg", "height": h, "width": w, "id": image_id})
        pan_anns.append({"segments_info": segments, "file_name": f"{name}.png", "image_id": image_id})
        for k, ann in enumerate(instances):
            inst_anns.append({**ann, "id": image_id * 1000 + k})
    common = {"info": _INFO, "licenses": _LICENSES, "images": images}
    ann_dir = root / "annotations"
    atomic_write_bytes(
        ann_dir / f"panoptic_{split}.json",
        _dump({**common, "annotations": pan_anns, "categories": panoptic_categories()}),
    )
    atomic_write_bytes(
        ann_dir / f"instances_{split}.json",
        _dump({**common, "annotations": inst_anns, "categories": instance_categories()}),
    )
    return ids


def write_synthetic_coco(
    root: Path,
    *,
    num_images: int = 3,
    image_size: tuple[int, int] = (96, 128),
    seed: int = 0,
    empty_image_ids: Sequence[int] = (),
) -> SyntheticCoco:
    """Write a synthetic COCO tree under ``root`` and return its paths and image ids.

    ``num_images`` images per split (val ids 101.., train ids 201..) of ``image_size`` (height, width).
    Images listed in ``empty_image_ids`` get no segment (all void) and no instance annotation.
    """
    if num_images < 1 or num_images > 99:
        raise ValueError(f"num_images must be in 1..99, got {num_images}")
    root = Path(root)
    empty = {int(i) for i in empty_image_ids}
    ids = {split: _write_split(root, split, num_images, tuple(image_size), seed, empty) for split in SPLITS}
    return SyntheticCoco(root=root, image_ids=ids, empty_image_ids=tuple(sorted(empty)))
