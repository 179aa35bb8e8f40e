"""Fuzz every command-line tool with generated hostile inputs and count the contract breaks (issue 21).

Runs the generators of ``tests/fuzz_cases.py`` (the same ones ``tests/test_fuzz_cli.py`` drives with
hypothesis) for ``--cases`` cases, each in a fresh directory, every CLI in-process through its ``main``;
prints the cases tried per CLI, the contract breaks (with the first few) and the time taken. Exit 1 when
anything broke the contract.

    python benchmarks/fuzz_cli.py [--cases 5000] [--seed 0] [--cli compare]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fuzz_cases import GENERATORS, check_case, make_case


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer; return 0 when no case broke the contract."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cli", choices=sorted(GENERATORS), help="only this CLI (default: all, in turn)")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    codes: Counter[tuple[str, object]] = Counter()
    tried: Counter[str] = Counter()
    broken: Counter[str] = Counter()
    examples: list[str] = []
    started = time.perf_counter()
    names = [args.cli] if args.cli else sorted(GENERATORS)
    with tempfile.TemporaryDirectory(prefix="fuzz_cli_") as base:
        for n in range(args.cases):
            rng = random.Random(args.seed * 1_000_003 + n)
            workdir = Path(base) / f"case{n}"
            workdir.mkdir()
            cli = names[n % len(names)]
            case = make_case(rng, workdir, cli)
            breaks = check_case(case)
            codes[cli, case.code] += 1
            tried[cli] += 1
            if breaks:
                broken[cli] += 1
                examples.extend(f"case {n} (seed {args.seed}): {b}" for b in breaks[:2])
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    for cli in names:
        spread = ", ".join(f"exit {c}: {codes[cli, c]}" for c in (0, 1, 2, None) if codes[cli, c])
        print(f"{cli:12s} cases {tried[cli]:6d}  contract breaks {broken[cli]:4d}  ({spread})")
    total_broken = sum(broken.values())
    print(
        f"total        cases {sum(tried.values()):6d}  contract breaks {total_broken:4d}  "
        f"({elapsed:.1f}s, {1000 * elapsed / max(1, sum(tried.values())):.1f} ms/case)"
    )
    for line in examples[:20]:
        print("  " + line)
    return 1 if total_broken else 0


if __name__ == "__main__":
    sys.exit(main())
