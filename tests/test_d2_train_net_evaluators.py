"""Every registered one-sample name passes the evaluators that detectron2's own ``tools/train_net.py``
builds for it (``Trainer.build_evaluator``, from the sdist's tools kept by ``make setup``): each evaluator
is reset, fed the dataset's ground truth as the prediction, and evaluated, and scores 100."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from bridge.coco.onesample import SPLITS, OneSampleConfig
from bridge.coco.semseg_png import read_panoptic_ids
from d2_side.datasets import registered_names
from tests.conftest import detectron2_tools_dir

# The results each evaluator type of train_net.py's build_evaluator gives.
RESULT_KEYS = {
    "coco": {"bbox", "segm"},
    "sem_seg": {"sem_seg"},
    "coco_panoptic_seg": {"sem_seg", "bbox", "segm", "panoptic_seg"},
}
NAMES = [name for split in SPLITS for name in registered_names(split)]


@pytest.fixture(scope="module")
def train_net() -> ModuleType:
    """detectron2's own tools/train_net.py, imported as a module (its main() only runs as a script)."""
    spec = importlib.util.spec_from_file_location("detectron2_tools_train_net", detectron2_tools_dir() / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def registered(onesample_config: OneSampleConfig) -> None:
    from d2_side.datasets import register_onesample

    register_onesample(onesample_config)


def instances_from_json(metadata, image_id: int, image_size: tuple[int, int]):
    """The non-crowd annotations of ``image_id`` in the registration's instances json as detectron2 predictions
    (contiguous classes through the name's ``thing_dataset_id_to_contiguous_id``, score 1)."""
    from detectron2.structures import Boxes, Instances
    from pycocotools.coco import COCO

    coco = COCO(metadata.json_file)
    annotations = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])) if not a.get("iscrowd", 0)]
    instances = Instances(image_size)
    boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    instances.pred_boxes = Boxes(boxes)
    instances.scores = torch.ones(len(annotations))
    instances.pred_classes = torch.tensor(
        [metadata.thing_dataset_id_to_contiguous_id[a["category_id"]] for a in annotations], dtype=torch.int64
    )
    masks = [torch.from_numpy(coco.annToMask(a).astype(bool)) for a in annotations]
    instances.pred_masks = torch.stack(masks) if masks else torch.zeros((0, *image_size), dtype=torch.bool)
    return instances


def sem_seg_from_png(metadata, png: str) -> torch.Tensor:
    """One-hot logits (C×H×W, C = ``len(stuff_classes)``) of a semantic PNG; unlabeled pixels get class 0."""
    labels = np.asarray(Image.open(png), dtype=np.int64).copy()
    labels[labels == metadata.ignore_label] = 0
    logits = torch.nn.functional.one_hot(torch.from_numpy(labels), len(metadata.stuff_classes))
    return logits.permute(2, 0, 1).float()


def panoptic_from_png(metadata, image_id: int) -> tuple[torch.Tensor, list[dict]]:
    """The panoptic ground truth of ``image_id`` as detectron2's ``(ids, segments_info)`` prediction, category
    ids made contiguous through the name's thing and stuff maps."""
    panoptic = json.loads(Path(metadata.panoptic_json).read_text())
    annotation = next(a for a in panoptic["annotations"] if a["image_id"] == image_id)
    ids = torch.from_numpy(read_panoptic_ids(Path(metadata.panoptic_root) / annotation["file_name"]))
    things, stuff = metadata.thing_dataset_id_to_contiguous_id, metadata.stuff_dataset_id_to_contiguous_id
    segments = []
    for segment in annotation["segments_info"]:
        isthing = segment["category_id"] in things
        category = (things if isthing else stuff)[segment["category_id"]]
        segments.append({"id": segment["id"], "category_id": category, "isthing": isthing})
    return ids, segments


def ground_truth_prediction(metadata, record: dict) -> dict:
    """Every output train_net's evaluators read, made from the name's own ground truth files."""
    width, height = Image.open(record["file_name"]).size
    output = {}
    if hasattr(metadata, "json_file"):
        output["instances"] = instances_from_json(metadata, record["image_id"], (height, width))
    if "sem_seg_file_name" in record:
        output["sem_seg"] = sem_seg_from_png(metadata, record["sem_seg_file_name"])
    if hasattr(metadata, "panoptic_json"):
        output["panoptic_seg"] = panoptic_from_png(metadata, record["image_id"])
    return output


@pytest.mark.parametrize("name", NAMES)
def test_train_net_evaluators_score_ground_truth_100(
    name: str, registered: None, train_net: ModuleType, tmp_path: Path
) -> None:
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog, MetadataCatalog

    metadata = MetadataCatalog.get(name)
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    evaluator = train_net.Trainer.build_evaluator(cfg, name)
    evaluator.reset()
    records = DatasetCatalog.get(name)
    assert records
    for record in records:
        inputs = {key: record[key] for key in ("file_name", "image_id") if key in record}  # _stuffonly: no id
        evaluator.process([inputs], [ground_truth_prediction(metadata, record)])
    results = evaluator.evaluate()

    assert set(results) == RESULT_KEYS[metadata.evaluator_type]
    if "bbox" in results:
        assert results["bbox"]["AP"] == pytest.approx(100.0) and results["segm"]["AP"] == pytest.approx(100.0)
    if "sem_seg" in results:
        assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)
    if "panoptic_seg" in results:
        assert results["panoptic_seg"]["PQ"] == pytest.approx(100.0)
