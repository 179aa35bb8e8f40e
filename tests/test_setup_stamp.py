"""A finished `make setup` is recognised at once (a stamp over the pinned inputs), and any change of an input
makes setup run again."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INPUTS = [
    "requirements/*",
    "scripts/setup_stack.sh",
    "scripts/build_detectron2.sh",
    "scripts/setup_compat.sh",
    "scripts/check_stack.py",
    "patches/*",
    "pyproject.toml",
]


def _stamp(root: Path) -> str:
    """The stamp as setup_stack.sh computes it: sha256 over ``sha256sum`` of the inputs, first 16 digits."""
    lines = ""
    for pattern in INPUTS:
        for path in sorted(root.glob(pattern), key=lambda p: str(p).encode()):
            lines += f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(root)}\n"
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def _clone(tmp_path: Path) -> Path:
    root = tmp_path / "clone"
    for folder in ("requirements", "scripts", "patches"):
        shutil.copytree(REPO / folder, root / folder)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def _run(root: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    venv, compat = tmp_path / "venv", tmp_path / "compat"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    compat.mkdir(exist_ok=True)
    (venv / "bin" / "python").symlink_to(shutil.which("true")) if not (venv / "bin" / "python").exists() else None
    (compat / ".bridge-compat-stamp").write_text("x\n")
    wrong_python = tmp_path / "python-not-3.11"
    wrong_python.write_text("#!/bin/sh\nexit 1\n")
    wrong_python.chmod(0o755)
    env = dict(os.environ, VENV=str(venv), VENV_COMPAT=str(compat), PYTHON=str(wrong_python))
    return subprocess.run(
        ["bash", str(root / "scripts" / "setup_stack.sh")], env=env, capture_output=True, text=True, timeout=60
    )


def test_matching_stamp_exits_at_once(tmp_path: Path) -> None:
    root = _clone(tmp_path)
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / ".bridge-setup-stamp").write_text(_stamp(root) + "\n")
    start = time.perf_counter()
    result = _run(root, tmp_path)
    assert result.returncode == 0 and "up to date" in result.stdout, result.stdout + result.stderr
    assert time.perf_counter() - start < 5


def test_changed_input_runs_setup_again(tmp_path: Path) -> None:
    root = _clone(tmp_path)
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / ".bridge-setup-stamp").write_text(_stamp(root) + "\n")
    with open(root / "requirements" / "constraints.txt", "a") as constraints:
        constraints.write("# changed\n")
    result = _run(root, tmp_path)
    assert "up to date" not in result.stdout
    assert result.returncode == 1 and "Python 3.11 is required" in result.stderr  # it went on to the real steps
