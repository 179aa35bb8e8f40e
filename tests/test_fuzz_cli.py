"""Fuzz every CLI in-process with generated hostile inputs (hypothesis, bounded): the contract of issue 21.

Each example writes hostile inputs (``tests/fuzz_cases.py``) into a fresh directory and runs one CLI's
``main(argv)``: the exit status is 0, 1 or 2, nothing escapes as a traceback, an exit 2 prints an
``error:`` line and writes nothing, inputs stay byte-identical, only the named outputs appear and JSON
outputs are whole. ``benchmarks/fuzz_cli.py`` runs the same generators for thousands of cases.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_cases import GENERATORS, check_case, make_case

#: Examples per CLI: bounded so the whole file takes well under two minutes.
EXAMPLES = 150


@pytest.mark.parametrize("cli", sorted(GENERATORS))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(rng=st.randoms(use_true_random=False))
def test_cli_keeps_the_contract(cli: str, rng: random.Random) -> None:
    with tempfile.TemporaryDirectory(prefix=f"fuzz_{cli}_") as workdir:
        case = make_case(rng, Path(workdir), cli)
        assert check_case(case) == []
        assert case.code in (0, 1, 2)


def test_the_check_sees_a_broken_contract(tmp_path: Path) -> None:
    """The contract check itself fails a command that overwrites its input, crashes or exits 2 silently."""
    from tests.fuzz_cases import Case

    (tmp_path / "in.txt").write_text("x")

    def overwrite(argv):
        (tmp_path / "in.txt").write_text("y")
        return 0

    def crash(argv):
        raise ValueError("boom")

    def silent(argv):
        (tmp_path / "stray.json").write_text("{")
        return 2

    assert "input in.txt changed" in check_case(Case("o", overwrite, [], tmp_path))[0]
    assert "exception escaped main" in check_case(Case("c", crash, [], tmp_path))[0]
    broken = " ".join(check_case(Case("s", silent, [], tmp_path)))
    assert "without an error: line" in broken and "although it exited 2" in broken
