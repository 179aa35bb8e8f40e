"""Cut a few images out of COCO instances / COCO-panoptic annotation files, fast.

``python -m bridge.subset``: the command line; the library is :mod:`bridge.subset`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge.cli import add_quiet_option, examples, guarded_main
from bridge.subset import cut_subset


def _parse_ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not ids:
        raise argparse.ArgumentTypeError(f"names no image id: {text!r}")
    return ids


@guarded_main
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 bad input)."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge.subset",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "python -m bridge.subset instances_val2017.json panoptic_val2017.json "
            "--first 8 --only-nonempty --out-dir subsets/",
            "python -m bridge.subset instances_val2017.json --one 139",
        ),
    )
    parser.add_argument("ann", nargs="+", type=Path, help="COCO instances or panoptic JSON files")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--one", nargs="?", type=int, const=True, default=None, metavar="IMAGE_ID")
    mode.add_argument("--ids", type=_parse_ids)
    mode.add_argument("--first", type=int, metavar="N")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--only-nonempty", dest="only", action="store_const", const="nonempty")
    only.add_argument("--only-empty", dest="only", action="store_const", const="empty")
    parser.add_argument("--out-dir", type=Path, help="where the subset files go (default: next to each input)")
    add_quiet_option(parser, "do not print the written paths")
    args = parser.parse_args(argv)
    paths = cut_subset(args.ann, one=args.one, ids=args.ids, first=args.first, only=args.only, out_dir=args.out_dir)
    for p in [] if args.quiet else paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
