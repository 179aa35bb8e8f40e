"""bridge.report: stage verdicts, exit codes, the first divergent tensor pictured, and the page rendered in a
real headless Chromium (JS executed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from bridge import Recorder
from bridge.compare.__main__ import main as compare_main
from bridge.convert.__main__ import main as convert_main
from bridge.meta import make_metadata
from bridge.meta.__main__ import main as meta_main
from bridge.report.__main__ import main as report_main
from bridge.report.pieces import Piece
from bridge.report.stages import STAGES, exit_code, first_failing, judge

PATCH = (slice(4, 8), slice(10, 14))  # rows, cols of the feature map where run B differs


def _record(run_dir: Path, framework: str, *, perturb: bool) -> None:
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 8, 16, 20, generator=g)
    queries = torch.randn(1, 10, 32, generator=g)
    if perturb:
        feat = feat.clone()
        feat[1, :, PATCH[0], PATCH[1]] += 0.5
    with Recorder(run_dir, framework=framework, rank=0) as rec:
        rec.record("backbone.res2", feat, step=0, kind="activation")
        rec.record("decoder.queries", queries, step=0, kind="activation")
        rec.record("losses", {"loss_cls": torch.tensor(0.75), "loss_box": torch.tensor(0.25)}, step=0, kind="loss")


def _metadata(path: Path, framework: str, classes: list[str]) -> Path:
    doc = make_metadata(
        framework=framework,
        source="synthetic",
        classes=classes,
        isthing=[True] * len(classes),
        dataset_id_to_label={i + 1: i for i in range(len(classes))},
        colors=None,
        void_label=None,
        ignore_label=255,
        label_divisor=1000,
        evaluator={"type": "x", "max_dets": [1, 10, 100]},
        raw={},
    )
    path.write_text(json.dumps(doc))
    return path


def _conversion_report(tmp: Path) -> Path:
    src, rules, rep = tmp / "m.pth", tmp / "r.yaml", tmp / "convert.json"
    torch.save({"model": {"backbone.res2.0.conv1.weight": torch.zeros(4, 2)}}, src)
    rules.write_text("- {kind: rename, from: '^backbone\\.res2\\.', to: 'backbone.layer1.'}\n")
    assert convert_main([str(src), "-o", str(tmp / "o.safetensors"), "--rules", str(rules), "--report", str(rep)]) == 0
    return rep


def _pieces(tmp: Path, *, perturb: bool) -> list[Path]:
    a, b = tmp / "run_a", tmp / "run_b"
    _record(a, "detectron2", perturb=False)
    _record(b, "mmdet", perturb=perturb)
    cmp = tmp / "compare.json"
    assert compare_main([str(a), str(b), "--json", str(cmp), "--quiet"]) == (1 if perturb else 0)
    return [
        _conversion_report(tmp),
        _metadata(tmp / "d2_meta.json", "detectron2", ["cat", "dog"]),
        _metadata(tmp / "mm_meta.json", "mmdet", ["cat", "dog"]),
        cmp,
    ]


def _piece(kind: str, data: dict) -> Piece:
    return Piece(Path(f"{kind}.json"), kind, data)


def _compare_doc(items: list[dict], a_only: list[dict] = ()) -> dict:
    first = next(
        (
            {"step": 0, "rank": 0, "kind": i["kind"], "name": i["key"], "key": i["key"], "reason": i["reason"]}
            for i in items
            if not i["passed"]
        ),
        None,
    )
    return {
        "schema_version": 1,
        "counts": {},
        "items": items,
        "first_divergence": first,
        "last_passing_before": None,
        "unpaired": {"a_only": list(a_only), "b_only": []},
        "settings": {},
    }


def _item(kind: str, key: str, passed: bool) -> dict:
    return {
        "kind": kind,
        "key": key,
        "key_a": key,
        "step": 0,
        "rank": 0,
        "passed": passed,
        "status": "pass" if passed else "fail",
        "reason": "" if passed else "3 of 9 elements out of tolerance",
    }


def test_stage_verdicts_in_alignment_order() -> None:
    conv = _piece(
        "conversion",
        {
            "ok": True,
            "converted": [],
            "missing": [],
            "unexpected": [],
            "shape_mismatch": [],
            "counts": {"converted": 3},
        },
    )
    cmp = _piece(
        "compare",
        _compare_doc(
            [
                _item("activation", "backbone.res2", True),
                _item("loss", "loss_cls", True),
                _item("grad", "backbone.res2.0.conv1.weight", False),
                _item("param", "head.weight", False),
            ]
        ),
    )
    stages = judge([conv, cmp])
    assert [s.name for s in stages] == list(STAGES)
    status = {s.name: s.status for s in stages}
    assert status == {
        "weights": "pass",
        "metadata": "not run",
        "inference": "pass",
        "losses": "pass",
        "gradients": "fail",
        "optimizer": "fail",
        "evaluation": "not run",
    }
    assert first_failing(stages).name == "gradients" and exit_code(stages) == 1
    assert first_failing(stages).findings[0].startswith("first divergence (compare.json): step 0 rank 0 grad")
    # an unpaired canonical output fails evaluation; a metadata difference fails metadata, which comes first
    only = {
        "step": 0,
        "rank": 0,
        "kind": "output",
        "name": "panoptic.1",
        "key": "panoptic.1",
        "reason": "only in run A",
    }
    diff = _piece(
        "metadata_diff",
        {
            "equivalent": False,
            "differences": [
                {
                    "field": "void_label",
                    "a_value": None,
                    "b_value": 0,
                    "sentence": "void label: a has none where b has 0",
                }
            ],
        },
    )
    stages = judge([_piece("compare", _compare_doc([_item("activation", "x", True)], [only])), diff])
    assert {s.name: s.status for s in stages}["evaluation"] == "fail"
    assert first_failing(stages).name == "metadata"
    assert "void_label: void label: a has none where b has 0" in first_failing(stages).findings
    # parity tables: evaluation; every stage passing or not run: exit 0
    parity = _piece("parity", {"rows": [], "tolerance": 1e-6, "parity": True, "differing": [], "reasons": []})
    assert exit_code(judge([conv, parity])) == 0


def test_exit_codes_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _pieces(tmp_path / "good", perturb=False)
    out = tmp_path / "r.html"
    assert report_main([*map(str, good), "-o", str(out), "--json", str(tmp_path / "r.json")]) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["passed"] and doc["first_failing_stage"] is None
    assert [p["type"] for p in doc["pieces"]] == ["conversion", "metadata", "metadata", "compare"]
    assert {s["name"]: s["status"] for s in doc["stages"]}["metadata"] == "pass"
    bad_meta = _metadata(tmp_path / "mm_bad.json", "mmdet", ["dog", "cat"])
    assert report_main([str(good[1]), str(bad_meta), "-o", str(out)]) == 1
    assert "FAIL: first failing stage: metadata" in capsys.readouterr().out
    diff = tmp_path / "meta_diff.json"  # the diff bridge.meta writes is a piece of its own
    assert meta_main([str(good[1]), str(bad_meta), "--json", str(diff), "--plain"]) == 1
    assert report_main([str(diff), "-o", str(out), "--json", str(tmp_path / "r.json")]) == 1
    findings = json.loads((tmp_path / "r.json").read_text())["stages"][1]["findings"]
    assert findings[1] == "classes.order: class order: label 0 is 'cat' in detectron2 but 'dog' in mmdet"
    capsys.readouterr()

    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"hello": 1}')
    cases = [
        ([str(unknown)], "unknown piece type"),
        ([str(tmp_path / "nope.json")], "cannot read"),
        ([str(good[1])], "needs its counterpart"),
        ([str(good[3]), "-o", str(good[3])], "overwrite an input"),
    ]
    for args, message in cases:
        target = tmp_path / "never.html"
        argv = args if "-o" in args else [*args, "-o", str(target)]
        assert report_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err and err.count("\n") == 1
        assert not target.exists()
    assert json.loads(good[3].read_text())["schema_version"] == 1  # the input was not overwritten


def test_first_divergent_tensor_pictured_from_the_runs(tmp_path: Path) -> None:
    pieces = _pieces(tmp_path, perturb=True)
    rep = tmp_path / "r.json"
    assert report_main([*map(str, pieces), "-o", str(tmp_path / "r.html"), "--json", str(rep)]) == 1
    doc = json.loads(rep.read_text())
    assert doc["first_failing_stage"] == "inference"
    t = doc["first_divergent_tensor"]  # runs read from the compare report's settings
    assert t["key"] == "backbone.res2" and t["shape"] == [2, 8, 16, 20]
    hm = t["heatmap"]
    assert hm["batch_element"] == 1 and (hm["rows"], hm["cols"]) == (16, 20)
    cells = torch.tensor(hm["cells"])
    inside = torch.zeros_like(cells, dtype=torch.bool)
    inside[PATCH] = True
    assert torch.allclose(cells[inside], torch.full((16,), 8 * 0.5), atol=1e-5) and (cells[~inside] == 0).all()
    assert t["histogram"]["zeros"] == 2 * 8 * 16 * 20 - 8 * 16 and sum(t["histogram"]["counts"]) == 8 * 16


def test_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, (
        "chromium is missing: run `make setup` (it installs it from the OS packages) or apt-get install chromium"
    )
    pieces = _pieces(tmp_path, perturb=True)
    page = tmp_path / "report.html"
    assert (
        report_main([*map(str, pieces), "-o", str(page), "--runs", str(tmp_path / "run_a"), str(tmp_path / "run_b")])
        == 1
    )
    text = page.read_text()
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert 'id="verdict" class="fail">FAIL: first failing stage: inference</p>' in dom
    assert 'id="first-failing"' in dom and "first divergence (" in dom
    assert '<canvas id="heatmap" width="' in dom and 'data-drawn="1"' in dom  # drawn by the inline JS
    assert '<svg id="error-histogram"' in dom and 'class="bin"' in dom and 'class="zeros"' in dom
    assert 'id="entry-plot" data-ready="1"' in dom and '<details class="group" open="">' in dom
    assert '<span id="shown-count">4</span>' in dom and dom.count('<details class="group"') >= 2
    # the filter runs in the browser: status=fail from the address leaves the one failing entry shown
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            page.as_uri() + "#status=fail&sort=error",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '<span id="shown-count">1</span>' in proc.stdout
    assert 'data-key="decoder.queries" style="display: none;"' in proc.stdout


def test_a_recipe_accepts_evaluator_metadata_differences_only() -> None:
    from bridge.report.pieces import PieceError

    diff = _piece(
        "metadata_diff",
        {
            "equivalent": False,
            "differences": [
                {
                    "field": "evaluator.max_dets",
                    "a_value": [1, 10, 100],
                    "b_value": [100, 300, 1000],
                    "sentence": "evaluator max_dets: detectron2 uses [1, 10, 100] where mmdet uses [100, 300, 1000]",
                },
                {
                    "field": "void_label",
                    "a_value": None,
                    "b_value": 0,
                    "sentence": "void label: a has none where b has 0",
                },
            ],
        },
    )
    accept_max_dets = {"stage": "metadata", "match": "max_dets", "note": "fewer than 100 detections", "accept": True}
    stages = judge([diff, _piece("known", {"known_differences": [accept_max_dets]})])
    metadata = next(s for s in stages if s.name == "metadata")
    assert metadata.status == "fail" and "void_label: void label: a has none where b has 0" in metadata.findings
    assert metadata.findings[0].endswith("2 differences, 1 accepted by the recipe")
    assert (
        "accepted difference: evaluator.max_dets: evaluator max_dets: detectron2 uses [1, 10, 100] where mmdet "
        "uses [100, 300, 1000] (fewer than 100 detections)" in metadata.findings
    )
    accept_void = {"stage": "metadata", "match": "void_label", "note": "no void pixels here", "accept": True}
    stages = judge([diff, _piece("known", {"known_differences": [accept_max_dets, accept_void]})])
    assert next(s for s in stages if s.name == "metadata").status == "pass" and exit_code(stages) == 0
    with pytest.raises(PieceError, match=r"known_differences\[0\]: .*accept: true \(stage metadata only\)"):
        judge([diff, _piece("known", {"known_differences": [accept_max_dets | {"stage": "inference"}]})])
