"""Save the freshly initialised state dict of a detectron2 model built from a config with a seed.

``python -m d2_side.init_state COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml --seed 0 -o d2_init.safetensors``
(a model-zoo path or a config file), then ``python -m bridge.initcheck d2_init.safetensors mm_init.safetensors
--preset d2-panoptic-fpn-to-mmdet`` compares the initialisations of both sides.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from bridge.cli import check_outputs, examples, guarded_main, run_reporting_errors
from bridge.convert import save_checkpoint
from bridge.errors import BridgeError


def init_state_dict(config: str, seed: int, options: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Build detectron2's model of ``config`` (model-zoo path or file) on the CPU with ``seed``; its state dict."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    path = Path(config)
    if not path.exists():
        try:
            path = Path(model_zoo.get_config_file(config))
        except RuntimeError:
            raise BridgeError(f"{config}: neither a file nor a detectron2 model-zoo config") from None
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""] + list(options or []))
    torch.manual_seed(seed)
    return build_model(cfg).state_dict()


@guarded_main
def main(argv: list[str] | None = None) -> int:
    """CLI: write the initial state dict; exit 2 with a one-line error on bad input."""
    parser = argparse.ArgumentParser(prog="python -m d2_side.init_state", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=examples("python -m d2_side.init_state COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml --seed 0 -o d2_init.safetensors"))
    parser.add_argument("config")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--out", required=True, help=".safetensors or .pth")
    parser.add_argument("--opts", nargs="*", default=[], help="detectron2 config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    check_outputs({"CONFIG": args.config if os.path.exists(args.config) else None}, {"-o": args.out})

    def write() -> str:
        state = init_state_dict(args.config, args.seed, args.opts)
        save_checkpoint(state, args.out, {"source": args.config, "seed": args.seed, "framework": "detectron2"})
        return args.out

    return run_reporting_errors(write)


if __name__ == "__main__":
    sys.exit(main())
