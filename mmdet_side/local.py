"""``python -m mmdet_side.local CONFIG CHECKPOINT --run-a RUN_A --tasks T.json -o OUT --statuses S.json
[--opts K=V ...]``: mmdet as side B of the layer-local check (``python -m bridge.local`` launches it;
docs/LAYER_LOCAL.md)."""

from __future__ import annotations

import sys

from torch import nn

from bridge.cli import guarded_main
from bridge.convert import load_strict
from bridge.local.side import side_main
from mmdet_side.target import build_model


def build(config: str, checkpoint: str, opts: list[str]) -> nn.Module:
    """The model of the mmdet ``config`` (file or ``mmdet::``) with ``opts`` merged (``KEY=VALUE`` pairs) and
    ``checkpoint`` loaded strictly, on the CPU, in eval mode."""
    model = build_model(config, opts)
    load_strict(model, checkpoint)
    return model.eval()


@guarded_main
def main(argv: list[str] | None = None) -> int:
    """CLI (see the module docstring)."""
    return side_main("python -m mmdet_side.local", "mmdet", build, argv)


if __name__ == "__main__":
    sys.exit(main())
