"""Layer-local check on the demo pair (detectron2 PanopticFPN R50 vs mmdet PanopticFPN, converted weights):
a weight perturbed in one mmdet FPN conv shows local error only there, end-to-end error after it; the box
coders' difference (mmdet clamps the log-size deltas from below too) is local to the decoding functions."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bridge import Recorder, open_run
from bridge.compare import compare_runs
from bridge.compare.local_entries import local_rows, local_section, origin
from bridge.compare.report_json import to_dict
from bridge.convert import convert_state_dict, load_rules
from bridge.local.__main__ import run_local
from bridge.local.pairing import load_local_map, pair_module
from bridge.taps import ModelTaps

REPO = Path(__file__).resolve().parents[1]
PRESET = "d2-panoptic-fpn-to-mmdet"
D2_CONFIG = "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"

D2_MODULES = [
    "backbone.fpn_lateral?",
    "backbone.fpn_output?",
    "proposal_generator.rpn_head.objectness_logits",
    "proposal_generator.rpn_head.anchor_deltas",
    "roi_heads.box_head.fc?",
    "roi_heads.box_predictor.cls_score",
    "roi_heads.box_predictor.bbox_pred",
]
MMDET_MODULES = [
    "neck.lateral_convs.*.conv",
    "neck.fpn_convs.*.conv",
    "rpn_head.rpn_cls",
    "rpn_head.rpn_reg",
    "roi_head.bbox_head.shared_fcs.*",
    "roi_head.bbox_head.fc_cls",
    "roi_head.bbox_head.fc_reg",
]
D2_FUNCTIONS = {
    "rpn_decode": "proposal_generator.box2box_transform.apply_deltas",
    "box_decode": "roi_heads.box_predictor.box2box_transform.apply_deltas",
}
MMDET_FUNCTIONS = {"rpn_decode": "rpn_head.bbox_coder.decode", "box_decode": "roi_head.bbox_head.bbox_coder.decode"}
# detectron2's apply_deltas(deltas, boxes) against mmdet's decode(bboxes, pred_bboxes, max_shape=None)
FUNCTION_MAP = (
    f"functions: {json.dumps(MMDET_FUNCTIONS)}\n"
    "arguments:\n  - {module: '*_decode', rename: {'0': pred_bboxes, '1': bboxes}}\n"
)
D2_BOX_WEIGHTS = {"rpn_decode": (1.0, 1.0, 1.0, 1.0), "box_decode": (10.0, 10.0, 5.0, 5.0)}
FAULTY = "neck.fpn_convs.1.conv.weight"  # detectron2's backbone.fpn_output3
MMDET_CONFIG = """_base_ = 'mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py'
model = dict(backbone=dict(style='caffe', init_cfg=None, norm_cfg=dict(type='BN', requires_grad=False)),
             data_preprocessor=dict(mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False))
"""


def _build_d2(size: int) -> torch.nn.Module:
    """detectron2's PanopticFPN R50 on the CPU, random weights from seed 0, test size ``size``, eval mode."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(D2_CONFIG))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.WEIGHTS",
            "",
            "INPUT.MIN_SIZE_TEST",
            str(size),
            "INPUT.MAX_SIZE_TEST",
            str(size * 2),
        ]
    )
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _is_function(name: str) -> bool:
    return name.split("#", 1)[0] in D2_FUNCTIONS


def _side_b(root: Path, label: str, state: dict[str, torch.Tensor], batch: list[dict]) -> None:
    """mmdet's own run (``root/mmdet_LABEL``) and the local run (``root/local_LABEL``) for the checkpoint ``state``."""
    from mmdet_side.replay import d2_inputs_to_mmdet
    from mmdet_side.target import build_model

    torch.save(state, root / f"{label}.pth")
    mm_model = build_model(str(root / "mmdet_config.py")).eval()
    mm_model.load_state_dict(state, strict=True)
    with Recorder(root / f"mmdet_{label}", framework="mmdet") as recorder, torch.no_grad():
        data = mm_model.data_preprocessor(d2_inputs_to_mmdet(batch), False)
        taps = ModelTaps(mm_model, recorder, lambda: 0, activations=MMDET_MODULES, functions=MMDET_FUNCTIONS)
        mm_model.predict(data["inputs"], data["data_samples"])
        taps.remove()
    statuses = run_local(
        str(root / "d2"),
        "mmdet",
        str(root / "mmdet_config.py"),
        str(root / f"{label}.pth"),
        [PRESET, str(root / "functions.yaml")],
        str(root / f"local_{label}"),
    )
    assert [s for s in statuses if s["status"] != "ok"] == []


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run A (detectron2, inputs + activations); mmdet's runs and local runs on the correct checkpoint and on one
    with a perturbed FPN conv."""
    from d2_side.hooks import record_inference

    root = tmp_path_factory.mktemp("local")
    d2_model = _build_d2(128)
    torch.manual_seed(1)
    batch = [{"image": (torch.rand(3, 128, 160) * 255).round(), "height": 128, "width": 160, "image_id": 0}]
    with Recorder(root / "d2", framework="detectron2") as recorder:
        record_inference(d2_model, [batch], recorder, activations=D2_MODULES, inputs=D2_MODULES, functions=D2_FUNCTIONS)
    (root / "mmdet_config.py").write_text(MMDET_CONFIG, encoding="utf-8")
    (root / "functions.yaml").write_text(FUNCTION_MAP, encoding="utf-8")
    torch.save(d2_model.state_dict(), root / "d2.pth")
    state = convert_state_dict(d2_model.state_dict(), load_rules(PRESET)).state_dict
    _side_b(root, "clean", state, batch)
    faulty = dict(state)
    faulty[FAULTY] = state[FAULTY] + 0.05 * state[FAULTY].abs().max()
    _side_b(root, "faulty", faulty, batch)
    return {
        "root": root,
        "a": root / "d2",
        "b": root / "mmdet_faulty",
        "local": root / "local_faulty",
        "b_clean": root / "mmdet_clean",
        "local_clean": root / "local_clean",
    }


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
    mapping = load_local_map([PRESET])
    assert pair_module("backbone.fpn_output2", mapping) == "neck.fpn_convs.0.conv"
    assert pair_module("proposal_generator.rpn_head.objectness_logits#3", mapping) == "rpn_head.rpn_cls#3"


def test_fault_is_local_only_in_the_seeded_module(pair: dict[str, Path]) -> None:
    """Local error only in fpn_output3 (the origin); its end-to-end error reaches the RPN's level-3 call."""
    rows = local_rows(pair["a"], pair["b"], pair["local"])  # paired as the replay paired them (local_pairs)
    assert rows == local_rows(pair["a"], pair["b"], pair["local"], PRESET)
    by_name = {row.name_a: row for row in rows}
    for row in rows:
        print(row.name_a, row.name_b, row.end_to_end, row.local, row.verdict)
    assert [row.name_a for row in rows if row.local_ok is False and not _is_function(row.name_a)] == [
        "backbone.fpn_output3"
    ]
    assert origin(rows).name_b == "neck.fpn_convs.1.conv"
    for name in ("proposal_generator.rpn_head.objectness_logits#1", "proposal_generator.rpn_head.anchor_deltas#1"):
        assert by_name[name].end_to_end_ok is False and by_name[name].verdict == "inherited"
    for name in ("backbone.fpn_output2", "backbone.fpn_lateral3", "proposal_generator.rpn_head.objectness_logits"):
        assert by_name[name].verdict == "ok"
    assert all(row.local is not None for row in rows)


def test_correct_checkpoint_has_no_local_error_in_modules(pair: dict[str, Path]) -> None:
    """With the correct conversion every module's local error is 0 or float noise: no module is an origin; the
    box head's layers only inherit a difference (another number of proposals)."""
    rows = [
        row
        for row in local_rows(pair["a"], pair["b_clean"], pair["local_clean"], PRESET)
        if not _is_function(row.name_a)
    ]
    for row in rows:
        print(row.name_a, row.name_b, row.end_to_end, row.local, row.verdict)
    assert rows and all(row.local_ok for row in rows)
    assert max(row.local for row in rows) < 1e-3
    assert all(row.verdict == "ok" and row.local == 0.0 for row in rows if row.name_a.startswith("proposal_generator."))
    assert {row.verdict for row in rows if row.name_a.startswith("roi_heads.")} == {"inherited"}


def _d2_decode_with_lower_clamp(name: str, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """detectron2's apply_deltas with mmdet's lower clamp of the log-size deltas (-log(1000/16)) added."""
    from detectron2.modeling.box_regression import Box2BoxTransform

    weights = D2_BOX_WEIGHTS[name.split("#", 1)[0]]
    clamped = deltas.clone()
    for column, weight in ((2, weights[2]), (3, weights[3])):
        clamped[:, column::4] = clamped[:, column::4].clamp(min=-math.log(1000 / 16) * weight)
    return Box2BoxTransform(weights).apply_deltas(clamped, boxes)


def test_box_coder_difference_is_local_to_the_decoding(pair: dict[str, Path]) -> None:
    """The demo's box-coder difference, located: the RPN's convs have no local error, the RPN's decoding does
    (the origin: its first call, level p2), every later decoding call (p3..p6, the box head's) has its own.
    mmdet's decode on detectron2's arguments is detectron2's decoding plus a lower clamp of the log-size
    deltas, nothing else: equal where no delta is below -log(1000/16), different where one is."""
    rows = local_rows(pair["a"], pair["b_clean"], pair["local_clean"])
    for row in rows:
        print(row.name_a, row.name_b, row.end_to_end, row.local, row.verdict)
    found = origin(rows)
    assert (found.name_a, found.name_b) == ("rpn_decode", "rpn_decode") and found.local > 1e-4
    decoding = [f"rpn_decode{mark}" for mark in ("", "#1", "#2", "#3", "#4")] + ["box_decode"]
    assert [row.name_a for row in rows if row.local_ok is False] == decoding
    assert all(row.local == 0.0 for row in rows if row.name_a.startswith("proposal_generator.rpn_head."))
    by_name = {row.name_a: row for row in rows}
    assert by_name["rpn_decode"].end_to_end == math.inf  # mmdet decodes the top 1000 of each level, in one call
    run_a, run_local = open_run(pair["a"]), open_run(pair["local_clean"])
    for name in decoding:
        deltas, boxes = run_a.get(name, step=0, kind="input")["args"]
        out_a = run_a.get(name, step=0, kind="activation").reshape(-1, 4)
        out_b = run_local.get(name, step=0, kind="local").reshape(-1, 4)
        weights = torch.tensor(D2_BOX_WEIGHTS[name.split("#", 1)[0]])
        below = ((deltas.reshape(-1, 4) / weights)[:, 2:] < -math.log(1000 / 16)).any(1)
        assert 0 < int(below.sum()) < len(below)
        assert torch.allclose(
            out_b, _d2_decode_with_lower_clamp(name, deltas, boxes).reshape(-1, 4), atol=1e-4, rtol=1e-5
        )
        assert torch.allclose(out_a[~below], out_b[~below], atol=1e-4, rtol=1e-5)
        assert not torch.allclose(out_a[below], out_b[below], atol=1e-4, rtol=1e-5)


def test_compare_cli_names_the_origin(pair: dict[str, Path], tmp_path: Path) -> None:
    """`bridge.compare A B --local RUN_LOCAL` prints the table and the origin, and puts both into the JSON
    (`local`) and HTML reports; input records stay out of the leaf-by-leaf pairing (nothing 'only in A')."""
    out_json, out_html = tmp_path / "compare.json", tmp_path / "compare.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.compare",
            str(pair["a"]),
            str(pair["b"]),
            "--map",
            PRESET,
            "--local",
            str(pair["local"]),
            "--quiet",
            "--json",
            str(out_json),
            "--html",
            str(out_html),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert "origin: backbone.fpn_output3 -> neck.fpn_convs.1.conv" in proc.stdout, proc.stdout + proc.stderr
    assert "inherited" in proc.stdout
    local = json.loads(out_json.read_text(encoding="utf-8"))["local"]
    rows = local_rows(pair["a"], pair["b"], pair["local"])
    assert local == json.loads(json.dumps(local_section(rows)))
    assert (local["atol"], local["rtol"]) == (1e-4, 1e-4)
    assert (local["origin"]["name_a"], local["origin"]["name_b"]) == ("backbone.fpn_output3", "neck.fpn_convs.1.conv")
    assert local["origin"]["local"] > 1e-4 and local["origin"]["verdict"] == "origin"
    by_name = {row["name_a"]: row for row in local["rows"]}
    assert len(by_name) == len(rows) and by_name["rpn_decode"]["end_to_end"] == "shape"
    assert by_name["rpn_decode#1"]["end_to_end"] is None and by_name["rpn_decode#1"]["local"] > 1e-4
    assert by_name["backbone.fpn_output2"] | {"end_to_end": 0.0, "local": 0.0} == by_name["backbone.fpn_output2"]
    page = out_html.read_text(encoding="utf-8")
    assert '<table id="local">' in page and "origin: backbone.fpn_output3 -&gt; neck.fpn_convs.1.conv" in page
    assert page.count('<tr class="bad"><td>0</td><td class="l">') == sum(row.local_ok is False for row in rows)
    result = compare_runs(pair["a"], pair["b"], name_map=PRESET)
    assert to_dict(result)["local"] is None
    assert not [loc for loc in result.a_only + result.by_nature if loc.kind == "input"]


def test_local_cli_bad_input(tmp_path: Path) -> None:
    """A run without inputs or an unknown side: one error line, exit 2, nothing written."""
    with Recorder(tmp_path / "a", framework="detectron2") as recorder:
        recorder.record("x", torch.ones(2), step=0, kind="activation")
    for side in ("mmdet", "paddle"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "bridge.local",
                str(tmp_path / "a"),
                "--model-side",
                side,
                "cfg.py",
                "ckpt.pth",
                "-o",
                str(tmp_path / "out"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
        assert not (tmp_path / "out").exists()


def test_detectron2_as_side_b(pair: dict[str, Path]) -> None:
    """detectron2 replays its own recorded inputs (d2_side.local, model-zoo config + opts), functions included:
    every local error is 0."""
    root = pair["root"]
    (root / "d2_functions.yaml").write_text(f"functions: {json.dumps(D2_FUNCTIONS)}\n", encoding="utf-8")
    statuses = run_local(
        str(pair["a"]),
        "detectron2",
        D2_CONFIG,
        str(root / "d2.pth"),
        [str(root / "d2_functions.yaml")],
        str(root / "local_d2"),
        opts=["INPUT.MIN_SIZE_TEST", "128"],
    )
    assert {s["status"] for s in statuses} == {"ok"}
    rows = local_rows(pair["a"], pair["a"], root / "local_d2")
    assert rows and all(row.local == 0.0 and row.verdict == "ok" for row in rows)
    assert {"rpn_decode#4", "box_decode"} <= {row.name_a for row in rows}


def test_module_and_argument_rules_from_a_map_file(tmp_path: Path) -> None:
    """A `modules:` / `arguments:` file beside the preset: module rules first, arguments renamed (a position
    becomes a keyword); a bad section is one clear error."""
    from bridge.errors import FormatError
    from bridge.local.pairing import argument_renames
    from bridge.local.replay import apply_renames

    extra = tmp_path / "extra.yaml"
    extra.write_text(
        "modules:\n  - {from: '^roi_heads\\.box_head$', to: 'roi_head.bbox_head'}\n"
        "arguments:\n  - {module: 'roi_heads.*', rename: {src_key_padding_mask: key_padding_mask, '1': y}}\n",
        encoding="utf-8",
    )
    mapping = load_local_map([PRESET, str(extra)])
    assert pair_module("roi_heads.box_head#2", mapping) == "roi_head.bbox_head#2"
    assert pair_module("backbone.fpn_lateral4", mapping) == "neck.lateral_convs.2.conv"
    renames = argument_renames("roi_heads.box_head#1", mapping)
    assert apply_renames(["x", "second"], {"src_key_padding_mask": None}, renames) == (
        ["x"],
        {"key_padding_mask": None, "y": "second"},
    )
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
        statuses = replay_pairs(
            model_b,
            open_run(tmp_path / "a"),
            [{"step": 0, "name_a": "1", "name_b": "1", "renames": {}}],
            recorder,
            torch.device("cpu"),
        )
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
        statuses = replay_pairs(
            model_b,
            open_run(tmp_path / "a"),
            [{"step": 0, "name_a": "layer", "name_b": "layer", "renames": {}}],
            recorder,
            torch.device("cpu"),
        )
    assert statuses[0]["status"] == "ok"
    assert not any(m.training for m in model_b.modules())
    out_a = open_run(tmp_path / "a").get("layer", step=0, kind="activation")
    assert torch.equal(open_run(tmp_path / "local").get("layer", step=0, kind="local"), out_a)


class _CoderA:
    """A parameter-free box coder: ``decode(boxes, deltas, scale)``."""

    def decode(self, boxes: torch.Tensor, deltas: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return boxes + deltas * scale


class _CoderB:
    """The same coder with the arguments the other way round, as mmdet's ``decode(bboxes, pred_bboxes)``."""

    def decode(self, deltas: torch.Tensor, boxes: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return boxes + deltas * scale


class _Head(torch.nn.Module):
    def __init__(self, coder: object) -> None:
        super().__init__()
        self.reg = torch.nn.Linear(4, 4)
        self.coder = coder

    def forward(self, boxes: torch.Tensor) -> torch.Tensor:
        return self.coder.decode(boxes, self.reg(boxes)) + self.coder.decode(boxes, boxes, scale=2.0)


def test_functions_recorded_per_call_and_replayed_with_renamed_arguments(tmp_path: Path) -> None:
    """`functions=` records each call of a held object's method (arguments as input with the path, output as
    activation, `#N` per call) and puts the method back; bridge.local replays A's calls into B's function
    through `functions:` and positional renames; a function record without a `functions:` path, or a path
    B lacks, is a status, not a crash; a path the model lacks is one clear error at recording."""
    from bridge.errors import BridgeError, FormatError
    from bridge.local.pairing import plan_pairs
    from bridge.local.replay import replay_pairs

    torch.manual_seed(0)
    model_a = _Head(_CoderA())
    with Recorder(tmp_path / "a") as recorder:
        taps = ModelTaps(model_a, recorder, lambda: 0, functions={"decode": "coder.decode"})
        model_a(torch.rand(3, 4))
        taps.remove()
    assert "decode" not in vars(model_a.coder)
    run_a = open_run(tmp_path / "a")
    second = run_a.get("decode#1", step=0, kind="input")
    assert second["function"] == "coder.decode" and second["kwargs"] == {"scale": 2.0} and len(second["args"]) == 2
    assert {(e.name, e.kind) for e in run_a.entries()} == {
        (n, k) for n in ("decode", "decode#1") for k in ("input", "activation")
    }
    with pytest.raises(BridgeError, match="functions: 'coder.nope'"):
        ModelTaps(model_a, recorder, lambda: 0, functions={"x": "coder.nope"})

    rules = tmp_path / "functions.yaml"
    rules.write_text(
        "functions: {decode: coder.decode}\narguments:\n  - {module: decode, rename: {'0': boxes, '1': deltas}}\n",
        encoding="utf-8",
    )
    model_b = _Head(_CoderB())
    tasks = plan_pairs([("decode", 0), ("decode#1", 0)], load_local_map([str(rules)]))
    assert tasks[1] == {
        "step": 0,
        "name_a": "decode#1",
        "name_b": "decode#1",
        "function": "coder.decode",
        "renames": {"0": "boxes", "1": "deltas"},
    }
    wrong = [{**tasks[0], "function": "coder.encode"}, {k: v for k, v in tasks[1].items() if k != "function"}]
    with Recorder(tmp_path / "local") as recorder:
        statuses = replay_pairs(model_b, run_a, tasks, recorder, torch.device("cpu"))
    with Recorder(tmp_path / "local_wrong") as recorder:
        wrong_statuses = replay_pairs(model_b, run_a, wrong, recorder, torch.device("cpu"))
    assert [s["status"] for s in statuses] == ["ok", "ok"]
    assert wrong_statuses[0]["status"].startswith("no function (functions: 'coder.encode'")
    assert wrong_statuses[1]["status"].startswith("function record without a path")
    rows = local_rows(tmp_path / "a", tmp_path / "a", tmp_path / "local")
    assert [(row.name_a, row.local, row.verdict) for row in rows] == [("decode", 0.0, "ok"), ("decode#1", 0.0, "ok")]
    rules.write_text("functions: [coder.decode]\n", encoding="utf-8")
    with pytest.raises(FormatError, match="functions: a mapping record name"):
        load_local_map([str(rules)])


class _LossHead(_Head):
    """``_Head`` returning a loss dict, as a detectron2 trainer's model does."""

    def forward(self, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": super().forward(batch[0]).square().mean()}


def test_detectron2_record_hook_records_functions(tmp_path: Path) -> None:
    """RecordHook(functions=...) in a detectron2 SimpleTrainer: each call of the coder in a recorded iteration
    (input with its path, output), none in the others, and the coder's own method back after training."""
    from detectron2.engine import SimpleTrainer

    from d2_side.hooks import RecordHook

    torch.manual_seed(0)
    model = _LossHead(_CoderA())
    trainer = SimpleTrainer(model, [[torch.rand(3, 4)]] * 3, torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.register_hooks(
        [RecordHook(str(tmp_path / "run"), iterations=[1], record_batch=False, functions={"decode": "coder.decode"})]
    )
    trainer.train(0, 3)
    run = open_run(tmp_path / "run")
    assert {(e.name, e.step, e.kind) for e in run.entries(kind="input")} == {
        ("decode", 1, "input"),
        ("decode#1", 1, "input"),
    }
    assert run.get("decode#1", step=1, kind="input")["function"] == "coder.decode"
    assert run.get("decode", step=1, kind="activation").shape == (3, 4)
    assert "decode" not in vars(model.coder)
