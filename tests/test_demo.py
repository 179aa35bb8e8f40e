"""`make demo`'s pipeline end to end: detectron2 PanopticFPN → converted weights → mmdet PanopticFPN fed
detectron2's batch; backbone, FPN and RPN agree exactly, the semantic head is the first divergence
(detectron2 puts 'things' at class 0, mmdet last)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_demo_pipeline_finds_the_semantic_head_as_first_divergence(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "examples" / "panoptic_fpn_demo.py"), "--out",
                             str(tmp_path / "demo"), "--size", "128"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    report = json.loads((tmp_path / "demo" / "compare.json").read_text())
    verdicts = {item["key"]: item["passed"] for item in report["items"]}
    assert all(verdicts[key] for key in verdicts if key.startswith(("backbone.", "neck.", "rpn_head.", "normalized")))
    assert verdicts["semantic_head.conv_logits"] is False
    assert report["first_divergence"]["key"] == "semantic_head.conv_logits"
    assert "roi_head.bbox_head.fc_cls" in verdicts  # the box head is recorded and paired on both sides
    assert "loaded into mmdet with strict=True" in result.stdout  # the d2-panoptic-fpn-to-mmdet preset is complete
    assert "things last): max abs error 0\n" in result.stdout  # the semantic head differs only by class order
    html = (tmp_path / "demo" / "compare.html").read_text()
    assert "<svg" in html and "semantic_head.conv_logits" in html
    # both real models' panoptic outputs went through the readers into the canonical form and the report
    assert "panoptic results (mmdet against detectron2, canonical form): PQ" in result.stdout
    assert html.count("data:image/png;base64") == 3
