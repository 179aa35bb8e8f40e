"""Evaluator parity: one set of canonical panoptic predictions fed to detectron2's COCOPanopticEvaluator
and mmdet's CocoPanopticMetric on the same one-sample ground truth (real frameworks, no mocks)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from bridge.coco.onesample import OneSampleConfig, OneSampleSplit, prepare_split
from bridge.panoptic import CanonicalPanoptic, canonical_from_panoptic_png
from bridge.panoptic.parity import REASON_ZERO_AREA, parity_report

D2_NAME = "coco_2017_val_panoptic_onesample_with_sem_seg"


@pytest.fixture(scope="module")
def split(onesample_config: OneSampleConfig) -> OneSampleSplit:
    """The val one-sample split, registered with detectron2 as well."""
    from d2_side.datasets import register_onesample

    register_onesample(onesample_config)
    return prepare_split(onesample_config, "val")


@pytest.fixture(scope="module")
def ground_truth(split: OneSampleSplit) -> tuple[dict[int, CanonicalPanoptic], dict[int, str], list[dict]]:
    """Canonical ground truth per image id, image paths and the annotation file's categories."""
    panoptic = json.loads(split.panoptic_json.read_bytes())
    images = {int(i["id"]): i for i in panoptic["images"]}
    truth, paths = {}, {}
    for ann in panoptic["annotations"]:
        image_id = int(ann["image_id"])
        truth[image_id] = canonical_from_panoptic_png(
            split.panoptic_root / ann["file_name"], ann["segments_info"], panoptic["categories"]
        )
        paths[image_id] = str(split.image_root / images[image_id]["file_name"])
    return truth, paths, panoptic["categories"]


def _evaluate_both(
    split: OneSampleSplit,
    onesample_config: OneSampleConfig,
    predictions: dict[int, CanonicalPanoptic],
    paths: dict[int, str],
    out: Path,
) -> tuple[dict, dict]:
    from d2_side.panoptic_eval import evaluate_d2
    from mmdet_side.config import onesample_overrides
    from mmdet_side.panoptic_eval import evaluate_mmdet

    d2 = evaluate_d2(D2_NAME, predictions, out)
    mm = evaluate_mmdet(onesample_overrides(onesample_config)["val_evaluator"], predictions, paths)
    return d2, mm


def _relabel_one_thing(c: CanonicalPanoptic, categories: list[dict]) -> CanonicalPanoptic:
    things = [s for s in c.segments if s["isthing"]]
    assert things, "the synthetic ground truth needs a thing segment"
    target = things[0]
    other = next(int(cat["id"]) for cat in categories if cat["isthing"] and int(cat["id"]) != target["category_id"])
    category = c.category.copy()
    category[c.segment == target["id"]] = other
    segments = [dict(s, category_id=other) if s["id"] == target["id"] else dict(s) for s in c.segments]
    return CanonicalPanoptic(category, c.segment.copy(), segments)


def _remove_one_thing(c: CanonicalPanoptic) -> CanonicalPanoptic:
    target = next(s for s in c.segments if s["isthing"])
    mask = c.segment == target["id"]
    category, segment = c.category.copy(), c.segment.copy()
    category[mask] = 0
    segment[mask] = 0
    return CanonicalPanoptic(category, segment, [dict(s) for s in c.segments if s["id"] != target["id"]])


def test_ground_truth_gives_pq_100_on_both_and_parity(split, onesample_config, ground_truth, tmp_path) -> None:
    truth, paths, _ = ground_truth
    d2, mm = _evaluate_both(split, onesample_config, truth, paths, tmp_path)
    assert d2["PQ"] == pytest.approx(100.0) and mm["PQ"] == pytest.approx(100.0)
    report = parity_report(d2, mm)
    assert report.parity and report.reasons == [] and report.differing == []
    assert {r["metric"] for r in report.to_dict()["rows"]} >= {"PQ", "SQ", "RQ", "PQ_th", "PQ_st"}


@pytest.mark.parametrize("perturb", ["relabel", "remove"])
def test_perturbed_prediction_gives_the_same_lower_pq(
    split, onesample_config, ground_truth, tmp_path, perturb: str
) -> None:
    truth, paths, categories = ground_truth
    image_id = next(iter(truth))
    changed = (
        _relabel_one_thing(truth[image_id], categories) if perturb == "relabel" else _remove_one_thing(truth[image_id])
    )
    predictions = {**truth, image_id: changed}
    d2, mm = _evaluate_both(split, onesample_config, predictions, paths, tmp_path)
    assert d2["PQ"] < 100.0 and mm["PQ"] < 100.0
    for key, value in d2.items():
        if math.isnan(value):
            assert math.isnan(mm[key]), key
        else:
            assert abs(value - mm[key]) <= 1e-6, (key, value, mm[key])
    report = parity_report(d2, mm, tolerance=1e-6)
    assert report.parity, report.to_dict()
    print(perturb, {k: round(v, 4) for k, v in d2.items()}, {k: round(v, 4) for k, v in mm.items()})


def test_report_names_reasons_and_prints_when_they_differ() -> None:
    from rich.console import Console

    d2 = {
        "PQ": 80.0,
        "SQ": 90.0,
        "RQ": 88.0,
        "PQ_th": 70.0,
        "SQ_th": 90.0,
        "RQ_th": 77.0,
        "PQ_st": 100.0,
        "SQ_st": 100.0,
        "RQ_st": 100.0,
    }
    mm = {f"coco_panoptic/{k}": v for k, v in d2.items()} | {"coco_panoptic/PQ": 75.0, "coco_panoptic/PQ_th": 60.0}
    report = parity_report(d2, mm)
    assert not report.parity and report.differing == ["PQ", "PQ_th"]
    assert REASON_ZERO_AREA in report.reasons and len(report.reasons) >= 3
    row = next(r for r in report.rows if r.metric == "PQ")
    assert (row.detectron2, row.mmdet, row.difference) == (80.0, 75.0, 5.0)
    console = Console(file=io.StringIO(), width=120)
    report.print(console)
    text = console.file.getvalue()
    assert "detectron2" in text and "mmdet" in text and "zero area" in text
    assert json.loads(json.dumps(report.to_dict()))["parity"] is False
