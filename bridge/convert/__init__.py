"""Checkpoint conversion driven by rule sets (data, not code): detectron2 -> MMDetection 3.x.

Public API: :func:`convert_state_dict`, :func:`load_checkpoint`, :func:`load_rules`,
:func:`compare_to_target`, :func:`translate_name`.  CLI: ``python -m bridge.convert``.
"""

from __future__ import annotations

from bridge.convert.engine import ConversionResult, convert_state_dict
from bridge.convert.loading import load_checkpoint, load_manifest, load_target_shapes, save_checkpoint
from bridge.convert.report import Report, compare_to_target, fold_keys
from bridge.convert.rules import RuleSet, list_presets, load_rules, translate_name

__all__ = [
    "ConversionResult", "Report", "RuleSet", "compare_to_target", "convert_state_dict", "fold_keys",
    "list_presets", "load_checkpoint", "load_manifest", "load_rules", "load_target_shapes",
    "save_checkpoint", "translate_name",
]
