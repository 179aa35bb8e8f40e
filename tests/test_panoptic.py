"""Panoptic output parity: detectron2 and mmdet encodings of one synthetic COCO-panoptic image both
convert to the same canonical result; perturbations are found and named; the CLI and HTML work."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.onesample import OneSampleConfig, prepare_split
from bridge.panoptic import (CanonicalPanoptic, compare_panoptic, disagreement_map, from_record, html_section,
                             load_npz, panoptic_color_image, save_npz, to_record, canonical_from_panoptic_png)
from bridge.runs import Recorder, open_run
from bridge.synthetic_coco import write_synthetic_coco
from d2_side.datasets import with_sem_seg_metadata
from d2_side.panoptic import canonical_from_d2, d2_from_canonical
from mmdet_side.panoptic import INSTANCE_OFFSET, canonical_from_mmdet, mmdet_from_canonical

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gt(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Ground truth of the one-sample val image: canonical result, categories, image id."""
    root = tmp_path_factory.mktemp("coco_pan")
    write_synthetic_coco(root, num_images=2)
    split = prepare_split(OneSampleConfig.create(root, None, tmp_path_factory.mktemp("cache")), "val")
    data = json.loads(Path(split.panoptic_json).read_bytes())
    ann = data["annotations"][0]
    canonical = canonical_from_panoptic_png(Path(split.panoptic_root) / ann["file_name"], ann["segments_info"],
                                            data["categories"])
    return {"c": canonical, "categories": data["categories"], "image_id": ann["image_id"],
            "colors": {c["id"]: c["color"] for c in data["categories"]}}


@pytest.fixture(scope="module")
def classes() -> list[str]:
    from mmdet.datasets import CocoPanopticDataset

    return list(CocoPanopticDataset.METAINFO["classes"])


def _via_d2(c: CanonicalPanoptic) -> CanonicalPanoptic:
    meta = with_sem_seg_metadata()
    return canonical_from_d2(d2_from_canonical(c, meta), meta)


def _segment(c: CanonicalPanoptic, isthing: bool) -> dict:
    return max((s for s in c.segments if bool(s["isthing"]) == isthing), key=lambda s: s["area"])


def test_ground_truth_has_things_stuff_and_void(gt: dict) -> None:
    c = gt["c"]
    assert any(s["isthing"] for s in c.segments) and any(not s["isthing"] for s in c.segments)
    assert (c.segment == 0).any() and (c.segment != 0).any()
    assert all(s["area"] == int((c.segment == s["id"]).sum()) for s in c.segments)


def test_d2_encoding_round_trips_identical(gt: dict) -> None:
    meta = with_sem_seg_metadata()
    ids, infos = d2_from_canonical(gt["c"], meta)
    assert ids.dtype == torch.int32 and ids.shape == gt["c"].shape
    assert {i["category_id"] for i in infos} <= set(range(133))
    comparison = compare_panoptic(gt["c"], canonical_from_d2((ids, infos), meta))
    assert comparison.identical and comparison.pq == 100.0 and comparison.category_agreement == 1.0
    assert comparison.void_agreement == 1.0 and comparison.things["pq"] == 100.0 and comparison.stuff["pq"] == 100.0


def test_mmdet_encoding_round_trips_identical(gt: dict, classes: list[str]) -> None:
    pan = mmdet_from_canonical(gt["c"], classes, gt["categories"])
    assert pan.shape == (1,) + gt["c"].shape
    assert int((pan == len(classes)).sum()) == int((gt["c"].segment == 0).sum())
    thing = _segment(gt["c"], True)
    values = torch.unique(pan[0][torch.from_numpy(gt["c"].segment == thing["id"])])
    assert len(values) == 1 and int(values[0]) // INSTANCE_OFFSET >= 1
    name = next(c["name"] for c in gt["categories"] if c["id"] == thing["category_id"])
    assert int(values[0]) % INSTANCE_OFFSET == classes.index(name)
    from_mmdet = canonical_from_mmdet(pan, classes, gt["categories"])
    comparison = compare_panoptic(gt["c"], from_mmdet)
    assert comparison.identical and comparison.pq == 100.0 and comparison.category_agreement == 1.0
    cross = compare_panoptic(_via_d2(gt["c"]), canonical_from_mmdet(pan[0], classes, gt["categories"]))
    assert cross.identical and cross.pq == 100.0
    assert not disagreement_map(gt["c"], from_mmdet).any()


def test_relabelled_segment_is_named(gt: dict, classes: list[str]) -> None:
    stuff = _segment(gt["c"], False)
    pan = mmdet_from_canonical(gt["c"], classes, gt["categories"])
    mask = torch.from_numpy(gt["c"].segment == stuff["id"])[None]
    old = int(pan[mask][0])
    pan[mask] = (old + 1) if old + 1 < len(classes) else old - 1
    b = canonical_from_mmdet(pan, classes, gt["categories"])
    comparison = compare_panoptic(gt["c"], b)
    assert not comparison.identical and comparison.pq < 100.0
    assert [(r["a_id"], r["a_category"]) for r in comparison.relabelled] == [(stuff["id"], stuff["category_id"])]
    assert comparison.relabelled[0]["b_category"] != stuff["category_id"]
    assert stuff["id"] in [s["id"] for s in comparison.unmatched_a]
    assert comparison.category_agreement == pytest.approx(1 - stuff["area"] / gt["c"].segment.size)
    assert comparison.void_agreement == 1.0
    assert int(disagreement_map(gt["c"], b).sum()) == stuff["area"]


def test_split_and_merged_segments_are_named(gt: dict) -> None:
    meta = with_sem_seg_metadata()
    thing = _segment(gt["c"], True)
    ids, infos = d2_from_canonical(gt["c"], meta)
    ys, xs = np.nonzero(gt["c"].segment == thing["id"])
    new_id = int(ids.max()) + 1
    right = xs >= int(np.median(xs))
    ids[torch.from_numpy(ys[right]), torch.from_numpy(xs[right])] = new_id
    infos.append({"id": new_id, "category_id": next(i["category_id"] for i in infos if i["id"] == thing["id"]),
                  "isthing": True})
    b = canonical_from_d2((ids, infos), meta)
    comparison = compare_panoptic(gt["c"], b)
    assert [(s["a_id"], len(s["b_ids"])) for s in comparison.split] == [(thing["id"], 2)]
    assert comparison.category_agreement == 1.0 and comparison.pq < 100.0 and not comparison.identical
    reverse = compare_panoptic(b, gt["c"])
    assert len(reverse.merged) == 1 and len(reverse.merged[0]["a_ids"]) == 2


def test_removed_segment_and_grown_void_are_named(gt: dict, classes: list[str]) -> None:
    thing = _segment(gt["c"], True)
    pan = mmdet_from_canonical(gt["c"], classes, gt["categories"])
    pan[torch.from_numpy(gt["c"].segment == thing["id"])[None]] = len(classes)
    comparison = compare_panoptic(gt["c"], canonical_from_mmdet(pan, classes, gt["categories"]))
    assert [s["id"] for s in comparison.unmatched_a] == [thing["id"]]
    assert comparison.unmatched_a[0]["void_in_b"] == 1.0 and not comparison.unmatched_b
    assert comparison.void_grown == thing["area"] and comparison.things["pq"] < 100.0
    assert comparison.stuff["pq"] == 100.0

    stuff = _segment(gt["c"], False)
    rows = np.nonzero((gt["c"].segment == stuff["id"]).any(axis=1))[0][:2]
    pan = mmdet_from_canonical(gt["c"], classes, gt["categories"])
    grown = np.zeros(gt["c"].shape, bool)
    grown[rows] = gt["c"].segment[rows] == stuff["id"]
    pan[0][torch.from_numpy(grown)] = len(classes)
    comparison = compare_panoptic(gt["c"], canonical_from_mmdet(pan, classes, gt["categories"]))
    assert comparison.void_grown == int(grown.sum()) > 0 and comparison.void_shrunk == 0
    assert comparison.void_share_b > comparison.void_share_a and comparison.void_agreement < 1.0
    assert not comparison.unmatched_a and not comparison.unmatched_b and not comparison.identical
    assert 90.0 < comparison.pq < 100.0 and comparison.rq == 100.0


def _relabelled(gt: dict, classes: list[str]) -> CanonicalPanoptic:
    pan = mmdet_from_canonical(gt["c"], classes, gt["categories"])
    stuff = _segment(gt["c"], False)
    mask = torch.from_numpy(gt["c"].segment == stuff["id"])[None]
    pan[mask] = int(pan[mask][0]) - 1
    return canonical_from_mmdet(pan, classes, gt["categories"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge.panoptic", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_record_round_trip_and_cli_on_runs(gt: dict, classes: list[str], tmp_path: Path) -> None:
    name = f"panoptic.{gt['image_id']}"
    values = {"a": gt["c"], "same": _via_d2(gt["c"]), "relabel": _relabelled(gt, classes)}
    for run, c in values.items():
        with Recorder(tmp_path / run, framework="test") as rec:
            rec.record(name, to_record(c), step=0, kind="output")
            rec.record("other", torch.zeros(2), step=0, kind="output")
    back = from_record(open_run(tmp_path / "a").get(name, step=0, kind="output"))
    assert compare_panoptic(gt["c"], back).identical and back.segments == gt["c"].segments

    same = _cli(str(tmp_path / "a"), str(tmp_path / "same"), "--json", str(tmp_path / "s.json"))
    assert same.returncode == 0, same.stdout + same.stderr
    assert json.loads((tmp_path / "s.json").read_text())["passed"] is True
    differ = _cli(str(tmp_path / "a"), str(tmp_path / "relabel"), "--html", str(tmp_path / "r.html"))
    assert differ.returncode == 1, differ.stdout + differ.stderr
    assert "DIFFERS" in differ.stdout and "relabelled 1" in differ.stdout
    assert (tmp_path / "r.html").read_text().count("data:image/png;base64,") == 3
    assert _cli(str(tmp_path / "a"), str(tmp_path / "relabel"), "--min-pq", "10").returncode == 0

    bad = _cli(str(tmp_path / "a"), str(tmp_path / "missing"))
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_npz_round_trip_and_cli(gt: dict, classes: list[str], tmp_path: Path) -> None:
    save_npz(gt["c"], tmp_path / "a.npz")
    save_npz(_relabelled(gt, classes), tmp_path / "b.npz")
    assert compare_panoptic(gt["c"], load_npz(tmp_path / "a.npz")).identical
    assert _cli(str(tmp_path / "a.npz"), str(tmp_path / "a.npz")).returncode == 0
    assert _cli(str(tmp_path / "a.npz"), str(tmp_path / "b.npz")).returncode == 1
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    bad = _cli(str(tmp_path / "a.npz"), str(tmp_path / "junk.npz"))
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_html_section_and_colors(gt: dict, classes: list[str]) -> None:
    b = _relabelled(gt, classes)
    image = panoptic_color_image(gt["c"], gt["colors"])
    assert image.dtype == np.uint8 and image.shape == gt["c"].shape + (3,)
    assert (image[gt["c"].segment == 0] == 0).all()
    section = html_section(gt["c"], b, compare_panoptic(gt["c"], b), gt["colors"])
    assert section.count("<img") >= 2 and section.count("data:image/png;base64,") >= 2


def test_bridge_panoptic_imports_no_framework() -> None:
    code = ("import sys, bridge.panoptic; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('detectron2', 'mmdet', 'mmengine', 'mmcv')]; assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_panoptic_fpn_output_converts() -> None:
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.data import MetadataCatalog
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = 0.0
    cfg.MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT = 0
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        output = model([{"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8).float(),
                         "height": 64, "width": 96}])[0]
    metadata = MetadataCatalog.get("coco_2017_val_panoptic_separated")
    c = canonical_from_d2(output["panoptic_seg"], metadata)
    assert c.shape == (64, 96) and len(c.segments) == len(output["panoptic_seg"][1]) > 0
    valid = set(metadata.thing_dataset_id_to_contiguous_id) | set(metadata.stuff_dataset_id_to_contiguous_id)
    assert set(np.unique(c.category).tolist()) - {0} <= valid
    assert compare_panoptic(c, c).identical


def test_bridge_compare_meets_canonical_panoptic_records(gt: dict, classes: list[str], tmp_path: Path) -> None:
    """`python -m bridge.compare` compares `panoptic.*` records as panoptic results too: JSON and HTML pictures."""
    name = f"panoptic.{gt['image_id']}"
    for run, c in {"a": gt["c"], "relabel": _relabelled(gt, classes)}.items():
        with Recorder(tmp_path / run, framework="test") as rec:
            rec.record(name, to_record(c), step=0, kind="output")
    result = subprocess.run([sys.executable, "-m", "bridge.compare", str(tmp_path / "a"), str(tmp_path / "relabel"),
                             "--json", str(tmp_path / "c.json"), "--html", str(tmp_path / "c.html")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"panoptic {name} step 0 rank 0: PQ" in result.stdout and "relabelled 1" in result.stdout
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["panoptic"][0]["name"] == name and report["panoptic"][0]["pq"] < 100
    assert (tmp_path / "c.html").read_text().count("data:image/png;base64,") == 3
