"""End-to-end tests of bridge.compare on real runs written with bridge.Recorder (no mocks)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from bridge import Recorder
from bridge.compare import compare_runs, to_dict
from bridge.compare.__main__ import main
from bridge.compare.report_html import build_html
from bridge.compare.report_terminal import fold_rows

REPO = Path(__file__).resolve().parents[1]
Mutator = Callable[[int, str, object], object]


def _base(step: int) -> list[tuple[str, object]]:
    g = torch.Generator().manual_seed(step)
    recs: list[tuple[str, object]] = [("backbone.res2", torch.randn(2, 8, 6, 5, generator=g))]
    recs += [(f"decoder.layers.{i}.out", torch.randn(2, 7, 16, generator=g)) for i in range(6)]
    recs.append(
        (
            "pred",
            {
                "boxes": torch.rand(7, 4, generator=g),
                "labels": torch.arange(7),
                "num": 7,
                "score_thr": 0.05,
                "tag": "x",
                "extra": None,
            },
        )
    )
    return recs


def write_run(
    path: Path,
    steps: int = 2,
    mutate: Mutator | None = None,
    skip: set[str] = frozenset(),
    rename_fn: Callable[[str], str] | None = None,
) -> Path:
    """Record a small detection-like run; ``mutate(step, name, value)`` may alter a value."""
    with Recorder(path, framework="test") as rec:
        for step in range(steps):
            for name, value in _base(step):
                if name in skip:
                    continue
                if mutate is not None:
                    value = mutate(step, name, value)
                rec.record(rename_fn(name) if rename_fn else name, value, step=step)
    return path


@pytest.fixture()
def run_a(tmp_path: Path) -> Path:
    return write_run(tmp_path / "a")


def _bump(at_step: int, at_name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Mutator:
    def mutate(step: int, name: str, value: object) -> object:
        if step == at_step and name == at_name:
            return fn(value.clone())  # type: ignore[union-attr]
        return value

    return mutate


def test_identical_runs_pass(run_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = write_run(tmp_path / "b")
    res = compare_runs(run_a, b, device="cpu")
    assert res.passed and res.first_divergence is None and not res.a_only and not res.b_only
    assert len(res.items) == 2 * (7 + 6)
    assert main([str(run_a), str(b), "--quiet"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_one_element_off(run_a: Path, tmp_path: Path) -> None:
    def off(t: torch.Tensor) -> torch.Tensor:
        t[1, 3, 5] += 1e-2
        return t

    b = write_run(tmp_path / "b", mutate=_bump(1, "decoder.layers.3.out", off))
    res = compare_runs(run_a, b, device="cpu")
    assert not res.passed
    fd = res.first_divergence
    assert (fd.step, fd.key) == (1, "decoder.layers.3.out")
    assert res.last_passing_before.key == "decoder.layers.2.out"
    bad = [i for i in res.items if not i.passed]
    assert len(bad) == 1 and bad[0].mismatched == 1
    assert bad[0].max_abs == pytest.approx(1e-2, rel=1e-3)
    assert bad[0].min_atol == pytest.approx(1e-2, rel=1e-2)
    step_0 = [i for i in res.items if i.step == 0]
    assert step_0 and all(i.passed for i in step_0)
    assert main([str(run_a), str(tmp_path / "b"), "--quiet"]) == 1


def test_nan_one_side_fails_both_sides_pass(tmp_path: Path) -> None:
    def nan(t: torch.Tensor) -> torch.Tensor:
        t[0, 0, 0] = float("nan")
        return t

    a = write_run(tmp_path / "a", mutate=_bump(0, "decoder.layers.0.out", nan))
    same = write_run(tmp_path / "same", mutate=_bump(0, "decoder.layers.0.out", nan))
    clean = write_run(tmp_path / "clean")
    assert compare_runs(a, same, device="cpu").passed
    res = compare_runs(clean, a, device="cpu")
    item = next(i for i in res.items if i.key == "decoder.layers.0.out" and i.step == 0)
    assert not item.passed and item.nan_a == 0 and item.nan_b == 1 and item.mismatched == 1
    assert math.isinf(item.min_atol) and to_dict(res)["items"][res.items.index(item)]["min_atol"] is None
    assert res.first_divergence.key == "decoder.layers.0.out"


def test_shape_and_dtype_mismatch(run_a: Path, tmp_path: Path) -> None:
    b = write_run(tmp_path / "b", mutate=_bump(0, "backbone.res2", lambda t: t[:, :4]))
    res = compare_runs(run_a, b, device="cpu")
    item = res.items[0]
    assert not item.passed and item.reason.startswith("shape mismatch") and item.max_abs is None
    c = write_run(tmp_path / "c", mutate=_bump(0, "backbone.res2", lambda t: t.double()))
    item = compare_runs(run_a, c, device="cpu").items[0]
    assert not item.passed and item.reason.startswith("dtype mismatch") and item.dtype_b == "float64"


def test_unpaired_and_step_counts(run_a: Path, tmp_path: Path) -> None:
    b = write_run(tmp_path / "b", skip={"decoder.layers.5.out"})
    res = compare_runs(run_a, b, device="cpu")
    assert not res.passed and {loc.key for loc in res.a_only} == {"decoder.layers.5.out"} and not res.b_only
    assert res.first_divergence.reason == "only in run A" and res.first_divergence.step == 0
    assert main([str(run_a), str(b), "--quiet"]) == 1
    c = write_run(tmp_path / "c", steps=3)
    res = compare_runs(run_a, c, device="cpu")
    assert not res.passed and not res.a_only and {loc.step for loc in res.b_only} == {2}
    assert all(i.passed for i in res.items) and res.first_divergence.reason == "only in run B"


def test_rename_map(run_a: Path, tmp_path: Path) -> None:
    def mm(name: str) -> str:
        if name.startswith("decoder.layers."):
            i = int(name.split(".")[2])
            return f"transformer.decoder.layer{i + 1}.output"
        return name.replace("backbone.res2", "backbone.stage1")

    b = write_run(tmp_path / "b", rename_fn=mm)
    assert not compare_runs(run_a, b, device="cpu").passed
    rules = tmp_path / "map.yaml"
    rules.write_text(
        "- rename: {from: 'decoder\\.layers\\.(\\d+)\\.out', to: 'transformer.decoder.layer{1+1}.output'}\n"
        "- rename: {from: 'backbone\\.res(?P<S>\\d)', to: 'backbone.stage{S-1}'}\n"
    )
    res = compare_runs(run_a, b, name_map=rules, device="cpu")
    assert res.passed, res.a_only
    assert main([str(run_a), str(b), "--map", str(rules), "--quiet"]) == 0
    conv = tmp_path / "conv.yaml"  # the checkpoint converter's own rule syntax works too
    conv.write_text(
        "- {kind: rename, from: '^decoder\\.layers\\.(\\d+)\\.out$', to: 'transformer.decoder.layer{1+1}.output'}\n"
        "- {kind: rename, from: '^backbone\\.res2', to: 'backbone.stage1'}\n"
    )
    assert compare_runs(run_a, b, name_map=conv, device="cpu").passed
    jrules = tmp_path / "map.json"
    jrules.write_text(json.dumps([{"rename": {"from": r"backbone\.res(\d)", "to": "backbone.stage{1-1}"}}]))
    res = compare_runs(run_a, b, name_map=jrules, device="cpu")
    assert {loc.key for loc in res.a_only} >= {"decoder.layers.0.out"}
    assert "backbone.res2" not in {loc.key for loc in res.a_only}


def test_map_takes_a_converter_preset(tmp_path: Path) -> None:
    from bridge.compare.pairing import name_mapper

    mapper = name_mapper("d2-panoptic-fpn-to-mmdet")
    assert mapper("backbone.bottom_up.res3") == "backbone.layer2"
    assert mapper("proposal_generator.rpn_head.objectness_logits#2") == "rpn_head.rpn_cls#2"
    assert mapper("unknown.module") == "unknown.module"


def test_tol_override(run_a: Path, tmp_path: Path) -> None:
    b = write_run(tmp_path / "b", mutate=_bump(0, "decoder.layers.1.out", lambda t: t + 1e-4))
    res = compare_runs(run_a, b, device="cpu")
    assert not res.passed
    res = compare_runs(run_a, b, device="cpu", tolerances=["decoder.*=0,0", "decoder.layers.1.*=1e-3,0"])
    assert res.passed
    item = next(i for i in res.items if i.key == "decoder.layers.1.out")
    assert (item.atol, item.rtol) == (1e-3, 0.0)
    assert main([str(run_a), str(b), "--quiet", "--tol", "decoder.layers.1.out=1e-3,0"]) == 0
    assert main([str(run_a), str(b), "--quiet", "--atol", "1e-3"]) == 0


def test_int_tensors_exact_and_values(run_a: Path, tmp_path: Path) -> None:
    def change(step: int, name: str, value: object) -> object:
        if name == "pred" and step == 1:
            value = dict(value)  # type: ignore[arg-type]
            labels = value["labels"].clone()
            labels[2] = 100
            value.update(labels=labels, num=8, tag="y", score_thr=0.05 + 1e-12)
        return value

    b = write_run(tmp_path / "b", mutate=change)
    res = compare_runs(run_a, b, device="cpu", atol=1e6, rtol=1e6)  # loose floats: ints stay exact
    by = {i.key: i for i in res.items if i.step == 1}
    assert not by["pred.labels"].passed and by["pred.labels"].mismatched == 1 and by["pred.labels"].atol == 0
    assert not by["pred.num"].passed and "value differs" in by["pred.num"].reason
    assert not by["pred.tag"].passed
    assert by["pred.score_thr"].passed and by["pred.extra"].passed
    assert by["pred.boxes"].passed


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_complex_and_opaque_dtypes(tmp_path: Path) -> None:
    """Complex leaves compare both parts (an imaginary difference fails); int4 / bits16 / float4 compare bit for bit."""

    def record(path: Path, off: int) -> Path:
        with Recorder(path, rank=0) as rec:
            rec.record("c", torch.tensor([1 + 1j, 2 + (2 + off) * 1j]), step=0)
            rec.record("c32", torch.tensor([1 + 1j, 2 - 2j]).to(torch.complex32), step=0)
            rec.record("i4", torch.tensor([0, 3 * off, 5, 0], dtype=torch.uint8).view(torch.int4), step=0)
            rec.record("b16", torch.tensor([7, 9], dtype=torch.int16).view(torch.bits16), step=0)
            rec.record("f4", torch.tensor([1, 2 + off], dtype=torch.uint8).view(torch.float4_e2m1fn_x2), step=0)
        return path

    same = compare_runs(record(tmp_path / "a", 0), record(tmp_path / "a2", 0), device="cpu")
    assert same.passed and [i.dtype_a for i in same.items] == [
        "complex64",
        "complex32",
        "int4",
        "bits16",
        "float4_e2m1fn_x2",
    ]
    res = compare_runs(tmp_path / "a", record(tmp_path / "b", 1), device="cpu", atol=1e-3, rtol=0)
    by = {i.key: i for i in res.items}
    assert not by["c"].passed and by["c"].max_abs == 1.0
    assert not by["i4"].passed and by["i4"].mismatched == 1 and by["i4"].atol == 0
    assert not by["f4"].passed and by["f4"].mismatched == 1
    assert by["c32"].passed and by["b16"].passed


def test_json_schema(run_a: Path, tmp_path: Path) -> None:
    b = write_run(tmp_path / "b", mutate=_bump(1, "decoder.layers.3.out", lambda t: t * 2), skip={"backbone.res2"})
    out = tmp_path / "r" / "report.json"
    assert main([str(run_a), str(b), "--json", str(out), "--quiet"]) == 1
    data = json.loads(out.read_text())
    assert data["passed"] is False
    assert set(data["first_divergence"]) >= {"step", "rank", "kind", "name", "key", "reason"}
    assert data["first_divergence"]["key"] == "backbone.res2"
    assert isinstance(data["unpaired"]["a_only"], list) and data["unpaired"]["b_only"] == []
    assert isinstance(data["settings"], dict) and data["last_passing_before"] is None
    types = {
        "name": str,
        "key": str,
        "step": int,
        "rank": int,
        "kind": str,
        "dtype_a": str,
        "dtype_b": str,
        "shape_a": list,
        "shape_b": list,
        "passed": bool,
        "reason": str,
        "max_abs": (float, int),
        "mean_abs": (float, int),
        "max_rel": (float, int),
        "rel_l2": (float, int),
        "cosine": (float, int),
        "mismatched": int,
        "mismatched_share": (float, int),
        "nan_a": int,
        "nan_b": int,
        "inf_a": int,
        "inf_b": int,
        "min_atol": (float, int),
        "atol": (float, int),
        "rtol": (float, int),
    }
    tensor_items = [it for it in data["items"] if it["dtype_a"] == "float32"]
    assert tensor_items
    for it in tensor_items:
        for k, t in types.items():
            assert isinstance(it[k], t), (k, it[k])
    assert not [p for p in tmp_path.joinpath("r").iterdir() if p.name != "report.json"]  # atomic: no temp left


def test_html_self_contained(run_a: Path, tmp_path: Path) -> None:
    b = write_run(tmp_path / "b", mutate=_bump(1, "decoder.layers.3.out", lambda t: t + 1))
    out = tmp_path / "r.html"
    assert main([str(run_a), str(b), "--html", str(out), "--quiet"]) == 1
    text = out.read_text()
    assert "<svg" in text and "<table" in text and "decoder.layers.3.out" in text
    assert "http" not in text and "<script" not in text and "<link" not in text
    assert "first divergence" in text
    extra = build_html(compare_runs(run_a, b, device="cpu"), [("Panoptic", "<p>pictures</p>")])
    assert "<h2>Panoptic</h2><p>pictures</p>" in extra


def test_fold_rows(run_a: Path, tmp_path: Path) -> None:
    res = compare_runs(run_a, write_run(tmp_path / "b"), device="cpu")
    labels = [r.label for r in fold_rows(res.items)]
    assert "decoder.layers.{0..5}.out" in labels
    b = write_run(tmp_path / "c", mutate=_bump(0, "decoder.layers.3.out", lambda t: t + 1))
    labels = [r.label for r in fold_rows(compare_runs(run_a, b, device="cpu").items) if r.items[0].step == 0]
    assert labels[1:4] == ["decoder.layers.{0..2}.out", "decoder.layers.3.out", "decoder.layers.{4..5}.out"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.compare", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_cli_bad_input(run_a: Path, tmp_path: Path) -> None:
    proc = _cli(str(run_a), str(tmp_path / "missing"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    b = write_run(tmp_path / "b")
    victim = sorted(b.rglob("*.safetensors"))[0]
    victim.write_bytes(victim.read_bytes()[:40])
    proc = _cli(str(run_a), str(b), "--quiet")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    proc = _cli(str(run_a), str(run_a), "--tol", "nonsense")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_cli_bad_map(run_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(run_a), str(run_a), "--map", str(tmp_path / "nope.yaml")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {rename: {from: '(', to: x}}\n")
    assert main([str(run_a), str(run_a), "--map", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 2 and "Traceback" not in err
