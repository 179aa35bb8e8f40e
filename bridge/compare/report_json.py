"""The ``--json`` report (schema in docs/COMPARE_JSON.md), written atomically."""

from __future__ import annotations

import os
from typing import Any

import orjson

from bridge.atomic import atomic_open

from .engine import ComparisonResult

SCHEMA_VERSION = 1


def to_dict(result: ComparisonResult, local: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the JSON-ready report; non-finite floats are null. ``local``: the layer-local section
    (``bridge.compare.local_entries.local_section``, with ``--local``), else null."""
    return {
        "schema_version": SCHEMA_VERSION,
        "passed": result.passed,
        "run_a": result.run_a,
        "run_b": result.run_b,
        "counts": {
            "pairs": len(result.items),
            "failed": result.n_failed,
            "a_only": len(result.a_only),
            "b_only": len(result.b_only),
            "by_nature": len(result.by_nature),
            "outputs": len(result.output_pairs()),
            "outputs_failed": sum(not p.passed for p in result.output_pairs()),
        },
        "first_divergence": result.first_divergence.to_dict() if result.first_divergence else None,
        "last_passing_before": result.last_passing_before.to_dict() if result.last_passing_before else None,
        "unpaired": {
            "a_only": [loc.to_dict() for loc in result.a_only],
            "b_only": [loc.to_dict() for loc in result.b_only],
        },
        "settings": result.settings,
        "items": [item.to_dict() for item in result.items],
        "panoptic": [pair.to_dict() for pair in result.panoptic],
        "instances": [pair.to_dict() for pair in result.instances],
        "semantic": [pair.to_dict() for pair in result.semantic],
        "outputs_counted": result.outputs_counted,
        "by_nature": [loc.to_dict() for loc in result.by_nature],
        "optim": [comparison.to_dict() for comparison in result.optim],
        "band": result.band.to_dict() if result.band is not None else None,
        "local": local,
    }


def to_json_bytes(result: ComparisonResult, local: dict[str, Any] | None = None) -> bytes:
    """The report as UTF-8 JSON bytes (indented); ``local`` as in :func:`to_dict`."""
    return orjson.dumps(to_dict(result, local), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)


def write_json(result: ComparisonResult, path: str | os.PathLike[str]) -> None:
    """Write the report to ``path`` atomically."""
    data = to_json_bytes(result)
    with atomic_open(path, "wb") as handle:
        handle.write(data)
