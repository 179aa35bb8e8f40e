"""Semantic-segmentation PNGs derived from COCO-panoptic PNGs, the two ways detectron2-based repos use.

- ``all_classes``: Mask2Former / Mask DINO: every category (thing or stuff) gets its contiguous index in
  the panoptic category list (0..132 for COCO), 255 = unlabeled.
- ``stuff_only``: detectron2 PanopticFPN (``prepare_panoptic_fpn.py``): things = 0, the stuff categories
  1..53 in category-list order, 255 = unlabeled.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from PIL import Image

from bridge.atomic import atomic_path
from bridge.errors import BridgeError

IGNORE_LABEL = 255
MODES = ("all_classes", "stuff_only")
#: PIL modes whose pixels decode to exact RGB colours (a COCO-panoptic PNG is 8-bit RGB).
RGB_MODES = ("RGB", "RGBA", "P")


def read_panoptic_rgb(path: str | os.PathLike[str], size: tuple[int, int] | None = None, what: str = "") -> np.ndarray:
    """Read a COCO-panoptic id PNG as an H×W×3 uint8 array; BridgeError naming ``path`` (and ``what``, e.g.
    the image) for a file that cannot be one: unreadable or truncated, a decompression bomb (above
    ``PIL.Image.MAX_IMAGE_PIXELS``), a grayscale or 16-bit PNG (its ids would decode wrong), or a size other
    than ``size`` (H, W) when given."""
    where = f"{path}{f' ({what})' if what else ''}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.mode not in RGB_MODES:
                    raise BridgeError(
                        f"{where}: a panoptic PNG must be 8-bit RGB, got PIL mode {image.mode!r} "
                        "(grayscale or 16-bit ids would decode wrong)"
                    )
                if size is not None and (image.height, image.width) != tuple(size):
                    raise BridgeError(
                        f"{where}: panoptic PNG is {image.height}x{image.width} (HxW), the image is {size[0]}x{size[1]}"
                    )
                return np.asarray(image.convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BridgeError(f"{where}: refusing a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BridgeError(f"{where}: cannot read panoptic PNG: {exc}") from None


def contained_path(root: Path, file_name: object, what: str) -> Path:
    """``root / file_name`` for a relative ``file_name`` that stays inside ``root``; BridgeError naming
    ``what`` (e.g. the annotation) for an absolute name or one with ``..`` (it would escape ``root``)."""
    if not isinstance(file_name, str) or not file_name or "\x00" in file_name:
        raise BridgeError(f"{what}: file_name must be a non-empty string, got {file_name!r}")
    parts = PurePosixPath(file_name).parts
    if (
        PurePosixPath(file_name).is_absolute()
        or PureWindowsPath(file_name).is_absolute()
        or PureWindowsPath(file_name).drive
        or ".." in parts
        or ".." in PureWindowsPath(file_name).parts
    ):
        raise BridgeError(f"{what}: file_name {file_name!r} leaves {root} (absolute or '..'); refusing it")
    return root / file_name


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Decode a COCO-panoptic RGB PNG array (H×W×3) into segment ids: R + 256·G + 256²·B."""
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Encode segment ids (H×W, 0..256³-1) as a COCO-panoptic RGB array (H×W×3 uint8); the inverse of
    :func:`rgb_to_id`."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise BridgeError(f"panoptic segment ids must lie in 0..{256**3 - 1}, got {int(ids.min())}..{int(ids.max())}")
    return np.stack([ids % 256, (ids // 256) % 256, ids // (256 * 256)], axis=-1).astype(np.uint8)


def read_panoptic_ids(path: str | os.PathLike[str], size: tuple[int, int] | None = None, what: str = "") -> np.ndarray:
    """The segment-id map (H×W int64) of a COCO-panoptic PNG, read and checked by :func:`read_panoptic_rgb`."""
    return rgb_to_id(read_panoptic_rgb(path, size, what)).astype(np.int64)


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


def semantic_from_panoptic(
    panoptic_png: Path,
    segments_info: Sequence[dict],
    labels: dict[int, int],
    size: tuple[int, int] | None = None,
    what: str = "",
) -> np.ndarray:
    """Return the uint8 semantic map of one panoptic PNG given its ``segments_info`` and label map
    (the PNG is checked by :func:`read_panoptic_rgb`, against ``size`` (H, W) when given)."""
    ids = read_panoptic_ids(panoptic_png, size, what)
    semantic = np.full(ids.shape, IGNORE_LABEL, dtype=np.uint8)
    for segment in segments_info:
        category_id = int(segment["category_id"])
        if category_id not in labels:
            raise BridgeError(
                f"{panoptic_png}: segment {segment['id']} has category {category_id}, "
                "which is not in the annotation file's categories"
            )
        semantic[ids == int(segment["id"])] = labels[category_id]
    return semantic


def write_semantic_pngs(panoptic_json: dict, panoptic_dir: Path, out_dir: Path, mode: str) -> list[Path]:
    """Write the semantic PNG of every annotation in ``panoptic_json`` into ``out_dir`` when missing.

    Files are named like the panoptic PNGs; existing files are kept. Returns the paths, in order. A
    ``file_name`` that would leave ``out_dir`` (absolute, ``..``) is refused, and so is a panoptic PNG of
    another size than its image (``height``/``width`` in ``images``), a grayscale or 16-bit one.
    """
    labels = category_to_label(panoptic_json["categories"], mode)
    sizes = {
        image.get("id"): (image["height"], image["width"])
        for image in panoptic_json.get("images", [])
        if isinstance(image, dict) and isinstance(image.get("height"), int) and isinstance(image.get("width"), int)
    }
    written = []
    for annotation in panoptic_json["annotations"]:
        what = f"annotation of image {annotation.get('image_id')}"
        target = contained_path(out_dir, annotation.get("file_name"), what)
        if not target.exists():
            source = contained_path(panoptic_dir, annotation["file_name"], what)
            if not source.exists():
                raise BridgeError(f"panoptic PNG {source} (image {annotation['image_id']}) does not exist")
            semantic = semantic_from_panoptic(
                source,
                annotation["segments_info"],
                labels,
                sizes.get(annotation.get("image_id")),
                f"image {annotation['image_id']}",
            )
            with atomic_path(target) as tmp:
                Image.fromarray(semantic).save(tmp, format="PNG")
        written.append(target)
    return written
