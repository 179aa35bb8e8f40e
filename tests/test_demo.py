"""`make demo` end to end: ``python -m bridge.align examples/panoptic_fpn_demo.yaml`` runs detectron2's
PanopticFPN and mmdet's (converted weights, detectron2's batch replayed) each in its own process and ends with
one report page. Backbone, FPN and RPN agree exactly; the semantic head is the first divergence (class order
only: the semantic results agree pixel for pixel), the box head sees other proposals; the recipe's known
differences are explained where they show."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_demo_recipe_reports_every_stage_and_its_known_differences(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "bridge.align", str(REPO / "examples" / "panoptic_fpn_demo.yaml"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 1, (result.stdout + result.stderr)[-5000:]  # the demo's known divergences
    for stage in ("data", "reference", "convert", "port", "compare", "report"):
        assert f"\n[{stage}] " in "\n" + result.stdout, stage  # each stage's command is printed
    assert f"DIVERGENCE FOUND: {out / 'report.html'}" in result.stdout

    compare = json.loads((out / "compare.json").read_text())
    verdicts = {item["key"]: item["passed"] for item in compare["items"]}
    exact = {key for key in verdicts if key.startswith(("backbone.", "neck.", "rpn_head.", "normalized"))}
    assert {
        "normalized_input",
        "backbone.layer1",
        "backbone.layer4",
        "neck.fpn_convs.0.conv",
        "neck.fpn_convs.3.conv",
        "rpn_head.rpn_cls",
    } <= exact, sorted(verdicts)  # the recipe's layers are recorded under these names
    assert all(verdicts[key] for key in exact)
    assert compare["first_divergence"]["key"] == "semantic_head.conv_logits"
    assert verdicts["roi_head.bbox_head.fc_cls"] is False  # the box head is recorded and paired on both sides
    assert compare["semantic"][0]["agreement"] == 1.0  # the semantic head differs only by class order
    assert compare["panoptic"][0]["pq"] > 50 and compare["instances"][0]["n_a"] < compare["instances"][0]["n_b"]
    assert "loaded " in (out / "logs" / "port.2.log").read_text()  # converted weights, strict=True

    report = json.loads((out / "report.json").read_text())
    stages = {stage["name"]: stage for stage in report["stages"]}
    assert stages["weights"]["status"] == "pass" and report["first_failing_stage"] == "metadata"
    assert stages["inference"]["status"] == "fail" and stages["evaluation"]["status"] == "fail"
    assert {piece["type"] for piece in report["pieces"]} == {"conversion", "metadata", "compare", "known"}
    inference = "\n".join(stages["inference"]["findings"])
    assert (
        "first divergence" in inference
        and "known difference (semantic_head.conv_logits): the semantic head's class order" in inference
    )
    evaluation = "\n".join(stages["evaluation"]["findings"])
    assert all(f"{form} {form}." in evaluation for form in ("panoptic", "instances", "semantic"))
    assert report["first_divergent_tensor"]["key"] == "semantic_head.conv_logits"
    html = (out / "report.html").read_text()
    assert 'id="heatmap"' in html and 'id="error-histogram"' in html and "known difference" in html
    assert "semantic_head.conv_logits" in html and "First failing stage: metadata" in html
