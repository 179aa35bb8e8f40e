"""``python -m d2_side.record_model``: build a detectron2 model, run it on the one-sample split and record it.

Mirrors ``python -m mmdet_side.record_model`` (same arguments, ``bridge.align.side``). The config
(``--config``: model-zoo name or file, then the ``KEY VALUE`` options) is handed to ``--builder`` (default:
detectron2's ``build_model``), seeded with ``--seed``; ``--weights`` is loaded with strict=True and
``--save-weights`` writes what the model holds (the source of a conversion). The model runs in eval mode on
``cfg.DATASETS.TEST[0]`` (registered from ``BRIDGE_*``: ``d2_side.datasets.register_onesample``), or on the
batches of the detectron2 run ``--replay``, and ``d2_side.hooks.record_inference`` records into ``--out``: the
batch, ``normalized_input`` (the model's ``preprocess_image``, when it has one), the chosen activations, the
raw outputs and the canonical results (docs/OUTPUTS.md). ``--meta-out`` writes the dataset's metadata
(``d2_side.meta``). Used by ``python -m bridge.align`` (docs/ALIGN.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from bridge.align.side import (
    config_setups,
    globs,
    load_builder,
    load_weights,
    recorded_batches,
    save_weights,
    side_parser,
)
from bridge.cli import guarded_main, run_reporting_errors
from bridge.errors import BridgeError
from bridge.runs import Recorder

PROG = "python -m d2_side.record_model"


def load_config(name: str, opts: Sequence[str] = (), setups: Sequence[str] = ()):
    """detectron2's config of a model-zoo name or a config file, with the ``KEY VALUE`` options merged (as
    ``train_net.py``'s trailing ``opts``); each ``setups`` function (``MODULE:FUNCTION``, e.g. Mask DINO's
    ``add_maskdino_config``) is called with the default config first, as a research repo's ``train_net.py`` does
    before merging its files. BridgeError naming the config when that fails."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    cfg = get_cfg()
    for setup in config_setups(list(setups)):
        setup(cfg)
    try:
        cfg.merge_from_file(name if Path(name).is_file() else model_zoo.get_config_file(name))
        cfg.merge_from_list(list(opts))
    except (RuntimeError, KeyError, ValueError, AssertionError) as exc:
        raise BridgeError(f"{name}: cannot load the detectron2 config ({type(exc).__name__}: {exc})") from None
    return cfg


def normalized_input(model: torch.nn.Module, batch: list[dict]) -> torch.Tensor | None:
    """The padded, normalized image tensor ``model`` computes from ``batch``: its ``preprocess_image`` (detectron2's
    meta-architectures), else what Mask2Former-style models do inline in ``forward`` (``pixel_mean`` /
    ``pixel_std``, then ``ImageList.from_tensors`` with ``size_divisibility``); None when it has neither."""
    from detectron2.structures import ImageList

    with torch.no_grad():
        if hasattr(model, "preprocess_image"):
            return model.preprocess_image(batch).tensor
        if all(hasattr(model, name) for name in ("pixel_mean", "pixel_std", "size_divisibility")):
            images = [(x["image"].to(model.pixel_mean.device) - model.pixel_mean) / model.pixel_std for x in batch]
            return ImageList.from_tensors(images, model.size_divisibility).tensor
    return None


def _with_normalized_input(
    model: torch.nn.Module, batches: Iterable[list[dict]], recorder: Recorder
) -> Iterator[list[dict]]:
    """Yield ``batches``, recording each one's ``normalized_input`` (kind ``activation``) first."""
    for step, batch in enumerate(batches):
        tensor = normalized_input(model, batch)
        if tensor is not None:
            recorder.record("normalized_input", tensor, step=step, kind="activation")
        yield batch


def record_model(args: argparse.Namespace) -> str:
    """Build, (load,) run and record as ``args`` say; return a line naming the run."""
    from detectron2.data import MetadataCatalog, build_detection_test_loader
    from detectron2.modeling import build_model

    from d2_side.datasets import register_onesample
    from d2_side.hooks import record_inference
    from d2_side.meta import export_d2_metadata

    register_onesample()
    cfg = load_config(args.config, args.opts, args.config_setup)
    if not cfg.DATASETS.TEST:
        raise BridgeError(f"--config {args.config}: DATASETS.TEST is empty (name the one-sample dataset)")
    dataset = cfg.DATASETS.TEST[0]
    torch.manual_seed(args.seed)
    model = (load_builder(args.builder) if args.builder else build_model)(cfg)
    if args.weights:
        load_weights(model, args.weights)
    if args.save_weights:
        save_weights(model, args.save_weights, "detectron2")
    model.eval()
    batches = recorded_batches(args.replay) if args.replay else build_detection_test_loader(cfg, dataset)
    with Recorder(args.out, framework="detectron2") as recorder:
        count = record_inference(
            model,
            _with_normalized_input(model, batches, recorder),
            recorder,
            activations=globs(args.activations),
            metadata=MetadataCatalog.get(dataset),
        )
    if args.meta_out:
        from bridge.meta import write_metadata

        write_metadata(export_d2_metadata(dataset), args.meta_out)
    return f"recorded {count} batch(es) of {dataset} into {args.out}"


@guarded_main
def main(argv: list[str] | None = None) -> int:
    """CLI; exit 2 with one ``error:`` line on bad input."""
    args = side_parser(PROG, "detectron2").parse_args(argv)
    return run_reporting_errors(lambda: record_model(args))


if __name__ == "__main__":
    sys.exit(main())
