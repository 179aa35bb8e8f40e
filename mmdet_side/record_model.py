"""``python -m mmdet_side.record_model``: build an mmdet model, run it on the one-sample split and record it.

Mirrors ``python -m d2_side.record_model`` (same arguments, ``bridge.align.side``). The config (``--config``:
a file, e.g. the one-sample config ``python -m mmdet_side.config`` writes, or ``mmdet::NAME``, then the
``KEY=VALUE`` options as mmdet's ``--cfg-options``; ``mmdet_side.target.load_config``) is handed to ``--builder``
(default: ``MODELS.build(cfg.model)``), seeded with ``--seed``; ``--weights`` is loaded with strict=True and
``--save-weights`` writes what the model holds. The model runs in eval mode on the config's test dataloader,
or on the batches of the detectron2 run ``--replay`` (``mmdet_side.replay.d2_inputs_to_mmdet``,
``--input-format``), and ``mmdet_side.hooks.record_inference`` records into ``--out``: the batch after the data
preprocessor, ``normalized_input`` (the preprocessor's ``inputs``), the chosen activations, the raw predictions
and the canonical results (docs/OUTPUTS.md; labels mapped to the test dataset's category ids by name).
``--meta-out`` writes the test dataset's metadata (``mmdet_side.meta``).
Used by ``python -m bridge.align`` (docs/ALIGN.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator

import torch

from bridge.align.side import globs, load_builder, load_weights, recorded_batches, save_weights, side_parser
from bridge.cli import guarded_main, run_reporting_errors
from bridge.runs import Recorder
from mmdet_side.target import load_config

PROG = "python -m mmdet_side.record_model"


def normalized_input(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The padded, normalized image tensor ``model`` computes from ``batch``: its data preprocessor's ``inputs``
    (``d2_side.record_model.normalized_input`` is the detectron2 side's)."""
    with torch.no_grad():
        return model.data_preprocessor(batch, False)["inputs"]


def _with_normalized_input(model: torch.nn.Module, batches: Iterable[dict], recorder: Recorder) -> Iterator[dict]:
    """Yield ``batches``, recording each one's ``normalized_input`` (kind ``activation``) first."""
    for step, batch in enumerate(batches):
        recorder.record("normalized_input", normalized_input(model, batch), step=step, kind="activation")
        yield batch


def record_model(args: argparse.Namespace) -> str:
    """Build, (load,) run and record as ``args`` say; return a line naming the run."""
    from mmdet.registry import DATASETS, MODELS
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    from mmdet_side.hooks import record_inference
    from mmdet_side.meta import export_mmdet_metadata
    from mmdet_side.replay import d2_inputs_to_mmdet

    register_all_modules()
    cfg = load_config(args.config, args.opts, args.config_setup)
    torch.manual_seed(args.seed)
    model = (load_builder(args.builder) if args.builder else lambda c: MODELS.build(c.model))(cfg)
    if args.weights:
        load_weights(model, args.weights)
    if args.save_weights:
        save_weights(model, args.save_weights, "mmdet")
    model.eval()
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    if args.replay:
        batches = [d2_inputs_to_mmdet(batch, args.input_format) for batch in recorded_batches(args.replay)]
    else:
        batches = Runner.build_dataloader(cfg.test_dataloader)
    with Recorder(args.out, framework="mmdet") as recorder:
        count = record_inference(
            model,
            _with_normalized_input(model, batches, recorder),
            recorder,
            activations=globs(args.activations),
            dataset=dataset,
        )
    if args.meta_out:
        from bridge.meta import write_metadata

        write_metadata(export_mmdet_metadata(cfg), args.meta_out)
    return f"recorded {count} batch(es) of {cfg.test_dataloader.dataset.get('ann_file')} into {args.out}"


@guarded_main
def main(argv: list[str] | None = None) -> int:
    """CLI; exit 2 with one ``error:`` line on bad input."""
    args = side_parser(PROG, "mmdet").parse_args(argv)
    return run_reporting_errors(lambda: record_model(args))


if __name__ == "__main__":
    sys.exit(main())
