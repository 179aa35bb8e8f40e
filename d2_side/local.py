"""``python -m d2_side.local CONFIG CHECKPOINT --run-a RUN_A --tasks T.json -o OUT --statuses S.json [--opts K V ...]``:
detectron2 as side B of the layer-local check (``python -m bridge.local`` launches it; docs/LAYER_LOCAL.md)."""

from __future__ import annotations

import sys

from torch import nn

from bridge.cli import guarded_main
from bridge.convert import load_strict
from bridge.local.side import side_main
from d2_side.record_model import load_config


def build(config: str, checkpoint: str, opts: list[str]) -> nn.Module:
    """detectron2's model of ``config`` (a file, or a model-zoo path) with ``opts`` merged and ``checkpoint``
    loaded strictly, on the CPU, in eval mode."""
    from detectron2.modeling import build_model

    cfg = load_config(config, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts])
    model = build_model(cfg)
    load_strict(model, checkpoint)
    return model.eval()


@guarded_main
def main(argv: list[str] | None = None) -> int:
    """CLI (see the module docstring)."""
    return side_main("python -m d2_side.local", "detectron2", build, argv)


if __name__ == "__main__":
    sys.exit(main())
