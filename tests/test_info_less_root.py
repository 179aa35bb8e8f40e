"""A COCO root whose annotation files have no top-level ``info`` / ``licenses`` keys (common in custom and
converted datasets; ``bridge.subset`` keeps absent keys absent) is read by every evaluator a user runs:
detectron2's own ``tools/train_net.py --eval-only`` (COCOEvaluator) and mmdet's ``CocoMetric``.

pycocotools 2.0.10's ``COCO.loadRes`` read ``self.dataset['info']`` and stopped both with ``KeyError: 'info'``;
2.0.11 (the pin in requirements/constraints.txt) reads ``.get('info', {})``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pycocotools import mask as mask_util

from bridge.coco.synthetic import write_synthetic_coco
from tests.test_real_clients import MASK_RCNN, run_train_net, train_net  # noqa: F401  (train_net: fixture)


@pytest.fixture(scope="module")
def info_less_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic COCO root (both splits) with ``info`` and ``licenses`` removed from every annotation file."""
    root = tmp_path_factory.mktemp("coco_no_info")
    write_synthetic_coco(root, num_images=2)
    for path in sorted((root / "annotations").glob("*.json")):
        data = json.loads(path.read_text())
        del data["info"], data["licenses"]
        path.write_text(json.dumps(data))
    return root


def test_root_has_no_info_or_licenses(info_less_root: Path) -> None:
    files = sorted((info_less_root / "annotations").glob("*.json"))
    assert len(files) == 4
    for path in files:
        assert not {"info", "licenses"} & set(json.loads(path.read_text())), path


def test_detectron2_train_net_eval_only_on_info_less_root(
    train_net: Path,  # noqa: F811 - the fixture imported above
    info_less_root: Path,
    tmp_path: Path,
) -> None:
    output = run_train_net(
        train_net,
        MASK_RCNN,
        "coco_2017_train_onesample",
        "coco_2017_val_onesample",
        tmp_path,
        info_less_root,
        eval_only=True,
    )
    assert "KeyError" not in output
    assert "Evaluation results for bbox" in output and "Evaluation results for segm" in output


def test_mmdet_coco_metric_on_info_less_root(info_less_root: Path) -> None:
    """mmdet's stock CocoDataset + CocoMetric: the val split's ground truth fed back as predictions scores 1.0."""
    from mmdet.datasets import CocoDataset
    from mmdet.evaluation import CocoMetric

    ann = info_less_root / "annotations" / "instances_val2017.json"
    dataset = CocoDataset(
        ann_file=str(ann), data_prefix=dict(img=str(info_less_root / "val2017")), pipeline=[], test_mode=True
    )
    samples = []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        h, w, instances = info["height"], info["width"], info["instances"]
        samples.append(
            dict(
                img_id=info["img_id"],
                ori_shape=(h, w),
                pred_instances=dict(
                    bboxes=torch.tensor([inst["bbox"] for inst in instances], dtype=torch.float32).reshape(-1, 4),
                    scores=torch.ones(len(instances)),
                    labels=torch.tensor([inst["bbox_label"] for inst in instances], dtype=torch.int64),
                    masks=[mask_util.merge(mask_util.frPyObjects(inst["mask"], h, w)) for inst in instances],
                ),
            )
        )
    assert sum(len(s["pred_instances"]["labels"]) for s in samples) > 0
    metric = CocoMetric(ann_file=str(ann), metric=["bbox", "segm"])
    metric.dataset_meta = dataset.metainfo
    metric.process({}, samples)
    result = metric.evaluate(len(samples))
    assert result["coco/bbox_mAP"] == pytest.approx(1.0) and result["coco/segm_mAP"] == pytest.approx(1.0)
