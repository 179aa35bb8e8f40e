"""The dino-original-to-mmdet preset: a checkpoint with the names and shapes of the original IDEA-Research
DINO 4scale R50 (tests/data/dino_4scale_r50_original.tsv) converted against mmdet's real DINO config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bridge.coco.coco91 import COCO80_TO_91
from bridge.convert import convert_state_dict, load_checkpoint, load_manifest
from bridge.errors import ConversionError
from tests.conftest import REPO

ORIGINAL_TSV = REPO / "tests" / "data" / "dino_4scale_r50_original.tsv"
MMDET_CONFIG = "mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py"
ALIAS_PREFIX = "transformer.decoder."


def _shared_copy(key: str) -> str | None:
    """The key whose tensor ``key`` shares in the original model (``class_embed.0...``), or None."""
    own = key
    if key.startswith(ALIAS_PREFIX + "class_embed.") or key.startswith(ALIAS_PREFIX + "bbox_embed."):
        key = key[len(ALIAS_PREFIX) :]
    head, _, rest = key.partition(".")
    if head in ("class_embed", "bbox_embed"):
        shared = f"{head}.0.{rest.partition('.')[2]}"
        return shared if shared != own else None
    return None


def original_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the original DINO's names and shapes, shared where the real model shares modules.

    ``class_embed.{0..5}`` are one Linear and ``bbox_embed.{0..5}`` one MLP in the original
    (dec_pred_*_embed_share), and ``transformer.decoder.{class,bbox}_embed.N`` are the same modules again.
    """
    generator = torch.Generator().manual_seed(seed)
    shapes = load_manifest(ORIGINAL_TSV)
    state = {
        key: torch.empty(shape).normal_(generator=generator) for key, shape in shapes.items() if not _shared_copy(key)
    }
    for key in shapes:
        if _shared_copy(key):
            state[key] = state[_shared_copy(key)]
        if key.startswith("input_proj.") and key.endswith(".0.bias"):
            state[key] = torch.zeros(shapes[key])  # DINO initialises them to 0; mmdet's ChannelMapper has none
    return {key: state[key] for key in shapes}


@pytest.fixture(scope="module")
def original_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic original checkpoint saved as DINO's main.py saves it: ``{'model': state_dict, ...}``."""
    path = tmp_path_factory.mktemp("dino") / "checkpoint0011_4scale.pth"
    torch.save({"model": original_state_dict(), "epoch": 11}, path)
    return path


def test_original_manifest_has_the_keys_the_preset_relies_on() -> None:
    keys = load_manifest(ORIGINAL_TSV)
    assert len(keys) == 626
    assert keys["class_embed.5.weight"] == (91, 256) and keys["label_enc.weight"] == (92, 256)
    assert keys["transformer.enc_out_class_embed.bias"] == (91,) and keys["transformer.tgt_embed.weight"] == (900, 256)
    assert keys["backbone.0.body.layer4.2.bn3.running_var"] == (2048,)


def test_original_checkpoint_converts_to_mmdet_dino_and_loads_strict(original_checkpoint: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "dino_mmdet.pth", tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.convert",
            str(original_checkpoint),
            "-o",
            str(out),
            "--preset",
            "dino-original-to-mmdet",
            "--target",
            MMDET_CONFIG,
            "--report",
            str(report),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    data = json.loads(report.read_text())
    counts = data["counts"]
    assert data["ok"] and counts["missing"] == 0 and counts["unexpected"] == 0 and counts["shape_mismatch"] == 0
    # 48 alias keys and the 4 input_proj conv biases dropped; 53 num_batches_tracked added
    assert (counts["dropped"], counts["added"], counts["converted"]) == (52, 53, 574)
    biases = sorted(d["key"] for d in data["dropped"] if "input-proj-conv-bias" in d["rule"])
    assert biases == [f"input_proj.{i}.0.bias" for i in range(4)]
    assert data["strict_check"] == {"ok": True, "missing": [], "unexpected": [], "size_mismatch": [], "error": None}
    assert data["unused_rules"] == []

    source = load_checkpoint(original_checkpoint)
    converted = load_checkpoint(out)
    assert len(converted) == 627
    rows = torch.tensor(COCO80_TO_91)
    # class c of mmdet is the original's slot COCO80_TO_91[c]: person 0 <- id 1, stop sign 11 <- id 13, toothbrush 79 <- id 90
    assert (COCO80_TO_91[0], COCO80_TO_91[11], COCO80_TO_91[79]) == (1, 13, 90)
    for layer in range(6):
        assert torch.equal(converted[f"bbox_head.cls_branches.{layer}.weight"], source["class_embed.0.weight"][rows])
    assert torch.equal(converted["bbox_head.cls_branches.6.bias"], source["transformer.enc_out_class_embed.bias"][rows])
    assert torch.equal(converted["bbox_head.cls_branches.0.weight"][11], source["class_embed.0.weight"][13])
    label_book = converted["dn_query_generator.label_embedding.weight"]
    assert label_book.shape == (80, 256) and torch.equal(label_book[79], source["label_enc.weight"][90])
    assert torch.equal(converted["bbox_head.reg_branches.3.4.weight"], source["bbox_embed.3.layers.2.weight"])
    assert torch.equal(
        converted["bbox_head.reg_branches.6.2.bias"], source["transformer.enc_out_bbox_embed.layers.1.bias"]
    )
    assert torch.equal(
        converted["decoder.layers.2.norms.0.weight"], source["transformer.decoder.layers.2.norm2.weight"]
    )
    assert torch.equal(converted["query_embedding.weight"], source["transformer.tgt_embed.weight"])
    assert torch.equal(converted["neck.extra_convs.0.conv.weight"], source["input_proj.3.0.weight"])


def test_alias_that_differs_is_refused() -> None:
    state = original_state_dict()
    state["transformer.decoder.bbox_embed.4.layers.2.bias"] = state["bbox_embed.4.layers.2.bias"] + 1
    with pytest.raises(ConversionError, match=r"alias 'transformer\.decoder\.bbox_embed\.4\.layers\.2\.bias' differs"):
        convert_state_dict(state, "dino-original-to-mmdet")


def test_non_zero_input_proj_bias_is_refused_not_dropped() -> None:
    """mmdet's ChannelMapper convs have no bias: a trained (non-zero) input_proj bias stops the conversion,
    with what to change, instead of being dropped silently."""
    state = original_state_dict()
    state["input_proj.2.0.bias"] = torch.full((256,), 0.5)
    with pytest.raises(
        ConversionError,
        match=r"'input_proj\.2\.0\.bias' is not zero \(max abs 0\.5\); dropping it "
        r"would change the model\. mmdet's ChannelMapper convs have no bias",
    ):
        convert_state_dict(state, "dino-original-to-mmdet")
