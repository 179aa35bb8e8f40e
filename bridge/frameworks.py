"""Run a ``d2_side`` / ``mmdet_side`` command in a subprocess of this interpreter.

``bridge`` never imports detectron2 or mmdet; when a command needs one of them (an mmdet config as a
conversion target, a model built from a config for the init check) it runs the framework side's own
``python -m`` entry point with ``sys.executable`` and reads what that writes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bridge.errors import BridgeError

REPO_ROOT = Path(__file__).resolve().parent.parent
_NO_MODULE_RE = re.compile(r"No module named '([\w.]+)'")

#: Per side package: the framework it needs, and the top-level modules whose absence means it is not installed.
_FRAMEWORK_OF = {"mmdet_side": ("mmdet", ("mmdet", "mmengine", "mmcv")), "d2_side": ("detectron2", ("detectron2",))}


class FrameworkError(BridgeError):
    """A framework-side subprocess could not do what was asked (framework missing, bad config, crash)."""


def _env() -> dict[str, str]:
    """The environment of the subprocess: this checkout first on PYTHONPATH, so its side packages are used."""
    env = dict(os.environ)
    if (REPO_ROOT / "mmdet_side").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def missing_framework(module: str, stderr_lines: list[str]) -> str | None:
    """The framework that ``python -m module`` could not import, read from its stderr (None: not that)."""
    framework, roots = _FRAMEWORK_OF.get(module.split(".")[0], ("", ()))
    for line in stderr_lines:
        match = _NO_MODULE_RE.search(line)
        if match and match.group(1) in roots:  # a missing submodule (mmdet.foo) is another problem
            return framework if match.group(1) == framework else f"{framework} (module {match.group(1)!r})"
    return None


def run_side_module(
    module: str, args: list[str], *, what: str, ok_codes: tuple[int, ...] = (0,), timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module *args``; return the finished process when its exit status is in ``ok_codes``.

    Otherwise raise FrameworkError naming ``what`` was being done: "<framework> is not installed in this
    environment" when the framework import fails, else the subprocess's own ``error:`` line (or the last
    line of its stderr).
    """
    command = [sys.executable, "-m", module, *args]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FrameworkError(f"{what}: `{' '.join(command)}` took more than {timeout:.0f} s") from None
    if proc.returncode in ok_codes:
        return proc
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    missing = missing_framework(module, lines)
    if missing:
        raise FrameworkError(
            f"{what}: {missing} is not installed in this environment ({sys.executable}); "
            "install it, or give a file instead of a config"
        )
    errors = [line[len("error: ") :] for line in lines if line.startswith("error: ")]
    detail = errors[-1] if errors else (lines[-1] if lines else f"exit status {proc.returncode}")
    raise FrameworkError(f"{what}: `python -m {module}` failed: {detail}")
