"""Kinds the leaf-by-leaf comparison leaves out unless ``--kinds`` names them: the layer-local check's
(``input``, ``local``) and the RNG tape (``rng``, replayed rather than compared)."""

from __future__ import annotations

#: Kinds of the layer-local check, left out of the leaf-by-leaf comparison unless ``--kinds`` names them.
LAYER_LOCAL_KINDS: tuple[str, ...] = ("input", "local")

#: Kinds left out of the leaf-by-leaf comparison by default.
UNCOMPARED_BY_DEFAULT: tuple[str, ...] = (*LAYER_LOCAL_KINDS, "rng")


def kept_kind(kind: str, kinds: set[str] | None) -> bool:
    """Whether the leaf-by-leaf comparison keeps records of ``kind``: those of ``kinds`` when given, else every
    kind but :data:`UNCOMPARED_BY_DEFAULT` (compared by ``bridge.compare.local_entries`` instead)."""
    return kind in kinds if kinds is not None else kind not in UNCOMPARED_BY_DEFAULT
