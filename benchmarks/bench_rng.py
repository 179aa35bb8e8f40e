"""Benchmark the RNG tape (``bridge.rng``) on one training step of mmdet's DINO (denoising on, dropout 0.1 in
the transformer, random weights, one synthetic image with two boxes), measured in the same run:

* plain: ``model.loss`` + ``backward``;
* recorded, whole block: ``record(recorder, step)`` around forward and backward (every op passes the tape's
  dispatch mode), the tape written at the end;
* recorded, scoped: ``record(..., model, scopes={'model': '', 'encoder': 'encoder', 'decoder': 'decoder'})``
  (the mode is on only while the model runs its forward: backward runs without it);
* replayed: ``replay(run, step, model=..., scopes=...)`` of the scoped tape.

Variants are interleaved ``--repeats`` times; the median and the fastest of each are printed with their ratios
to plain (on a shared machine the fastest run is the steadier figure). The target is at most 1.10x for
recording and for replay.

    python benchmarks/bench_rng.py [--size 320] [--repeats 5] [--device cpu|cuda] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bridge import Recorder
from bridge.rng import load_tape, record, replay

SCOPES = {"model": "", "encoder": "encoder", "decoder": "decoder"}


def build_dino(size: int, device: str):
    """mmdet's DINO-4scale R50 (random weights, DN on, dropout 0.1) and a preprocessed one-image batch."""
    import mmdet
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.structures import InstanceData

    register_all_modules()
    cfg = Config.fromfile(str(Path(mmdet.__file__).parent / ".mim/configs/dino/dino-4scale_r50_8xb2-12e_coco.py"))
    cfg.model.backbone.init_cfg = None
    for layer in (cfg.model.encoder.layer_cfg, cfg.model.decoder.layer_cfg):
        layer.ffn_cfg.ffn_drop = 0.1
        layer.self_attn_cfg.dropout = 0.1
    cfg.model.decoder.layer_cfg.cross_attn_cfg.dropout = 0.1
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()  # DINO's level_embed is uninitialised memory until then
    model = model.to(device).train()
    image = (torch.rand(3, size, size, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1.0, 1.0)))
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.8], [0.4, 0.2, 0.9, 0.7]]) * size
    sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([3, 17]))
    data = model.data_preprocessor({"inputs": [image.to(device)], "data_samples": [sample]}, training=True)
    return model, data


def timed_step(model, data, block, device: str) -> float:
    """Seconds for one forward + backward inside ``block`` (the tape's context, or none)."""
    model.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with block:
        losses = model(data["inputs"], data["data_samples"], mode="loss")
        sum(v for k, v in losses.items() if "loss" in k).backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    """Run the variants interleaved and print medians with ratios to the plain step."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_rng_"))
    model, data = build_dino(args.size, args.device)
    timed_step(model, data, contextlib.nullcontext(), args.device)  # warm-up
    with Recorder(work / "tape") as recorder:
        timed_step(model, data, record(recorder, 0, model, SCOPES), args.device)
    times: dict[str, list[float]] = {"plain": [], "recorded, whole block": [], "recorded, scoped": [], "replayed": []}
    for repeat in range(args.repeats):
        times["plain"].append(timed_step(model, data, contextlib.nullcontext(), args.device))
        with Recorder(work / f"whole{repeat}") as recorder:
            times["recorded, whole block"].append(timed_step(model, data, record(recorder, 0), args.device))
        with Recorder(work / f"scoped{repeat}") as recorder:
            times["recorded, scoped"].append(timed_step(model, data, record(recorder, 0, model, SCOPES), args.device))
        times["replayed"].append(timed_step(model, data, replay(work / "tape", 0, 0, model, SCOPES), args.device))
    draws = load_tape(work / "tape", 0)[1]
    size = sum(d.value.numel() * d.value.element_size() for d in draws)
    print(
        f"DINO-4scale R50, {args.size}x{args.size}, DN on, dropout 0.1, {args.device}, median of {args.repeats}; "
        f"tape: {len(draws)} draws, {size / 2**20:.1f} MiB of values"
    )
    base, fastest = statistics.median(times["plain"]), min(times["plain"])
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"  {name:24s} {median:7.3f} s  {median / base:5.3f}x median   {min(values):7.3f} s  "
            f"{min(values) / fastest:5.3f}x min   (max {max(values):.3f})"
        )


if __name__ == "__main__":
    main()
