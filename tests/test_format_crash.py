"""A recording process killed with SIGKILL mid-run leaves a run whose every listed entry is readable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bridge import open_run

CHILD = textwrap.dedent("""
    import sys
    import torch
    from bridge import Recorder

    rec = Recorder(sys.argv[1], framework="crash-test", rank=0)
    for step in range(1_000_000):
        image = torch.randn(3, 128, 128, generator=torch.Generator().manual_seed(step))
        rec.record("batch", [{"image": image, "id": step, "boxes": torch.full((2, 4), float(step))}], step=step, kind="batch")
        rec.record("loss", torch.tensor(float(step)), step=step, kind="loss")
        print(f"step {step} done", flush=True)
""")


def _expected(name: str, step: int) -> object:
    if name == "loss":
        return torch.tensor(float(step))
    image = torch.randn(3, 128, 128, generator=torch.Generator().manual_seed(step))
    return [{"image": image, "id": step, "boxes": torch.full((2, 4), float(step))}]


def _record_until_killed(run_dir: Path, kill_after: int, delay: float) -> None:
    """Run CHILD into ``run_dir``; SIGKILL it ``delay`` seconds after it reports step ``kill_after`` done."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for line in child.stdout:
            if line.strip() == f"step {kill_after} done":
                time.sleep(delay)  # the child goes on writing the next steps meanwhile
                os.kill(child.pid, signal.SIGKILL)
                break
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read()[-2000:]


@pytest.mark.parametrize("kill_after, delay", [(0, 0.0), (7, 0.004), (30, 0.013), (12, 0.05)])
def test_sigkill_mid_run_leaves_every_listed_entry_readable(tmp_path: Path, kill_after: int, delay: float) -> None:
    _record_until_killed(tmp_path, kill_after, delay)
    run = open_run(tmp_path)
    assert run.state() == "open" and run.meta["framework"] == "crash-test"
    steps = run.steps()
    assert steps[: kill_after + 1] == list(range(kill_after + 1))  # every finished step is there
    for step in range(kill_after + 1):
        assert {e.name for e in run.entries(step=step)} == {"batch", "loss"}
    for entry in run.entries():  # and every listed entry, also of the step being written, loads
        if entry.is_tensor:
            assert run.tensor(entry).shape == entry.shape
    for name, kind in (("batch", "batch"), ("loss", "loss")):
        for step in sorted({e.step for e in run.entries(kind=kind)}):
            got, want = run.get(name, step=step, kind=kind), _expected(name, step)
            if name == "loss":
                assert torch.equal(got, want)
            else:
                assert got[0]["id"] == step and torch.equal(got[0]["image"], want[0]["image"])
                assert torch.equal(got[0]["boxes"], want[0]["boxes"])
