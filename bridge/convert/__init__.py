"""Checkpoint conversion driven by rule sets (data, not code): detectron2 -> MMDetection 3.x.

Public API: :func:`convert_state_dict`, :func:`load_checkpoint`, :func:`load_rules`,
:func:`compare_to_target`, :func:`translate_name`, :func:`map_named_tensor` (the rules applied to one named
tensor: a weight, its gradient, its optimizer state), :func:`added_names`, :func:`reverse_state_dict` (the rules
run backwards).  CLI: ``python -m bridge.convert`` (``--reverse`` for the way back).
"""

from __future__ import annotations

from bridge.convert.engine import (
    ConversionResult,
    Dropped,
    MappedTensor,
    added_names,
    convert_state_dict,
    map_named_tensor,
)
from bridge.convert.loading import load_checkpoint, load_manifest, load_strict, load_target_shapes, save_checkpoint
from bridge.convert.report import Report, compare_to_target, fold_keys
from bridge.convert.reverse import ReverseResult, reverse_state_dict
from bridge.convert.rules import RuleSet, list_presets, load_rules, translate_name

__all__ = [
    "ConversionResult",
    "Dropped",
    "MappedTensor",
    "Report",
    "ReverseResult",
    "RuleSet",
    "added_names",
    "compare_to_target",
    "convert_state_dict",
    "fold_keys",
    "map_named_tensor",
    "reverse_state_dict",
    "list_presets",
    "load_checkpoint",
    "load_strict",
    "load_manifest",
    "load_rules",
    "load_target_shapes",
    "save_checkpoint",
    "translate_name",
]
