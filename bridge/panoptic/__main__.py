"""Framework-free panoptic outputs: one canonical encoding, comparison (PQ/SQ/RQ), pictures and a CLI.

``python -m bridge.panoptic``: the command line; the library is :mod:`bridge.panoptic`."""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.atomic import atomic_group
from bridge.cli import add_quiet_option, check_outputs, examples, finite_nonnegative, guarded_main
from bridge.devices import resolve_device
from bridge.errors import BridgeError
from bridge.panoptic import (
    RECORD_PREFIX,
    CanonicalPanoptic,
    compare_panoptic,
    default_colors,
    from_record,
    html_section,
    load_npz,
)


def _load_side(path: Path) -> dict[tuple[str, int], CanonicalPanoptic]:
    if path.is_file():
        if path.suffix != ".npz":
            raise BridgeError(f"{path}: expected a run directory or a .npz file")
        return {(path.stem, 0): load_npz(path)}
    if not path.is_dir():
        raise BridgeError(f"{path} does not exist")
    from bridge.runs import open_run

    run = open_run(path)
    keys = sorted(
        {(e.name, e.step) for e in run.entries(rank=0, kind="output") if e.name.startswith(RECORD_PREFIX)},
        key=lambda k: (k[1], k[0]),
    )
    if not keys:
        raise BridgeError(f"{path}: no output record named '{RECORD_PREFIX}*'")
    out = {}
    for name, step in keys:
        try:
            out[(name, step)] = from_record(run.get(name, step=step, kind="output"))
        except BridgeError as exc:
            raise BridgeError(f"{path}: record {name!r} step {step}: {exc}") from None
    return out


@guarded_main
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 identical / PQ ok, 1 differ, 2 bad input).
    Results of different sizes fail their image (exit 1), they do not stop the comparison."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge.panoptic",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "python -m bridge.panoptic runs/d2 runs/mmdet --min-pq 99 --json pq.json --html pq.html",
            "python -m bridge.panoptic a.npz b.npz",
        ),
    )
    parser.add_argument("a", type=Path, help="reference: run directory or canonical .npz")
    parser.add_argument("b", type=Path, help="candidate: run directory or canonical .npz")
    parser.add_argument(
        "--min-pq",
        type=finite_nonnegative("--min-pq"),
        default=None,
        help="pass when every image's PQ is at least this",
    )
    parser.add_argument("--html", type=Path, default=None, help="write an HTML report here")
    parser.add_argument("--json", type=Path, default=None, help="write a JSON summary here")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (auto: CUDA when available)")
    add_quiet_option(parser, "print the images that fail and one verdict line, not every image")
    args = parser.parse_args(argv)
    check_outputs({"A": args.a, "B": args.b}, {"--json": args.json, "--html": args.html})
    device = str(resolve_device(args.device))
    side_a, side_b = _load_side(args.a), _load_side(args.b)
    if args.a.is_file() and args.b.is_file():
        side_b = {next(iter(side_a)): next(iter(side_b.values()))}
    results: dict[str, Any] = {}
    sections: list[str] = []
    ok = True
    colors = default_colors()
    for key in sorted(set(side_a) | set(side_b), key=lambda k: (k[1], k[0])):
        label = f"{key[0]} step {key[1]}"
        if key not in side_a or key not in side_b:
            print(f"{label}: only in {'A' if key in side_a else 'B'}")
            results[label] = {"missing_in": "B" if key in side_a else "A"}
            ok = False
            continue
        if side_a[key].shape != side_b[key].shape:
            print(f"{label}: DIFFERS: size A {side_a[key].shape} vs B {side_b[key].shape} (HxW)")
            results[label] = {"identical": False, "size_a": list(side_a[key].shape), "size_b": list(side_b[key].shape)}
            ok = False
            continue
        comp = compare_panoptic(side_a[key], side_b[key], device)
        passed = comp.identical or (args.min_pq is not None and comp.pq >= args.min_pq)
        ok = ok and passed
        if not (args.quiet and passed):
            print(f"{label}: {'identical' if comp.identical else 'DIFFERS'}: {comp.summary()}")
        results[label] = comp.to_dict()
        if args.html:
            sections.append(html_section(side_a[key], side_b[key], comp, colors, title=label, device=device))
    with atomic_group() as outputs:
        if args.json:
            outputs.write_bytes(args.json, json.dumps({"passed": ok, "images": results}, indent=1).encode())
        if args.html:
            page = (
                '<!DOCTYPE html><html><head><meta charset="utf-8"><title>panoptic</title></head><body>'
                f"<h1>{'PASS' if ok else 'FAIL'} {html.escape(str(args.a))} vs {html.escape(str(args.b))}</h1>"
                f"{''.join(sections)}</body></html>"
            )
            outputs.write_bytes(args.html, page.encode())
        outputs.commit()
    if args.quiet:
        print(f"panoptic: {'PASS' if ok else 'FAIL'} ({len(results)} images)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
