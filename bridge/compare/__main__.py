"""CLI: ``python -m bridge.compare RUN_A RUN_B [options]``; exit 0 pass, 1 diverges/unpaired, 2 bad input
(including an unknown kind, a tolerance that is not finite and >= 0, and a comparison of nothing)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge.atomic import atomic_group
from bridge.cli import check_outputs, examples, finite_nonnegative, guarded_main
from bridge.errors import BridgeError

#: The progress bar shows only for at least this many pairs (and never under --quiet or without a TTY).
PROGRESS_MIN_PAIRS = 20


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m bridge.compare",
        description="Compare two recorded runs leaf by leaf.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "python -m bridge.compare runs/d2 runs/mmdet --map d2-panoptic-fpn-to-mmdet "
            "--json compare.json --html compare.html",
            "python -m bridge.compare runs/d2 runs/mmdet --kinds loss,grad --quiet",
        ),
    )
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument(
        "--map",
        dest="map_file",
        help="converter preset name or YAML/JSON rules pairing RUN_A's keys with RUN_B's (gradients/parameters converted like the weights, losses through the preset's losses:)",
    )
    p.add_argument("--atol", type=finite_nonnegative("--atol"), help="absolute tolerance for every float leaf")
    p.add_argument("--rtol", type=finite_nonnegative("--rtol"), help="relative tolerance for every float leaf")
    p.add_argument(
        "--tol", action="append", default=[], metavar="GLOB=ATOL,RTOL", help="per-key override; last match wins"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--json", dest="json_out", help="write the JSON report here")
    p.add_argument("--html", dest="html_out", help="write the HTML report here")
    p.add_argument("--kinds", help="comma-separated kinds to compare (default: all)")
    p.add_argument(
        "--band",
        action="append",
        default=[],
        metavar="RUN",
        help="another recording of the reference (repeat): RUN_B's losses are judged against the "
        "band RUN_A and these span",
    )
    p.add_argument(
        "--band-margin",
        type=float,
        default=0.0,
        metavar="FRAC",
        help="widen the noise band by FRAC times its width on each side (default 0)",
    )
    p.add_argument("--quiet", action="store_true", help="no table or progress bar; only the summary line")
    p.add_argument(
        "--show-raw",
        action="store_true",
        help="count unpaired raw framework structures (batch, outputs) as unpaired (docs/OUTPUTS.md)",
    )
    p.add_argument(
        "--local",
        dest="local_run",
        metavar="RUN_LOCAL",
        help="run written by `python -m bridge.local`: show each module's end-to-end and local error "
        "and the origin of the divergence (docs/LAYER_LOCAL.md)",
    )
    return p


def _nothing_compared(kinds: list[str] | None) -> BridgeError:
    what = f"no leaf of kind(s) {', '.join(kinds)} in either run" if kinds else "both runs are empty"
    return BridgeError(f"nothing compared: {what}; a comparison of nothing is not a pass")


@guarded_main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from rich.console import Console

    from .engine import compare_runs
    from .report_html import build_html
    from .report_json import to_json_bytes
    from .report_terminal import print_report, summary_line

    console = Console() if sys.stdout.isatty() else Console(width=160)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()] if args.kinds is not None else None
    if args.kinds is not None and not kinds:
        parser.error(f"--kinds {args.kinds!r} names no kind")
    map_input = args.map_file if args.map_file and Path(args.map_file).exists() else None
    check_outputs(
        {"RUN_A": args.run_a, "RUN_B": args.run_b, "--map": map_input},
        {"--json": args.json_out, "--html": args.html_out},
    )
    show_progress = not args.quiet and sys.stdout.isatty()
    with atomic_group() as outputs:
        if show_progress:
            from rich.progress import Progress

            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("comparing", total=None, visible=False)

                def tick(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total, visible=total >= PROGRESS_MIN_PAIRS)

                result = compare_runs(
                    args.run_a,
                    args.run_b,
                    name_map=args.map_file,
                    atol=args.atol,
                    rtol=args.rtol,
                    tolerances=args.tol,
                    device=args.device,
                    kinds=kinds,
                    progress=tick,
                    show_raw=args.show_raw,
                    band_runs=args.band,
                    band_margin=args.band_margin,
                )
        else:
            result = compare_runs(
                args.run_a,
                args.run_b,
                name_map=args.map_file,
                atol=args.atol,
                rtol=args.rtol,
                tolerances=args.tol,
                device=args.device,
                kinds=kinds,
                show_raw=args.show_raw,
                band_runs=args.band,
                band_margin=args.band_margin,
            )
        if result.compared_nothing:
            raise _nothing_compared(kinds)
        local_json, local_sections, local_lines = local_report(args)
        if args.json_out:
            outputs.write_bytes(args.json_out, to_json_bytes(result, local_json))
        if args.html_out:
            outputs.write_bytes(args.html_out, build_html(result, local_sections).encode("utf-8"))
        if args.quiet:
            print(summary_line(result))
        else:
            print_report(result, console)
        for line in local_lines:
            print(line)
        outputs.commit()  # last: a command that fails before here leaves no report
    return 0 if result.passed else 1


def local_report(args: argparse.Namespace) -> tuple[dict | None, list[tuple[str, str]], list[str]]:
    """The layer-local check of ``--local`` (bridge.compare.local_entries) for each report: the JSON section
    (None without ``--local``), the HTML sections and the terminal lines."""
    if not args.local_run:
        return None, [], []
    from .local_entries import format_rows, local_html, local_rows, local_section

    rows = local_rows(args.run_a, args.run_b, args.local_run, args.map_file, atol=args.atol, rtol=args.rtol)
    return local_section(rows, args.atol, args.rtol), [("Layer-local check", local_html(rows))], format_rows(rows)


if __name__ == "__main__":
    sys.exit(main())
