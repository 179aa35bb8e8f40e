"""CLI: ``python -m bridge.report PIECES... -o report.html [--json report.json] [--runs A B] [--map PRESET]``;
exit 0 every stage passes, 1 a stage fails, 2 bad input."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bridge.cli import BAD_INPUT, examples, guarded_main, report_bad_input
from bridge.errors import BridgeError


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m bridge.report",
        description="One alignment report (HTML, JSON) from the pieces a port produced.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "python -m bridge.report convert.json init.json compare.json -o report.html --json report.json"
        ),
    )
    p.add_argument(
        "pieces",
        nargs="+",
        help="conversion / initcheck / compare / parity JSON reports, metadata "
        "documents or their diff (type told from the content)",
    )
    p.add_argument("-o", "--out", "--output", dest="output", required=True, help="the HTML page to write")
    p.add_argument("--json", dest="json_out", help="also write the report as JSON here")
    p.add_argument(
        "--runs",
        nargs=2,
        metavar=("RUN_A", "RUN_B"),
        help="the compared runs, to picture the first divergent tensor (default: the compare "
        "report's settings run_a / run_b when they exist)",
    )
    p.add_argument("--map", dest="map_file", help="the --map the compare used (default: the compare report's)")
    return p


def _check_outputs(pieces: Sequence[str], outs: Sequence[str]) -> None:
    inputs = {os.path.realpath(p) for p in pieces}
    for out in outs:
        if os.path.realpath(out) in inputs:
            raise BridgeError(f"{out}: the output would overwrite an input piece")
    if len(outs) == 2 and os.path.realpath(outs[0]) == os.path.realpath(outs[1]):
        raise BridgeError(f"{outs[0]}: -o and --json name the same file")


@guarded_main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code."""
    args = build_parser().parse_args(argv)
    import orjson

    from bridge.atomic import atomic_write_bytes

    from .document import build_report
    from .html import render_html

    try:
        _check_outputs(args.pieces, [args.output] + ([args.json_out] if args.json_out else []))
        report = build_report(args.pieces, runs=args.runs, name_map=args.map_file)
        page = render_html(report)
        if args.json_out:
            data = {k: v for k, v in report.items() if k != "entries"}
            atomic_write_bytes(
                args.json_out, orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
            )
        atomic_write_bytes(args.output, page.encode("utf-8"))
    except BAD_INPUT as exc:
        return report_bad_input(exc)
    first = report["first_failing_stage"]
    print(
        ("PASS: every stage passes" if first is None else f"FAIL: first failing stage: {first}") + f" ({args.output})"
    )
    return 0 if first is None else 1


if __name__ == "__main__":
    sys.exit(main())
