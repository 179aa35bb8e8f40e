"""``python -m bridge.convert`` and ``python -m bridge.initcheck`` through subprocesses: exit codes,
reports, names-dir, error lines."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from test_convert_presets import EMBEDDED_D2, EMBEDDED_PORT, synthetic_d2

from bridge.convert import load_checkpoint, load_rules

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <args>`` from the repo root."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _manifest(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    lines = ["key\tshape\tkind"] + [f"{k}\t{'x'.join(map(str, s))}\tparam" for k, s in shapes.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_full_match_pkl_with_report_and_names(tmp_path: Path) -> None:
    sd = {k: v.numpy() for k, v in synthetic_d2(EMBEDDED_D2).items()}
    src = tmp_path / "model_final.pkl"
    src.write_bytes(pickle.dumps({"model": sd, "__author__": "Detectron2 Model Zoo"}))
    target = _manifest(tmp_path / "port.tsv", EMBEDDED_PORT)
    out, rep, names = tmp_path / "out.pth", tmp_path / "rep.json", tmp_path / "names"
    proc = run(
        "bridge.convert",
        str(src),
        "-o",
        str(out),
        "--preset",
        "maskdino-d2-to-mmdet",
        "--target",
        str(target),
        "--report",
        str(rep),
        "--names-dir",
        str(names),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(rep.read_text())
    assert data["ok"] and data["counts"]["missing"] == 0 and data["counts"]["added"] == 4
    assert data["meta"]["rules"] == "preset:maskdino-d2-to-mmdet"
    ckpt = torch.load(out, weights_only=True)
    assert set(ckpt["state_dict"]) == set(EMBEDDED_PORT) and ckpt["meta"]["source"].endswith("model_final.pkl")
    assert ckpt["meta"]["counts"]["source"] == len(EMBEDDED_D2)
    # provenance: the source file (its sha256 in the report), the expanded rules and their sha256, the version
    meta = ckpt["meta"]
    assert data["meta"]["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert meta["source_bytes"] == src.stat().st_size and meta["source_mtime_ns"] == src.stat().st_mtime_ns
    expanded = load_rules("maskdino-d2-to-mmdet").specs()
    assert meta["rules_expanded"] == expanded and len(expanded) == 19  # 8 of d2-resnet-to-mmdet included
    canonical = json.dumps(expanded, sort_keys=True, separators=(",", ":"))
    assert meta["rules_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert meta["bridge_version"] == importlib.metadata.version("d2-mmdet-bridge")
    # per-rule hit counts in the checkpoint and the report; the module-name-only rule is optional
    assert meta["rule_hits"] == data["rule_hits"] and data["unused_rules"] == []
    assert data["rule_hits"]["#8 drop_alias 'decoder_norm'"] == 1
    assert data["rule_hits"]["#7 add 'bn-num-batches-tracked'"] == 4
    assert "matched no key" not in proc.stdout
    for fname, expected in (
        ("source_names.json", EMBEDDED_D2),
        ("target_names.json", EMBEDDED_PORT),
        ("converted_names.json", EMBEDDED_PORT),
    ):
        assert json.loads((names / fname).read_text()) == sorted(expected)


def test_cli_mismatch_exit_1_with_suggestions(tmp_path: Path) -> None:
    src = tmp_path / "m.pth"
    torch.save({"model": {f"enc.layers.{i}.linear1.weight": torch.zeros(4, 2) for i in range(3)}}, src)
    target = _manifest(tmp_path / "t.tsv", {f"enc.layers.{i}.ffn.0.weight": (4, 2) for i in range(3)})
    rules = tmp_path / "r.yaml"
    rules.write_text("- {kind: drop, from: '^nothing$'}\n")
    rep = tmp_path / "r.json"
    proc = run(
        "bridge.convert",
        str(src),
        "-o",
        str(tmp_path / "o.safetensors"),
        "--rules",
        str(rules),
        "--target",
        str(target),
        "--report",
        str(rep),
    )
    assert proc.returncode == 1, proc.stderr
    assert not (tmp_path / "o.safetensors").exists() and "not written" in proc.stderr  # failed its check
    assert json.loads(rep.read_text())["meta"]["output_written"] is False
    proc = run(
        "bridge.convert",
        str(src),
        "-o",
        str(tmp_path / "o.safetensors"),
        "--rules",
        str(rules),
        "--target",
        str(target),
        "--report",
        str(rep),
        "--keep-failed",
    )
    assert proc.returncode == 1, proc.stderr
    assert "enc.layers.{0..2}.linear1.weight" in proc.stdout
    data = json.loads(rep.read_text())
    assert data["counts"]["unexpected"] == 3 and data["counts"]["missing"] == 3
    assert data["suggestions"]["enc.layers.1.linear1.weight"][0]["key"] == "enc.layers.1.ffn.0.weight"
    assert data["suggestions"]["enc.layers.1.ffn.0.weight"][0]["rule"] == {
        "kind": "rename",
        "from": r"^enc\.layers\.1\.linear1\.weight$",
        "to": "enc.layers.1.ffn.0.weight",
    }
    assert "to: 'enc.layers.0.ffn.0.weight'" in proc.stdout  # the suggested rule in the terminal tables
    assert data["rule_hits"] == {"#0 drop '^nothing$'": 0} and data["unused_rules"] == ["#0 drop '^nothing$'"]
    assert "warning: rule #0 drop '^nothing$' matched no key" in proc.stdout
    assert set(load_checkpoint(tmp_path / "o.safetensors")) == {f"enc.layers.{i}.linear1.weight" for i in range(3)}


def test_cli_bad_inputs_exit_2(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")
    good = tmp_path / "g.pkl"
    good.write_bytes(pickle.dumps({"model": {"a": np.zeros(2)}}))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00garbage" * 10)
    cases = [
        (str(tmp_path / "missing.pth"), ["--preset", "d2-resnet-to-mmdet"], "not found"),
        (
            str(garbage),
            ["--preset", "d2-resnet-to-mmdet"],
            "garbage.pth: not a torch checkpoint (zip or legacy pickle)",
        ),
        (str(evil), ["--preset", "d2-resnet-to-mmdet"], "--unsafe-pickle"),
        (str(good), ["--preset", "no-such"], "unknown preset"),
    ]
    for src, extra, needle in cases:
        proc = run("bridge.convert", src, "-o", str(tmp_path / "o.pth"), *extra)
        assert proc.returncode == 2, (src, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error: ") and needle in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.pth").exists()
    proc = run(
        "bridge.convert", str(good), "-o", str(tmp_path / "o.pth"), "--preset", "d2-resnet-to-mmdet", "--unsafe-pickle"
    )
    assert proc.returncode == 0 and (tmp_path / "o.pth").exists()


def test_initcheck_verdicts(tmp_path: Path) -> None:
    def init(seed: int, fn) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        sd = {}
        for i in range(3):
            w = torch.empty(256, 256)
            fn(w)
            sd[f"layers.{i}.weight"] = w
            sd[f"layers.{i}.bias"] = torch.zeros(256)
        return sd

    torch.save(init(0, torch.nn.init.xavier_uniform_), tmp_path / "a.pth")
    torch.save(init(0, torch.nn.init.xavier_uniform_), tmp_path / "a2.pth")
    torch.save(init(1, torch.nn.init.xavier_uniform_), tmp_path / "b.pth")
    torch.save(init(1, torch.nn.init.kaiming_normal_), tmp_path / "k.pth")
    from bridge.initcheck.__main__ import main as initcheck_main

    rep = tmp_path / "ic.json"
    assert initcheck_main([str(tmp_path / "a.pth"), str(tmp_path / "a2.pth"), "--report", str(rep)]) == 0
    assert {r["verdict"] for r in json.loads(rep.read_text())["rows"]} == {"equal"}
    assert initcheck_main([str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), "--report", str(rep)]) == 0
    verdicts = {r["key"]: r["verdict"] for r in json.loads(rep.read_text())["rows"]}
    assert verdicts["layers.0.weight"] == "same-distribution" and verdicts["layers.0.bias"] == "equal"
    row = next(r for r in json.loads(rep.read_text())["rows"] if r["key"] == "layers.1.weight")
    assert set(row["a"]) == {"mean", "std", "min", "max", "zeros"} and abs(row["a"]["std"] - row["b"]["std"]) < 1e-3
    # exit codes through the real CLI
    proc = run("bridge.initcheck", str(tmp_path / "a.pth"), str(tmp_path / "k.pth"), "--report", str(rep))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    verdicts = {r["key"]: r["verdict"] for r in json.loads(rep.read_text())["rows"]}
    assert verdicts["layers.2.weight"] == "different-distribution" and verdicts["layers.2.bias"] == "equal"
    assert initcheck_main([str(tmp_path / "a.pth"), str(tmp_path / "nope.pth")]) == 2


def test_initcheck_with_preset_and_missing_keys(tmp_path: Path) -> None:
    from bridge.initcheck.__main__ import main as initcheck_main

    w = torch.randn(8, 4, 1, 1)
    torch.save({"model": {"backbone.res2.0.conv1.weight": w}}, tmp_path / "d2.pth")
    torch.save({"state_dict": {"backbone.layer1.0.conv1.weight": w.clone()}}, tmp_path / "mm.pth")
    rep = tmp_path / "r.json"
    assert (
        initcheck_main(
            [str(tmp_path / "d2.pth"), str(tmp_path / "mm.pth"), "--preset", "d2-resnet-to-mmdet", "--json", str(rep)]
        )
        == 0
    )
    torch.save({"state_dict": {"backbone.other": w}}, tmp_path / "mm2.pth")
    assert initcheck_main([str(tmp_path / "d2.pth"), str(tmp_path / "mm2.pth"), "--json", str(rep)]) == 1
    assert {r["verdict"] for r in json.loads(rep.read_text())["rows"]} == {"missing-in-a", "missing-in-b"}


def test_initcheck_quiet_is_one_line_and_report_is_an_alias_of_json(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(3)}, tmp_path / "a.pth")
    torch.save({"w": torch.ones(3), "v": torch.ones(1)}, tmp_path / "b.pth")
    rep = tmp_path / "r.json"
    proc = run("bridge.initcheck", str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), "--quiet", "--report", str(rep))
    assert proc.returncode == 1 and proc.stdout.splitlines() == [
        "initcheck: DIFFERENCES: 1 equal, 1 missing-in-a, 0 added by the rules"
    ], proc.stdout + proc.stderr
    assert json.loads(rep.read_text())["ok"] is False
    assert "--report" not in run("bridge.initcheck", "--help").stdout
