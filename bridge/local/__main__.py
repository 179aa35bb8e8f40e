"""``python -m bridge.local RUN_A --model-side {mmdet,detectron2} CONFIG CHECKPOINT --map PRESET -o RUN_LOCAL``.

Pairs every module call recorded in RUN_A as kind ``input`` with side B's module through ``--map``
(``bridge.local.pairing``; a ``functions=`` record with the attribute path its ``functions:`` section names),
runs B's module or function on those inputs in a subprocess of B's framework
(``python -m mmdet_side.local`` / ``d2_side.local``, so ``bridge`` never imports a framework) and writes its
outputs as kind ``local`` into RUN_LOCAL (written beside, then renamed into place). Prints one line per call;
exit 0 when every paired call ran, 1 when some could not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bridge.cli import BAD_INPUT, add_quiet_option, check_outputs, examples, guarded_main, report_bad_input
from bridge.errors import BridgeError
from bridge.frameworks import run_side_module
from bridge.local.pairing import load_local_map, plan_pairs
from bridge.runs import open_run

SIDE_MODULES = {"mmdet": "mmdet_side.local", "detectron2": "d2_side.local"}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m bridge.local",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "python -m bridge.local runs/d2 --model-side mmdet "
            "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py mmdet.pth \\\n"
            "      --map d2-panoptic-fpn-to-mmdet -o runs/local"
        ),
    )
    p.add_argument("run_a", help="run holding module inputs (kind input)")
    p.add_argument(
        "--model-side",
        nargs=3,
        required=True,
        metavar=("SIDE", "CONFIG", "CHECKPOINT"),
        help="mmdet or detectron2, its config, and the checkpoint of side B (e.g. the converted one)",
    )
    p.add_argument(
        "--map",
        action="append",
        default=[],
        help="preset or rule file (modules:/arguments:/functions: sections allowed); repeatable",
    )
    p.add_argument("--opts", nargs="*", default=[], help="detectron2 config overrides KEY VALUE ...")
    p.add_argument("--device", default="cpu")
    p.add_argument("-o", "--out", required=True, help="run directory to write")
    add_quiet_option(p, "print the calls that fail and the final line, not every call")
    return p


def run_local(
    run_a: str,
    side: str,
    config: str,
    checkpoint: str,
    maps: Sequence[str],
    out: str,
    opts: Sequence[str] = (),
    device: str = "cpu",
) -> list[dict]:
    """Replay RUN_A's recorded inputs in side B's model into ``out``; the status of every call."""
    if side not in SIDE_MODULES:
        raise BridgeError(f"--model-side {side!r}: one of {', '.join(SIDE_MODULES)}")
    target = Path(out)
    if target.exists():
        raise BridgeError(f"{out}: exists already; give a new run directory")
    run = open_run(run_a)
    records = sorted({(e.name, e.step) for e in run.entries(kind="input")}, key=lambda r: (r[1], r[0]))
    if not records:
        raise BridgeError(f"{run_a}: no module inputs recorded (record with inputs=[globs], docs/LAYER_LOCAL.md)")
    tasks = plan_pairs(records, load_local_map(maps))
    with tempfile.TemporaryDirectory(
        prefix="bridge_local_", dir=target.parent if target.parent.exists() else None
    ) as tmp:
        tasks_file, statuses_file, staged = Path(tmp) / "tasks.json", Path(tmp) / "statuses.json", Path(tmp) / "run"
        tasks_file.write_text(json.dumps(tasks), encoding="utf-8")
        args = [
            config,
            checkpoint,
            "--run-a",
            str(run_a),
            "--tasks",
            str(tasks_file),
            "-o",
            str(staged),
            "--statuses",
            str(statuses_file),
            "--device",
            device,
        ]
        if opts:
            args += ["--opts", *opts]
        run_side_module(SIDE_MODULES[side], args, what=f"layer-local replay in {side} ({config})")
        statuses = json.loads(statuses_file.read_text(encoding="utf-8"))
        shutil.move(str(staged), str(target))
    return statuses


@guarded_main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code."""
    args = build_parser().parse_args(argv)
    side, config, checkpoint = args.model_side
    try:
        check_outputs({"RUN_A": args.run_a, "CHECKPOINT": checkpoint}, {"-o": args.out})
        statuses = run_local(args.run_a, side, config, checkpoint, args.map, args.out, args.opts, args.device)
    except BAD_INPUT as error:
        return report_bad_input(error)
    for status in statuses:
        if args.quiet and status["status"] == "ok":
            continue
        print(f"step {status['step']}  {status['name_a']} -> {status['name_b']}: {status['status']}")
    bad = [s for s in statuses if s["status"] != "ok"]
    print(f"{len(statuses) - len(bad)} of {len(statuses)} module calls replayed into {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
