"""Canonical instance and semantic outputs (bridge.outputs.instances / bridge.outputs.semantic) converted from detectron2's and
mmdet's real structures, paired by bridge.compare across frameworks; leaves that differ by nature."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from bridge import Recorder, open_run
from bridge.coco.coco91 import panoptic_categories
from bridge.compare import compare_runs
from bridge.compare.__main__ import main as compare_main
from bridge.panoptic import canonical_from_segment_map

H, W = 48, 64
IMAGE_ID = 139
#: (dataset category id, box x1 y1 x2 y2, score): person, car, dog, bottle
DETECTIONS = [
    (1, (2, 3, 20, 30), 0.9),
    (3, (30, 5, 60, 25), 0.8),
    (18, (10, 20, 40, 46), 0.7),
    (44, (45, 30, 63, 47), 0.6),
]


def _masks(boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    masks = torch.zeros(len(boxes), H, W, dtype=torch.bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, y1:y2, x1:x2] = True
    return masks


def _semantic_ids() -> torch.Tensor:
    """A per-pixel dataset id map: wall-other-merged (199) background, sky-other-merged (187) band, a person."""
    ids = torch.full((H, W), 199, dtype=torch.int64)
    ids[:12] = 187
    ids[20:40, 5:25] = 1
    return ids


def _panoptic():
    """A canonical panoptic result: a stuff background, a stuff band and two things."""
    import numpy as np

    seg = np.full((H, W), 5, dtype=np.int64)
    seg[:12] = 9
    seg[20:40, 5:25] = 2
    seg[30:47, 40:60] = 7
    infos = [
        {"id": 2, "category_id": 1, "isthing": 1},
        {"id": 7, "category_id": 18, "isthing": 1},
        {"id": 5, "category_id": 199, "isthing": 0},
        {"id": 9, "category_id": 187, "isthing": 0},
    ]
    return canonical_from_segment_map(seg, infos)


def _d2_outputs(detections=DETECTIONS):
    """detectron2's structures for the predictions (Mask2Former / Mask DINO style: 133-class metadata)."""
    from detectron2.structures import Boxes, Instances

    from d2_side.datasets import with_sem_seg_metadata
    from d2_side.panoptic import d2_from_canonical

    metadata = with_sem_seg_metadata()
    things, stuff = metadata["thing_dataset_id_to_contiguous_id"], metadata["stuff_dataset_id_to_contiguous_id"]
    instances = Instances((H, W))
    instances.pred_boxes = Boxes(torch.tensor([box for _, box, _ in detections], dtype=torch.float32))
    instances.scores = torch.tensor([score for _, _, score in detections])
    instances.pred_classes = torch.tensor([things[cat] for cat, _, _ in detections])
    instances.pred_masks = _masks([box for _, box, _ in detections])
    scores = torch.rand(len(stuff), H, W, generator=torch.Generator().manual_seed(0))
    ids = _semantic_ids()
    for dataset_id, channel in stuff.items():
        scores[channel][ids == dataset_id] += 2.0  # the arg-max channel is the pixel's dataset id
    inputs = [
        {
            "file_name": f"/data/coco/val2017/{IMAGE_ID:012d}.jpg",
            "image_id": IMAGE_ID,
            "height": H,
            "width": W,
            "image": torch.zeros(3, H, W, dtype=torch.uint8),
        }
    ]
    outputs = [{"instances": instances, "sem_seg": scores, "panoptic_seg": d2_from_canonical(_panoptic(), metadata)}]
    return inputs, outputs, metadata


def _mmdet_sample(detections=DETECTIONS, semantic: torch.Tensor | None = None):
    """mmdet's DetDataSample holding the same predictions (labels index CocoPanopticDataset's 133 classes)."""
    from mmdet.datasets import CocoPanopticDataset
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData, PixelData

    from mmdet_side.panoptic import mmdet_from_canonical

    classes = CocoPanopticDataset.METAINFO["classes"]
    categories = panoptic_categories()
    name_of = {c["id"]: c["name"] for c in categories}
    label_of = {name: label for label, name in enumerate(classes)}
    sample = DetDataSample(
        metainfo={"img_id": IMAGE_ID, "img_path": f"/elsewhere/val2017/{IMAGE_ID:012d}.jpg", "ori_shape": (H, W)}
    )
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor([box for _, box, _ in detections], dtype=torch.float32),
        labels=torch.tensor([label_of[name_of[cat]] for cat, _, _ in detections]),
        scores=torch.tensor([score for _, _, score in detections]),
        masks=_masks([box for _, box, _ in detections]),
    )
    ids = _semantic_ids() if semantic is None else semantic
    labels = torch.full((H, W), 255, dtype=torch.int64)
    for dataset_id in ids.unique().tolist():
        labels[ids == dataset_id] = label_of[name_of[dataset_id]]
    sample.pred_sem_seg = PixelData(sem_seg=labels[None])
    sample.pred_panoptic_seg = PixelData(sem_seg=mmdet_from_canonical(_panoptic(), classes, categories))
    return sample, classes, categories


def _record_d2(path: Path, outputs_fn=_d2_outputs, file_name: str | None = None, with_batch: bool = True) -> Path:
    from d2_side.canonical import record_canonical_outputs
    from d2_side.recordable import to_recordable

    inputs, outputs, metadata = outputs_fn()
    if file_name is not None:
        inputs[0]["file_name"] = file_name
    with Recorder(path, framework="detectron2") as recorder:
        if with_batch:
            recorder.record("batch", to_recordable(inputs), step=0, kind="batch")
        recorder.record("normalized_input", torch.ones(1, 3, H, W), step=0, kind="activation")
        recorder.record("outputs", to_recordable(outputs), step=0, kind="output")
        record_canonical_outputs(recorder, inputs, outputs, metadata, 0)
    return path


def _record_mmdet(path: Path, detections=DETECTIONS, semantic: torch.Tensor | None = None) -> Path:
    from mmdet.structures import DetDataSample

    from mmdet_side.canonical import record_canonical_outputs
    from mmdet_side.recordable import to_recordable

    sample, classes, categories = _mmdet_sample(detections, semantic)
    with Recorder(path, framework="mmdet") as recorder:
        fed = DetDataSample(metainfo=dict(sample.metainfo))
        recorder.record(
            "batch", to_recordable({"inputs": torch.zeros(1, 3, H, W), "data_samples": [fed]}), step=0, kind="batch"
        )
        recorder.record("normalized_input", torch.ones(1, 3, H, W), step=0, kind="activation")
        recorder.record("outputs", to_recordable([sample]), step=0, kind="output")
        record_canonical_outputs(recorder, [sample], classes, categories, 0)
    return path


def test_canonical_forms_of_both_frameworks_agree() -> None:
    """The same predictions in detectron2's and mmdet's structures convert to the same canonical results."""
    from bridge.outputs.instances import compare_instances
    from bridge.outputs.semantic import compare_semantic
    from d2_side import instances as d2_instances
    from d2_side import semantic as d2_semantic
    from mmdet_side import instances as mm_instances
    from mmdet_side import semantic as mm_semantic

    _, outputs, metadata = _d2_outputs()
    sample, classes, categories = _mmdet_sample()
    a = d2_instances.canonical_from_d2(outputs[0]["instances"], metadata)
    b = mm_instances.canonical_from_mmdet(sample.pred_instances, classes, categories)
    assert a.category_id.tolist() == b.category_id.tolist() == [cat for cat, _, _ in DETECTIONS]
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.masks, b.masks) and torch.equal(a.scores, b.scores)
    comparison = compare_instances(a, b)
    assert comparison.passed and len(comparison.matched) == 4 and comparison.matched_by == "mask"
    sa = d2_semantic.canonical_from_d2(outputs[0]["sem_seg"], metadata)
    sb = mm_semantic.canonical_from_mmdet(sample.pred_sem_seg.sem_seg, classes, categories)
    assert torch.equal(sa.category, _semantic_ids()) and torch.equal(sb.category, _semantic_ids())
    assert compare_semantic(sa, sb).agreement == 1.0


def test_detectron2_placeholder_boxes_and_separated_things_channel() -> None:
    """MaskFormer-style zero boxes read as no boxes (matched by masks, reported, not failed); PanopticFPN's
    "things" channel 0 of the ``_separated`` metadata maps to dataset id 0."""
    from detectron2.data import MetadataCatalog
    from detectron2.structures import Boxes, Instances

    from bridge.outputs.instances import compare_instances
    from d2_side import instances as d2_instances
    from d2_side import semantic as d2_semantic

    metadata = MetadataCatalog.get("coco_2017_val_panoptic_separated")
    instances = Instances((H, W))
    instances.pred_boxes = Boxes(torch.zeros(2, 4))
    instances.scores = torch.tensor([0.5, 0.4])
    instances.pred_classes = torch.tensor([0, 2])
    instances.pred_masks = _masks([(0, 0, 10, 10), (20, 20, 30, 30)]).float()
    a = d2_instances.canonical_from_d2(instances, metadata)
    assert a.boxes is None and a.masks.dtype == torch.bool and a.category_id.tolist() == [1, 3]
    with_boxes = d2_instances.canonical_from_d2(instances[[0, 1]], metadata)
    with_boxes.boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    comparison = compare_instances(a, with_boxes)
    assert comparison.passed and comparison.boxes == "b" and "boxes in B only" in comparison.summary()
    scores = torch.zeros(54, H, W)
    scores[0, :, :10] = 1.0  # things
    scores[1, :, 10:] = 1.0  # the first stuff class
    semantic = d2_semantic.canonical_from_d2(scores, metadata)
    first_stuff = {c: d for d, c in metadata.stuff_dataset_id_to_contiguous_id.items()}[1]
    assert semantic.category[:, :10].unique().tolist() == [0]
    assert semantic.category[:, 10:].unique().tolist() == [first_stuff]


def test_runs_differing_only_in_output_structure_pass(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """detectron2-structured and mmdet-structured runs of the same predictions: exit 0; the raw structures and
    file paths are by nature, the canonical records are compared as results (not leaf by leaf)."""
    a, b = _record_d2(tmp_path / "d2"), _record_mmdet(tmp_path / "mmdet")
    result = compare_runs(a, b, device="cpu")
    assert result.passed and result.first_divergence is None, (result.a_only, result.b_only)
    assert [i.key for i in result.items] == ["normalized_input"]
    assert [(p.name, p.passed) for p in result.output_pairs()] == [
        (f"panoptic.{IMAGE_ID}", True),
        (f"instances.{IMAGE_ID}", True),
        (f"semantic.{IMAGE_ID}", True),
    ]
    nature = {loc.key: loc.reason for loc in result.by_nature}
    assert nature["batch.0.file_name"] == "file path (differs by nature)"
    assert nature["batch.data_samples.0.metainfo.img_path"] == "file path (differs by nature)"
    assert nature["outputs.0.instances.pred_boxes"].startswith("framework structure (raw outputs")
    assert nature["outputs.0.data.pred_instances.data.bboxes"].startswith("framework structure (raw outputs")
    assert compare_main([str(a), str(b), "--json", str(tmp_path / "c.json")]) == 0
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["passed"] and report["counts"]["outputs"] == 3 and report["counts"]["by_nature"] == len(nature)
    assert report["instances"][0]["matched"] == 4 and report["semantic"][0]["agreement"] == 1.0
    assert f"instances instances.{IMAGE_ID} step 0 rank 0: 4/4 detections" in capsys.readouterr().out

    shown = compare_runs(a, b, device="cpu", show_raw=True)
    assert not shown.passed and "outputs.0.instances.pred_boxes" in {loc.key for loc in shown.a_only}
    assert "outputs.0.data.pred_instances.data.bboxes" in {loc.key for loc in shown.b_only}
    assert "batch.0.file_name" not in {loc.key for loc in shown.a_only}  # a path stays by nature
    assert compare_main([str(a), str(b), "--show-raw", "--quiet"]) == 1


def test_instance_mismatches_are_reported(tmp_path: Path) -> None:
    """A relabelled detection, a missing one and a moved box are named; a box tolerance excuses only the box."""
    moved = [(3 if cat == 1 else cat, box, score) for cat, box, score in DETECTIONS[:3]]  # person → car, no bottle
    x1, y1, x2, y2 = moved[1][1]
    moved[1] = (moved[1][0], (x1 + 2, y1, x2 + 2, y2), moved[1][2])  # the car's box 2 px to the right
    a = _record_d2(tmp_path / "d2")
    b = _record_mmdet(tmp_path / "mmdet", detections=moved)
    result = compare_runs(a, b, device="cpu")
    assert not result.passed
    comparison = result.instances[0].comparison
    assert [(r["a_category"], r["b_category"]) for r in comparison.relabelled] == [(1, 3)]
    assert [(d["index"], d["category_id"]) for d in comparison.unmatched_a] == [(3, 44)] and not comparison.unmatched_b
    assert comparison.max_box_diff == 2.0 and comparison.max_score_diff == 0.0
    assert result.first_divergence.key == f"instances.{IMAGE_ID}" and "relabelled 1" in result.first_divergence.reason
    assert result.last_passing_before.key == f"panoptic.{IMAGE_ID}"

    only_car = [(cat, (box[0] + 2, box[1], box[2] + 2, box[3]) if cat == 3 else box, s) for cat, box, s in DETECTIONS]
    c = _record_mmdet(tmp_path / "moved", detections=only_car)  # its mask moves with it: IoU 28/32
    assert not compare_runs(a, c, device="cpu", tolerances=["instances.*.boxes=2,0"]).passed
    excused = compare_runs(a, c, device="cpu", tolerances=["instances.*.boxes=2,0", "instances.*.masks=0.125,0"])
    assert excused.passed and excused.instances[0].comparison.max_box_diff == 2.0
    assert excused.instances[0].comparison.min_mask_iou == 0.875


def test_semantic_disagreement_is_counted_and_tolerated_on_request(tmp_path: Path) -> None:
    ids = _semantic_ids()
    ids[40:, :] = 187  # 8 rows of wall become sky in B
    a, b = _record_d2(tmp_path / "d2"), _record_mmdet(tmp_path / "mmdet", semantic=ids)
    result = compare_runs(a, b, device="cpu")
    comparison = result.semantic[0].comparison
    assert not result.passed and comparison.differing == 8 * W
    assert comparison.confusions[0] == {"a_category": 199, "b_category": 187, "pixels": 8 * W}
    assert compare_runs(a, b, device="cpu", tolerances=["semantic.*=0.2,0"]).passed
    assert compare_runs(a, b, device="cpu", kinds=["activation"]).passed  # outputs left out: not counted


def test_file_name_is_by_nature_and_never_the_first_divergence(tmp_path: Path) -> None:
    """Paired paths that differ pass as by-nature; a run without a batch (the demo's mmdet side) does not make
    ``batch.0.file_name`` the first divergence; a missing canonical record is named."""
    a = _record_d2(tmp_path / "a")
    moved = _record_d2(tmp_path / "b", file_name="/somewhere/else.jpg")
    result = compare_runs(a, moved, device="cpu")
    item = next(i for i in result.items if i.key == "batch.0.file_name")
    assert result.passed and item.status == "by-nature" and item.passed and "differs by nature" in item.reason
    assert {i.status for i in result.items if i.key != "batch.0.file_name"} == {"pass"}
    assert not any(i.key.startswith(("panoptic.", "instances.", "semantic.")) for i in result.items)

    no_batch = _record_d2(tmp_path / "c", with_batch=False)
    result = compare_runs(a, no_batch, device="cpu")
    assert result.passed and result.first_divergence is None
    assert "batch.0.file_name" in {loc.key for loc in result.by_nature}

    with Recorder(tmp_path / "d", framework="mmdet") as recorder:  # only the activation, no output at all
        recorder.record("normalized_input", torch.ones(1, 3, H, W), step=0, kind="activation")
    result = compare_runs(a, tmp_path / "d", device="cpu")
    assert not result.passed and result.first_divergence.key == "outputs.0.instances.pred_boxes"
    assert {loc.key for loc in result.a_only} >= {f"instances.{IMAGE_ID}", f"semantic.{IMAGE_ID}"}
    reason = next(loc.reason for loc in result.a_only if loc.key == f"instances.{IMAGE_ID}")
    assert reason == "only in run A: run B holds no canonical instances result for this image"


def test_model_taps_warn_about_nested_and_unmatched_globs(tmp_path: Path) -> None:
    """``backbone.layer*`` matches every module inside the stages (the README's old step-5 pattern); ``layer?``
    matches the stages only."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from torch import nn

    from bridge.taps import ModelTaps

    register_all_modules()
    model = nn.Module()
    model.backbone = MODELS.build(dict(type="ResNet", depth=18, init_cfg=None))
    recorder = Recorder(tmp_path / "run", framework="mmdet", lazy=True)
    with pytest.warns(
        UserWarning, match=r"nested in other matches \(e.g. 'backbone.layer1.0' inside 'backbone.layer1'"
    ):
        ModelTaps(model, recorder, lambda: None, activations=["backbone.layer*"]).remove()
    with pytest.warns(UserWarning, match=re.escape("match no module: backbone.bottom_up.res?")):
        ModelTaps(model, recorder, lambda: None, activations=["backbone.bottom_up.res?"]).remove()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        taps = ModelTaps(model, recorder, lambda: 0, activations=["backbone.layer?"])
        model.eval().backbone(torch.zeros(1, 3, 64, 64))
        taps.remove()
    recorder.close()
    assert open_run(tmp_path / "run").entries()[-1].name == "backbone.layer4"


def test_mmdet_config_records_evaluation_when_only_evaluation_is_replayed(
    onesample_config, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from mmengine.config import Config

    from mmdet_side.config import main

    base = [
        "--base",
        "mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py",
        "--task",
        "instances",
        "--coco-root",
        str(onesample_config.coco_root),
        "--cache-dir",
        str(onesample_config.cache_dir),
        "--replay-eval-dir",
        str(tmp_path / "d2_eval"),
    ]
    assert main([*base, "-o", str(tmp_path / "a.py"), "--record-dir", str(tmp_path / "mm_eval")]) == 0
    hook = next(
        h
        for h in Config.fromfile(str(tmp_path / "a.py"), import_custom_modules=False).custom_hooks
        if h["type"] == "BridgeRecordHook"
    )
    assert hook["eval_run_dir"] == str(tmp_path / "mm_eval") and "run_dir" not in hook
    assert "warning: BridgeRecordHook records evaluation (val/test)" in capsys.readouterr().err
    assert (
        main(
            [
                *base,
                "-o",
                str(tmp_path / "b.py"),
                "--record-eval-dir",
                str(tmp_path / "e"),
                "--record-dir",
                str(tmp_path / "t"),
                "--activations",
                "backbone.layer?,neck.fpn_convs.*.conv",
            ]
        )
        == 0
    )
    hook = next(
        h
        for h in Config.fromfile(str(tmp_path / "b.py"), import_custom_modules=False).custom_hooks
        if h["type"] == "BridgeRecordHook"
    )
    assert (hook["run_dir"], hook["eval_run_dir"]) == (str(tmp_path / "t"), str(tmp_path / "e"))
    assert hook["activations"] == ["backbone.layer?", "neck.fpn_convs.*.conv"]
    assert "warning" not in capsys.readouterr().err


def test_bridge_record_hook_needs_a_run_dir() -> None:
    from bridge.errors import BridgeError
    from mmdet_side.hooks import BridgeRecordHook

    with pytest.raises(BridgeError, match="give run_dir .*, eval_run_dir .* or both"):
        BridgeRecordHook()
    assert BridgeRecordHook(eval_run_dir="x").run_dir is None


def test_empty_results_and_size_mismatches() -> None:
    """No detections on either side agree; a size mismatch fails the comparison instead of stopping it."""
    from bridge.outputs.instances import canonical_instances, compare_instances
    from bridge.outputs.semantic import CanonicalSemantic, compare_semantic

    empty = canonical_instances(
        torch.zeros(0, dtype=torch.int64), torch.zeros(0), torch.zeros(0, 4), torch.zeros(0, H, W, dtype=torch.bool)
    )
    assert compare_instances(empty, empty).passed
    one = canonical_instances(
        torch.tensor([1]), torch.tensor([0.5]), torch.tensor([[0.0, 0, 9, 9]]), torch.ones(1, H, W, dtype=torch.bool)
    )
    other = canonical_instances(
        torch.tensor([1]),
        torch.tensor([0.5]),
        torch.tensor([[0.0, 0, 9, 9]]),
        torch.ones(1, H, W + 1, dtype=torch.bool),
    )
    comparison = compare_instances(one, other)
    assert not comparison.passed and comparison.matched_by == "box" and len(comparison.matched) == 1
    assert comparison.failures == [f"masks differ in size: A {(H, W)} vs B {(H, W + 1)}"]
    assert not compare_instances(one, empty).passed
    same = compare_semantic(CanonicalSemantic(torch.ones(H, W)), CanonicalSemantic(torch.ones(H, W)))
    assert same.passed and same.confusions == [] and same.agreement == 1.0
    wider = compare_semantic(CanonicalSemantic(torch.ones(H, W)), CanonicalSemantic(torch.ones(H, W + 1)))
    assert not wider.passed and wider.summary() == f"FAIL: maps differ in size: A {(H, W)} vs B {(H, W + 1)}"
