"""The maskdino-d2-to-mmdet preset against the real key manifests (when BRIDGE_SHARED points to
them) and against a small embedded subset (always)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from bridge.convert import compare_to_target, convert_state_dict, load_manifest
from bridge.errors import ConversionError
from tests.conftest import SHARED_MANIFESTS

SHARED = Path(SHARED_MANIFESTS)
D2_TSV = SHARED / "maskdino_r50_coco_panoptic.d2.tsv"
PORT_TSV = SHARED / "maskdino_r50_coco_panoptic.mmdet_port.tsv"

P = "sem_seg_head.pixel_decoder"
Q = "sem_seg_head.predictor"
EMBEDDED_D2: dict[str, tuple[int, ...]] = {
    "backbone.stem.conv1.weight": (4, 3, 7, 7),
    "backbone.stem.conv1.norm.weight": (4,),
    "backbone.stem.conv1.norm.running_var": (4,),
    "backbone.res2.0.conv1.weight": (4, 4, 1, 1),
    "backbone.res2.0.conv1.norm.bias": (4,),
    "backbone.res2.0.conv1.norm.running_mean": (4,),
    "backbone.res2.0.conv1.norm.running_var": (4,),
    "backbone.res2.0.shortcut.weight": (8, 4, 1, 1),
    "backbone.res2.0.shortcut.norm.running_var": (8,),
    "backbone.res5.2.conv3.norm.running_var": (16,),
    f"{P}.transformer.encoder.layers.0.linear1.weight": (32, 8),
    f"{P}.transformer.encoder.layers.0.linear2.bias": (8,),
    f"{P}.transformer.encoder.layers.5.norm1.weight": (8,),
    f"{P}.transformer.encoder.layers.5.norm2.bias": (8,),
    f"{P}.transformer.encoder.layers.5.self_attn.value_proj.weight": (8, 8),
    f"{P}.adapter_1.weight": (8, 8, 1, 1),
    f"{P}.adapter_1.norm.weight": (8,),
    f"{P}.layer_1.weight": (8, 8, 3, 3),
    f"{P}.layer_1.norm.bias": (8,),
    f"{Q}.class_embed.weight": (133, 8),
    f"{Q}.decoder.norm.weight": (8,),
    f"{Q}.decoder_norm.weight": (8,),
    f"{Q}.decoder.layers.0.linear1.weight": (32, 8),
    f"{Q}._bbox_embed.layers.2.weight": (4, 8),
    f"{Q}.bbox_embed.0.layers.2.weight": (4, 8),
    f"{Q}.bbox_embed.1.layers.2.weight": (4, 8),
    f"{Q}.decoder.bbox_embed.0.layers.2.weight": (4, 8),
    f"{Q}.decoder.bbox_embed.1.layers.2.weight": (4, 8),
    "criterion.empty_weight": (134,),
}
H = "panoptic_head.pixel_decoder"
R = "panoptic_head.predictor"
EMBEDDED_PORT: dict[str, tuple[int, ...]] = {
    "backbone.conv1.weight": (4, 3, 7, 7),
    "backbone.bn1.weight": (4,),
    "backbone.bn1.running_var": (4,),
    "backbone.bn1.num_batches_tracked": (),
    "backbone.layer1.0.conv1.weight": (4, 4, 1, 1),
    "backbone.layer1.0.bn1.bias": (4,),
    "backbone.layer1.0.bn1.running_mean": (4,),
    "backbone.layer1.0.bn1.running_var": (4,),
    "backbone.layer1.0.bn1.num_batches_tracked": (),
    "backbone.layer1.0.downsample.0.weight": (8, 4, 1, 1),
    "backbone.layer1.0.downsample.1.running_var": (8,),
    "backbone.layer1.0.downsample.1.num_batches_tracked": (),
    "backbone.layer4.2.bn3.running_var": (16,),
    "backbone.layer4.2.bn3.num_batches_tracked": (),
    f"{H}.transformer.encoder.layers.0.ffn.layers.0.0.weight": (32, 8),
    f"{H}.transformer.encoder.layers.0.ffn.layers.1.bias": (8,),
    f"{H}.transformer.encoder.layers.5.norms.0.weight": (8,),
    f"{H}.transformer.encoder.layers.5.norms.1.bias": (8,),
    f"{H}.transformer.encoder.layers.5.self_attn.value_proj.weight": (8, 8),
    f"{H}.adapter_1.conv.weight": (8, 8, 1, 1),
    f"{H}.adapter_1.gn.weight": (8,),
    f"{H}.layer_1.conv.weight": (8, 8, 3, 3),
    f"{H}.layer_1.gn.bias": (8,),
    f"{R}.class_embed.weight": (133, 8),
    f"{R}.decoder.norm.weight": (8,),
    f"{R}.decoder.layers.0.linear1.weight": (32, 8),
    f"{R}.bbox_embed.0.layers.2.weight": (4, 8),
    f"{R}.bbox_embed.1.layers.2.weight": (4, 8),
    "panoptic_head.criterion.empty_weight": (134,),
}

ALIAS_RES = [
    (re.compile(r"^sem_seg_head\.predictor\.decoder_norm\.(.*)$"), "norm"),
    (re.compile(r"^sem_seg_head\.predictor\.(?:decoder\.)?bbox_embed\.\d+\.(.*)$"), "bbox"),
    (re.compile(r"^sem_seg_head\.predictor\._bbox_embed\.(.*)$"), "bbox"),
]


def synthetic_d2(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the manifest shapes; aliases share one tensor as in the real model."""
    gen = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    shared: dict[str, torch.Tensor] = {}
    for key in shapes:
        for pattern, kind in ALIAS_RES:
            m = pattern.match(key)
            if not m:
                continue
            if kind == "norm":
                sd[key] = sd[f"sem_seg_head.predictor.decoder.norm.{m.group(1)}"]
            else:  # one MLP shared by _bbox_embed, bbox_embed.N and decoder.bbox_embed.N
                sd[key] = shared.setdefault(m.group(1), sd[key])
    return sd


def _cases() -> list[tuple[str, dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]]:
    cases = [("embedded", EMBEDDED_D2, EMBEDDED_PORT)]
    if SHARED_MANIFESTS:
        cases.append(("real-manifests", load_manifest(D2_TSV), load_manifest(PORT_TSV)))
    return cases


CASES = _cases()


@pytest.mark.parametrize("name,d2,port", CASES, ids=[c[0] for c in CASES])
def test_maskdino_preset_matches_port(name: str, d2: dict, port: dict) -> None:
    res = convert_state_dict(synthetic_d2(d2), "maskdino-d2-to-mmdet")
    rep = compare_to_target(res, port)
    assert rep.missing == [] and rep.unexpected == [] and rep.shape_mismatch == [], (name, rep.to_json())
    nbt = [k for k in res.added if k.endswith("num_batches_tracked")]
    assert len(nbt) == sum(1 for k in port if k.endswith("num_batches_tracked"))
    if name == "real-manifests":
        assert len(d2) == 720 and len(port) == 711 and len(nbt) == 53
        assert res.unused_rules == []  # every rule of the preset is used by the real model


@pytest.mark.parametrize("name,d2,port", CASES, ids=[c[0] for c in CASES])
def test_maskdino_preset_other_class_count_and_extra_keys(name: str, d2: dict, port: dict) -> None:
    def recount(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        out = {}
        for k, s in shapes.items():
            if re.search(r"(class_embed|label_enc)\.(weight|bias)$", k):
                s = (81,) + tuple(s[1:])
            elif k.endswith("criterion.empty_weight"):
                s = (82,)
            out[k] = s
        return out

    d2x = recount(d2) | {"sem_seg_head.predictor.query_feat.weight": (300, 8)}
    portx = recount(port) | {"panoptic_head.predictor.query_feat.weight": (300, 8)}
    rep = compare_to_target(convert_state_dict(synthetic_d2(d2x), "maskdino-d2-to-mmdet"), portx)
    assert rep.ok, rep.to_json()


def test_maskdino_alias_mismatch_is_refused() -> None:
    sd = synthetic_d2(EMBEDDED_D2)
    sd["sem_seg_head.predictor.decoder_norm.weight"] = sd["sem_seg_head.predictor.decoder_norm.weight"] + 1
    with pytest.raises(ConversionError, match="decoder_norm"):
        convert_state_dict(sd, "maskdino-d2-to-mmdet")


def test_maskdino_renames_do_not_copy() -> None:
    sd = synthetic_d2(EMBEDDED_D2)
    out = convert_state_dict(sd, "maskdino-d2-to-mmdet").state_dict
    assert out["backbone.layer1.0.conv1.weight"] is sd["backbone.res2.0.conv1.weight"]
    src_ptrs = {v.data_ptr() for v in sd.values()}
    assert all(v.data_ptr() in src_ptrs for k, v in out.items() if not k.endswith("num_batches_tracked"))
