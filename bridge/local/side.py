"""The command line both sides' ``local`` modules share (``python -m mmdet_side.local`` / ``d2_side.local``):
build the model, replay the tasks of ``bridge.local`` into a run, write the statuses as JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence

import torch
from torch import nn

from bridge.atomic import atomic_write_bytes
from bridge.cli import BAD_INPUT, report_bad_input
from bridge.errors import BridgeError
from bridge.local.replay import PAIRS_RECORD, replay_pairs
from bridge.runs import Recorder, open_run


def side_main(
    prog: str, framework: str, build: Callable[[str, str, list[str]], nn.Module], argv: Sequence[str] | None = None
) -> int:
    """Parse ``CONFIG CHECKPOINT --run-a RUN --tasks JSON -o OUT --statuses JSON [--device D] [--opts ...]``,
    build the model with ``build(config, checkpoint, opts)`` and replay; exit 2 with one ``error:`` line."""
    parser = argparse.ArgumentParser(prog=prog, description="Run this side's modules on run A's recorded inputs.")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--run-a", required=True)
    parser.add_argument("--tasks", required=True, help="JSON list written by bridge.local")
    parser.add_argument("-o", "--out", required=True, help="run directory to write (kind local)")
    parser.add_argument("--statuses", required=True, help="write one status per task here (JSON)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--opts", nargs="*", default=[], help="config overrides (detectron2: KEY VALUE ...)")
    args = parser.parse_args(argv)
    try:
        try:
            device = torch.device(args.device)
        except RuntimeError as exc:
            raise BridgeError(f"--device {args.device!r}: {exc}") from None
        tasks = json.loads(open(args.tasks, encoding="utf-8").read())
        model = build(args.config, args.checkpoint, list(args.opts)).to(device)
        run_a = open_run(args.run_a)
        with Recorder(args.out, framework=framework) as recorder:
            statuses = replay_pairs(model, run_a, tasks, recorder, device)
            recorder.record(
                PAIRS_RECORD,
                [{k: s[k] for k in ("step", "name_a", "name_b", "status")} for s in statuses],
                step=0,
                kind="meta",
            )
        atomic_write_bytes(args.statuses, json.dumps(statuses).encode())
        return 0
    except BAD_INPUT as error:
        return report_bad_input(error)
