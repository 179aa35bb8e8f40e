"""One shared definition of the COCO label slots where label = original COCO category id, and of the official
COCO category tables (``panoptic_categories``, ``instance_categories``, shipped in ``bridge/data``).

Instances (DETR's 91 slots): slot ``i`` is the original COCO category id ``i`` (ids run 1..90 with gaps;
slot 0 and the unused ids are ``'N/A'``).  Index lists map between the 80 contiguous classes and the 91 slots.

Panoptic (201 slots): the 91 instance slots (things, ids 1..90) followed by slots 91..200 for the stuff
categories (ids 92..200, ``'N/A'`` where unused), so things come first, as mmdet's panoptic heads assume
(label < ``COCO_PANOPTIC_NUM_THING_SLOTS`` is a thing), and label = category id for things and stuff.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError

#: The name of a slot no category uses.
UNUSED_SLOT = "N/A"

#: 91 slot names; index = original category id, ``'N/A'`` where no category uses the id.
COCO91_SLOT_NAMES: tuple[str, ...] = (
    "N/A",
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "N/A",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "N/A",
    "backpack",
    "umbrella",
    "N/A",
    "N/A",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "N/A",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "N/A",
    "dining table",
    "N/A",
    "N/A",
    "toilet",
    "N/A",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "N/A",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)

#: The 80 original COCO category ids, in contiguous-class order (the named slots, in id order).
COCO80_CATEGORY_IDS: tuple[int, ...] = tuple(i for i, name in enumerate(COCO91_SLOT_NAMES) if name != UNUSED_SLOT)

#: ``COCO80_TO_91[c]`` is the 91-slot index of contiguous class ``c`` (select rows of a 91-row head).
COCO80_TO_91: tuple[int, ...] = COCO80_CATEGORY_IDS

#: ``COCO91_TO_80[s]`` is the contiguous class of slot ``s``, or -1 for an unused slot.
COCO91_TO_80: tuple[int, ...] = tuple(
    COCO80_CATEGORY_IDS.index(s) if s in COCO80_CATEGORY_IDS else -1 for s in range(91)
)

#: Named row-index lists usable by the converter's ``class_rows`` rule: new row i = old row list[i].
INDEX_LISTS: dict[str, tuple[int, ...]] = {
    "coco91_to_coco80": COCO80_TO_91,
}

#: Thing slots of the panoptic layout (labels 0..90); stuff slots follow.
COCO_PANOPTIC_NUM_THING_SLOTS: int = len(COCO91_SLOT_NAMES)

_DATA_DIR = Path(__file__).resolve().parent / "data"
_PANOPTIC_CATEGORIES = _DATA_DIR / "coco_panoptic_categories.json"
_INSTANCE_CATEGORIES = _DATA_DIR / "coco_instances_categories.json"


@functools.lru_cache(maxsize=None)
def _load_categories(path: Path) -> tuple[dict[str, Any], ...]:
    return tuple(json.loads(path.read_text()))


def panoptic_categories() -> list[dict[str, Any]]:
    """Return the 133 official COCO-panoptic categories (id, name, supercategory, isthing, color), shipped in
    ``bridge/data``; a fresh list of fresh dicts on every call."""
    return [dict(c) for c in _load_categories(_PANOPTIC_CATEGORIES)]


def instance_categories() -> list[dict[str, Any]]:
    """Return the 80 official COCO instance categories with their original ids (1..90), shipped in
    ``bridge/data``; a fresh list of fresh dicts on every call."""
    return [dict(c) for c in _load_categories(_INSTANCE_CATEGORIES)]


def coco80_names() -> list[str]:
    """Return the 80 class names in contiguous order."""
    return [COCO91_SLOT_NAMES[s] for s in COCO80_TO_91]


@functools.lru_cache(maxsize=None)
def coco_panoptic_slot_names() -> tuple[str, ...]:
    """Return the 201 panoptic slot names: the 91 instance slots, then stuff slots 91..200 by category id.

    The stuff names come from the official COCO-panoptic category list shipped in ``bridge/data``; its
    thing categories must sit in their instance slots (checked here, so the two tables cannot drift).
    """
    categories = panoptic_categories()
    size = 1 + max(c["id"] for c in categories)
    slots = list(COCO91_SLOT_NAMES) + [UNUSED_SLOT] * (size - COCO_PANOPTIC_NUM_THING_SLOTS)
    for cat in categories:
        in_thing_slots = cat["id"] < COCO_PANOPTIC_NUM_THING_SLOTS
        if bool(cat["isthing"]) != in_thing_slots or (in_thing_slots and slots[cat["id"]] != cat["name"]):
            raise BridgeError(
                f"{_PANOPTIC_CATEGORIES}: category {cat['id']} {cat['name']!r} (isthing="
                f"{cat['isthing']}) does not fit the panoptic slot layout"
            )
        slots[cat["id"]] = cat["name"]
    return tuple(slots)


def check_slot_layout(classes: Sequence[str], categories: Iterable[tuple[int, str]], where: str) -> None:
    """Raise :class:`BridgeError` unless each category ``(id, name)`` has its name in slot ``id`` of ``classes``.

    ``where`` names the caller (a metric, a dataset's annotation file) in the message.  The usual cause, an
    80-name contiguous class list where the id slots were expected, gets its own hint.
    """
    wrong = [(cat_id, name) for cat_id, name in categories if not 0 <= cat_id < len(classes) or classes[cat_id] != name]
    if not wrong:
        return
    cat_id, name = wrong[0]
    found = repr(classes[cat_id]) if 0 <= cat_id < len(classes) else f"no slot (only {len(classes)} classes)"
    hint = ""
    if UNUSED_SLOT not in classes:
        hint = (
            f"; the {len(classes)} classes have no {UNUSED_SLOT!r} slot, so they look like contiguous labels "
            "(e.g. the stock CocoDataset's): use the id-slot dataset (CocoDataset91 / CocoPanopticDataset91, "
            "apply_coco91)"
        )
    raise BridgeError(
        f"{where}: dataset_meta['classes'] is not the id-slot layout (label = category id): "
        f"category {cat_id} {name!r} has {found} in slot {cat_id} ({len(wrong)} categories "
        f"misplaced){hint}"
    )
