"""Provenance of a converted checkpoint: which file, which rules (expanded, hashed), which bridge version."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

from bridge.convert.rules import RuleSet

_CHUNK = 1 << 22


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks (no copy of the whole file in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def rules_text(rules: RuleSet) -> str:
    """The expanded rules (includes resolved) as canonical JSON: the text whose sha256 identifies them."""
    return json.dumps(rules.specs(), sort_keys=True, separators=(",", ":"), default=str)


def bridge_version() -> str:
    """The installed version of d2-mmdet-bridge, or 'unknown' when it runs from a checkout not installed."""
    try:
        return importlib.metadata.version("d2-mmdet-bridge")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def provenance(source: str | Path, rules: RuleSet) -> dict[str, Any]:
    """Meta entries that identify a conversion: the source's path, size and modification time, the rules
    themselves and their sha256, the bridge version. (The source's sha256 costs a full read of the file;
    ``python -m bridge.convert --report`` puts it in the report, computed while the conversion runs.)"""
    text = rules_text(rules)
    stat = Path(source).stat()
    return {
        "source": str(Path(source).resolve()),
        "source_bytes": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
        "rules": rules.source,
        "rules_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "rules_expanded": json.loads(text),
        "bridge_version": bridge_version(),
    }
