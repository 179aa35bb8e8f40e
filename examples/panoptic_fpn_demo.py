"""End-to-end demo (`make demo`): detectron2's PanopticFPN R50 against mmdet's, on one COCO image.

Cut a one-sample subset, register it on both sides, build detectron2's model (fixed seed, no download),
convert its weights with the `d2-panoptic-fpn-to-mmdet` preset, build mmdet's model configured like
detectron2's (caffe-style ResNet, BGR input, caffe mean/std), record detectron2's batch, activations and
outputs, replay that batch in mmdet and record the same, then compare the runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

from bridge import Recorder, open_run
from bridge.compare import compare_runs
from bridge.compare.report_html import write_html
from bridge.compare.report_json import write_json
from bridge.compare.report_terminal import print_report
from bridge.convert import convert_state_dict, load_rules
from bridge.onesample import OneSampleConfig
from bridge.synthetic_coco import write_synthetic_coco
from bridge.taps import ModelTaps

PRESET = "d2-panoptic-fpn-to-mmdet"
D2_CONFIG = "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"
D2_DATASET = "coco_2017_val_panoptic_onesample_separated"
MMDET_CONFIG = "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py"
D2_TAPS = ["backbone.bottom_up.res2", "backbone.bottom_up.res3", "backbone.bottom_up.res4", "backbone.bottom_up.res5",
           "backbone.fpn_output5", "backbone.fpn_output4", "backbone.fpn_output3", "backbone.fpn_output2",
           "proposal_generator.rpn_head.objectness_logits", "sem_seg_head.predictor",
           "roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred", "roi_heads.mask_head.predictor"]
MMDET_TAPS = ["backbone.layer1", "backbone.layer2", "backbone.layer3", "backbone.layer4",
              "neck.fpn_convs.*.conv", "rpn_head.rpn_cls", "semantic_head.conv_logits",
              "roi_head.bbox_head.fc_cls", "roi_head.bbox_head.fc_reg", "roi_head.mask_head.conv_logits"]


def build_d2(seed: int, size: int):
    """detectron2's PanopticFPN R50 on the CPU with random weights from ``seed``."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(D2_CONFIG))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", str(size),
                         "INPUT.MAX_SIZE_TEST", str(size * 2)])
    torch.manual_seed(seed)
    return cfg, build_model(cfg).eval()


def build_mmdet_like_d2():
    """mmdet's PanopticFPN R50, with the settings that make it compute what detectron2's computes."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    cfg = Config.fromstring(f"_base_ = {MMDET_CONFIG!r}\n", ".py")
    cfg.model.backbone.update(style="caffe", init_cfg=None, norm_cfg=dict(type="BN", requires_grad=False))
    cfg.model.data_preprocessor.update(mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False)
    return MODELS.build(cfg.model).eval()


def run(out: Path, coco_root: Path | None, seed: int, size: int, console: Console) -> int:
    """Run the whole demo into ``out``; return the comparison's exit code."""
    from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
    from mmdet.datasets import CocoPanopticDataset

    from mmdet_side.canonical import canonical_records
    from d2_side.datasets import register_onesample
    from d2_side.hooks import record_inference
    from mmdet_side.replay import d2_inputs_to_mmdet

    if out.exists():
        shutil.rmtree(out)
    runs = out / "runs"
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("demo", total=7)
        if coco_root is None:
            coco_root = out / "coco"
            write_synthetic_coco(coco_root, num_images=2, image_size=(240, 320))
        progress.update(task, advance=1, description="one-sample subset + registration")
        prepared = register_onesample(OneSampleConfig.create(coco_root, None, out / "cache"))
        progress.update(task, advance=1, description="detectron2 PanopticFPN R50")
        d2_cfg, d2_model = build_d2(seed, size)
        dataset = DatasetCatalog.get(D2_DATASET)
        batch = [DatasetMapper(d2_cfg, is_train=False)(dataset[0])]
        progress.update(task, advance=1, description="record detectron2")
        with Recorder(runs / "detectron2", framework="detectron2") as recorder:
            recorder.record("normalized_input", d2_model.preprocess_image(batch).tensor, step=0, kind="activation")
            record_inference(d2_model, [batch], recorder, activations=D2_TAPS,
                             metadata=MetadataCatalog.get(D2_DATASET))
        progress.update(task, advance=1, description=f"convert weights ({PRESET})")
        rules = load_rules(PRESET)
        converted = convert_state_dict(d2_model.state_dict(), rules)
        progress.update(task, advance=1, description="mmdet PanopticFPN R50")
        mm_model = build_mmdet_like_d2()
        mm_model.load_state_dict(converted.state_dict, strict=True)
        progress.update(task, advance=1, description="replay detectron2's batch in mmdet")
        with Recorder(runs / "mmdet", framework="mmdet") as recorder, torch.no_grad():
            data = mm_model.data_preprocessor(d2_inputs_to_mmdet(batch), False)
            recorder.record("normalized_input", data["inputs"], step=0, kind="activation")
            taps = ModelTaps(mm_model, recorder, lambda: 0, activations=MMDET_TAPS)
            predictions = mm_model.predict(data["inputs"], data["data_samples"])
            taps.remove()
            categories = json.loads(prepared["val"].panoptic_json.read_bytes())["categories"]
            for name, value in canonical_records(predictions, CocoPanopticDataset.METAINFO["classes"], categories):
                recorder.record(name, value, step=0, kind="output")
        progress.update(task, advance=1, description="compare")
    console.print(f"image {prepared['val'].image_ids[0]}: converted weights loaded into mmdet with strict=True")
    result = compare_runs(runs / "detectron2", runs / "mmdet", name_map=PRESET, kinds=("activation",))
    print_report(result, console=console)
    write_json(result, out / "compare.json")
    for pair in result.panoptic:
        console.print(f"panoptic results (mmdet against detectron2, canonical form): {pair.comparison.summary()}")
    write_html(result, out / "compare.html")
    console.print(f"reports: {out / 'compare.json'}, {out / 'compare.html'}")
    report_semantic_rows(runs, console)
    return 0


def report_semantic_rows(runs: Path, console: Console) -> float:
    """Say whether the semantic logits agree once detectron2's rows are put in mmdet's class order
    (detectron2: 'things' first, stuff 1..53; mmdet: stuff first, 'things' last); return the max abs error."""
    d2_logits = open_run(runs / "detectron2").get("sem_seg_head.predictor", step=0, kind="activation")
    mm_logits = open_run(runs / "mmdet").get("semantic_head.conv_logits", step=0, kind="activation")
    reordered = torch.cat([d2_logits[:, 1:], d2_logits[:, :1]], dim=1)
    error = float((reordered - mm_logits).abs().max())
    console.print(f"semantic logits with detectron2's rows in mmdet's order (things last): max abs error {error:.3g}")
    return error


def main(argv: list[str] | None = None) -> int:
    """CLI of the demo."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--coco-root", type=Path, default=None, help="a real COCO tree (default: synthetic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=320, help="shorter image side at test time")
    args = parser.parse_args(argv)
    return run(args.out, args.coco_root, args.seed, args.size, Console(width=150))


if __name__ == "__main__":
    sys.exit(main())
