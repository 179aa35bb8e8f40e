"""A side process for tests/test_align.py: ``python -m tests.align_structures FRAMEWORK RUN_DIR`` records the
same predictions of one image (two detections, semantic scores) in FRAMEWORK's own structures (detectron2
``Instances`` / ``sem_seg``, mmdet ``DetDataSample`` with ``pred_instances`` / ``pred_sem_seg``), raw and in the
canonical forms, plus one shared activation: two aligned runs whose only difference is the output structure.
The one-sample split comes from ``BRIDGE_*`` (as ``bridge.align`` sets it)."""

from __future__ import annotations

import json
import sys

import torch

from bridge.coco.onesample import OneSampleConfig, prepare_split
from bridge.runs import Recorder

HEIGHT, WIDTH, NUM_CLASSES = 48, 64, 133


def predictions() -> dict[str, torch.Tensor]:
    """The predictions both sides hold: boxes, scores, class indices, masks, semantic scores."""
    generator = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 60.0, 44.0]])
    masks = torch.zeros(2, HEIGHT, WIDTH, dtype=torch.bool)
    for n, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        masks[n, y0:y1, x0:x1] = True
    return {
        "boxes": boxes,
        "scores": torch.tensor([0.9, 0.6]),
        "classes": torch.tensor([0, 2]),
        "masks": masks,
        "sem_seg": torch.rand(NUM_CLASSES, HEIGHT, WIDTH, generator=generator),
    }


def record_detectron2(run_dir: str, image_id: int, p: dict[str, torch.Tensor]) -> None:
    """detectron2's structures: ``[{'instances': Instances, 'sem_seg': C×H×W}]``."""
    from detectron2.data import MetadataCatalog
    from detectron2.structures import Boxes, Instances

    from d2_side.canonical import record_canonical_outputs
    from d2_side.datasets import register_onesample
    from d2_side.recordable import to_recordable

    register_onesample()
    instances = Instances(
        (HEIGHT, WIDTH),
        pred_boxes=Boxes(p["boxes"]),
        scores=p["scores"],
        pred_classes=p["classes"],
        pred_masks=p["masks"],
    )
    inputs = [{"image_id": image_id, "height": HEIGHT, "width": WIDTH, "file_name": "d2/image.jpg"}]
    outputs = [{"instances": instances, "sem_seg": p["sem_seg"]}]
    metadata = MetadataCatalog.get("coco_2017_val_panoptic_onesample")
    with Recorder(run_dir, framework="detectron2") as recorder:
        recorder.record("normalized_input", p["sem_seg"][:3], step=0, kind="activation")
        recorder.record("outputs", to_recordable(outputs), step=0, kind="output")
        record_canonical_outputs(recorder, inputs, outputs, metadata, 0)


def record_mmdet(run_dir: str, image_id: int, p: dict[str, torch.Tensor], categories: list[dict]) -> None:
    """mmdet's structures: ``[DetDataSample(pred_instances=InstanceData, pred_sem_seg=PixelData)]``."""
    from mmdet.datasets import CocoPanopticDataset
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData, PixelData

    from mmdet_side.canonical import record_canonical_outputs
    from mmdet_side.recordable import to_recordable

    sample = DetDataSample(
        metainfo={
            "img_id": image_id,
            "img_path": "mmdet/image.jpg",
            "ori_shape": (HEIGHT, WIDTH),
            "img_shape": (HEIGHT, WIDTH),
        }
    )
    sample.pred_instances = InstanceData(bboxes=p["boxes"], scores=p["scores"], labels=p["classes"], masks=p["masks"])
    sample.pred_sem_seg = PixelData(sem_seg=p["sem_seg"])
    with Recorder(run_dir, framework="mmdet") as recorder:
        recorder.record("normalized_input", p["sem_seg"][:3], step=0, kind="activation")
        recorder.record("outputs", to_recordable([sample]), step=0, kind="output")
        record_canonical_outputs(recorder, [sample], CocoPanopticDataset.METAINFO["classes"], categories, 0)


def main(argv: list[str]) -> int:
    """``FRAMEWORK RUN_DIR``: record the predictions in that framework's structures."""
    framework, run_dir = argv
    split = prepare_split(OneSampleConfig.from_env(), "val")
    categories = json.loads(split.panoptic_json.read_bytes())["categories"]
    if framework == "detectron2":
        record_detectron2(run_dir, split.image_ids[0], predictions())
    else:
        record_mmdet(run_dir, split.image_ids[0], predictions(), categories)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
