"""Evaluator metadata of detectron2 and mmdet in one normalized JSON, and a diff of two such files.

``python -m bridge.meta``: the command line; the library is :mod:`bridge.meta`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bridge.cli import add_quiet_option, check_outputs, examples, guarded_main
from bridge.meta import Difference, _short, diff_metadata, load_metadata, write_differences


def _print_differences(diffs: Sequence[Difference], a_name: str, b_name: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain lines
        for diff in diffs:
            print(f"{diff.field}: {diff.sentence}")
        return
    from rich.markup import escape

    table = Table(title=f"{len(diffs)} metadata difference(s)")
    table.add_column("field")
    table.add_column(escape(str(a_name)))
    table.add_column(escape(str(b_name)))
    table.add_column("meaning")
    for diff in diffs:
        table.add_row(
            escape(diff.field),
            escape(_short(diff.a_value, 40)),
            escape(_short(diff.b_value, 40)),
            escape(diff.sentence),
        )
    Console(width=200).print(table)


@guarded_main
def main(argv: list[str] | None = None) -> int:
    """CLI: compare two normalized metadata files; exit 0 equivalent, 1 different, 2 bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge.meta",
        description="Compare two normalized evaluator-metadata JSON files.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples("python -m bridge.meta d2_meta.json mmdet_meta.json --json meta_diff.json"),
    )
    parser.add_argument("a", help="first metadata JSON (e.g. from python -m d2_side.meta)")
    parser.add_argument("b", help="second metadata JSON (e.g. from python -m mmdet_side.meta)")
    parser.add_argument("--plain", action="store_true", help="plain lines instead of a table")
    parser.add_argument("--json", dest="json_out", help="also write the differences as JSON here (for bridge.report)")
    add_quiet_option(parser, "print one verdict line, not the differences")
    args = parser.parse_args(argv)
    check_outputs({"A": args.a, "B": args.b}, {"--json": args.json_out})
    a, b = load_metadata(args.a), load_metadata(args.b)
    diffs = diff_metadata(a, b)
    if args.json_out:
        write_differences(diffs, args.a, args.b, args.json_out)
    if not diffs:
        print(f"equivalent: {args.a} and {args.b}")
        return 0
    if args.quiet:
        print(f"{len(diffs)} differences: {args.a} and {args.b}")
    elif args.plain:
        for diff in diffs:
            print(f"{diff.field}: {diff.sentence}")
    else:
        _print_differences(diffs, a["framework"] or "a", b["framework"] or "b")
    return 1


if __name__ == "__main__":
    sys.exit(main())
