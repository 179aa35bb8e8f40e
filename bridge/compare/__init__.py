"""Compare two recorded runs leaf by leaf: ``python -m bridge.compare RUN_A RUN_B`` or :func:`compare_runs`."""

from __future__ import annotations

from .engine import ComparisonResult, ItemResult, Location, compare_runs
from .report_html import build_html, write_html
from .report_json import to_dict, write_json

__all__ = [
    "ComparisonResult",
    "ItemResult",
    "Location",
    "compare_runs",
    "build_html",
    "write_html",
    "to_dict",
    "write_json",
]
