"""``python -m bridge.convert MMDET.pth -o D2.pth --preset NAME --reverse [--target ORIGINAL]``: the
converter's command line run backwards (:mod:`bridge.convert.reverse`)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from bridge.atomic import atomic_group
from bridge.cli import check_outputs
from bridge.convert.loading import load_checkpoint, load_manifest, write_checkpoint_file
from bridge.convert.mmdet_target import is_mmdet_config
from bridge.convert.provenance import provenance
from bridge.convert.report import fold_keys
from bridge.convert.reverse import Ambiguous, ReverseResult, reverse_state_dict
from bridge.convert.rules import load_rules
from bridge.errors import ConversionError
from bridge.initcheck.sources import load_initial_state


def load_original(path: str, *, unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The original of a reverse conversion: a checkpoint's tensors, or meta tensors (names and shapes only) of
    a key manifest or of the model a detectron2 config builds (``python -m d2_side.init_state``, a subprocess)."""
    if is_mmdet_config(path):
        raise ConversionError(
            f"--target {path}: with --reverse, --target is the original the rules were written "
            "for (checkpoint, key manifest TSV or detectron2 config), not an mmdet config"
        )
    if Path(path).suffix.lower() in (".tsv", ".txt"):
        return {k: torch.empty(shape, device="meta") for k, shape in load_manifest(path).items()}
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        with tempfile.TemporaryDirectory(prefix="bridge_reverse_") as tmp:
            built = load_initial_state(path, seed=0, workdir=tmp, name="original")
        return {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in built.items()}
    return load_checkpoint(path, unsafe_pickle=unsafe_pickle)


def render(result: ReverseResult, title: str, *, quiet: bool = False) -> None:
    """Print the counts (one line with ``quiet``), then what was ambiguous, not restored or mismatched, folded."""
    counts = result.counts()
    verdict = "restored, verified bit for bit" if result.ok else "NOT fully restored"
    print(f"{title}: {verdict} (" + ", ".join(f"{v} {k}" for k, v in counts.items()) + ")")
    by_rule: dict[str, list[Ambiguous]] = {}
    for item in result.ambiguous:
        by_rule.setdefault(item.rule, []).append(item)
    for rule, items in by_rule.items():
        print(
            f"warning: rule {rule}: {len(items)} keys could come from more than one name (e.g. chose "
            f"{items[0].chosen!r} over {items[0].others[0]!r}); give the original as --target to decide"
        )
    for key, why in result.not_restored:
        print(f"not restored: {key}: {why}")
    if result.mismatched:
        print("converting the result forwards does not give back: " + ", ".join(fold_keys(result.mismatched)))
    if not quiet and result.from_original:
        print("from the original: " + ", ".join(fold_keys([k for k, _r in result.from_original])))


def run_reverse(args: argparse.Namespace) -> int:
    """Run ``--reverse`` with the converter's parsed arguments; return the exit status."""
    if args.names_dir:
        raise ConversionError("--names-dir is for the forward conversion; --json holds the reverse's names")
    existing = {k: v for k, v in (("--rules", args.rules), ("--target", args.target)) if v and Path(v).exists()}
    check_outputs({"SRC": args.src, **existing}, {"-o": args.output, "--json": args.json})
    with atomic_group() as outputs:
        rules = load_rules(args.preset or args.rules)
        state = load_checkpoint(args.src, unsafe_pickle=args.unsafe_pickle)
        original = load_original(args.target, unsafe_pickle=args.unsafe_pickle) if args.target else None
        started = time.perf_counter()
        result = reverse_state_dict(state, rules, original=original)
        meta = {
            "converted_by": "bridge.convert --reverse",
            **provenance(args.src, rules),
            "target": str(args.target) if args.target else None,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "counts": result.counts(),
            "report_ok": result.ok,
        }
        keep_output = result.ok or args.keep_failed
        staged = outputs.path(args.output)
        write_checkpoint_file(
            result.state_dict,
            staged,
            meta,
            fsync=args.fsync,
            shown_as=args.output,
            as_safetensors=Path(args.output).suffix.lower() == ".safetensors",
            container="model",
        )
        if args.json:
            data = result.to_json() | {"meta": meta | {"output_written": keep_output}}
            outputs.write_bytes(args.json, (json.dumps(data, indent=1) + "\n").encode())
        render(
            result,
            f"{Path(args.src).name} -> {Path(args.output).name} reversed ({time.perf_counter() - started:.2f}s)",
            quiet=args.quiet,
        )
        outputs.commit(None if keep_output else [args.json] if args.json else [])
    if not keep_output:
        print(
            f"{args.output} not written: the reverse conversion is incomplete (--keep-failed writes it anyway)",
            file=sys.stderr,
        )
    return 0 if result.ok else 1
