"""Run the stages of a plan: print each command, log its output under ``out/logs/``, stop at the first stage
that fails (its partial outputs removed, its stderr tail shown) and return the verdict's exit code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bridge.align.plan import Layout, Stage, report_pieces, report_stage
from bridge.atomic import atomic_write_bytes
from bridge.errors import BridgeError

#: Lines of a failed process's stderr shown with the error.
TAIL_LINES = 25
#: The file that marks a folder as written by ``bridge.align`` (the only kind of existing folder it writes into).
MARKER = ".bridge-align"


class StageError(BridgeError):
    """A stage's process failed (or could not start); the message names the stage, ``tail`` holds the end of
    the process's stderr."""

    def __init__(self, message: str, tail: str = "") -> None:
        super().__init__(message)
        self.tail = tail


def _remove(path: Path, out: Path) -> None:
    """Remove ``path`` when it lies inside ``out`` (never a user's own file elsewhere)."""
    if out not in path.parents:
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _tail(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-TAIL_LINES:])


def run_stage(stage: Stage, layout: Layout, log: list[str]) -> int:
    """Run ``stage``'s steps; return the last step's exit code when it is one of the stage's verdicts (0, or 1
    for convert / compare / report); raise :class:`StageError` otherwise, its outputs removed."""
    for path in stage.outputs:
        _remove(path, layout.out)
    logs = layout.out / "logs"
    for folder in [logs, *stage.folders]:
        folder.mkdir(parents=True, exist_ok=True)
    code = 0
    for number, step in enumerate(stage.steps):
        line = step.shell()
        print(f"[{stage.name}] {line}", flush=True)
        log.append(f"# stage {stage.name}\n{line}")
        env = dict(os.environ) | step.env
        try:
            result = subprocess.run(step.argv, env=env, cwd=step.cwd, capture_output=True, text=True, errors="replace")
        except OSError as exc:
            for path in stage.outputs:
                _remove(path, layout.out)
            raise StageError(f"stage {stage.name}: cannot run {step.argv[0]}: {exc.strerror or exc}") from None
        name = stage.name if len(stage.steps) == 1 else f"{stage.name}.{number + 1}"
        (logs / f"{name}.log").write_text(
            f"$ {line}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}", encoding="utf-8"
        )
        code = result.returncode
        if stage.name in ("compare", "report"):
            sys.stdout.write(result.stdout)
        elif result.stdout.strip():
            print(f"  {result.stdout.strip().splitlines()[-1]}")
        if code not in stage.verdict_codes or (code != 0 and number < len(stage.steps) - 1):
            for path in stage.outputs:
                _remove(path, layout.out)
            tail = _tail(result.stderr) or _tail(result.stdout)
            raise StageError(
                f"stage {stage.name} failed (exit {code}); its command is printed above, its output "
                f"is in {logs / f'{name}.log'}",
                tail,
            )
    return code


def claim(out: Path) -> None:
    """Make ``out`` a bridge.align folder: create it, or accept it when empty or marked by an earlier run;
    refuse (before writing anything) a file or a folder of other content, whose files a stage could replace."""
    if out.exists() and not out.is_dir():
        raise BridgeError(f"{out}: exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise BridgeError(
            f"{out}: exists and was not written by python -m bridge.align (no {MARKER} inside); "
            "choose a new --out or empty it"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by python -m bridge.align; its stages replace their own outputs here\n")


def execute(stages: list[Stage], layout: Layout) -> int:
    """Run ``stages`` in order; return 0 aligned, 1 divergence found (the report's, else the compare's or the
    conversion's verdict). ``out/commands.sh`` lists every command run, for rerunning by hand."""
    claim(layout.out)
    for stale in (layout.report_html, layout.report_json):
        _remove(stale, layout.out)
    log: list[str] = []
    verdicts: dict[str, int] = {}
    try:
        for stage in stages:
            if stage.name in ("port", "compare") and verdicts.get("convert") == 1:
                print(f"[{stage.name}] skipped: the conversion failed its check (see {layout.convert_report})")
                continue
            if stage.name == "report":
                if layout.recipe.known:
                    atomic_write_bytes(
                        layout.known, json.dumps({"known_differences": layout.recipe.known}, indent=1).encode()
                    )
                stage = report_stage(layout)
                if not report_pieces(layout):
                    raise StageError(
                        f"stage report: nothing to report (no conversion, metadata or compare piece under {layout.out})"
                    )
            verdicts[stage.name] = run_stage(stage, layout, log)
    finally:
        if log:
            atomic_write_bytes(layout.out / "commands.sh", ("#!/bin/sh\nset -e\n" + "\n".join(log) + "\n").encode())
    for name in ("report", "compare", "convert"):
        if name in verdicts:
            return verdicts[name]
    return 0
