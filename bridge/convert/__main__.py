"""``python -m bridge.convert SRC -o DST (--preset NAME | --rules FILE) [--target T] [--json R.json] [--reverse]``.

``python -m bridge.convert draft SOURCE --target TARGET -o draft.yaml`` drafts a rule file instead
(``bridge.convert.draft_cli``).

``--target`` is a key manifest TSV, a checkpoint, or an mmdet config (``*.py`` or ``mmdet::...``): the
config's model is built on the CPU by ``python -m mmdet_side.target`` in a subprocess (``bridge`` never
imports mmdet), and the written checkpoint is loaded into it with ``strict=True`` as the final check.
Exit status: 0 fully matched (or no target), 1 missing/unexpected/mismatched keys or a failed strict load,
2 bad input. A conversion that fails its check (exit 1) writes its report but not its output checkpoint,
unless ``--keep-failed``; every output is checked against the inputs first, and all are renamed into place
together at the end.

``--reverse`` runs the same rules backwards: SRC is the converted (mmdet) checkpoint, DST the detectron2 one
(``{'model': state_dict, 'meta': ...}``), and ``--target`` the original the rules were written for (its
checkpoint; or, for names only, its key manifest or detectron2 config): it names the keys exactly and gives
back what the forward conversion dropped (``bridge.convert.reverse``). Exit 0 when everything was restored
and converting DST forwards gives SRC back bit for bit, 1 otherwise (DST then only with ``--keep-failed``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bridge.atomic import AtomicGroup, atomic_group
from bridge.cli import add_json_option, add_quiet_option, check_outputs, examples, guarded_main
from bridge.convert.engine import convert_state_dict
from bridge.convert.loading import load_checkpoint, load_target_shapes, write_checkpoint_file
from bridge.convert.mmdet_target import is_mmdet_config, mmdet_config_shapes, mmdet_strict_check
from bridge.convert.provenance import file_sha256, provenance
from bridge.convert.report import compare_to_target, render_report, report_without_target
from bridge.convert.rules import load_rules

EPILOG = examples(
    "python -m bridge.convert model_final.pth -o mmdet.pth --preset d2-panoptic-fpn-to-mmdet \\\n"
    "      --target mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py --json convert.json",
    "python -m bridge.convert mmdet.pth -o model_d2.pth --preset d2-panoptic-fpn-to-mmdet --reverse "
    "--target model_final.pth",
    "python -m bridge.convert draft model_final.pth --target mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py "
    "-o draft.yaml",
)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of the converter."""
    p = argparse.ArgumentParser(
        prog="python -m bridge.convert",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="source checkpoint (.pkl, .pth, .pt, .safetensors)")
    p.add_argument(
        "-o", "--out", "--output", dest="output", required=True, help="output checkpoint (.pth or .safetensors)"
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--preset", help="name of a shipped rule set")
    g.add_argument("--rules", help="YAML rule file")
    p.add_argument(
        "--target",
        help="key manifest TSV, checkpoint, or mmdet config (.py or mmdet::...) to "
        "convert to; a config's model also gets the written file with strict=True",
    )
    p.add_argument(
        "--reverse",
        action="store_true",
        help="run the rules backwards: SRC is the converted checkpoint, --target the original "
        "(checkpoint; key manifest TSV or detectron2 config for names only)",
    )
    add_json_option(p, "write the report as JSON here")
    add_quiet_option(p, "print no tables, only warnings and the verdict line")
    p.add_argument("--names-dir", help="write source/target/converted names as sorted JSON lists here")
    p.add_argument("--unsafe-pickle", action="store_true", help="allow arbitrary pickled objects (trusted files)")
    p.add_argument(
        "--keep-failed",
        action="store_true",
        help="write the output checkpoint even when the conversion fails its check (exit 1)",
    )
    p.add_argument(
        "--fsync",
        action="store_true",
        help="flush the output to disk before its atomic rename (survives an OS crash, costs time)",
    )
    return p


def _json_bytes(data: object) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=False) + "\n").encode()


def _names_files(args: argparse.Namespace) -> dict[str, Path | None]:
    out = Path(args.names_dir) if args.names_dir else None
    names = ("source_names.json", "converted_names.json", "target_names.json")
    return {f"--names-dir {name}": (out / name if out else None) for name in names}


def _inputs(args: argparse.Namespace) -> dict[str, str | None]:
    existing = {k: v for k, v in (("--rules", args.rules), ("--target", args.target)) if v and Path(v).exists()}
    return {"SRC": args.src, **existing}


def _stage_names(outputs: AtomicGroup, names: dict[str, Path | None], result, target) -> None:
    source, converted, target_file = names.values()
    if source is None:
        return
    outputs.write_bytes(source, _json_bytes(sorted(result.source_keys)))
    outputs.write_bytes(converted, _json_bytes(sorted(result.state_dict)))
    if target is not None:
        outputs.write_bytes(target_file, _json_bytes(sorted(target)))


@guarded_main
def main(argv: list[str] | None = None) -> int:
    """Run the converter (or, with ``draft`` first, the rule drafter); return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["draft"]:
        from bridge.convert.draft_cli import main as draft_main

        return draft_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.reverse:
        from bridge.convert.reverse_cli import run_reverse

        return run_reverse(args)
    names = _names_files(args)
    check_outputs(_inputs(args), {"-o": args.output, "--json": args.json, **names})
    hashing = ThreadPoolExecutor(max_workers=1)
    try:
        with atomic_group() as outputs:
            rules = load_rules(args.preset or args.rules)
            # the report's source sha256 is computed while the source is read, converted and written
            source_sha256 = hashing.submit(file_sha256, args.src) if args.json else None
            state = load_checkpoint(args.src, unsafe_pickle=args.unsafe_pickle)
            target_is_config = bool(args.target) and is_mmdet_config(args.target)
            target = None
            if target_is_config:
                target = mmdet_config_shapes(args.target)
            elif args.target:
                target = load_target_shapes(args.target, unsafe_pickle=args.unsafe_pickle)
            started = time.perf_counter()
            result = convert_state_dict(state, rules, target_names=list(target) if target else None)
            report = compare_to_target(result, target) if target is not None else report_without_target(result)
            meta = {
                "converted_by": "bridge.convert",
                **provenance(args.src, rules),
                "target": str(args.target) if args.target else None,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "counts": result.counts(),
                "rule_hits": result.rule_hits,
                "unused_rules": result.unused_rules,
                "report_ok": report.ok,
            }
            staged = outputs.path(args.output)
            write_checkpoint_file(
                result.state_dict,
                staged,
                meta,
                fsync=args.fsync,
                shown_as=args.output,
                as_safetensors=Path(args.output).suffix.lower() == ".safetensors",
            )
            elapsed = time.perf_counter() - started
            if target_is_config:
                report.strict_check = mmdet_strict_check(args.target, staged, shown_as=args.output)
            keep_output = report.ok or args.keep_failed
            _stage_names(outputs, names, result, target)
            if args.json:
                data = report.to_json()
                data["meta"] = meta | {
                    "report_ok": report.ok,
                    "source_sha256": source_sha256.result(),
                    "output_written": keep_output,
                }
                outputs.write_bytes(args.json, _json_bytes(data))
            render_report(
                report, title=f"{Path(args.src).name} -> {Path(args.output).name} ({elapsed:.2f}s)", quiet=args.quiet
            )
            outputs.commit(None if keep_output else [p for p in (args.json, *names.values()) if p])
    finally:
        hashing.shutdown(wait=False, cancel_futures=True)
    if not keep_output:
        print(
            f"{args.output} not written: the conversion failed its check (--keep-failed writes it anyway)",
            file=sys.stderr,
        )
    return report.exit_code()


if __name__ == "__main__":
    sys.exit(main())
