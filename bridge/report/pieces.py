"""Read the pieces a port produced and tell their type from their content."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError

#: The piece types :func:`detect_type` knows, with what writes them.
PIECE_TYPES = {
    "conversion": "python -m bridge.convert ... --report OUT.json",
    "metadata": "python -m d2_side.meta / mmdet_side.meta (normalized evaluator metadata; two make a diff)",
    "metadata_diff": "python -m bridge.meta A.json B.json --json OUT.json",
    "initcheck": "python -m bridge.initcheck A B --report OUT.json",
    "compare": "python -m bridge.compare RUN_A RUN_B --json OUT.json",
    "parity": "bridge.panoptic.parity.ParityReport.to_dict() (evaluator tables side by side)",
    "known": "python -m bridge.align (a recipe's known: differences, explained where they show; docs/ALIGN.md)",
}


class PieceError(BridgeError):
    """A piece is unreadable, not JSON, or of no known type."""


@dataclass(frozen=True)
class Piece:
    """One input file: its path, detected type and parsed content."""

    path: Path
    type: str
    data: dict[str, Any]


def detect_type(data: Any) -> str | None:
    """The piece type of a parsed JSON document (one of :data:`PIECE_TYPES`), or None when unknown."""
    if not isinstance(data, dict):
        return None
    keys = set(data)
    if {"schema_version", "items", "counts", "first_divergence"} <= keys:
        return "compare"
    if {"converted", "missing", "unexpected", "shape_mismatch"} <= keys:
        return "conversion"
    if {"rows", "added", "seed"} <= keys:
        return "initcheck"
    if {"rows", "tolerance", "parity", "differing"} <= keys:
        return "parity"
    if {"differences", "equivalent"} <= keys:
        return "metadata_diff"
    if {"framework", "classes", "isthing", "dataset_id_to_label", "evaluator"} <= keys:
        return "metadata"
    if {"known_differences"} <= keys:
        return "known"
    return None


def load_piece(path: str | os.PathLike[str]) -> Piece:
    """Read one piece; raise :class:`PieceError` naming the file when it is unreadable or of unknown type."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PieceError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PieceError(f"{p}: not UTF-8 text (expected a JSON report)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PieceError(f"{p}: not JSON: {exc.msg} at line {exc.lineno}") from None
    kind = detect_type(data)
    if kind is None:
        known = ", ".join(PIECE_TYPES)
        raise PieceError(f"{p}: unknown piece type (expected one of: {known}; see docs/REPORT.md)")
    return Piece(p, kind, data)
