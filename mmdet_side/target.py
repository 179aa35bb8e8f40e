"""An mmdet config as a conversion target: its model's state-dict manifest, and a strict load check.

``python -m mmdet_side.target CONFIG --manifest OUT.tsv`` builds the model of ``CONFIG`` (a path or
``mmdet::...``) on the CPU with ``MODELS.build`` (no ``init_weights``, so nothing is downloaded) and writes
every state-dict key as ``key<TAB>shape<TAB>param|buffer``, the manifest format ``bridge.convert`` reads.
``python -m mmdet_side.target CONFIG --check CKPT`` loads a checkpoint (safely, through
``bridge.convert.load_checkpoint``) into that model with ``load_state_dict(strict=True)`` and writes
``{"ok", "missing", "unexpected", "size_mismatch", "error"}`` to ``--json PATH`` (without ``--json``, prints it
as one JSON line); exit 0 when it loads, 1 when not.
``bridge.convert --target CONFIG`` runs both in a subprocess, so that ``bridge`` never imports mmdet.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bridge.align.side import config_setups
from bridge.atomic import atomic_write_bytes
from bridge.cli import BAD_INPUT, add_quiet_option, examples, guarded_main, report_bad_input
from bridge.convert import load_checkpoint
from bridge.errors import BridgeError


def load_config(config: str, opts: Sequence[str] = (), setups: Sequence[str] = ()) -> "mmengine.config.Config":  # noqa: F821
    """Load an mmdet config from a file path or an ``mmdet::`` path and merge ``opts`` (``KEY=VALUE`` pairs, as
    mmdet's ``--cfg-options``), then pass it to each ``setups`` function (``MODULE:FUNCTION``, e.g. one that sets a
    port's options like the reference's); BridgeError naming the config or the options when that fails."""
    from mmengine.config import Config, DictAction

    options = argparse.ArgumentParser(prog="mmdet config options", exit_on_error=False)
    options.add_argument("--cfg-options", nargs="*", action=DictAction, default={})
    try:
        merged = options.parse_args(["--cfg-options", *opts]).cfg_options if opts else {}
    except (argparse.ArgumentError, ValueError, SystemExit):
        raise BridgeError(f"options {' '.join(opts)}: expected KEY=VALUE pairs") from None
    try:
        if config.startswith("mmdet::"):
            cfg = Config.fromstring(f"_base_ = {config!r}\n", ".py")
        else:
            path = Path(config)
            if not path.is_file():
                raise BridgeError(f"{config}: no such mmdet config file")
            cfg = Config.fromfile(str(path.resolve()))
        cfg.merge_from_dict(merged)
    except BridgeError:
        raise
    except Exception as error:  # mmengine raises many kinds on a missing or broken config
        raise BridgeError(f"{config}: cannot load the mmdet config ({type(error).__name__}: {error})") from None
    for setup in config_setups(list(setups)):
        setup(cfg)
    return cfg


def build_model(config: str, opts: Sequence[str] = ()) -> torch.nn.Module:
    """Build the (uninitialised) model of ``config`` with ``opts`` merged (``load_config``) on the CPU; pretrained
    backbone loading is switched off."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    cfg = load_config(config, opts)
    backbone = cfg.model.get("backbone") or {}
    if (backbone.get("init_cfg") or {}).get("type") == "Pretrained":
        cfg.model.backbone.init_cfg = None
    return MODELS.build(cfg.model)


def manifest_lines(model: torch.nn.Module) -> list[str]:
    """``key<TAB>shape<TAB>kind`` lines (with a header) of every state-dict entry of ``model``."""
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    lines = ["key\tshape\tkind"]
    for key, tensor in model.state_dict().items():
        lines.append(f"{key}\t{'x'.join(str(n) for n in tensor.shape)}\t{'param' if key in params else 'buffer'}")
    return lines


def strict_load_check(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Load ``state_dict`` into ``model`` with ``strict=True``; what is missing, unexpected or of the wrong size."""
    own = model.state_dict()
    result: dict[str, Any] = {
        "missing": sorted(k for k in own if k not in state_dict),
        "unexpected": sorted(k for k in state_dict if k not in own),
        "size_mismatch": [
            {"key": k, "checkpoint": list(state_dict[k].shape), "model": list(own[k].shape)}
            for k in sorted(own)
            if k in state_dict and state_dict[k].shape != own[k].shape
        ],
        "error": None,
    }
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        result["error"] = str(error).splitlines()[0]
    result["ok"] = result["error"] is None
    return result


@guarded_main
def main(argv: list[str] | None = None) -> int:
    """CLI: write the manifest or run the strict check; exit 2 with one ``error:`` line on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m mmdet_side.target",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "python -m mmdet_side.target mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py --manifest port.tsv",
            "python -m mmdet_side.target mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py --check mmdet.pth "
            "--json check.json",
        ),
    )
    parser.add_argument("config", help="mmdet config: a .py file or mmdet::path/to/config.py")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--manifest", help="write the model's key manifest TSV here")
    action.add_argument("--check", help="checkpoint to load with strict=True")
    parser.add_argument("--json", metavar="PATH", help="with --check: write the result as JSON here")
    add_quiet_option(parser, "print nothing on success")
    args = parser.parse_args(argv)
    try:
        if args.check:
            state = load_checkpoint(args.check)
            result = strict_load_check(build_model(args.config), state)
            if args.json:
                atomic_write_bytes(args.json, (json.dumps(result) + "\n").encode())
                if not args.quiet or not result["ok"]:
                    print(f"strict load of {args.check}: {'ok' if result['ok'] else 'FAILED'}")
            else:
                print(json.dumps(result))
            return 0 if result["ok"] else 1
        lines = manifest_lines(build_model(args.config))
        atomic_write_bytes(args.manifest, ("\n".join(lines) + "\n").encode())
        if not args.quiet:
            print(args.manifest)
        return 0
    except BAD_INPUT as error:
        return report_bad_input(error)


if __name__ == "__main__":
    sys.exit(main())
