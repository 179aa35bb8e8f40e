"""``python -m bridge.convert draft``: rule files drafted from two key lists, judged against the presets.

The figure of merit: converting one checkpoint with the draft and with the preset, the share of the target
keys that receive the very same tensor (``torch.equal``).  Rule counts are compared after ``include:``
expansion (``len(load_rules(...).rules)``), optional module-name rules of the presets included.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bridge.convert import convert_state_dict, load_checkpoint, load_rules
from bridge.convert.draft import DraftResult, draft_rules
from bridge.convert.draft_pairing import LOW_CONFIDENCE, Side
from bridge.convert.draft_rules import generalise, order_stages
from tests.conftest import REPO
from tests.test_convert_dino import MMDET_CONFIG as DINO_CONFIG
from tests.test_convert_dino import original_state_dict
from tests.test_convert_presets import CASES, synthetic_d2


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bridge.convert *args`` from the repository root."""
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "bridge.convert", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def same_tensor_share(state: dict[str, torch.Tensor], preset: str, draft: object) -> tuple[float, list[str]]:
    """Share of the preset's output keys that the draft fills with an equal tensor, and the keys it does not."""
    want = convert_state_dict(state, preset).state_dict
    got = convert_state_dict(state, load_rules(draft)).state_dict  # type: ignore[arg-type]
    differ = [k for k, v in want.items() if k not in got or got[k].shape != v.shape or not torch.equal(got[k], v)]
    return 1 - len(differ) / len(want), differ


def assert_differences_flagged(
    result: DraftResult, differ: list[str], preset: str, state: dict[str, torch.Tensor]
) -> None:
    """Every differing target key is unpaired, or comes from a source key that a low-confidence rule matches."""
    origin = {t: s for t, s in convert_state_dict(state, preset).origin.items()}
    low = [re.compile(r["from"] if "from" in r else r["key"]) for r in result.rules if r["confidence"] < LOW_CONFIDENCE]
    for key in differ:
        source = origin.get(key, "")
        flagged = (
            key in result.pairing.unpaired_target
            or source in result.pairing.unpaired_source
            or any(p.search(source) for p in low)
        )
        assert flagged, f"{key} (from {source}) differs from the preset without a low-confidence mark"


def test_generalise_index_offset_and_split() -> None:
    pairs = {
        f"backbone.res{s}.{b}.conv1.weight": f"backbone.layer{s - 1}.{b}.conv1.weight"
        for s in (2, 3, 4, 5)
        for b in (0, 1)
    }
    pairs.update(
        {
            f"bbox_embed.{n}.layers.{k}.weight": f"bbox_head.reg_branches.{n}.{2 * k}.weight"
            for n in range(3)
            for k in range(3)
        }
    )
    drafts = generalise(pairs, {k: 1.0 for k in pairs})
    by_regex = {d.regex: d.template for d in drafts}
    assert by_regex[r"^backbone\.res(\d+)\."] == "backbone.layer{1-1}."
    assert by_regex[r"^bbox_embed\.(\d+)\.layers\."] == "bbox_head.reg_branches.{1}."  # layers.0 keeps its 0
    assert {by_regex[rf"^bbox_embed\.(\d+)\.layers\.{k}\."] for k in (1, 2)} == {
        "bbox_head.reg_branches.{1}.2.",
        "bbox_head.reg_branches.{1}.4.",
    }
    assert len(drafts) == 4
    order_stages(drafts, list(pairs), set())
    converted = convert_state_dict(
        {k: torch.zeros(1) for k in pairs},
        load_rules(
            [
                {"stage": f"s{d.stage}", "kind": "rename", "from": d.regex, "to": d.template}
                for d in sorted(drafts, key=lambda d: d.stage)
            ]
        ),
    )
    assert {s: t for t, s in converted.origin.items()} == pairs


def test_outvoted_minority_and_look_ahead() -> None:
    pairs = {f"enc.layers.{n}.norm{k}.weight": f"enc.layers.{n}.norms.{k - 1}.weight" for n in range(4) for k in (1, 2)}
    pairs["enc.layers.0.norm1.weight"], pairs["enc.layers.0.norm2.weight"] = (  # one swapped pair of a layer
        "enc.layers.0.norms.1.weight",
        "enc.layers.0.norms.0.weight",
    )
    (draft,) = generalise(pairs, {k: 1.0 for k in pairs})
    assert draft.template == "enc.layers.{1}.norms.{2-1}." and len(draft.outvoted) == 2
    alias = generalise(
        {"head.decoder.bbox_embed.0.w": "head.bbox_embed.0.w", "head.decoder.class_embed.0.w": "head.class_embed.0.w"},
        {},
        "drop_alias",
    )
    keys = ["head.decoder.bbox_embed.0.w", "head.decoder.class_embed.0.w", "head.decoder.layers.0.w"]
    order_stages(alias, keys, {"head.decoder.layers.0.w"})
    assert [re.search(alias[0].regex, k) is not None for k in keys] == [True, True, False]


@pytest.mark.parametrize("name,d2,port", CASES, ids=[c[0] for c in CASES])
def test_maskdino_draft_agrees_with_the_preset(name: str, d2: dict, port: dict) -> None:
    state = synthetic_d2(d2)
    result = draft_rules(Side(dict(d2), state), Side(dict(port)))
    assert result.check["ok"], result.check
    share, differ = same_tensor_share(state, "maskdino-d2-to-mmdet", result.rules)
    assert share >= 0.95, (share, differ[:20])
    assert_differences_flagged(result, differ, "maskdino-d2-to-mmdet", state)
    assert len(load_rules(result.rules).rules) <= 1.5 * len(load_rules("maskdino-d2-to-mmdet").rules)
    if name == "real-manifests":
        assert result.summary()["aliases"] == 62 and result.pairing.unpaired_target == []
        print(
            f"Mask DINO: {share:.1%} of {len(port)} target keys as the preset; rules {len(result.rules)} "
            f"(preset {len(load_rules('maskdino-d2-to-mmdet').rules)}); summary {result.summary()}"
        )


def test_draft_cli_writes_a_rule_file_the_converter_runs(tmp_path: Path) -> None:
    d2, port = CASES[-1][1], CASES[-1][2]
    src, tgt = tmp_path / "d2.pth", tmp_path / "port.tsv"
    torch.save({"model": synthetic_d2(d2)}, src)
    tgt.write_text("key\tshape\tkind\n" + "".join(f"{k}\t{'x'.join(map(str, s))}\tparam\n" for k, s in port.items()))
    draft, report = tmp_path / "draft.yaml", tmp_path / "draft.json"
    proc = run_cli("draft", str(src), "--target", str(tgt), "-o", str(draft), "--report", str(report))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "draft: pairing" in proc.stderr and re.search(
        r"\d+ keys paired, \d+ aliases, \d+ rules, \d+ low-confidence "
        r"rules, unpaired \d+ source / \d+ target",
        proc.stdout,
    )
    data = json.loads(report.read_text())
    assert data["check"]["ok"] and data["summary"]["rules"] == len(yaml.safe_load(draft.read_text())["rules"])
    quiet = run_cli("draft", str(src), "--target", str(tgt), "-o", str(tmp_path / "q.yaml"), "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    out = tmp_path / "converted.pth"
    conv = run_cli(str(src), "-o", str(out), "--rules", str(draft), "--target", str(tgt))
    assert conv.returncode == 0, (conv.stdout + conv.stderr)[-3000:]
    assert set(load_checkpoint(out)) == set(port)


def test_draft_cli_bad_input_is_one_error_line(tmp_path: Path) -> None:
    draft = tmp_path / "draft.yaml"
    proc = run_cli("draft", str(tmp_path / "absent.pth"), "--target", str(tmp_path / "absent.tsv"), "-o", str(draft))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in proc.stderr and not draft.exists()


def test_dino_original_draft_against_mmdet_config(tmp_path: Path) -> None:
    """The figure for the original DINO against mmdet's real DINO config (blocks in another order on the two
    sides, mmdet's decoder layer with self-attention before cross-attention)."""
    state = original_state_dict()
    src = tmp_path / "checkpoint0011_4scale.pth"
    torch.save({"model": state, "epoch": 11}, src)
    draft, report = tmp_path / "draft.yaml", tmp_path / "draft.json"
    proc = run_cli("draft", str(src), "--target", DINO_CONFIG, "-o", str(draft), "--report", str(report), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["check"]["error"] is None, data["check"]  # converts; keys sent astray are flagged below
    share, differ = same_tensor_share(state, "dino-original-to-mmdet", draft)
    assert share >= 0.95, (share, differ[:20])
    rules = yaml.safe_load(draft.read_text())["rules"]
    classes = [r for r in rules if r["kind"] == "class_rows"]
    assert classes and all(r["index"] == "coco91_to_coco80" for r in classes)
    assert data["summary"]["aliases"] == 48 and data["summary"]["unpaired_target"] == 0
    zero = [r for r in rules if r["kind"] == "drop"]
    assert [r["from"] for r in zero] == [r"^input_proj\.\d+\.0\.bias$"] and zero[0]["if_zero"]
    low = [re.compile(r.get("from") or r["key"]) for r in rules if r["confidence"] < LOW_CONFIDENCE]
    origin = convert_state_dict(state, "dino-original-to-mmdet").origin
    unflagged = [k for k in differ if not any(p.search(origin[k]) for p in low)]
    assert unflagged == []
    assert all(any(p.search(k) for p in low) for k in data["check"]["stray_sources"])
    assert len(load_rules(draft).rules) <= 1.5 * len(load_rules("dino-original-to-mmdet").rules)
    print(
        f"DINO: {share:.1%} of {len(origin)} target keys as the preset ({len(differ)} differ, {len(unflagged)} "
        f"of them not under a low-confidence rule); rules {len(load_rules(draft).rules)} "
        f"(preset {len(load_rules('dino-original-to-mmdet').rules)}); summary {data['summary']}"
    )


def _demo_module():
    """examples/panoptic_fpn_demo.py, which builds both PanopticFPN models the way the demo compares them."""
    spec = importlib.util.spec_from_file_location("panoptic_fpn_demo", REPO / "examples" / "panoptic_fpn_demo.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_panoptic_fpn_draft_loads_strict_and_gives_identical_fpn_levels(tmp_path: Path) -> None:
    demo = _demo_module()
    _cfg, d2_model = demo.d2_model(seed=0, size=128)
    state = d2_model.state_dict()
    src = tmp_path / "model_final.pth"
    torch.save({"model": state}, src)
    draft, report = tmp_path / "draft.yaml", tmp_path / "draft.json"
    proc = run_cli(
        "draft", str(src), "--target", demo.MMDET_CONFIG, "-o", str(draft), "--report", str(report), "--quiet"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["check"]["ok"], data["check"]
    # docs/DRAFT.md: its low-confidence rules (stem, sem_seg_head.p5.4, p{L}.2) are right as drafted; no edit
    rules = yaml.safe_load(draft.read_text())["rules"]
    assert 0 < sum(r["confidence"] < LOW_CONFIDENCE for r in rules) <= 6
    converted = convert_state_dict(state, load_rules(rules)).state_dict
    preset = convert_state_dict(state, "d2-panoptic-fpn-to-mmdet").state_dict
    assert set(converted) == set(preset)
    differ = sorted(k for k in preset if not torch.equal(converted[k], preset[k]))
    # class order only (detectron2: 'things' first, mmdet: last); the bias starts at zero, equal either way
    assert "semantic_head.conv_logits.weight" in differ
    assert set(differ) <= {"semantic_head.conv_logits.weight", "semantic_head.conv_logits.bias"}
    mm_model = demo.mmdet_model_like_d2()
    mm_model.load_state_dict(converted, strict=True)
    image = torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        d2_levels = d2_model.backbone(image)
        mm_levels = mm_model.extract_feat(image)
    assert len(mm_levels) == 5
    for name, mm in zip(["p2", "p3", "p4", "p5", "p6"], mm_levels):
        assert torch.equal(d2_levels[name], mm), name
