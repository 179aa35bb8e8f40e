"""examples/record_d2_eval.py: detectron2's evaluation recorded with the canonical outputs, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from bridge import open_run
from bridge.coco.onesample import OneSampleConfig
from bridge.outputs.instances import from_record as instances_from_record
from bridge.outputs.semantic import from_record as semantic_from_record
from bridge.panoptic import from_record as panoptic_from_record
from tests.conftest import REPO, bridge_env


def test_record_d2_eval_example_writes_canonical_outputs(onesample_config: OneSampleConfig, tmp_path: Path) -> None:
    out = tmp_path / "d2_eval"
    env = bridge_env(onesample_config.coco_root, onesample_config.cache_dir)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "record_d2_eval.py"),
            "--out",
            str(out),
            "--size",
            "96",
            "MODEL.DEVICE",
            "cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert "nested in other matches" not in result.stderr  # the default globs record the four stages only
    run = open_run(out)
    batch = run.get("batch", step=0, kind="batch")[0]
    image_id, size = batch["image_id"], (batch["height"], batch["width"])
    names = {e.name for e in run.entries(step=0)}
    assert {f"panoptic.{image_id}", f"instances.{image_id}", f"semantic.{image_id}", "outputs"} <= names
    assert {f"backbone.bottom_up.res{k}" for k in range(2, 6)} == {n for n in names if n.startswith("backbone.")}
    panoptic = panoptic_from_record(run.get(f"panoptic.{image_id}", step=0, kind="output"))
    instances = instances_from_record(run.get(f"instances.{image_id}", step=0, kind="output"))
    semantic = semantic_from_record(run.get(f"semantic.{image_id}", step=0, kind="output"))
    assert panoptic.shape == tuple(semantic.category.shape) == size
    raw = run.get("outputs", step=0, kind="output")[0]
    assert torch.equal(instances.scores, raw["instances"]["scores"]) and instances.masks.shape[1:] == size
    assert set(semantic.category.unique().tolist()) <= {0, *range(92, 201)}  # PanopticFPN: things (0) + stuff ids
    assert set(instances.category_id.tolist()) <= set(range(1, 91))


def test_record_d2_eval_example_names_bad_input(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "record_d2_eval.py"),
            "--out",
            str(tmp_path / "run"),
            "--coco-root",
            str(tmp_path / "missing"),
            "MODEL.DEVICE",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**bridge_env(tmp_path, tmp_path / "cache")},
    )
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and last.startswith("error: ") and "missing" in last
    assert "Traceback" not in result.stderr
