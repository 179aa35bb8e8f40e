"""Shared fixtures: a synthetic COCO tree written by code (real JPEGs, real panoptic PNG encoding)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bridge.onesample import OneSampleConfig
from bridge.synthetic_coco import write_synthetic_coco

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic COCO root with train and val splits, instances and panoptic annotations."""
    root = tmp_path_factory.mktemp("coco")
    write_synthetic_coco(root, num_images=3)
    return root


@pytest.fixture(scope="session")
def onesample_config(coco_root: Path, tmp_path_factory: pytest.TempPathFactory) -> OneSampleConfig:
    """One-sample configuration over the synthetic root (first annotated image of each split)."""
    return OneSampleConfig.create(coco_root, None, tmp_path_factory.mktemp("bridge_cache"))


def bridge_env(coco_root: Path, cache_dir: Path) -> dict[str, str]:
    """The environment a user sets for `import d2_side.register` (plus the repo on PYTHONPATH)."""
    env = dict(os.environ)
    env.update(BRIDGE_COCO_ROOT=str(coco_root), BRIDGE_CACHE_DIR=str(cache_dir),
               PYTHONPATH=f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}")
    env.pop("BRIDGE_TRAIN_IMAGE_IDS", None)
    env.pop("BRIDGE_VAL_IMAGE_IDS", None)
    return env


def detectron2_tools_dir() -> Path:
    """detectron2's own tools/ from the sdist that `make setup` built (kept in the venv)."""
    tools = Path(sys.prefix) / "share" / "detectron2-0.6-tools"
    assert (tools / "train_net.py").exists(), f"{tools}/train_net.py is missing: run `make setup`"
    return tools
