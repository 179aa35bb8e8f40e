"""Framework-free parts of optimizer parity: the noise band of K reference runs, the optimizer record's
comparison through a name map, and the full-model clipping wrapper of Mask DINO's build_optimizer."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from bridge import Recorder, open_run, record_optimizer
from bridge.compare import compare_runs
from bridge.compare.__main__ import main as compare_main
from bridge.compare.report_terminal import summary_line
from bridge.errors import BridgeError
from bridge.optim import clip_spec, lr_schedule

REFERENCES = ([1.00, 0.90, 0.80], [1.02, 0.93, 0.79], [0.99, 0.91, 0.82])


def _losses(run_dir: Path, values: list[float], framework: str = "detectron2") -> Path:
    with Recorder(run_dir, framework=framework) as recorder:
        for step, value in enumerate(values):
            recorder.record("losses", {"loss_cls": torch.tensor(value), "loss_box": value / 2}, step=step, kind="loss")
    return run_dir


@pytest.fixture()
def references(tmp_path: Path) -> list[Path]:
    """Three recordings of the reference (different seeds), losses at steps 0..2."""
    return [_losses(tmp_path / f"ref{k}", values) for k, values in enumerate(REFERENCES)]


def test_port_inside_the_band_passes(references: list[Path], tmp_path: Path) -> None:
    port = _losses(tmp_path / "port", [1.01, 0.92, 0.81], "mmdet")
    json_out, html_out = tmp_path / "r.json", tmp_path / "r.html"
    code = compare_main(
        [
            str(references[0]),
            str(port),
            "--band",
            str(references[1]),
            "--band",
            str(references[2]),
            "--json",
            str(json_out),
            "--html",
            str(html_out),
            "--quiet",
        ]
    )
    assert code == 0
    band = json.loads(json_out.read_text())["band"]
    assert band["passed"] and [s["key"] for s in band["series"]] == ["losses.loss_box", "losses.loss_cls"]
    cls = band["series"][1]
    assert cls["low"] == pytest.approx([0.99, 0.90, 0.79]) and cls["high"] == pytest.approx([1.02, 0.93, 0.82])
    assert cls["references"][1] == pytest.approx(REFERENCES[1]) and cls["outside"] == []
    page = html_out.read_text()
    assert "Noise band of 3 reference runs: PASS" in page and page.count("<polygon") == 2
    assert "http" not in page.split("<body>")[1]  # no external resources


def test_port_outside_the_band_fails_naming_the_step(references: list[Path], tmp_path: Path, capsys) -> None:
    port = _losses(tmp_path / "port", [1.01, 0.95, 0.81], "mmdet")
    code = compare_main([str(references[0]), str(port), "--band", str(references[1]), "--band", str(references[2])])
    out = capsys.readouterr().out
    assert code == 1 and "step 1 losses.loss_cls: 0.95 outside [0.9, 0.93]" in out
    assert "step 1 losses.loss_box: 0.475 outside [0.45, 0.465]" in out
    assert "losses outside the reference noise band" in out
    result = compare_runs(references[0], port, band_runs=references[1:], band_margin=1.0)  # width 0.03 on each side
    assert result.band.passed and result.passed and result.items == []  # losses judged by the band only


def test_band_missing_loss_and_bad_input(references: list[Path], tmp_path: Path, capsys) -> None:
    port = _losses(tmp_path / "port", [1.0, 0.9], "mmdet")
    result = compare_runs(references[0], port, band_runs=references[1:])
    assert not result.passed and "loss losses.loss_cls step 2 not recorded in every run" in result.band.missing
    code = compare_main([str(references[0]), str(port), "--band", str(tmp_path / "absent")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "absent" in err and "Traceback" not in err
    with pytest.raises(BridgeError, match="margin must be >= 0"):
        compare_runs(references[0], port, band_runs=references[1:], band_margin=-1)


class _Net(nn.Module):
    def __init__(self, head: str) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        setattr(self, head, nn.Linear(4, 2))


def _record(run_dir: Path, head: str, head_lr: float, *, clip=None, gamma: float = 0.5) -> None:
    torch.manual_seed(0)
    net = _Net(head)
    norm = list(net.norm.parameters())
    other = [p for n, p in net.named_parameters() if not n.startswith(("norm.", head))]
    optimizer = torch.optim.AdamW(
        [
            {"params": other, "lr": 1e-4, "weight_decay": 0.05},
            {"params": norm, "lr": 1e-4, "weight_decay": 0.0},
            {"params": list(getattr(net, head).parameters()), "lr": head_lr, "weight_decay": 0.05},
        ]
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2], gamma=gamma)
    schedule = lr_schedule(optimizer, scheduler.step, 3)
    with Recorder(run_dir) as recorder:
        record_optimizer(recorder, optimizer, net, 0, lr_schedule=schedule, clip=clip)


def test_optimizer_records_compared_through_a_map(tmp_path: Path) -> None:
    rules = [{"rename": {"from": r"^head\.", "to": "decoder."}}]
    _record(tmp_path / "a", "head", 1e-3, clip=clip_spec("norm", 0.01))
    _record(tmp_path / "b", "decoder", 1e-3, clip=clip_spec("norm", 0.01))
    value = open_run(tmp_path / "a").get("optimizer", step=0, kind="optim")
    assert value["type"] == "AdamW" and value["params"]["norm.weight"]["weight_decay"] == 0.0
    assert value["params"]["head.bias"]["betas"] == [0.9, 0.999] and len(value["lr_schedule"]) == 3
    assert compare_runs(tmp_path / "a", tmp_path / "b", name_map=rules).passed
    _record(tmp_path / "c", "decoder", 1e-4, clip=clip_spec("norm", 0.1))
    result = compare_runs(tmp_path / "a", tmp_path / "c", name_map=rules)
    [optim] = result.optim
    assert not result.passed and not optim.clip_equal
    lines = optim.lines()
    assert "  clipping: norm 0.01 (full_model, norm_type 2) vs norm 0.1 (full_model, norm_type 2)" in lines
    assert "  decoder.*: initial_lr 0.001 vs 0.0001 (2 parameters, e.g. decoder.weight, decoder.bias)" in lines
    assert optim.schedule_first_diff == 0
    _record(tmp_path / "d", "decoder", 1e-3, clip=clip_spec("norm", 0.01), gamma=0.1)  # decays 10x, not 2x
    [optim] = compare_runs(tmp_path / "a", tmp_path / "d", name_map=rules).optim
    assert optim.schedule_first_diff == 2 and {g.iteration for g in optim.schedule} == {2}
    assert sum(len(g.names) for g in optim.schedule) == optim.paired and optim.settings == []
    unmapped = compare_runs(tmp_path / "a", tmp_path / "b")
    assert unmapped.optim[0].a_only == ["head.weight", "head.bias"]
    assert unmapped.optim[0].b_only == ["decoder.weight", "decoder.bias"]


def test_mask_dino_full_model_clipping_wrapper_is_detected() -> None:
    from d2_side.optim import clip_setting

    def maybe_add_full_model_gradient_clipping(optim, clip_norm_val: float = 0.01):  # as Mask DINO's train_net.py
        class FullModelGradientClippingOptimizer(optim):
            def step(self, closure=None):
                all_params = itertools.chain(*[x["params"] for x in self.param_groups])
                torch.nn.utils.clip_grad_norm_(all_params, clip_norm_val)
                super().step(closure=closure)

        return FullModelGradientClippingOptimizer

    optimizer = maybe_add_full_model_gradient_clipping(torch.optim.AdamW)(nn.Linear(2, 2).parameters(), lr=1e-4)
    assert clip_setting(optimizer) == {"type": "norm", "max": 0.01, "norm_type": 2.0, "scope": "full_model"}
    assert clip_setting(torch.optim.AdamW(nn.Linear(2, 2).parameters())) is None


class _SharedNorm(nn.Module):
    """One LayerNorm reachable under two names, as Mask DINO's ``decoder_norm`` is its decoder's ``norm``."""

    def __init__(self, alias_first: bool) -> None:
        super().__init__()
        norm = nn.LayerNorm(2)
        if alias_first:
            self.decoder_norm = norm
        self.decoder = nn.Module()
        self.decoder.norm = norm
        self.head = nn.Linear(2, 2)


def test_optimizer_records_pair_a_shared_parameter_listed_under_its_alias(tmp_path: Path) -> None:
    rules = [
        {"stage": "aliases", "kind": "drop_alias", "from": r"^decoder_norm\.(.*)$", "of": "decoder.norm.{1}"},
        {"rename": {"from": r"^head\.", "to": "cls."}},
    ]
    a, b = _SharedNorm(alias_first=True), _SharedNorm(alias_first=False)
    b.cls = b.head
    del b.head
    assert [n for n, _ in a.named_parameters()][:2] == ["decoder_norm.weight", "decoder_norm.bias"]
    for run, net, norm_decay in (("a", a, 0.0), ("b", b, 0.0), ("c", b, 0.05)):
        norm = list(net.decoder.norm.parameters())
        rest = [p for p in net.parameters() if all(p is not q for q in norm)]
        optimizer = torch.optim.AdamW([{"params": norm, "weight_decay": norm_decay}, {"params": rest}], lr=1e-4)
        with Recorder(tmp_path / run) as recorder:
            record_optimizer(recorder, optimizer, net, 0)
    result = compare_runs(tmp_path / "a", tmp_path / "b", name_map=rules)
    [same] = result.optim
    assert same.passed and same.paired == 4 and same.a_only == [] and same.b_only == []
    assert (
        summary_line(result)
        == "PASS: 0 pairs, 0 failed, 0 only in A, 0 only in B, 1 optimizer record (4 parameters paired)"
    )
    [other] = compare_runs(tmp_path / "a", tmp_path / "c", name_map=rules).optim
    assert not other.passed and other.a_only == [] and other.b_only == []
    assert any("decoder.norm.*: weight_decay 0 vs 0.05 (2 parameters" in line for line in other.lines()), other.lines()
