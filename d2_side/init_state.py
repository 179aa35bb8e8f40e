"""Save the freshly initialised state dict of a detectron2 model built from a config with a seed.

``python -m d2_side.init_state COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml --seed 0 -o d2_init.safetensors``
(a model-zoo path or a config file), then ``python -m bridge.initcheck d2_init.safetensors mm_init.safetensors
--preset d2-panoptic-fpn-to-mmdet`` compares the initialisations of both sides.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import torch

from bridge.cli import check_outputs, examples, guarded_main, run_reporting_errors
from bridge.convert import save_checkpoint
from d2_side.record_model import load_config


def init_state_dict(config: str, seed: int, opts: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Build detectron2's model of ``config`` (model-zoo path or file, ``opts`` merged as ``KEY VALUE`` pairs) on
    the CPU with ``seed``; its state dict."""
    from detectron2.modeling import build_model

    cfg = load_config(config, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts])
    torch.manual_seed(seed)
    return build_model(cfg).state_dict()


@guarded_main
def main(argv: list[str] | None = None) -> int:
    """CLI: write the initial state dict; exit 2 with a one-line error on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m d2_side.init_state",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "python -m d2_side.init_state COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml --seed 0 -o d2_init.safetensors"
        ),
    )
    parser.add_argument("config")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--out", required=True, help=".safetensors or .pth")
    parser.add_argument("--opts", nargs="*", default=[], help="config overrides, detectron2's KEY VALUE pairs")
    args = parser.parse_args(argv)
    check_outputs({"CONFIG": args.config if os.path.exists(args.config) else None}, {"-o": args.out})

    def write() -> str:
        state = init_state_dict(args.config, args.seed, args.opts)
        save_checkpoint(state, args.out, {"source": args.config, "seed": args.seed, "framework": "detectron2"})
        return args.out

    return run_reporting_errors(write)


if __name__ == "__main__":
    sys.exit(main())
