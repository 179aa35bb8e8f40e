"""Assemble the report document (the JSON written by ``--json``; the page is drawn from it)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .pieces import PIECE_TYPES, load_piece
from .stages import exit_code, first_failing, judge
from .tensors import picture

SCHEMA_VERSION = 1


def build_report(
    paths: Sequence[str | os.PathLike[str]], *, runs: Sequence[str] | None = None, name_map: str | None = None
) -> dict[str, Any]:
    """Read the pieces, judge the stages and, for the first compare report with a failing tensor pair, picture
    it from ``runs`` (RUN_A, RUN_B) or from the runs that report names in its settings (when they exist).
    Raises BridgeError on bad input."""
    pieces = [load_piece(p) for p in paths]
    stages = judge(pieces)
    first = first_failing(stages)
    pictured = None
    compares = [p for p in pieces if p.type == "compare"]
    for piece in compares:
        settings = piece.data.get("settings") or {}
        pair = tuple(runs) if runs else (settings.get("run_a"), settings.get("run_b"))
        if not runs and not all(r and os.path.isdir(r) for r in pair):
            continue
        pictured = picture(pair, piece.data, name_map if name_map is not None else settings.get("name_map"))
        if pictured is not None:
            pictured["source"] = str(piece.path)
            break
    return {
        "schema_version": SCHEMA_VERSION,
        "passed": exit_code(stages) == 0,
        "first_failing_stage": first.name if first else None,
        "stages": [s.to_dict() for s in stages],
        "pieces": [{"path": str(p.path), "type": p.type, "written_by": PIECE_TYPES[p.type]} for p in pieces],
        "first_divergent_tensor": pictured,
        "entries": [{"source": str(p.path), "items": p.data["items"]} for p in compares],
    }
