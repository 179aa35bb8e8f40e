"""``python -m bridge.initcheck`` shows each stage's progress on stderr when it is a terminal, and nothing but one
summary line under ``--quiet``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bridge.initcheck.__main__ import main


@pytest.fixture
def checkpoints(tmp_path: Path) -> tuple[str, str]:
    generator = torch.Generator().manual_seed(0)
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    torch.save({"w": torch.randn(64, 64, generator=generator), "b": torch.zeros(3)}, a)
    torch.save({"w": torch.randn(64, 64, generator=generator), "b": torch.zeros(3)}, b)
    return str(a), str(b)


def test_initcheck_shows_each_stage_on_a_terminal(
    checkpoints: tuple[str, str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = checkpoints
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich draws its progress as on a terminal
    monkeypatch.setenv("COLUMNS", "300")
    assert main([a, b]) == 0
    out, err = capsys.readouterr()
    stages = [err.rindex(text) for text in (f"A: loading {a}", f"B: loading {b}", "comparing")]
    assert stages == sorted(stages) and "2/2" in err[stages[-1] :]
    assert "all equal or same distribution" in out and "equal or same" not in err


def test_initcheck_shows_no_progress_in_a_log(checkpoints: tuple[str, str], capsys: pytest.CaptureFixture) -> None:
    a, b = checkpoints
    assert main([a, b]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "all equal or same distribution" in out


def test_initcheck_quiet_prints_one_summary_line(checkpoints: tuple[str, str], capsys: pytest.CaptureFixture) -> None:
    a, b = checkpoints
    assert main([a, b, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == "initcheck: OK: 1 equal, 1 same-distribution, 0 added by the rules\n"
