"""``d2mb VERB ...`` is ``python -m bridge.VERB ...``: same parser, same output, same exit status."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import bridge
from bridge.console import VERBS, main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_each_verb_dispatches_to_its_modules_main(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as direct:
        importlib.import_module(VERBS[verb]).main(["--help"])
    expected = capsys.readouterr().out
    with pytest.raises(SystemExit) as dispatched:
        main([verb, "--help"])
    assert dispatched.value.code == direct.value.code == 0
    assert capsys.readouterr().out == expected and f"python -m bridge.{verb}" in expected


def test_verbs_are_the_modules_with_a_command_line() -> None:
    """Every ``python -m bridge.X`` command line is a verb (``bridge.console`` itself aside)."""
    package = Path(bridge.__file__).parent  # the installed package, in the clone or in site-packages
    commands = set()
    for path in package.rglob("*.py"):
        if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8") and path.stem != "console":
            module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
            commands.add(module)
    assert commands == set(VERBS.values())


@pytest.mark.parametrize("argv", [[], ["frobnicate"]])
def test_missing_or_unknown_verb_is_one_error_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "compare" in err and "Traceback" not in err


def test_exit_status_passes_through(tmp_path: Path) -> None:
    """A bad-input run of compare through ``python -m bridge.console`` exits 2 with one error line."""
    result = subprocess.run(
        [sys.executable, "-m", "bridge.console", "compare", str(tmp_path / "a"), str(tmp_path / "b")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
