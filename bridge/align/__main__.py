"""CLI: ``python -m bridge.align RECIPE.yaml [--out DIR] [--stages a,b] [--dry-run]``; exit 0 aligned, 1 a
divergence found, 2 bad recipe or a failed stage."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bridge.cli import BAD_INPUT, guarded_main, report_bad_input


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m bridge.align",
        description="Run the alignment loop a recipe describes (data, reference, convert, "
        "port, compare, report) and write out/report.html.",
    )
    p.add_argument("recipe", help="the recipe (YAML; docs/ALIGN.md)")
    p.add_argument("--out", help="output directory (default: the recipe's out:)")
    p.add_argument(
        "--stages",
        help="comma-separated stages to run (default: the recipe's stages:, else all of "
        "data, reference, convert, port, compare, report)",
    )
    p.add_argument("--coco-root", help="a real COCO root (replaces the recipe's data:, e.g. synthetic)")
    p.add_argument("--dry-run", action="store_true", help="print the commands and run nothing")
    return p


@guarded_main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code."""
    args = build_parser().parse_args(argv)
    from bridge.align.execute import StageError, execute
    from bridge.align.plan import Layout, plan
    from bridge.align.recipe import load_recipe

    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages is not None else None
    try:
        recipe = load_recipe(args.recipe, out=args.out, stages=stages, coco_root=args.coco_root)
        layout = Layout(recipe)
        steps = plan(layout)
        if args.dry_run:
            for stage in steps:
                for step in stage.steps:
                    print(f"[{stage.name}] {step.shell()}")
            return 0
        code = execute(steps, layout)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.tail:
            print("\n".join(f"  | {line}" for line in exc.tail.splitlines()), file=sys.stderr)
        return 2
    except BAD_INPUT as exc:
        return report_bad_input(exc)
    verdict = {0: "ALIGNED", 1: "DIVERGENCE FOUND"}.get(code, "FAILED")
    where = f": {layout.report_html}" if layout.report_html.exists() else ""
    print(f"{verdict}{where}")
    return code


if __name__ == "__main__":
    sys.exit(main())
