"""Rule engine, rule loading, loaders and reports of bridge.convert (real torch, no mocks)."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.coco import coco91
from bridge.convert import (
    compare_to_target,
    convert_state_dict,
    fold_keys,
    load_checkpoint,
    load_manifest,
    load_rules,
    save_checkpoint,
    translate_name,
)
from bridge.convert.loading import parse_shape
from bridge.errors import ConversionError
from tests.conftest import SHARED_DATA

BRIDGE = Path(__file__).resolve().parent.parent / "bridge"


def t(*shape: int) -> torch.Tensor:
    """A random float tensor."""
    return torch.randn(*shape) if shape else torch.tensor(1.0)


# --------------------------------------------------------------------------- rule kinds


def test_rename_groups_named_and_arithmetic() -> None:
    sd = {"backbone.res2.0.conv1.weight": t(2, 2), "backbone.res5.1.conv3.weight": t(3)}
    rules = [{"kind": "rename", "from": r"^backbone\.res(?P<S>\d)\.(\d+)\.(.*)$", "to": "backbone.layer{S-1}.{2}.{3}"}]
    res = convert_state_dict(sd, rules)
    assert set(res.state_dict) == {"backbone.layer1.0.conv1.weight", "backbone.layer4.1.conv3.weight"}
    # no copies: the very same tensor objects
    assert res.state_dict["backbone.layer1.0.conv1.weight"] is sd["backbone.res2.0.conv1.weight"]
    up = convert_state_dict({"a.1.w": t(1)}, [{"kind": "rename", "from": r"a\.(?P<i>\d)", "to": "b.{i+2}.{{x}}"}])
    assert list(up.state_dict) == ["b.3.{x}.w"]


def test_rename_prefix_replaces_only_match_and_stages_chain() -> None:
    sd = {"sem_seg_head.x.linear1.weight": t(2)}
    rules = [
        {"stage": "p", "kind": "rename", "from": r"^sem_seg_head\.", "to": "panoptic_head."},
        {"stage": "q", "kind": "rename", "from": r"\.linear1\.", "to": ".ffn.0."},
    ]
    assert list(convert_state_dict(sd, rules).state_dict) == ["panoptic_head.x.ffn.0.weight"]


def test_arithmetic_on_non_integer_group_fails() -> None:
    with pytest.raises(ConversionError, match="not an integer"):
        convert_state_dict({"a.x": t(1)}, [{"kind": "rename", "from": r"a\.(\w)", "to": "{1-1}"}])


def test_bad_template_group_is_caught_at_compile() -> None:
    with pytest.raises(ConversionError, match="unknown group"):
        load_rules([{"kind": "rename", "from": "a(b)", "to": "{nope}"}])
    with pytest.raises(ConversionError, match="uses group 3"):
        load_rules([{"kind": "rename", "from": "a(b)", "to": "{3}"}])
    with pytest.raises(ConversionError, match="unknown kind"):
        load_rules([{"kind": "explode", "from": "a"}])
    with pytest.raises(ConversionError, match="bad regex"):
        load_rules([{"kind": "drop", "from": "a("}])


def test_drop() -> None:
    res = convert_state_dict({"a.w": t(1), "pixel_mean": t(3)}, [{"kind": "drop", "from": r"^pixel_mean$"}])
    assert list(res.state_dict) == ["a.w"] and res.dropped[0][0] == "pixel_mean"


def test_drop_alias_checks_equality() -> None:
    kept = t(4)
    rules = [{"kind": "drop_alias", "from": r"^decoder_norm\.(.*)$", "of": "decoder.norm.{1}"}]
    res = convert_state_dict({"decoder.norm.weight": kept, "decoder_norm.weight": kept.clone()}, rules)
    assert list(res.state_dict) == ["decoder.norm.weight"]
    with pytest.raises(ConversionError, match="differs from kept key"):
        convert_state_dict({"decoder.norm.weight": kept, "decoder_norm.weight": kept + 1}, rules)
    with pytest.raises(ConversionError, match="absent"):
        convert_state_dict({"decoder_norm.weight": kept}, rules)


def test_add_for_matching_and_fixed_keys() -> None:
    sd = {"bn.running_var": t(3), "bn.running_mean": t(3)}
    rules = [
        {"kind": "add", "key": r"(.*)\.running_var$", "to": "{1}.num_batches_tracked", "value": 0, "dtype": "int64"},
        {"kind": "add", "key": "extra.scale", "value": 2.5, "shape": [2]},
    ]
    res = convert_state_dict(sd, rules)
    nbt = res.state_dict["bn.num_batches_tracked"]
    assert nbt.dtype == torch.int64 and nbt.shape == () and nbt.item() == 0
    assert torch.equal(res.state_dict["extra.scale"], torch.full((2,), 2.5))
    assert sorted(res.added) == ["bn.num_batches_tracked", "extra.scale"]
    on_target = [
        {
            "kind": "add",
            "key": r"(.*)\.num_batches_tracked$",
            "to": "{1}.num_batches_tracked",
            "dtype": "int64",
            "on": "target",
        }
    ]
    res2 = convert_state_dict(sd, on_target, target_names=["bn.num_batches_tracked", "bn.running_var"])
    assert "bn.num_batches_tracked" in res2.state_dict


def test_class_rows_coco91_to_coco80_keeps_background() -> None:
    w = torch.arange(92).float().unsqueeze(1).repeat(1, 4)
    rules = [
        {"kind": "class_rows", "from": r"class_embed\.(weight|bias)$", "index": "coco91_to_coco80", "keep_trailing": 1}
    ]
    res = convert_state_dict({"class_embed.weight": w, "class_embed.bias": torch.arange(92).float()}, rules)
    out = res.state_dict["class_embed.weight"]
    assert out.shape == (81, 4)
    assert out[:80, 0].long().tolist() == list(coco91.COCO80_TO_91) and out[80, 0] == 91
    with pytest.raises(ConversionError, match="rows along dim"):
        convert_state_dict({"class_embed.bias": torch.zeros(50)}, rules)
    explicit = [{"kind": "class_rows", "from": "^w$", "index": [2, 0], "dim": 1}]
    assert convert_state_dict({"w": torch.tensor([[1, 2, 3]])}, explicit).state_dict["w"].tolist() == [[3, 1]]


def test_class_rows_background_first_last_none() -> None:
    rows = torch.arange(6).float()  # background first: row 0, then class rows 1..5
    first = [{"kind": "class_rows", "from": "^b$", "index": [4, 0, 2], "background": "first"}]
    assert convert_state_dict({"b": rows}, first).state_dict["b"].tolist() == [0, 5, 1, 3]
    last = [{"kind": "class_rows", "from": "^b$", "index": [4, 0, 2], "background": "last"}]
    assert convert_state_dict({"b": rows}, last).state_dict["b"].tolist() == [4, 0, 2, 5]
    none = [{"kind": "class_rows", "from": "^b$", "index": [4, 0, 2], "background": "none"}]
    assert convert_state_dict({"b": rows}, none).state_dict["b"].tolist() == [4, 0, 2]
    with pytest.raises(ConversionError, match="background: first"):  # class row 5 is tensor row 6: absent
        convert_state_dict({"b": rows}, [{"kind": "class_rows", "from": "^b$", "index": [5], "background": "first"}])
    with pytest.raises(ConversionError, match="'background' must be one of"):
        load_rules([{"kind": "class_rows", "from": "^b$", "index": [0], "background": "middle"}])
    with pytest.raises(ConversionError, match="not both"):
        load_rules([{"kind": "class_rows", "from": "^b$", "index": [0], "background": "last", "keep_trailing": 1}])
    # the shipped coco91-to-coco80 preset keeps DETR's trailing no-object row
    out = convert_state_dict({"class_embed.bias": torch.arange(92).float()}, "coco91-to-coco80").state_dict
    assert out["class_embed.bias"][:80].long().tolist() == list(coco91.COCO80_TO_91)
    assert out["class_embed.bias"][80] == 91


def test_rule_hits_count_every_rule_and_name_the_unused() -> None:
    rules = [
        {"kind": "rename", "from": r"^a\.", "to": "b."},
        {"kind": "drop", "from": "^never$"},
        {"kind": "rename", "from": "^modules_only$", "to": "m", "optional": True},
        {"kind": "add", "key": r"^(b\..*)\.running_var$", "to": "{1}.num_batches_tracked", "dtype": "int64"},
    ]
    res = convert_state_dict({"a.x.weight": t(2), "a.x.running_var": t(2), "c": t(1)}, rules)
    labels = [r.label for r in load_rules(rules).rules]
    assert res.rule_hits == {labels[0]: 2, labels[1]: 0, labels[2]: 0, labels[3]: 1}
    assert res.unused_rules == [labels[1]]  # the optional rule is not reported
    rep = compare_to_target(res, {k: tuple(v.shape) for k, v in res.state_dict.items()})
    assert rep.to_json()["rule_hits"] == res.rule_hits and rep.to_json()["unused_rules"] == [labels[1]]


def test_reshape_transpose_split_concat() -> None:
    rules = [
        {"kind": "reshape", "from": "^r$", "shape": [2, -1]},
        {"kind": "transpose", "from": "^tr$", "dims": [0, 1]},
        {"kind": "split", "from": r"^(.*)\.in_proj_weight$", "to": ["{1}.q.weight", "{1}.k.weight", "{1}.v.weight"]},
        {"kind": "concat", "from": r"^(.*)\.a\.w$", "with": ["{1}.b.w"], "to": "{1}.ab.w", "dim": 0},
    ]
    inp = torch.arange(12.0).reshape(6, 2)
    sd = {
        "r": torch.arange(6.0),
        "tr": torch.ones(2, 3),
        "m.in_proj_weight": inp,
        "x.a.w": torch.zeros(1, 2),
        "x.b.w": torch.ones(2, 2),
    }
    out = convert_state_dict(sd, rules).state_dict
    assert out["r"].shape == (2, 3) and out["tr"].shape == (3, 2)
    assert torch.equal(out["m.k.weight"], inp[2:4])
    assert out["x.ab.w"].shape == (3, 2) and "x.b.w" not in out
    with pytest.raises(ConversionError, match="cannot reshape"):
        convert_state_dict({"r": torch.arange(5.0)}, rules[:1])
    with pytest.raises(ConversionError, match="does not split"):
        convert_state_dict({"m.in_proj_weight": torch.zeros(4, 2)}, rules[2:3])
    with pytest.raises(ConversionError, match="absent"):
        convert_state_dict({"x.a.w": torch.zeros(1, 2)}, rules[3:])


# --------------------------------------------------------------------------- rule errors


def test_key_claimed_twice_names_both_rules() -> None:
    rules = [
        {"kind": "rename", "from": r"^a\.", "to": "b.", "name": "first"},
        {"kind": "rename", "from": r"\.w$", "to": ".weight", "name": "second"},
    ]
    with pytest.raises(ConversionError) as exc:
        convert_state_dict({"a.w": t(1)}, rules)
    assert "'a.w'" in str(exc.value) and "first" in str(exc.value) and "second" in str(exc.value)


def test_collision_names_both_sources() -> None:
    rules = [{"kind": "rename", "from": r"^(old|new)\.", "to": "x."}]
    with pytest.raises(ConversionError) as exc:
        convert_state_dict({"old.w": t(1), "new.w": t(1)}, rules)
    assert "'old.w'" in str(exc.value) and "'new.w'" in str(exc.value) and "x.w" in str(exc.value)


def test_bad_yaml_unknown_preset_missing_rules_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [ {kind: rename, from: 'a'\n")
    with pytest.raises(ConversionError, match="bad YAML"):
        load_rules(bad)
    with pytest.raises(ConversionError, match="unknown preset"):
        load_rules("no-such-preset")
    with pytest.raises(ConversionError, match="not found"):
        load_rules(tmp_path / "absent.yaml")
    notlist = tmp_path / "n.yaml"
    notlist.write_text("rules: 3\n")
    with pytest.raises(ConversionError, match="must be a list"):
        load_rules(notlist)


def test_yaml_rules_file_and_include(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text("include: [d2-resnet-to-mmdet]\nrules:\n  - {kind: drop, from: '^pixel_'}\n")
    rs = load_rules(f)
    assert rs.rules[-1].kind == "drop" and len(rs.rules) > 3


def test_translate_name_modules_and_params() -> None:
    assert translate_name("backbone.bottom_up.res2.0.conv1", "d2-resnet-to-mmdet") == "backbone.layer1.0.conv1"
    assert translate_name("backbone.res4.2.conv2.norm", "d2-resnet-to-mmdet") == "backbone.layer3.2.bn2"
    assert (
        translate_name("backbone.res3.0.shortcut.weight", "d2-resnet-to-mmdet")
        == "backbone.layer2.0.downsample.0.weight"
    )
    assert translate_name("unrelated.module", "d2-resnet-to-mmdet") == "unrelated.module"
    assert (
        translate_name("sem_seg_head.pixel_decoder.transformer.encoder.layers.3.linear2", "maskdino-d2-to-mmdet")
        == "panoptic_head.pixel_decoder.transformer.encoder.layers.3.ffn.layers.1"
    )


def test_panoptic_fpn_preset_maps_known_parts() -> None:
    sd = {
        "backbone.bottom_up.stem.conv1.weight": t(2),
        "backbone.bottom_up.stem.conv1.norm.running_var": t(2),
        "backbone.fpn_lateral3.weight": t(2),
        "backbone.fpn_output5.bias": t(2),
        "proposal_generator.rpn_head.anchor_deltas.weight": t(2),
        "roi_heads.box_head.fc2.weight": t(2),
        "roi_heads.box_predictor.cls_score.bias": t(81),
        "roi_heads.mask_head.mask_fcn4.weight": t(2),
        "roi_heads.mask_head.deconv.bias": t(2),
        "sem_seg_head.p4.2.norm.weight": t(2),
    }
    out = convert_state_dict(sd, "d2-panoptic-fpn-to-mmdet").state_dict
    assert set(out) == {
        "backbone.conv1.weight",
        "backbone.bn1.running_var",
        "backbone.bn1.num_batches_tracked",
        "neck.lateral_convs.1.conv.weight",
        "neck.fpn_convs.3.conv.bias",
        "rpn_head.rpn_reg.weight",
        "roi_head.bbox_head.shared_fcs.1.weight",
        "roi_head.bbox_head.fc_cls.bias",
        "roi_head.mask_head.convs.3.conv.weight",
        "roi_head.mask_head.upsample.bias",
        "semantic_head.conv_upsample_layers.2.conv.1.gn.weight",
    }


def test_coco91_tables() -> None:
    assert len(coco91.COCO91_SLOT_NAMES) == 91 and len(coco91.COCO80_TO_91) == 80
    assert coco91.COCO91_SLOT_NAMES[0] == "N/A" and coco91.COCO91_SLOT_NAMES[1] == "person"
    assert coco91.COCO80_TO_91[-1] == 90
    assert all(coco91.COCO91_TO_80[s] == c for c, s in enumerate(coco91.COCO80_TO_91))
    assert sum(1 for x in coco91.COCO91_TO_80 if x < 0) == 11
    if SHARED_DATA:
        import json

        slots = json.loads((Path(SHARED_DATA) / "coco91_detr_label_slots.json").read_text())
        assert list(coco91.COCO91_SLOT_NAMES) == slots


# --------------------------------------------------------------------------- loading


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_pickle_loads_numpy_dict_and_refuses_code(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    good = tmp_path / "model_final.pkl"
    good.write_bytes(pickle.dumps({"model": {"a.w": arr, "b.n": np.float32(3.0)}, "__author__": "Detectron2"}))
    sd = load_checkpoint(good)
    assert torch.equal(sd["a.w"], torch.from_numpy(arr)) and sd["b.n"].item() == 3.0

    evil = _Evil()
    evil.marker = str(tmp_path / "pwned")
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"model": {"x": evil}}))
    with pytest.raises(ConversionError, match="--unsafe-pickle"):
        load_checkpoint(bad)
    assert not (tmp_path / "pwned").exists()


def test_unsafe_pickle_path_loads_objects(tmp_path: Path) -> None:
    from collections import OrderedDict
    from fractions import Fraction

    p = tmp_path / "obj.pkl"
    p.write_bytes(pickle.dumps({"model": OrderedDict(w=np.ones(2)), "extra": Fraction(1, 3)}))
    with pytest.raises(ConversionError, match="--unsafe-pickle"):
        load_checkpoint(p)
    assert load_checkpoint(p, unsafe_pickle=True)["w"].tolist() == [1.0, 1.0]


def test_wrappers_and_formats(tmp_path: Path) -> None:
    w = torch.randn(3)
    torch.save({"state_dict": {"module.a": w, "module.b": w * 2}, "meta": {"x": 1}}, tmp_path / "c.pth")
    assert set(load_checkpoint(tmp_path / "c.pth")) == {"a", "b"}
    torch.save({"model": {"a": w}}, tmp_path / "m.pt")
    assert torch.equal(load_checkpoint(tmp_path / "m.pt")["a"], w)
    from safetensors.torch import save_file

    save_file({"a": w}, str(tmp_path / "s.safetensors"))
    assert torch.equal(load_checkpoint(tmp_path / "s.safetensors")["a"], w)


def test_torch_file_with_objects_needs_unsafe(tmp_path: Path) -> None:
    from fractions import Fraction

    torch.save({"state_dict": {"a": torch.ones(1)}, "frac": Fraction(1, 2)}, tmp_path / "o.pth")
    with pytest.raises(ConversionError, match="--unsafe-pickle"):
        load_checkpoint(tmp_path / "o.pth")
    assert load_checkpoint(tmp_path / "o.pth", unsafe_pickle=True)["a"].item() == 1.0


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    for name in ("c.pth", "c.pkl", "c.safetensors"):
        (tmp_path / name).write_bytes(b"\x00garbage" * 10)
        with pytest.raises(ConversionError):
            load_checkpoint(tmp_path / name)
    for unsafe in (False, True):  # torch.load itself would say "IndexError: list index out of range"
        with pytest.raises(ConversionError, match=r"c\.pth: not a torch checkpoint \(zip or legacy pickle\)"):
            load_checkpoint(tmp_path / "c.pth", unsafe_pickle=unsafe)


def test_save_roundtrip_pth_and_safetensors_with_shared_tensors(tmp_path: Path) -> None:
    shared = torch.randn(4)
    sd = {"a": shared, "b": shared, "c": torch.zeros((), dtype=torch.int64)}
    save_checkpoint(sd, tmp_path / "o.pth", {"source": "x"})
    obj = torch.load(tmp_path / "o.pth", weights_only=True)
    assert obj["meta"]["source"] == "x" and "time" in obj["meta"] and torch.equal(obj["state_dict"]["b"], shared)
    save_checkpoint(sd, tmp_path / "o.safetensors", {"source": "x"})
    back = load_checkpoint(tmp_path / "o.safetensors")
    assert torch.equal(back["a"], back["b"]) and back["c"].dtype == torch.int64
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_parse_shape_and_manifest(tmp_path: Path) -> None:
    assert parse_shape("64x3x7x7") == (64, 3, 7, 7)
    assert parse_shape("[256, 3, 3, 3]") == (256, 3, 3, 3)
    assert parse_shape("256,3") == (256, 3) and parse_shape("") == () and parse_shape("[]") == ()
    m = tmp_path / "m.tsv"
    m.write_text("key\tshape\tkind\na.w\t2x3\tparam\nb.n\t\tbuffer\n")
    assert load_manifest(m) == {"a.w": (2, 3), "b.n": ()}
    m.write_text("key\tshape\tkind\na.w\tbad\tparam\n")
    with pytest.raises(ConversionError, match="bad shape"):
        load_manifest(m)


# --------------------------------------------------------------------------- report


def test_report_lists_and_suggestions() -> None:
    sd = {"a.layers.0.w": t(2, 3), "a.layers.1.w": t(2, 3), "odd.name.weight": t(5, 5), "c": t(4)}
    res = convert_state_dict(sd, [{"kind": "add", "key": "z", "value": 1}])
    target = {"a.layers.0.w": (2, 3), "a.layers.1.w": (2, 3), "c": (2, 2), "z": (), "proper.name.weight": (5, 5)}
    rep = compare_to_target(res, target)
    assert rep.missing == ["proper.name.weight"] and rep.unexpected == ["odd.name.weight"]
    assert rep.shape_mismatch == [("c", [4], [2, 2])] and rep.added == ["z"] and not rep.ok
    sug = rep.suggestions["odd.name.weight"][0]
    assert sug["key"] == "proper.name.weight"
    assert re.search(sug["rule"]["from"], "odd.name.weight") and sug["rule"]["to"] == "proper.name.weight"
    # a missing (target) key's rule goes the same way: from the unexpected source-side key, to the missing one
    back = rep.suggestions["proper.name.weight"][0]
    assert back["key"] == "odd.name.weight"
    assert re.search(back["rule"]["from"], "odd.name.weight") and back["rule"]["to"] == "proper.name.weight"
    fixed = convert_state_dict(sd, [{"kind": "add", "key": "z", "value": 1}, back["rule"]])
    assert "proper.name.weight" in fixed.state_dict and "odd.name.weight" not in fixed.state_dict
    assert rep.to_json()["counts"]["missing"] == 1 and rep.exit_code() == 1


def test_render_report_folds_shape_mismatch_and_prints_rules_and_warnings() -> None:
    from rich.console import Console

    from bridge.convert.report import fold_shape_mismatch, render_report

    sd = {f"enc.{i}.w": t(3) for i in range(4)} | {"head.w": t(5), "old.k": t(7)}
    res = convert_state_dict(sd, [{"kind": "drop", "from": "^nothing$"}])
    target = {f"enc.{i}.w": (2,) for i in range(4)} | {"head.w": (6,), "new.k": (7,)}
    rep = compare_to_target(res, target)
    assert fold_shape_mismatch(rep.shape_mismatch) == [("enc.{0..3}.w", [3], [2]), ("head.w", [5], [6])]
    console = Console(record=True, width=200)
    render_report(rep, console)
    text = console.export_text()
    assert "enc.{0..3}.w" in text and "enc.0.w" not in text
    assert "to: 'new.k'" in text and "from: '^old\\.k$'" in text  # the suggested rule, in both tables
    assert "warning: rule #0 drop '^nothing$' matched no key" in text


def test_fold_keys() -> None:
    keys = [f"enc.layers.{i}.norm1.weight" for i in range(9)] + ["enc.layers.0.ffn.layers.0.0.bias", "head.w"]
    assert fold_keys(keys) == ["enc.layers.0.ffn.layers.0.0.bias", "enc.layers.{0..8}.norm1.weight", "head.w"]
    assert fold_keys(["x.1.a", "x.3.a"]) == ["x.{1,3}.a"]


# --------------------------------------------------------------------------- package hygiene


def test_package_hygiene() -> None:
    files = [*(BRIDGE / "convert").rglob("*.py"), *(BRIDGE / "initcheck").rglob("*.py")]
    files += [BRIDGE / "frameworks.py", BRIDGE / "coco" / "coco91.py"]
    for f in files:
        text = f.read_text()
        assert not re.search(r"^\s*(import|from)\s+(detectron2|mmdet|mmengine|mmcv)\b", text, re.M), f
        if f.name != "unpickler.py":
            assert not re.search(r"^\s*(import|from)\s+(pickle|cPickle|dill)\b", text, re.M), f
        for call in re.findall(r"torch\.load\((.*)\)", text):
            assert "weights_only=" in call, (f, call)


def test_main_in_process_checkpoint_target_and_bad_rules(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bridge.convert.__main__ import main

    torch.save({"model": {"backbone.res2.0.conv1.weight": torch.ones(2, 2, 1, 1)}}, tmp_path / "s.pth")
    torch.save({"state_dict": {"backbone.layer1.0.conv1.weight": torch.zeros(2, 2, 1, 1)}}, tmp_path / "t.pth")
    assert (
        main(
            [
                str(tmp_path / "s.pth"),
                "-o",
                str(tmp_path / "o.pth"),
                "--preset",
                "d2-resnet-to-mmdet",
                "--target",
                str(tmp_path / "t.pth"),
            ]
        )
        == 0
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {kind: rename, from: 'a(', to: 'b'}\n")
    assert main([str(tmp_path / "s.pth"), "-o", str(tmp_path / "o2.pth"), "--rules", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad regex" in err and not (tmp_path / "o2.pth").exists()


def test_load_strict_names_the_file_and_the_keys(tmp_path: Path) -> None:
    from bridge.convert import load_strict
    from bridge.errors import BridgeError

    model = torch.nn.Linear(2, 3)
    good, missing, shaped = tmp_path / "good.pth", tmp_path / "missing.pth", tmp_path / "shaped.pth"
    torch.save(model.state_dict(), good)
    torch.save({"weight": model.weight.detach()}, missing)
    torch.save({"weight": torch.zeros(2, 2), "bias": torch.zeros(3)}, shaped)
    assert load_strict(torch.nn.Linear(2, 3), good) == 2
    with pytest.raises(BridgeError, match=rf"^{re.escape(str(missing))}: .* 1 missing \(bias\), 0 unexpected"):
        load_strict(torch.nn.Linear(2, 3), missing)
    with pytest.raises(BridgeError, match=rf"^{re.escape(str(shaped))}: does not fit the model .*size mismatch"):
        load_strict(torch.nn.Linear(2, 3), shaped)
