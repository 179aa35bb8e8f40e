"""``--reverse``: every preset round-trips detectron2 -> mmdet -> detectron2 bit for bit, on a real detectron2
PanopticFPN (random init), the Mask DINO key names (embedded, and the real manifests when BRIDGE_SHARED is
set) and the original DINO's; what cannot be inverted without the original is reported, never guessed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bridge.convert import convert_state_dict, list_presets, load_checkpoint
from bridge.convert.__main__ import main as convert_main
from bridge.convert.inverse import NotInvertible, invert_template, spell
from bridge.convert.reverse import reverse_state_dict
from bridge.convert.rules import load_rules
from d2_side.init_state import init_state_dict
from tests.test_convert_dino import original_state_dict
from tests.test_convert_presets import CASES as MASKDINO_CASES
from tests.test_convert_presets import synthetic_d2

D2_CONFIG = "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"
REAL_D2_PRESETS = ("d2-resnet-to-mmdet", "d2-mask-rcnn-to-mmdet", "d2-panoptic-fpn-to-mmdet")


def meta_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Names and shapes only, as a key manifest gives them."""
    return {k: torch.empty(v.shape, device="meta") for k, v in state.items()}


def assert_identical(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Same keys in the same order, same dtypes, shapes and bits."""
    assert list(got) == list(want) or set(got) == set(want), set(got) ^ set(want)
    for key, tensor in want.items():
        assert got[key].dtype == tensor.dtype and got[key].shape == tensor.shape, key
        assert torch.equal(got[key], tensor), key


def round_trip(state: dict[str, torch.Tensor], preset: str, original: dict[str, torch.Tensor] | None = None):
    """d2 -> mmdet -> d2; returns the reverse result."""
    mmdet = convert_state_dict(state, preset).state_dict
    return reverse_state_dict(mmdet, preset, original=original)


@pytest.fixture(scope="module")
def panoptic_fpn() -> dict[str, torch.Tensor]:
    """detectron2's PanopticFPN R50 built from its model-zoo config, random init (seed 0), on the CPU."""
    return init_state_dict(D2_CONFIG, seed=0)


def test_every_preset_is_covered() -> None:
    covered = {*REAL_D2_PRESETS, "maskdino-d2-to-mmdet", "dino-original-to-mmdet", "coco91-to-coco80"}
    assert covered == set(list_presets())


@pytest.mark.parametrize("preset", REAL_D2_PRESETS)
def test_real_detectron2_model_round_trips_without_the_original(panoptic_fpn: dict, preset: str) -> None:
    result = round_trip(panoptic_fpn, preset)
    assert result.ok and result.verified and result.not_restored == [] and result.mismatched == []
    assert_identical(result.state_dict, panoptic_fpn)
    renamed = [t for s, t in result.restored if s != t]
    assert len(renamed) > 250 if preset != "d2-resnet-to-mmdet" else len(renamed) > 200
    assert all(key.endswith("num_batches_tracked") for key, _rule in result.removed) and result.removed
    # the FPN models' backbone.bottom_up.* is the greedy reading of (?:bottom_up\.)?: chosen, and said so
    assert result.ambiguous and all(a.chosen.startswith("backbone.bottom_up.") for a in result.ambiguous)


def test_real_detectron2_model_with_the_original_is_exact_and_not_ambiguous(panoptic_fpn: dict) -> None:
    result = round_trip(panoptic_fpn, "d2-panoptic-fpn-to-mmdet", original=meta_of(panoptic_fpn))
    assert result.ok and result.ambiguous == []
    assert list(result.state_dict) == list(panoptic_fpn)
    assert_identical(result.state_dict, panoptic_fpn)
    back = result.state_dict["sem_seg_head.predictor.weight"]  # class_rows reordered, then back
    assert torch.equal(back, panoptic_fpn["sem_seg_head.predictor.weight"])


@pytest.mark.parametrize("name,d2,_port", MASKDINO_CASES, ids=[c[0] for c in MASKDINO_CASES])
def test_maskdino_round_trips_with_its_key_manifest(name: str, d2: dict, _port: dict) -> None:
    state = synthetic_d2(d2)
    result = round_trip(state, "maskdino-d2-to-mmdet", original=meta_of(state))
    assert result.ok and result.ambiguous == [] and result.from_original == []
    assert_identical(result.state_dict, state)
    alias = "sem_seg_head.predictor._bbox_embed.layers.2.weight"  # recreated as the kept key's very tensor
    assert result.state_dict[alias] is result.state_dict["sem_seg_head.predictor.bbox_embed.0.layers.2.weight"]
    if name == "real-manifests":
        assert len(result.state_dict) == 720 and len(result.removed) == 53


def test_maskdino_without_the_original_reports_its_choices() -> None:
    state = synthetic_d2(MASKDINO_CASES[0][1])
    result = round_trip(state, "maskdino-d2-to-mmdet")
    assert result.verified and result.not_restored == [] and result.mismatched == []
    chosen = {a.chosen: a.others for a in result.ambiguous}
    # Mask DINO's backbone has no bottom_up: the greedy reading is the wrong one, and it is reported
    assert chosen["backbone.bottom_up.res2.0.conv1.weight"] == ["backbone.res2.0.conv1.weight"]
    # the more specific rule wins: '^criterion' over '^sem_seg_head' for panoptic_head.criterion.*
    assert chosen["criterion.empty_weight"] == ["sem_seg_head.criterion.empty_weight"]
    assert set(result.state_dict) - set(state) == {
        "backbone.bottom_up." + k[len("backbone.") :] for k in set(state) - set(result.state_dict)
    }


def test_dino_round_trips_with_the_original_checkpoint() -> None:
    state = original_state_dict()
    result = round_trip(state, "dino-original-to-mmdet", original=state)
    assert result.ok and result.ambiguous == []
    assert list(result.state_dict) == list(state)
    assert_identical(result.state_dict, state)
    assert sorted(k for k, _rule in result.from_original) == [f"input_proj.{i}.0.bias" for i in range(4)]
    assert result.state_dict["transformer.decoder.class_embed.0.weight"] is result.state_dict["class_embed.0.weight"]


def test_dino_without_the_original_says_what_is_missing() -> None:
    state = original_state_dict()
    result = round_trip(state, "dino-original-to-mmdet")
    assert not result.ok and not result.verified
    missing = dict(result.not_restored)
    assert any("input-proj-conv-bias" in key and "--target" in why for key, why in missing.items())
    assert "label_enc.weight" in missing and "class rows" in missing["label_enc.weight"]
    with_manifest = round_trip(state, "dino-original-to-mmdet", original=meta_of(state))
    assert not with_manifest.ok  # names, and the zero biases, but not the class rows coco80 left out
    assert sorted(k for k, _r in with_manifest.from_original) == [f"input_proj.{i}.0.bias" for i in range(4)]
    lost = {k for k, _why in with_manifest.not_restored}
    assert lost - set(missing) == {k for k in state if k.startswith("transformer.decoder.class_embed.")}  # aliases
    assert set(missing) - lost == {next(k for k in missing if k.startswith("#"))}


def test_coco91_to_coco80_round_trips_with_the_original() -> None:
    gen = torch.Generator().manual_seed(1)
    state = {
        f"{p}class_embed.{i}.{w}": torch.randn((92, 8) if w == "weight" else (92,), generator=gen)
        for p in ("", "transformer.decoder.")
        for i in range(2)
        for w in ("weight", "bias")
    }
    state["bbox_embed.0.weight"] = torch.randn(4, 8, generator=gen)
    result = round_trip(state, "coco91-to-coco80", original=state)
    assert result.ok
    assert_identical(result.state_dict, state)
    alone = round_trip(state, "coco91-to-coco80")
    assert not alone.ok and len(alone.not_restored) == 8
    assert "bbox_embed.0.weight" in alone.state_dict  # what needs no original is there


def test_value_and_merge_kinds_reverse() -> None:
    rules = [
        {"kind": "transpose", "from": "^tr$", "dims": [0, 1]},
        {"kind": "split", "from": r"^(.*)\.in_proj_weight$", "to": ["{1}.q.weight", "{1}.k.weight", "{1}.v.weight"]},
        {"kind": "concat", "from": r"^(.*)\.a\.w$", "with": ["{1}.b.w"], "to": "{1}.ab.w", "dim": 0},
        {"kind": "reshape", "from": "^r$", "shape": [2, -1]},
        {"kind": "class_rows", "from": "^cls$", "index": [2, 0, 1], "background": "first"},
    ]
    sd = {
        "tr": torch.randn(2, 3),
        "m.in_proj_weight": torch.randn(6, 2),
        "x.a.w": torch.randn(1, 2),
        "x.b.w": torch.randn(2, 2),
        "r": torch.arange(6.0),
        "cls": torch.randn(4, 2),
    }
    out = convert_state_dict(sd, rules).state_dict
    exact = reverse_state_dict(out, rules, original=sd)
    assert exact.ok
    assert_identical(exact.state_dict, sd)
    alone = reverse_state_dict(out, rules)
    # a reshape needs the original's shape, a concat of unequal parts their sizes
    assert dict(alone.not_restored).keys() == {"r", "x.a.w"}
    for key in ("cls", "tr", "m.in_proj_weight"):  # a reordering, a transpose and a split invert alone
        assert torch.equal(alone.state_dict[key], sd[key])
    equal_parts = reverse_state_dict(
        convert_state_dict({"x.a.w": sd["x.b.w"], "x.b.w": sd["x.b.w"] + 1}, rules).state_dict, rules
    )
    assert equal_parts.ok and torch.equal(equal_parts.state_dict["x.b.w"], sd["x.b.w"] + 1)


def test_templates_run_backwards() -> None:
    ruleset = load_rules("d2-resnet-to-mmdet")
    rule = next(r for r in ruleset.rules if r.spec.get("name") == "res-conv")
    inverse = invert_template(rule.to, rule.pattern)
    m, groups = inverse.match("backbone.layer3.5.conv2.weight")
    assert (groups.group("S"), groups.group("B"), groups.group("rest")) == ("4", "5", ".weight")
    assert m.group(0) == "backbone.layer3.5.conv2.weight"
    assert spell(rule.pattern, groups)[:2] == ["backbone.bottom_up.res4.5.conv2.weight", "backbone.res4.5.conv2.weight"]
    assert inverse.match("layer3.5.conv2")[1].group("pre") is None
    wild = load_rules([{"kind": "rename", "from": r"^a\..*\.b$", "to": "c"}]).rules[0]
    with pytest.raises(NotInvertible):
        spell(wild.pattern, invert_template(wild.to, wild.pattern).match("c")[1])


def test_cli_reverse_writes_a_detectron2_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = original_state_dict()
    d2, mmdet, back, report = tmp_path / "d2.pth", tmp_path / "mmdet.pth", tmp_path / "back.pth", tmp_path / "r.json"
    torch.save({"model": state}, d2)
    assert convert_main([str(d2), "-o", str(mmdet), "--preset", "dino-original-to-mmdet", "--quiet"]) == 0
    code = convert_main(
        [str(mmdet), "--out", str(back), "--preset", "dino-original-to-mmdet", "--reverse", "--json", str(report)]
    )
    out = capsys.readouterr()
    assert code == 1 and not back.exists() and "not restored" in out.out and "--keep-failed" in out.err
    data = json.loads(report.read_text())
    assert not data["ok"] and data["counts"]["not_restored"] > 0 and not data["meta"]["output_written"]
    code = convert_main(
        [
            str(mmdet),
            "-o",
            str(back),
            "--preset",
            "dino-original-to-mmdet",
            "--reverse",
            "--target",
            str(d2),
            "--report",
            str(report),
            "--quiet",
        ]
    )
    assert code == 0 and json.loads(report.read_text())["ok"]
    saved = torch.load(back, weights_only=True)
    assert set(saved) == {"model", "meta"} and saved["meta"]["converted_by"] == "bridge.convert --reverse"
    assert_identical(load_checkpoint(back), state)
    code = convert_main(
        [
            str(mmdet),
            "-o",
            str(back),
            "--preset",
            "dino-original-to-mmdet",
            "--reverse",
            "--target",
            "mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py",
        ]
    )
    assert code == 2 and capsys.readouterr().err.startswith("error: --target")


def test_a_source_name_the_template_cannot_spell_is_reported() -> None:
    rules = [{"kind": "rename", "from": r"^old\.\w+\.(?P<rest>.*)$", "to": "new.{rest}"}]
    out = convert_state_dict({"old.abc.w": torch.ones(1), "other": torch.zeros(1)}, rules).state_dict
    alone = reverse_state_dict(out, rules)
    assert not alone.ok and [k for k, _why in alone.not_restored] == ["new.w"]
    assert "cannot spell" in alone.not_restored[0][1] and "--target" in alone.not_restored[0][1]
    exact = reverse_state_dict(out, rules, original={"old.abc.w": torch.ones(1), "other": torch.zeros(1)})
    assert exact.ok and set(exact.state_dict) == {"old.abc.w", "other"}


def test_split_pieces_are_found_in_any_order() -> None:
    rules = [{"kind": "split", "from": r"^(.*)\.in_proj$", "to": ["{1}.q", "{1}.k"]}]
    sd = {"attn.in_proj": torch.randn(4, 2)}
    out = convert_state_dict(sd, rules).state_dict
    shuffled = {"attn.k": out["attn.k"], "attn.q": out["attn.q"]}
    result = reverse_state_dict(shuffled, rules)
    assert result.ok and list(result.state_dict) == ["attn.in_proj"]
    assert torch.equal(result.state_dict["attn.in_proj"], sd["attn.in_proj"])


def test_cli_reverse_names_from_a_detectron2_config(panoptic_fpn: dict, tmp_path: Path) -> None:
    d2, mmdet, back = tmp_path / "d2.pth", tmp_path / "mmdet.pth", tmp_path / "back.pth"
    torch.save({"model": panoptic_fpn}, d2)
    assert convert_main([str(d2), "-o", str(mmdet), "--preset", "d2-panoptic-fpn-to-mmdet", "--quiet"]) == 0
    report = tmp_path / "r.json"
    assert (
        convert_main(
            [
                str(mmdet),
                "-o",
                str(back),
                "--preset",
                "d2-panoptic-fpn-to-mmdet",
                "--reverse",
                "--target",
                D2_CONFIG,
                "--json",
                str(report),
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads(report.read_text())["ambiguous"] == []
    assert_identical(load_checkpoint(back), panoptic_fpn)
