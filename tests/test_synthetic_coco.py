"""The synthetic COCO tree: real files, PNG ids matching the JSON, official categories, deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bridge.coco.coco91 import instance_categories, panoptic_categories
from bridge.coco.semseg_png import read_panoptic_ids
from bridge.coco.synthetic import SPLITS, write_synthetic_coco


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic_coco(tmp_path_factory.mktemp("coco"), num_images=3, empty_image_ids=[102])


def test_files_exist_and_decode(tree) -> None:
    for split in SPLITS:
        for image_id in tree.image_ids[split]:
            with Image.open(tree.images_dir(split) / f"{image_id:012d}.jpg") as im:
                assert im.format == "JPEG" and im.size == (128, 96)
            with Image.open(tree.panoptic_dir(split) / f"{image_id:012d}.png") as im:
                assert im.format == "PNG" and im.mode == "RGB"
        assert tree.panoptic_json(split).is_file() and tree.instances_json(split).is_file()
    assert tree.image_ids == {"val2017": [101, 102, 103], "train2017": [201, 202, 203]}


def test_png_ids_match_segments(tree) -> None:
    for split in SPLITS:
        pan = json.loads(tree.panoptic_json(split).read_text())
        for ann in pan["annotations"]:
            id_map = read_panoptic_ids(tree.panoptic_dir(split) / ann["file_name"])
            assert set(np.unique(id_map).tolist()) - {0} == {s["id"] for s in ann["segments_info"]}
            for seg in ann["segments_info"]:
                mask = id_map == seg["id"]
                ys, xs = np.nonzero(mask)
                assert seg["area"] == int(mask.sum())
                assert seg["bbox"] == [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
            assert (id_map == 0).any()  # some void


def test_empty_image_and_instances(tree) -> None:
    pan = json.loads(tree.panoptic_json().read_text())
    inst = json.loads(tree.instances_json().read_text())
    by_id = {a["image_id"]: a for a in pan["annotations"]}
    assert by_id[102]["segments_info"] == []
    assert not (read_panoptic_ids(tree.panoptic_dir() / "000000000102.png")).any()
    assert {a["image_id"] for a in inst["annotations"]} == {101, 103}
    things = {c["id"] for c in panoptic_categories() if c["isthing"]}
    for ann in inst["annotations"]:
        assert ann["category_id"] in things and ann["iscrowd"] == 0 and len(ann["segmentation"][0]) >= 8
    assert len({a["id"] for a in inst["annotations"]}) == len(inst["annotations"])
    assert inst["images"] == pan["images"]


def test_categories() -> None:
    pan, inst = panoptic_categories(), instance_categories()
    assert len(pan) == 133 and len(inst) == 80
    assert {c["id"] for c in inst} == {c["id"] for c in pan if c["isthing"]}
    assert max(c["id"] for c in inst) == 90 and max(c["id"] for c in pan) == 200
    assert all({"id", "name", "isthing", "color", "supercategory"} <= set(c) for c in pan)


def test_deterministic(tmp_path: Path) -> None:
    a = write_synthetic_coco(tmp_path / "a", num_images=2, seed=3)
    b = write_synthetic_coco(tmp_path / "b", num_images=2, seed=3)
    c = write_synthetic_coco(tmp_path / "c", num_images=2, seed=4)
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    assert all((a.root / f).read_bytes() == (b.root / f).read_bytes() for f in files)
    assert a.panoptic_json().read_bytes() != c.panoptic_json().read_bytes()


def test_panoptic_id_codec_round_trips_and_refuses_out_of_range_ids() -> None:
    from bridge.coco.semseg_png import id_to_rgb, rgb_to_id
    from bridge.errors import BridgeError

    ids = np.array([[0, 1, 255], [256, 65536, 256**3 - 1]], dtype=np.int64)
    rgb = id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb[1, 1].tolist() == [0, 0, 1]
    assert np.array_equal(rgb_to_id(rgb), ids)
    with pytest.raises(BridgeError, match=r"must lie in 0\.\.16777215, got 0\.\.16777216"):
        id_to_rgb(np.array([[0, 256**3]]))
