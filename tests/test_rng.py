"""The RNG tape on plain torch: every intercepted op recorded in one process and replayed bit-exactly in
another with a different global seed; order and queue matching; mismatches, missing and left-over draws;
bad tapes; scopes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bridge import Recorder, open_run
from bridge.errors import BridgeError
from bridge.rng import RngTapeError, RngTapeLeftover, RngTapeMismatch, RngTapeMissing, load_tape, record, replay
from tests.conftest import REPO

DRAWS_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import torch.nn.functional as F
    from torch import rand as rand_imported_by_name
    from bridge import Recorder
    from bridge.rng import record, replay

    mode, run_dir, seed, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    torch.manual_seed(0)
    x = torch.ones(4, 8)
    attention = torch.nn.MultiheadAttention(8, 2, dropout=0.5)
    torch.manual_seed(seed)

    def draws():
        q = torch.ones(1, 2, 4, 8)
        return {
            "rand": torch.rand(3), "rand_by_name": rand_imported_by_name(2, 2), "randn": torch.randn(2, 3),
            "randint": torch.randint(0, 9, (4,)), "randperm": torch.randperm(7), "rand_like": torch.rand_like(x),
            "randn_like": torch.randn_like(x), "randint_like": torch.randint_like(x, 5),
            "bernoulli": torch.bernoulli(torch.full((6,), 0.5)), "bernoulli_method": torch.full((6,), 0.5).bernoulli(),
            "multinomial": torch.multinomial(torch.ones(5), 3), "multinomial_method": torch.ones(5).multinomial(2),
            "normal": torch.normal(torch.zeros(3), 1.0), "normal_sized": torch.normal(0.0, 1.0, (3,)),
            "poisson": torch.poisson(torch.ones(3)),
            "uniform_": torch.empty(5).uniform_(), "normal_": torch.empty(5).normal_(),
            "bernoulli_": torch.empty(5).bernoulli_(0.5), "random_": torch.empty(5).random_(0, 100),
            "exponential_": torch.empty(5).exponential_(), "geometric_": torch.empty(5).geometric_(0.5),
            "log_normal_": torch.empty(5).log_normal_(), "cauchy_": torch.empty(5).cauchy_(),
            "generator": torch.rand(3, generator=torch.Generator().manual_seed(seed)),
            "dropout": F.dropout(x, 0.3, True), "dropout_module": torch.nn.Dropout(0.4)(x),
            "dropout2d": F.dropout2d(torch.ones(2, 3, 4, 4), 0.5, True), "dropout1d": F.dropout1d(torch.ones(2, 3, 4), 0.5),
            "alpha_dropout": F.alpha_dropout(x, 0.3, True), "feature_alpha_dropout": F.feature_alpha_dropout(torch.ones(2, 3, 4, 4), 0.3, True),
            "attention": attention(x[None], x[None], x[None])[0],
            "attention_no_weights": attention(x[None], x[None], x[None], need_weights=False)[0],
            "sdpa": F.scaled_dot_product_attention(q, q, q, dropout_p=0.3),
            "native_dropout": torch.native_dropout(x, 0.3, True)[0],
            "float64": torch.rand(3, dtype=torch.float64), "half": torch.randn(3, dtype=torch.float16),
        }

    if mode == "record":
        with Recorder(run_dir) as recorder, record(recorder, step=0):
            values = draws()
    elif mode == "replay":
        with replay(run_dir, step=0) as tape:
            values = draws()
        assert tape.summary()[""]["left_over"] == 0, tape.summary()
    else:
        values = draws()
    torch.save(values, out)
""")


def _run(*args: str) -> None:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]


def test_every_intercepted_op_replays_bit_exactly_in_another_process(tmp_path: Path) -> None:
    script = tmp_path / "draws.py"
    script.write_text(DRAWS_SCRIPT)
    run = tmp_path / "run"
    _run(str(script), "record", str(run), "1", str(tmp_path / "recorded.pt"))
    _run(str(script), "replay", str(run), "2", str(tmp_path / "replayed.pt"))
    _run(str(script), "plain", str(run), "2", str(tmp_path / "plain_seed2.pt"))
    _run(str(script), "plain", str(run), "1", str(tmp_path / "plain_seed1.pt"))
    recorded, replayed = (
        torch.load(tmp_path / "recorded.pt", weights_only=True),
        torch.load(tmp_path / "replayed.pt", weights_only=True),
    )
    plain2, plain1 = (
        torch.load(tmp_path / "plain_seed2.pt", weights_only=True),
        torch.load(tmp_path / "plain_seed1.pt", weights_only=True),
    )
    for key in recorded:
        assert recorded[key].dtype == replayed[key].dtype, key
        assert torch.equal(recorded[key], replayed[key]), key
        assert torch.equal(recorded[key], plain1[key]), f"{key}: recording changed the value"
        if key != "generator":
            assert not torch.equal(recorded[key], plain2[key]), f"{key}: the two seeds draw the same; test cannot fail"
    ops = {draw.op for draw in load_tape(run, 0)[1]}
    assert {
        "rand",
        "randn",
        "randint",
        "randperm",
        "rand_like",
        "randn_like",
        "randint_like",
        "bernoulli",
        "multinomial",
        "normal",
        "poisson",
        "uniform_",
        "normal_",
        "bernoulli_",
        "random_",
        "exponential_",
        "geometric_",
        "log_normal_",
        "cauchy_",
    } <= ops
    draws = load_tape(run, 0)[1]
    assert all(draw.site.startswith(str(script)) for draw in draws), {d.site for d in draws}


def _draw_131() -> torch.Tensor:
    return torch.randperm(131)


def _draw_128() -> torch.Tensor:
    return torch.randperm(128)


def _record(run: Path, body, **kwargs) -> None:
    with Recorder(run) as recorder, record(recorder, **kwargs):
        body()


def test_resized_draw_names_both_call_sites(tmp_path: Path) -> None:
    _record(tmp_path / "run", _draw_131)
    with pytest.raises(RngTapeMismatch) as info:
        with replay(tmp_path / "run"):
            _draw_128()
    message = str(info.value)
    here = Path(__file__).resolve()
    line_131 = _draw_131.__code__.co_firstlineno + 1
    line_128 = _draw_128.__code__.co_firstlineno + 1
    assert f"randperm[128] int64 at {here}:{line_128}" in message
    assert f"randperm[131] int64 at {here}:{line_131}" in message
    assert "draw #0 of scope ''" in message and "step 0 rank 0" in message


def _two_draws(first_uniform: bool) -> list[torch.Tensor]:
    if first_uniform:
        return [torch.rand(3), torch.randn(4)]
    return list(reversed([torch.randn(4), torch.rand(3)]))


def test_reordered_draws_fail_in_order_mode_and_match_in_queue_mode(tmp_path: Path) -> None:
    torch.manual_seed(1)
    with Recorder(tmp_path / "run") as recorder, record(recorder):
        recorded = _two_draws(True)
    torch.manual_seed(2)
    with pytest.raises(RngTapeMismatch, match=r"randn\[4\] float32 at .*test_rng.py:\d+ where the tape has rand\[3\]"):
        with replay(tmp_path / "run"):
            _two_draws(False)
    with replay(tmp_path / "run", match="queue") as tape:
        replayed = _two_draws(False)
    assert all(torch.equal(a, b) for a, b in zip(recorded, replayed))
    assert tape.summary() == {"": {"recorded": 2, "replayed": 2, "left_over": 0}}


def test_dtype_mismatch_is_reported(tmp_path: Path) -> None:
    _record(tmp_path / "run", lambda: torch.rand(3))
    with pytest.raises(RngTapeMismatch, match=r"rand\[3\] float64 .* where the tape has rand\[3\] float32"):
        with replay(tmp_path / "run"):
            torch.rand(3, dtype=torch.float64)


def test_missing_and_left_over_draws_are_reported(tmp_path: Path) -> None:
    _record(tmp_path / "run", lambda: (torch.rand(3), torch.rand(5)))
    with pytest.raises(RngTapeMissing, match=r"draws rand\[7\] .* after all 2 draws the tape recorded"):
        with replay(tmp_path / "run"):
            torch.rand(3), torch.rand(5), torch.rand(7)
    with pytest.raises(RngTapeMissing, match=r"no such draw left there \(1 left: rand\[5\]"):
        with replay(tmp_path / "run", match="queue"):
            torch.rand(3), torch.rand(7)
    with pytest.raises(RngTapeLeftover, match=r"1 recorded draw\(s\) left over .*\{'': 1\}.*first: rand\[5\]"):
        with replay(tmp_path / "run"):
            torch.rand(3)
    with replay(tmp_path / "run", allow_left_over=True) as tape:
        torch.rand(3)
    assert tape.summary() == {"": {"recorded": 2, "replayed": 1, "left_over": 1}}
    assert [d.describe().split(" at ")[0] for d in tape.left_over()] == ["rand[5] float32"]


def test_bad_tapes_name_run_step_and_scope(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _record(run, lambda: torch.rand(3), step=2)
    with pytest.raises(
        RngTapeError, match=r"step 0 rank 0: no rng tape 'rng' for step 0 on rank 0 \(tapes at steps \[2\]\)"
    ):
        with replay(run, step=0):
            pass
    with pytest.raises(RngTapeError, match=r"the run has no rank 1 \(ranks \[0\]\)"):
        with replay(run, step=2, rank=1):
            pass
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(
        RngTapeError, match=r"step 2 rank 0: scope '0' is not on the tape, which was recorded with scopes"
    ):
        with replay(run, step=2, model=model, scopes=["0"]):
            pass
    with pytest.raises(RngTapeError, match=r"cannot read the rng tape: .*does not exist"):
        with replay(tmp_path / "nowhere"):
            pass
    tensor_file = next((run / "rank0").glob("*-s2-rng.safetensors"))
    tensor_file.write_bytes(tensor_file.read_bytes()[:-7])
    with pytest.raises(RngTapeError, match=r"step 2 rank 0: rng tape unreadable \(truncated or corrupt\)"):
        with replay(run, step=2):
            pass


class _Drawer(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand(self.n)


class _Net(nn.Module):
    def __init__(self, names: tuple[str, str]) -> None:
        super().__init__()
        self.add_module(names[0], _Drawer(3))
        self.add_module(names[1], _Drawer(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(3)
        for module in self.children():
            x = module(x)
        return x + noise


def test_scopes_record_only_matching_modules_and_pair_by_label(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net_a = _Net(("head", "criterion"))
    with Recorder(tmp_path / "run") as recorder, record(recorder, model=net_a, scopes={"loss": "crit*"}) as rec:
        torch.manual_seed(1)
        out_a = net_a(torch.zeros(3))
    assert rec.summary() == {"loss": {"recorded": 1, "replayed": 0, "left_over": 0}}
    draws = load_tape(tmp_path / "run", 0)[1]
    assert [(d.scope, d.module, d.op) for d in draws] == [("loss", "criterion", "rand")]
    net_b = _Net(("predictor", "panoptic_criterion"))
    with replay(tmp_path / "run", model=net_b, scopes={"loss": "panoptic_criterion"}) as tape:
        torch.manual_seed(1)
        out_b = net_b(torch.zeros(3))
    assert torch.equal(out_a, out_b)  # same seed outside the scope, the tape inside it
    assert tape.summary() == {"loss": {"recorded": 1, "replayed": 1, "left_over": 0}}
    with replay(tmp_path / "run", model=net_b, scopes={"loss": "panoptic_criterion"}):
        torch.manual_seed(2)
        out_other = net_b(torch.zeros(3))
    assert not torch.equal(out_a, out_other)  # draws outside the scope are not replayed
    with pytest.raises(BridgeError, match=r"rng scope 'loss': globs \['nothing'\] match no module of _Net"):
        with replay(tmp_path / "run", model=net_b, scopes={"loss": "nothing"}):
            pass
    with pytest.raises(BridgeError, match=r"rng scopes 'a' and 'b' both match module 'predictor'"):
        _record(tmp_path / "run2", lambda: None, model=net_b, scopes={"a": "pred*", "b": "p*"})
    with pytest.raises(BridgeError, match="need the model"):
        _record(tmp_path / "run3", lambda: None, scopes=["criterion"])


def test_tape_lives_in_the_run_as_kind_rng(tmp_path: Path) -> None:
    _record(tmp_path / "run", lambda: F.dropout(torch.ones(2, 3), 0.5, True), step=3)
    run = open_run(tmp_path / "run")
    assert run.steps() == [3] and {e.kind for e in run.entries()} == {"rng"}
    (draw,) = load_tape(tmp_path / "run", 3)[1]
    assert (draw.op, draw.shape, draw.dtype, draw.device, draw.value.dtype) == (
        "bernoulli_",
        (2, 3),
        "float32",
        "cpu",
        torch.bool,
    )


def test_values_land_on_the_replaying_draws_own_tensor(tmp_path: Path) -> None:
    def draws() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = torch.empty(2)
        torch.rand(2, out=out)
        return torch.randn(3, requires_grad=True), out, torch.rand(())

    with Recorder(tmp_path / "run") as recorder, record(recorder):
        recorded = draws()
    with replay(tmp_path / "run"):
        replayed = draws()
    assert replayed[0].requires_grad and replayed[0].is_leaf
    assert all(torch.equal(a, b) for a, b in zip(recorded, replayed))


class _CallOverride(nn.Module):
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand(3)


def test_modules_that_override_call_cannot_be_scopes_but_the_model_can(tmp_path: Path) -> None:
    net = nn.Sequential(_CallOverride())
    with pytest.raises(BridgeError, match=r"module '0' \(_CallOverride\) overrides __call__"):
        _record(tmp_path / "bad", lambda: None, model=net, scopes=["0"])
    with Recorder(tmp_path / "run") as recorder, record(recorder, model=net, scopes={"model": ""}) as tape:
        net(torch.zeros(3))
    assert tape.summary() == {"model": {"recorded": 1, "replayed": 0, "left_over": 0}}
    assert [(d.scope, d.module) for d in load_tape(tmp_path / "run", 0)[1]] == [("model", "")]
