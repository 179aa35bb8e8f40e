"""``python -m bridge.initcheck A B [--preset NAME | --rules FILE] [--seed N] [--json OUT.json] [--quiet]``.

``python -m bridge.initcheck``: the command line; the library is :mod:`bridge.initcheck`."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bridge.atomic import atomic_write_bytes
from bridge.cli import add_json_option, add_quiet_option, check_outputs, examples, guarded_main
from bridge.initcheck import OK_VERDICTS, compare_state_dicts, render, stages, summary_line


def _what(spec: str) -> str:
    """How a side is obtained, for the progress line."""
    from bridge.initcheck.sources import source_kind

    kind = source_kind(spec)
    return f"loading {spec}" if kind == "file" else f"building the {kind} model of {spec}"


@guarded_main
def main(argv: list[str] | None = None) -> int:
    """Run the initialisation check; return the exit status."""
    p = argparse.ArgumentParser(
        prog="python -m bridge.initcheck",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "python -m bridge.initcheck COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml "
            "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py \\\n"
            "      --preset d2-panoptic-fpn-to-mmdet --seed 0 --json init.json",
            "python -m bridge.initcheck a.pth b.pth --all",
        ),
    )
    p.add_argument(
        "a", help="state-dict file, detectron2 config (.yaml or model-zoo path) or mmdet config (.py or mmdet::...)"
    )
    p.add_argument("b", help="the same kinds as A")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", help="rule set that maps A's names to B's")
    g.add_argument("--rules", help="YAML rule file that maps A's names to B's")
    p.add_argument("--seed", type=int, default=0, help="seed of the models built from configs (default 0)")
    add_json_option(p, "write the rows as JSON here")
    add_quiet_option(p, "no progress and no tables; only the summary line")
    p.add_argument("--all", action="store_true", help="print every parameter, not only the differing ones")
    p.add_argument("--unsafe-pickle", action="store_true")
    args = p.parse_args(argv)
    from bridge.convert import convert_state_dict
    from bridge.initcheck.sources import load_initial_state

    check_outputs(
        {
            "A": args.a if Path(args.a).exists() else None,
            "B": args.b if Path(args.b).exists() else None,
            "--rules": args.rules if args.rules and Path(args.rules).exists() else None,
        },
        {"--json": args.json},
    )
    what_a, what_b = _what(args.a), _what(args.b)  # a bad source is refused before anything is built
    with tempfile.TemporaryDirectory(prefix="bridge_initcheck_") as tmp, stages(args.quiet) as start:
        start(f"A: {what_a}")
        sa = load_initial_state(args.a, seed=args.seed, workdir=tmp, unsafe_pickle=args.unsafe_pickle, name="a")
        start(f"B: {what_b}")
        sb = load_initial_state(args.b, seed=args.seed, workdir=tmp, unsafe_pickle=args.unsafe_pickle, name="b")
        added: list[str] = []
        if args.preset or args.rules:
            start(f"mapping A's names with {args.preset or args.rules}")
            converted = convert_state_dict(sa, args.preset or args.rules, target_names=list(sb))
            sa, added = converted.state_dict, sorted(converted.added)
        skip = set(added)
        rows = compare_state_dicts(
            {k: v for k, v in sa.items() if k not in skip},
            {k: v for k, v in sb.items() if k not in skip},
            start("comparing"),
        )
    ok = all(r["verdict"] in OK_VERDICTS for r in rows)
    if args.quiet:
        print(summary_line(rows, added, ok))
    else:
        render(rows, added, ok, show_all=args.all)
    if args.json:  # last: a command that fails before here leaves no report
        data = {"ok": ok, "a": str(args.a), "b": str(args.b), "seed": args.seed, "added": added, "rows": rows}
        atomic_write_bytes(args.json, (json.dumps(data, indent=1) + "\n").encode())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
