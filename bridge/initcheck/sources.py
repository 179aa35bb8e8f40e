"""What ``bridge.initcheck`` compares: a state-dict file, or a model freshly built from a config with a seed.

A detectron2 config (a ``.yaml`` file or a model-zoo path such as
``COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml``) is built by ``python -m d2_side.init_state``, an
mmdet config (``.py`` or ``mmdet::...``) by ``python -m mmdet_side.init_state``, each in a subprocess
(``bridge`` never imports either framework) that writes the initial state dict into a temporary folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bridge.convert import load_checkpoint
from bridge.convert.mmdet_target import is_mmdet_config
from bridge.errors import BridgeError
from bridge.frameworks import run_side_module

STATE_SUFFIXES = (".pth", ".pt", ".pkl", ".pickle", ".safetensors", ".bin", ".ckpt")


def source_kind(spec: str) -> str:
    """``'file'``, ``'mmdet'`` or ``'detectron2'``: how ``spec`` gives a state dict."""
    if is_mmdet_config(spec):
        return "mmdet"
    if spec.endswith((".yaml", ".yml")):
        return "detectron2"
    if Path(spec).suffix.lower() in STATE_SUFFIXES or Path(spec).is_file():
        return "file"
    raise BridgeError(
        f"{spec}: neither a state-dict file ({', '.join(STATE_SUFFIXES)}), a detectron2 config "
        "(.yaml or model-zoo path) nor an mmdet config (.py or mmdet::...)"
    )


def load_initial_state(
    spec: str, *, seed: int, workdir: str | Path, unsafe_pickle: bool = False, name: str = "state"
) -> dict[str, torch.Tensor]:
    """The state dict that ``spec`` gives: the file's, or the model's that its config builds with ``seed``.

    Built models are written as ``<workdir>/<name>.safetensors`` by the framework side's ``init_state``.
    """
    kind = source_kind(spec)
    if kind == "file":
        return load_checkpoint(spec, unsafe_pickle=unsafe_pickle)
    out = Path(workdir) / f"{name}.safetensors"
    module = "mmdet_side.init_state" if kind == "mmdet" else "d2_side.init_state"
    run_side_module(
        module, [spec, "--seed", str(seed), "-o", str(out)], what=f"{spec}: building the {kind} model with seed {seed}"
    )
    return load_checkpoint(out)
