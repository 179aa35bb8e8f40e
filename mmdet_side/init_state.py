"""Save the freshly initialised state dict of an mmdet model built from a config with a seed.

``python -m mmdet_side.init_state mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py --seed 0 -o mm_init.safetensors``
runs the model's ``init_weights()`` (backbone ``init_cfg`` pretrained downloads are switched off), as
mmengine's Runner does before training.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import torch

from bridge.cli import check_outputs, examples, guarded_main, run_reporting_errors
from bridge.convert import save_checkpoint
from mmdet_side.target import build_model


def init_state_dict(config: str, seed: int, opts: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Build and initialise the mmdet model of ``config`` (a path or ``mmdet::...``, ``opts`` merged as ``KEY=VALUE``
    pairs) with ``seed``; its state dict."""
    torch.manual_seed(seed)
    model = build_model(config, opts)
    model.init_weights()
    return model.state_dict()


@guarded_main
def main(argv: list[str] | None = None) -> int:
    """CLI: write the initial state dict; exit 2 with a one-line error on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m mmdet_side.init_state",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "python -m mmdet_side.init_state mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py --seed 0 -o mmdet_init.safetensors"
        ),
    )
    parser.add_argument("config")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--out", required=True, help=".safetensors or .pth")
    parser.add_argument("--opts", nargs="*", default=[], help="config overrides, mmdet's KEY=VALUE pairs")
    args = parser.parse_args(argv)
    check_outputs({"CONFIG": args.config if os.path.exists(args.config) else None}, {"-o": args.out})

    def write() -> str:
        state = init_state_dict(args.config, args.seed, args.opts)
        save_checkpoint(state, args.out, {"source": args.config, "seed": args.seed, "framework": "mmdet"})
        return args.out

    return run_reporting_errors(write)


if __name__ == "__main__":
    sys.exit(main())
