"""Layer-local check on the demo pair (detectron2 PanopticFPN R50 vs mmdet PanopticFPN, converted weights):
a weight perturbed in one mmdet FPN conv shows local error only there, end-to-end error after it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bridge import Recorder, open_run
from bridge.compare import compare_runs
from bridge.compare.local_entries import local_rows, origin
from bridge.convert import convert_state_dict, load_rules
from bridge.local.__main__ import run_local
from bridge.local.pairing import load_local_map, pair_module
from bridge.taps import ModelTaps

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("panoptic_fpn_demo", REPO / "examples" / "panoptic_fpn_demo.py")
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)

D2_MODULES = ["backbone.fpn_lateral?", "backbone.fpn_output?", "proposal_generator.rpn_head.objectness_logits",
              "proposal_generator.rpn_head.anchor_deltas", "roi_heads.box_head.fc?",
              "roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred"]
MMDET_MODULES = ["neck.lateral_convs.*.conv", "neck.fpn_convs.*.conv", "rpn_head.rpn_cls", "rpn_head.rpn_reg",
                 "roi_head.bbox_head.shared_fcs.*", "roi_head.bbox_head.fc_cls", "roi_head.bbox_head.fc_reg"]
FAULTY = "neck.fpn_convs.1.conv.weight"  # detectron2's backbone.fpn_output3
MMDET_CONFIG = """_base_ = 'mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py'
model = dict(backbone=dict(style='caffe', init_cfg=None, norm_cfg=dict(type='BN', requires_grad=False)),
             data_preprocessor=dict(mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False))
"""


def _side_b(root: Path, label: str, state: dict[str, torch.Tensor], batch: list[dict]) -> None:
    """mmdet's own run (``root/mmdet_LABEL``) and the local run (``root/local_LABEL``) for the checkpoint ``state``."""
    from mmdet_side.replay import d2_inputs_to_mmdet

    torch.save(state, root / f"{label}.pth")
    mm_model = demo.build_mmdet_like_d2()
    mm_model.load_state_dict(state, strict=True)
    with Recorder(root / f"mmdet_{label}", framework="mmdet") as recorder, torch.no_grad():
        data = mm_model.data_preprocessor(d2_inputs_to_mmdet(batch), False)
        taps = ModelTaps(mm_model, recorder, lambda: 0, activations=MMDET_MODULES)
        mm_model.predict(data["inputs"], data["data_samples"])
        taps.remove()
    statuses = run_local(str(root / "d2"), "mmdet", str(root / "mmdet_config.py"), str(root / f"{label}.pth"),
                         [demo.PRESET], str(root / f"local_{label}"))
    assert [s for s in statuses if s["status"] != "ok"] == []


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run A (detectron2, inputs + activations); mmdet's runs and local runs on the correct checkpoint and on one
    with a perturbed FPN conv."""
    from d2_side.hooks import record_inference

    root = tmp_path_factory.mktemp("local")
    _cfg, d2_model = demo.build_d2(0, 128)
    torch.manual_seed(1)
    batch = [{"image": (torch.rand(3, 128, 160) * 255).round(), "height": 128, "width": 160, "image_id": 0}]
    with Recorder(root / "d2", framework="detectron2") as recorder:
        record_inference(d2_model, [batch], recorder, activations=D2_MODULES, inputs=D2_MODULES)
    (root / "mmdet_config.py").write_text(MMDET_CONFIG, encoding="utf-8")
    torch.save(d2_model.state_dict(), root / "d2.pth")
    state = convert_state_dict(d2_model.state_dict(), load_rules(demo.PRESET)).state_dict
    _side_b(root, "clean", state, batch)
    faulty = dict(state)
    faulty[FAULTY] = state[FAULTY] + 0.05 * state[FAULTY].abs().max()
    _side_b(root, "faulty", faulty, batch)
    return {"root": root, "a": root / "d2", "b": root / "mmdet_faulty", "local": root / "local_faulty",
            "b_clean": root / "mmdet_clean", "local_clean": root / "local_clean"}


def test_inputs_recorded_per_call_beside_activation(pair: dict[str, Path]) -> None:
    """Every call of a shared module (the RPN's objectness conv, once per level) has its own input record."""
    run = open_run(pair["a"])
    inputs = {e.name for e in run.entries(kind="input")}
    activations = {e.name for e in run.entries(kind="activation")}
    rpn = sorted(n for n in inputs if n.startswith("proposal_generator.rpn_head.objectness_logits"))
    assert len(rpn) == 5 and inputs == activations
    first = run.get("proposal_generator.rpn_head.objectness_logits", step=0, kind="input")
    second = run.get("proposal_generator.rpn_head.objectness_logits#1", step=0, kind="input")
    assert first["training"] is False and first["args"][0].shape[-2:] != second["args"][0].shape[-2:]


def test_pairing_from_conversion_rules() -> None:
    """Module names pair like their parameters; a `modules:` rule adds a parameter-free container."""
    mapping = load_local_map([demo.PRESET])
    assert pair_module("backbone.fpn_output2", mapping) == "neck.fpn_convs.0.conv"
    assert pair_module("proposal_generator.rpn_head.objectness_logits#3", mapping) == "rpn_head.rpn_cls#3"


def test_fault_is_local_only_in_the_seeded_module(pair: dict[str, Path]) -> None:
    """Local error only in fpn_output3 (the origin); its end-to-end error reaches the RPN's level-3 call."""
    rows = local_rows(pair["a"], pair["b"], pair["local"])  # paired as the replay paired them (local_pairs)
    assert rows == local_rows(pair["a"], pair["b"], pair["local"], demo.PRESET)
    by_name = {row.name_a: row for row in rows}
    for row in rows:
        print(row.name_a, row.name_b, row.end_to_end, row.local, row.verdict)
    assert [row.name_a for row in rows if row.local_ok is False] == ["backbone.fpn_output3"]
    assert origin(rows).name_b == "neck.fpn_convs.1.conv"
    for name in ("proposal_generator.rpn_head.objectness_logits#1", "proposal_generator.rpn_head.anchor_deltas#1"):
        assert by_name[name].end_to_end_ok is False and by_name[name].verdict == "inherited"
    for name in ("backbone.fpn_output2", "backbone.fpn_lateral3", "proposal_generator.rpn_head.objectness_logits"):
        assert by_name[name].verdict == "ok"
    assert all(row.local is not None for row in rows)


def test_correct_checkpoint_has_no_local_error(pair: dict[str, Path]) -> None:
    """With the correct conversion every local error is 0 or float noise, and no module is an origin; the
    difference the pair has anyway is inherited by the box head from code outside the recorded modules."""
    rows = local_rows(pair["a"], pair["b_clean"], pair["local_clean"], demo.PRESET)
    for row in rows:
        print(row.name_a, row.name_b, row.end_to_end, row.local, row.verdict)
    assert rows and all(row.local_ok for row in rows) and origin(rows) is None
    assert max(row.local for row in rows) < 1e-3
    # the pair's own difference (proposal selection/decoding between the RPN's convs and the box head, in
    # parameter-free code): every RPN call agrees end to end, the box head's calls only inherit a difference
    assert all(row.verdict == "ok" for row in rows if row.name_a.startswith("proposal_generator."))
    assert {row.verdict for row in rows if row.name_a.startswith("roi_heads.")} == {"inherited"}


def test_compare_cli_names_the_origin(pair: dict[str, Path]) -> None:
    """`bridge.compare A B --local RUN_LOCAL` prints the table and the origin; input records stay out of the
    leaf-by-leaf pairing (nothing 'only in A' from them)."""
    proc = subprocess.run([sys.executable, "-m", "bridge.compare", str(pair["a"]), str(pair["b"]), "--map", demo.PRESET,
                           "--local", str(pair["local"]), "--quiet"],
                          capture_output=True, text=True, cwd=REPO)
    assert "origin: backbone.fpn_output3 -> neck.fpn_convs.1.conv" in proc.stdout, proc.stdout + proc.stderr
    assert "inherited" in proc.stdout
    result = compare_runs(pair["a"], pair["b"], name_map=demo.PRESET)
    assert not [loc for loc in result.a_only + result.by_nature if loc.kind == "input"]


def test_local_cli_bad_input(tmp_path: Path) -> None:
    """A run without inputs or an unknown side: one error line, exit 2, nothing written."""
    with Recorder(tmp_path / "a", framework="detectron2") as recorder:
        recorder.record("x", torch.ones(2), step=0, kind="activation")
    for side in ("mmdet", "paddle"):
        proc = subprocess.run([sys.executable, "-m", "bridge.local", str(tmp_path / "a"), "--model-side", side,
                               "cfg.py", "ckpt.pth", "-o", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
        assert not (tmp_path / "out").exists()


def test_detectron2_as_side_b(pair: dict[str, Path]) -> None:
    """detectron2 replays its own recorded inputs (d2_side.local, model-zoo config + opts): every local error is 0."""
    root = pair["root"]
    statuses = run_local(str(pair["a"]), "detectron2", demo.D2_CONFIG, str(root / "d2.pth"), [], str(root / "local_d2"),
                         opts=["INPUT.MIN_SIZE_TEST", "128"])
    assert {s["status"] for s in statuses} == {"ok"}
    rows = local_rows(pair["a"], pair["a"], root / "local_d2")
    assert rows and all(row.local == 0.0 and row.verdict == "ok" for row in rows)


def test_module_and_argument_rules_from_a_map_file(tmp_path: Path) -> None:
    """A `modules:` / `arguments:` file beside the preset: module rules first, arguments renamed (a position
    becomes a keyword); a bad section is one clear error."""
    from bridge.errors import FormatError
    from bridge.local.pairing import argument_renames
    from bridge.local.replay import apply_renames

    extra = tmp_path / "extra.yaml"
    extra.write_text("modules:\n  - {from: '^roi_heads\\.box_head$', to: 'roi_head.bbox_head'}\n"
                     "arguments:\n  - {module: 'roi_heads.*', rename: {src_key_padding_mask: key_padding_mask, '1': y}}\n",
                     encoding="utf-8")
    mapping = load_local_map([demo.PRESET, str(extra)])
    assert pair_module("roi_heads.box_head#2", mapping) == "roi_head.bbox_head#2"
    assert pair_module("backbone.fpn_lateral4", mapping) == "neck.lateral_convs.2.conv"
    renames = argument_renames("roi_heads.box_head#1", mapping)
    assert apply_renames(["x", "second"], {"src_key_padding_mask": None}, renames) == \
        (["x"], {"key_padding_mask": None, "y": "second"})
    extra.write_text("modules:\n  - {from: '^a'}\n", encoding="utf-8")
    with pytest.raises(FormatError, match="modules: each item needs"):
        load_local_map([str(extra)])


def test_training_mode_replay_restores_buffers(tmp_path: Path) -> None:
    """A call recorded in training mode replays in training mode (batch statistics) and leaves B's BatchNorm
    statistics and mode as they were."""
    from bridge.local.replay import replay_pairs

    torch.manual_seed(0)
    model_a = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3)).train()
    with Recorder(tmp_path / "a") as recorder:
        taps = ModelTaps(model_a, recorder, lambda: 0, activations=["1"], inputs=["1"])
        model_a(torch.randn(4, 2, 5, 5))
        taps.remove()
    model_b = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3)).eval()
    model_b.load_state_dict(model_a.state_dict())
    before = {k: v.clone() for k, v in model_b.state_dict().items()}
    with Recorder(tmp_path / "local") as recorder:
        statuses = replay_pairs(model_b, open_run(tmp_path / "a"), [{"step": 0, "name_a": "1", "name_b": "1",
                                                                     "renames": {}}], recorder, torch.device("cpu"))
    assert statuses[0]["status"] == "ok" and not model_b.training
    assert all(torch.equal(before[k], v) for k, v in model_b.state_dict().items())
    out_a = open_run(tmp_path / "a").get("1", step=0, kind="activation")
    assert torch.allclose(open_run(tmp_path / "local").get("1", step=0, kind="local"), out_a, atol=1e-6)


class _NormEvalNet(torch.nn.Module):
    """A parent whose ``train()`` keeps its BatchNorm in eval mode, as mmdet's ResNet does with ``norm_eval``."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3))

    def train(self, mode: bool = True) -> "_NormEvalNet":
        super().train(mode)
        self.layer[1].eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def test_training_mode_replay_honours_the_parents_train_override(tmp_path: Path) -> None:
    """A submodule replayed in training mode runs as it does inside its model: the root is switched, so a
    parent's ``train()`` override (norm_eval) holds; every mode is restored afterwards."""
    from bridge.local.replay import replay_pairs

    torch.manual_seed(0)
    model_a = _NormEvalNet()
    with torch.no_grad():
        model_a.layer[1].running_mean.uniform_(-1, 1)
        model_a.layer[1].running_var.uniform_(0.5, 2)
    model_a.train()
    with Recorder(tmp_path / "a") as recorder:
        taps = ModelTaps(model_a, recorder, lambda: 0, activations=["layer"], inputs=["layer"])
        model_a(torch.randn(4, 2, 5, 5))
        taps.remove()
    model_b = _NormEvalNet()
    model_b.load_state_dict(model_a.state_dict())
    model_b.eval()
    with Recorder(tmp_path / "local") as recorder:
        statuses = replay_pairs(model_b, open_run(tmp_path / "a"), [{"step": 0, "name_a": "layer", "name_b": "layer",
                                                                     "renames": {}}], recorder, torch.device("cpu"))
    assert statuses[0]["status"] == "ok"
    assert not any(m.training for m in model_b.modules())
    out_a = open_run(tmp_path / "a").get("layer", step=0, kind="activation")
    assert torch.equal(open_run(tmp_path / "local").get("layer", step=0, kind="local"), out_a)
