"""detectron2 panoptic outputs (PanopticFPN, Mask2Former, Mask DINO) to and from the canonical encoding.

detectron2 gives ``output["panoptic_seg"] = (ids, segments_info)``: ``ids`` an H×W int tensor (0 or -1 =
void) and ``segments_info`` a list of ``{id, category_id (contiguous), isthing}``; contiguous ids map back
to dataset ids through ``thing_dataset_id_to_contiguous_id`` (things) and
``stuff_dataset_id_to_contiguous_id`` (stuff) of the dataset's metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from bridge.errors import BridgeError
from bridge.panoptic import CanonicalPanoptic, canonical_from_segment_map

DEFAULT_LABEL_DIVISOR = 1000


def _meta_get(metadata: Any, key: str, default: Any = None) -> Any:
    if isinstance(metadata, Mapping):
        return metadata.get(key, default)
    return getattr(metadata, key, default) if hasattr(metadata, key) else default


def _maps(metadata: Any) -> tuple[dict[int, int], dict[int, int]]:
    """(thing contiguous → dataset id, stuff contiguous → dataset id)."""
    things = _meta_get(metadata, "thing_dataset_id_to_contiguous_id") or {}
    stuff = _meta_get(metadata, "stuff_dataset_id_to_contiguous_id") or {}
    if not things and not stuff:
        raise BridgeError("metadata has neither thing_ nor stuff_dataset_id_to_contiguous_id")
    return ({int(c): int(d) for d, c in things.items()}, {int(c): int(d) for d, c in stuff.items()})


def canonical_from_d2(
    panoptic_seg: tuple[torch.Tensor, Sequence[Mapping[str, Any]] | None], metadata: Any
) -> CanonicalPanoptic:
    """Convert detectron2's ``(ids, segments_info)`` into a canonical result with dataset category ids.

    ``metadata`` is a detectron2 ``Metadata`` or a dict holding the two ``*_dataset_id_to_contiguous_id``
    maps. When ``segments_info`` is None the ids are ``contiguous * label_divisor + instance`` (detectron2's
    alternative encoding) and ``isthing`` is taken from the thing map.
    """
    try:
        ids, segments_info = panoptic_seg
    except (TypeError, ValueError):
        raise BridgeError("panoptic_seg must be a (ids tensor, segments_info) pair") from None
    ids_np = ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    ids_np = ids_np.astype(np.int64)
    thing_map, stuff_map = _maps(metadata)
    if segments_info is None:
        divisor = int(_meta_get(metadata, "label_divisor", DEFAULT_LABEL_DIVISOR) or DEFAULT_LABEL_DIVISOR)
        segments_info = []
        for value in np.unique(ids_np).tolist():
            if value < 0:
                continue
            contiguous = value // divisor
            isthing = contiguous in thing_map and (value % divisor != 0 or contiguous not in stuff_map)
            segments_info.append({"id": value + 1, "category_id": contiguous, "isthing": isthing})
        ids_np = np.where(ids_np < 0, 0, ids_np + 1)
    infos = []
    for info in segments_info:
        contiguous, isthing = int(info["category_id"]), bool(info["isthing"])
        table = thing_map if isthing else stuff_map
        if contiguous not in table:
            raise BridgeError(
                f"segment {info['id']}: contiguous {'thing' if isthing else 'stuff'} id {contiguous} "
                "is not in the metadata's map"
            )
        infos.append({"id": int(info["id"]), "category_id": table[contiguous], "isthing": isthing})
    return canonical_from_segment_map(ids_np, infos, void_ids=(0, -1))


def d2_from_canonical(c: CanonicalPanoptic, metadata: Any) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """The inverse: ``(ids int32 tensor, segments_info)`` with contiguous category ids, 0 = void."""
    things = {int(d): int(v) for d, v in (_meta_get(metadata, "thing_dataset_id_to_contiguous_id") or {}).items()}
    stuff = {int(d): int(v) for d, v in (_meta_get(metadata, "stuff_dataset_id_to_contiguous_id") or {}).items()}
    ids = torch.from_numpy(c.segment.astype(np.int32))
    infos = []
    for s in c.segments:
        table = things if s["isthing"] else stuff
        if s["category_id"] not in table:
            raise BridgeError(
                f"segment {s['id']}: dataset category {s['category_id']} is not in the metadata's "
                f"{'thing' if s['isthing'] else 'stuff'} map"
            )
        infos.append(
            {
                "id": int(s["id"]),
                "category_id": table[s["category_id"]],
                "isthing": bool(s["isthing"]),
                "area": int(s["area"]),
            }
        )
    return ids, infos


__all__ = ["canonical_from_d2", "d2_from_canonical"]
