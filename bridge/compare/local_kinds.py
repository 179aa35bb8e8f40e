"""Kinds of the layer-local check (``input``, ``local``), which the leaf-by-leaf comparison leaves out."""

from __future__ import annotations

#: Kinds of the layer-local check, left out of the leaf-by-leaf comparison unless ``--kinds`` names them.
LAYER_LOCAL_KINDS: tuple[str, ...] = ("input", "local")


def kept_kind(kind: str, kinds: set[str] | None) -> bool:
    """Whether the leaf-by-leaf comparison keeps records of ``kind``: those of ``kinds`` when given, else every
    kind but :data:`LAYER_LOCAL_KINDS` (compared by ``bridge.compare.local_entries`` instead)."""
    return kind in kinds if kinds is not None else kind not in LAYER_LOCAL_KINDS
