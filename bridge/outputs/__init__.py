"""Canonical model outputs beside the panoptic one: instance and semantic results (docs/OUTPUTS.md)."""
