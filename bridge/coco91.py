"""One shared definition of the 91 DETR-style COCO label slots.

Slot ``i`` is the original COCO category id ``i`` (ids run 1..90 with gaps; slot 0 and the
unused ids are ``'N/A'``).  Index lists map between the 80 contiguous classes and the 91 slots.
"""

from __future__ import annotations

#: The 80 original COCO category ids, in contiguous-class order.
COCO80_CATEGORY_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
    11, 13, 14, 15, 16, 17, 18, 19, 20, 21,
    22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44,
    46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65,
    67, 70, 72, 73, 74, 75, 76, 77, 78, 79,
    80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)

#: 91 slot names; index = original category id, ``'N/A'`` where no category uses the id.
COCO91_SLOT_NAMES: tuple[str, ...] = (
    "N/A", "person", "bicycle", "car", "motorcycle", "airplane",
    "bus", "train", "truck", "boat", "traffic light", "fire hydrant",
    "N/A", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear",
    "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A",
    "N/A", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup",
    "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
    "donut", "cake", "chair", "couch", "potted plant", "bed",
    "N/A", "dining table", "N/A", "N/A", "toilet", "N/A",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)

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


def coco80_names() -> list[str]:
    """Return the 80 class names in contiguous order."""
    return [COCO91_SLOT_NAMES[s] for s in COCO80_TO_91]
