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
from PIL import Image

from bridge.coco.coco91 import panoptic_categories
from bridge.coco.onesample import OneSampleConfig, prepare_split
from bridge.coco.synthetic import write_synthetic_coco
from bridge.compare import compare_runs
from bridge.errors import BridgeError
from bridge.panoptic import (
    CanonicalPanoptic,
    canonical_from_panoptic_png,
    canonical_from_segment_map,
    compare_panoptic,
    disagreement_map,
    from_record,
    html_section,
    load_npz,
    panoptic_color_image,
    save_npz,
    to_record,
)
from bridge.runs import Recorder, open_run
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
    canonical = canonical_from_panoptic_png(
        Path(split.panoptic_root) / ann["file_name"], ann["segments_info"], data["categories"]
    )
    return {
        "c": canonical,
        "categories": data["categories"],
        "image_id": ann["image_id"],
        "colors": {c["id"]: c["color"] for c in data["categories"]},
    }


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
    infos.append(
        {"id": new_id, "category_id": next(i["category_id"] for i in infos if i["id"] == thing["id"]), "isthing": True}
    )
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
    return subprocess.run(
        [sys.executable, "-m", "bridge.panoptic", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


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
    code = (
        "import sys, bridge.panoptic; bad = [m for m in sys.modules if m.split('.')[0] in "
        "('detectron2', 'mmdet', 'mmengine', 'mmcv')]; assert not bad, bad"
    )
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
        output = model(
            [{"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8).float(), "height": 64, "width": 96}]
        )[0]
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
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.compare",
            str(tmp_path / "a"),
            str(tmp_path / "relabel"),
            "--json",
            str(tmp_path / "c.json"),
            "--html",
            str(tmp_path / "c.html"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"panoptic {name} step 0 rank 0: PQ" in result.stdout and "relabelled 1" in result.stdout
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["panoptic"][0]["name"] == name and report["panoptic"][0]["pq"] < 100
    assert (tmp_path / "c.html").read_text().count("data:image/png;base64,") == 3


# ---------------------------------------------------------------- device option


def _random_pair(seed: int, shape: tuple[int, int] = (48, 64)) -> tuple[CanonicalPanoptic, CanonicalPanoptic]:
    """Two unrelated results of random rectangles (things and stuff, void where nothing is drawn)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2):
        ids = np.zeros(shape, dtype=np.int64)
        for k in range(1, 13):
            y, x = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
            ids[y : y + rng.integers(4, 24), x : x + rng.integers(4, 32)] = 7 * k
        cats = rng.choice([1, 3, 18, 187, 190], size=12)
        infos = [{"id": 7 * k, "category_id": int(c), "isthing": int(c < 100)} for k, c in enumerate(cats, 1)]
        out.append(canonical_from_segment_map(ids, infos))
    return out[0], out[1]


def _numpy_overlaps(a: CanonicalPanoptic, b: CanonicalPanoptic) -> dict[tuple[int, int], int]:
    """Reference joint histogram with numpy, as panopticapi counts it (id_a * offset + id_b)."""
    stride = int(b.segment.max(initial=0)) + 1
    values, counts = np.unique(a.segment * stride + b.segment, return_counts=True)
    return {(int(v // stride), int(v % stride)): int(n) for v, n in zip(values, counts)}


def test_device_option_gives_the_numpy_counts_on_cpu(gt: dict, classes: list[str]) -> None:
    from bridge.panoptic import _joint_histogram

    for seed in range(3):
        a, b = _random_pair(seed)
        assert _joint_histogram(torch.from_numpy(a.segment), torch.from_numpy(b.segment)) == _numpy_overlaps(a, b)
        cpu = compare_panoptic(a, b, device="cpu")
        assert cpu.to_dict() == compare_panoptic(a, b, device="auto").to_dict() == compare_panoptic(a, b).to_dict()
        assert cpu.void_grown == int(((a.segment != 0) & (b.segment == 0)).sum())
        assert cpu.category_agreement == float((a.category == b.category).mean())
        assert disagreement_map(a, b, device="cpu").dtype == bool
    b = _relabelled(gt, classes)
    assert compare_panoptic(gt["c"], b, device="cpu").to_dict() == compare_panoptic(gt["c"], b).to_dict()


def test_device_cuda_gives_the_cpu_results_or_is_refused(tmp_path: Path) -> None:
    """With CUDA the GPU path gives the CPU's results exactly; without it `--device cuda` exits 2 in one line.
    Either way the CLI's `--device cpu` JSON equals the Python call (one test, no skip on either machine)."""
    a, b = _random_pair(0)
    save_npz(a, tmp_path / "a.npz")
    save_npz(b, tmp_path / "b.npz")
    cpu = _cli(str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--device", "cpu", "--json", str(tmp_path / "c.json"))
    assert cpu.returncode == 1, cpu.stdout + cpu.stderr
    assert json.loads((tmp_path / "c.json").read_text())["images"]["a step 0"] == json.loads(
        json.dumps(compare_panoptic(a, b, device="cpu").to_dict())
    )
    if torch.cuda.is_available():
        for seed in range(3):
            a, b = _random_pair(seed)
            assert compare_panoptic(a, b, device="cuda").to_dict() == compare_panoptic(a, b, device="cpu").to_dict()
            assert (disagreement_map(a, b, device="cuda") == disagreement_map(a, b, device="cpu")).all()
    else:
        bad = _cli(str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--device", "cuda")
        assert bad.returncode == 2 and bad.stdout == ""
        assert bad.stderr == "error: --device cuda asked for, but torch sees no CUDA device\n"
    assert _cli(str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--device", "tpu").returncode == 2


def test_bridge_compare_passes_its_device_to_the_panoptic_section(tmp_path: Path) -> None:
    a, b = _random_pair(1)
    for run, c in {"a": a, "b": b}.items():
        with Recorder(tmp_path / run, framework="test") as rec:
            rec.record("panoptic.1", to_record(c), step=0, kind="output")
    result = compare_runs(tmp_path / "a", tmp_path / "b", device="cpu")
    assert [p.device for p in result.panoptic] == ["cpu"]
    assert result.panoptic[0].comparison.to_dict() == compare_panoptic(a, b, device="cpu").to_dict()


# ---------------------------------------------------------------- COCO's crowd rule

PERSON, CAR, SKY, FLOOR = 1, 3, 187, 190


def _crowd_scene(two_crowds: bool) -> tuple[np.ndarray, list[dict], np.ndarray, list[dict]]:
    """16×32 ground truth (sky; a person; a person crowd region, split in two when ``two_crowds``; void)
    and a prediction with one segment of every kind: matched, on a crowd region, on void, relabelled."""
    gt = np.zeros((16, 32), dtype=np.int64)
    gt[:8] = 11
    gt[8:, :8] = 21
    gt[8:, 8:24] = 22
    gt_infos = [
        {"id": 11, "category_id": SKY, "iscrowd": 0},
        {"id": 21, "category_id": PERSON, "iscrowd": 0},
        {"id": 22, "category_id": PERSON, "iscrowd": 1},
    ]
    if two_crowds:
        gt[8:, 16:24] = 23
        gt_infos.append({"id": 23, "category_id": PERSON, "iscrowd": 1})
    pred = np.zeros((16, 32), dtype=np.int64)
    pred[:8, :28] = 1  # sky, IoU 0.875
    pred[:8, 28:] = 2  # floor on sky: a false positive
    pred[8:, :6] = 3  # the person, IoU 0.75
    pred[8:, 6:18] = 4  # a person, 80 of its 96 pixels on person crowd
    pred[8:, 18:24] = 5  # a car on the person crowd region: a false positive
    pred[8:12, 24:] = 6  # a person on void
    pred_infos = [
        {"id": 1, "category_id": SKY},
        {"id": 2, "category_id": FLOOR},
        {"id": 3, "category_id": PERSON},
        {"id": 4, "category_id": PERSON},
        {"id": 5, "category_id": CAR},
        {"id": 6, "category_id": PERSON},
    ]
    return gt, gt_infos, pred, pred_infos


def _write_coco_panoptic(folder: Path, ids: np.ndarray, infos: list[dict]) -> tuple[Path, Path, list[dict]]:
    """One image (id 1) as COCO-panoptic JSON + RGB id PNG (panopticapi's id2rgb).

    Returns the JSON path, the PNG folder and the written ``segments_info`` (with areas)."""
    from panopticapi.utils import id2rgb

    png_dir = folder / "png"
    png_dir.mkdir(parents=True)
    Image.fromarray(id2rgb(ids)).save(png_dir / "1.png")
    segments = [dict(s, area=int((ids == s["id"]).sum())) for s in infos]
    doc = {
        "images": [{"id": 1, "file_name": "1.jpg", "height": ids.shape[0], "width": ids.shape[1]}],
        "annotations": [{"image_id": 1, "file_name": "1.png", "segments_info": segments}],
        "categories": panoptic_categories(),
    }
    (folder / "panoptic.json").write_text(json.dumps(doc))
    return folder / "panoptic.json", png_dir, segments


def _ours_and_panopticapi(
    tmp_path: Path, gt: np.ndarray, gt_infos: list[dict], pred: np.ndarray, pred_infos: list[dict]
) -> tuple:
    """compare_panoptic on the canonical forms read back from the files, and panopticapi's pq_compute on them."""
    from panopticapi.evaluation import pq_compute

    gt_json, gt_dir, gt_segments = _write_coco_panoptic(tmp_path / "gt", gt, gt_infos)
    pred_json, pred_dir, pred_segments = _write_coco_panoptic(tmp_path / "pred", pred, pred_infos)
    read = [
        canonical_from_panoptic_png(gt_dir / "1.png", gt_segments),
        canonical_from_panoptic_png(pred_dir / "1.png", pred_segments),
    ]
    official = pq_compute(str(gt_json), str(pred_json), str(gt_dir), str(pred_dir))
    return read[0], read[1], compare_panoptic(read[0], read[1], device="cpu"), official


@pytest.mark.parametrize("two_crowds", [False, True], ids=["one crowd", "two crowd regions of one category"])
def test_crowd_rule_gives_panopticapi_pq(tmp_path: Path, two_crowds: bool) -> None:
    gt_c, pred_c, comparison, official = _ours_and_panopticapi(tmp_path, *_crowd_scene(two_crowds))
    assert sorted(s["iscrowd"] for s in gt_c.segments) == [0, 0] + [1] * (1 + two_crowds)
    crowd_ids = {s["id"] for s in gt_c.segments if s["iscrowd"]}
    assert crowd_ids == {s["id"] for s in comparison.crowd_a}
    assert not crowd_ids & {m["a_id"] for m in comparison.matches} and not comparison.unmatched_a
    rows = {r["category_id"]: r for r in comparison.per_category}
    assert (rows[SKY]["tp"], rows[FLOOR]["fp"], rows[CAR]["fp"]) == (1, 1, 1)
    # The person lying on the crowd region is no false positive; with two crowd regions of one category
    # panopticapi only looks at the last listed one, so that person (on the first) counts.
    assert (rows[PERSON]["tp"], rows[PERSON]["fn"], rows[PERSON]["fp"]) == (1, 0, int(two_crowds))
    on_crowd = next(s for s in comparison.unmatched_b if s["void_in_a"] == 0 and s["category_id"] == PERSON)
    assert on_crowd["counted_fp"] is two_crowds and on_crowd["crowd_in_a"] == (16 / 96 if two_crowds else 80 / 96)
    assert comparison.pq == pytest.approx(100 * official["All"]["pq"], abs=1e-9)
    assert comparison.sq == pytest.approx(100 * official["All"]["sq"], abs=1e-9)
    assert comparison.rq == pytest.approx(100 * official["All"]["rq"], abs=1e-9)
    assert comparison.things["pq"] == pytest.approx(100 * official["Things"]["pq"], abs=1e-9)
    assert comparison.stuff["pq"] == pytest.approx(100 * official["Stuff"]["pq"], abs=1e-9)
    for cat, row in rows.items():
        assert row["pq"] == pytest.approx(100 * official["per_class"][cat]["pq"], abs=1e-9), cat


def test_crowd_segment_is_never_matched(tmp_path: Path) -> None:
    gt, gt_infos, _, _ = _crowd_scene(two_crowds=False)
    pred_infos = [{"id": s["id"], "category_id": s["category_id"]} for s in gt_infos]
    gt_c, pred_c, comparison, official = _ours_and_panopticapi(tmp_path, gt, gt_infos, gt, pred_infos)
    crowd = next(s for s in gt_c.segments if s["iscrowd"])
    assert crowd["id"] not in {m["a_id"] for m in comparison.matches}
    assert [(s["id"], s["best_iou"]) for s in comparison.crowd_a] == [(crowd["id"], 1.0)]
    copy = next(s for s in comparison.unmatched_b if s["category_id"] == PERSON)
    assert copy["crowd_in_a"] == 1.0 and not copy["counted_fp"] and not comparison.unmatched_a
    assert comparison.pq == 100.0 == pytest.approx(100 * official["All"]["pq"])
    assert comparison.identical and not disagreement_map(gt_c, pred_c).any()
    assert "crowd ignored 1" in comparison.summary()
    reverse = compare_panoptic(pred_c, gt_c, device="cpu")
    assert not reverse.crowd_a and len(reverse.matches) == 3 and reverse.identical


def test_iscrowd_survives_record_and_npz_and_old_layouts_load(tmp_path: Path) -> None:
    gt, gt_infos, _, _ = _crowd_scene(two_crowds=True)
    c = canonical_from_segment_map(gt, [dict(s, isthing=s["category_id"] == PERSON) for s in gt_infos])
    assert [s["iscrowd"] for s in c.segments] == [0, 0, 1, 1]
    with Recorder(tmp_path / "run", framework="test") as rec:
        rec.record("panoptic.1", to_record(c), step=0, kind="output")
    assert from_record(open_run(tmp_path / "run").get("panoptic.1", step=0, kind="output")).segments == c.segments
    save_npz(c, tmp_path / "c.npz")
    assert load_npz(tmp_path / "c.npz").segments == c.segments

    old_table = np.array([[s["id"], s["category_id"], s["isthing"], s["area"]] for s in c.segments])
    old = from_record({"category": c.category, "segment": c.segment, "segments": torch.from_numpy(old_table)})
    assert [s["iscrowd"] for s in old.segments] == [0, 0, 0, 0]
    assert [dict(s, iscrowd=1) for s in old.segments][2:] == c.segments[2:]
    np.savez(tmp_path / "old.npz", category=c.category, segment=c.segment, segments=old_table)
    assert load_npz(tmp_path / "old.npz").segments == old.segments
    with pytest.raises(BridgeError, match="N×5"):
        from_record({"category": c.category, "segment": c.segment, "segments": old_table[:, :3]})
