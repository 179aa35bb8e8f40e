"""An mmdet config as the converter's target, through ``python -m mmdet_side.target`` in a subprocess.

``--target model.py`` or ``--target mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py``: the model is built
on the CPU in the subprocess, its key manifest gives the names and shapes to convert to, and the written
checkpoint is loaded into it with ``strict=True`` as the final check.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from bridge.convert.loading import load_manifest
from bridge.frameworks import FrameworkError, run_side_module


def is_mmdet_config(target: str) -> bool:
    """True when ``target`` names an mmdet config (``*.py`` or ``mmdet::...``) rather than a manifest or checkpoint."""
    return target.startswith("mmdet::") or target.endswith(".py")


def mmdet_config_shapes(config: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the state dict of the model that the mmdet ``config`` builds."""
    with tempfile.TemporaryDirectory(prefix="bridge_target_") as tmp:
        manifest = Path(tmp) / "target.tsv"
        run_side_module(
            "mmdet_side.target",
            [config, "--manifest", str(manifest)],
            what=f"target {config}: building the mmdet model",
        )
        return load_manifest(manifest)


def mmdet_strict_check(config: str, checkpoint: str | Path, shown_as: str | Path | None = None) -> dict[str, Any]:
    """Load ``checkpoint`` into the model of ``config`` with ``strict=True``; the check's JSON result.

    The result has ``ok``, ``missing``, ``unexpected``, ``size_mismatch`` and ``error`` (None when it loaded).
    Messages name ``shown_as`` (the path the user gave) instead of ``checkpoint`` (e.g. a temporary file).
    """
    shown = str(shown_as if shown_as is not None else checkpoint)
    what = f"target {config}: strict load of {shown}"
    with tempfile.TemporaryDirectory(prefix="bridge_check_") as tmp:
        out = Path(tmp) / "check.json"
        try:
            run_side_module(
                "mmdet_side.target",
                [config, "--check", str(checkpoint), "--json", str(out), "--quiet"],
                what=what,
                ok_codes=(0, 1),
            )
        except FrameworkError as exc:
            raise FrameworkError(str(exc).replace(str(checkpoint), shown)) from None
        if not out.is_file():
            raise FrameworkError(f"{what}: `python -m mmdet_side.target` wrote no result")
        result = json.loads(out.read_text(encoding="utf-8"))
    if isinstance(result.get("error"), str):
        result["error"] = result["error"].replace(str(checkpoint), shown)
    return result
