"""``python -m bridge.convert draft SOURCE --target TARGET -o draft.yaml [--json draft.json] [--quiet]``.

SOURCE: a checkpoint or a key manifest TSV.  TARGET: a checkpoint, a key manifest TSV, or an mmdet config
(``*.py`` or ``mmdet::...``, built in a subprocess as ``--target`` of the converter does).  With tensors on
the source side, equal tensors reveal aliases (dropped with ``drop_alias``) and all-zero unpaired tensors are
dropped while zero.  Progress goes to stderr (``--quiet`` silences it); the summary line to stdout.
Exit status: 0 written, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bridge.atomic import atomic_write_bytes
from bridge.cli import (
    BAD_INPUT,
    add_json_option,
    add_quiet_option,
    check_outputs,
    examples,
    guarded_main,
    report_bad_input,
)
from bridge.convert.draft import draft_rules, render_yaml, report_json
from bridge.convert.draft_pairing import Side
from bridge.convert.loading import load_checkpoint, load_manifest
from bridge.convert.mmdet_target import is_mmdet_config, mmdet_config_shapes


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m bridge.convert draft``."""
    p = argparse.ArgumentParser(
        prog="python -m bridge.convert draft",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "python -m bridge.convert draft checkpoint0011_4scale.pth "
            "--target mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py -o draft.yaml "
            "--json draft.json"
        ),
    )
    p.add_argument("source", help="source checkpoint or key manifest TSV")
    p.add_argument("--target", required=True, help="target checkpoint, key manifest TSV, or mmdet config")
    p.add_argument("-o", "--out", "--output", dest="output", required=True, help="the drafted rule file (.yaml)")
    add_json_option(p, "write pairs, rules, unpaired keys and candidates as JSON here")
    add_quiet_option(p, "no progress on stderr")
    p.add_argument("--unsafe-pickle", action="store_true", help="allow arbitrary pickled objects (trusted files)")
    return p


def load_side(path: str, *, unsafe_pickle: bool = False, config_ok: bool = False) -> Side:
    """Keys, shapes and (for a checkpoint) tensors of a checkpoint, a manifest TSV or (``config_ok``) an mmdet config."""
    if config_ok and is_mmdet_config(path):
        return Side(mmdet_config_shapes(path))
    if Path(path).suffix.lower() in (".tsv", ".txt"):
        return Side(load_manifest(path))
    tensors = load_checkpoint(path, unsafe_pickle=unsafe_pickle)
    return Side({k: tuple(v.shape) for k, v in tensors.items()}, tensors)


@guarded_main
def main(argv: list[str] | None = None) -> int:
    """Draft a rule file; return the exit status."""
    args = build_parser().parse_args(argv)

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"draft: {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    try:
        check_outputs({"SOURCE": args.source, "--target": args.target}, {"-o": args.output, "--json": args.json})
        progress(f"reading {args.source}")
        src = load_side(args.source, unsafe_pickle=args.unsafe_pickle)
        progress(f"reading {args.target}")
        tgt = load_side(args.target, unsafe_pickle=args.unsafe_pickle, config_ok=True)
        result = draft_rules(src, tgt, progress)
        seconds = time.perf_counter() - started
        atomic_write_bytes(Path(args.output), render_yaml(result, args.source, args.target).encode())
        if args.json:
            data = json.dumps(report_json(result, seconds), indent=1) + "\n"
            atomic_write_bytes(Path(args.json), data.encode())
    except BAD_INPUT as exc:
        return report_bad_input(exc)
    s = result.summary()
    print(
        f"draft {args.output}: {s['source_keys_paired']} keys paired, {s['aliases']} aliases, {s['rules']} rules, "
        f"{s['low_confidence_rules']} low-confidence rules, unpaired {s['unpaired_source']} source / "
        f"{s['unpaired_target']} target ({seconds:.2f}s)"
    )
    return 0
