"""Gradients, parameters, losses and matchings paired through a converter rule set (``compare --map``).

The rules applied to one named tensor (``map_named_tensor``) equal converting the whole state dict; gradients
of detectron2's PanopticFPN and of mmdet's, loaded with the converted weights and given the same input and
loss, pair through ``d2-panoptic-fpn-to-mmdet`` (the semantic classifier's rows remapped as its weight is) and
agree; a perturbed gradient is named as the first divergence in backward order; aliases, drops and added
buffers are not reported as unpaired; loss names pair through the preset's ``losses:``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bridge import Recorder, open_run
from bridge.coco.onesample import OneSampleConfig
from bridge.compare import compare_runs
from bridge.convert import added_names, convert_state_dict, load_rules, map_named_tensor
from bridge.errors import ConversionError
from bridge.matching import canonical_matching
from bridge.taps import ModelTaps
from tests.conftest import REPO, record_d2_training, small_mmdet_train_config
from tests.test_convert_dino import original_state_dict

PRESET = "d2-panoptic-fpn-to-mmdet"


def test_map_named_tensor_key_by_key_equals_converting_the_state_dict() -> None:
    """The DINO preset has aliases, class rows (91 -> 80, the 92-row DN label book), an if_zero drop and adds."""
    state = original_state_dict()
    rules = load_rules("dino-original-to-mmdet")
    converted = convert_state_dict(state, rules)
    mapped: dict[str, torch.Tensor] = {}
    aliases = []
    for key, tensor in state.items():
        result = map_named_tensor(key, tensor, rules, check_if_zero=True)
        for name, value in result.tensors:
            assert name not in mapped
            mapped[name] = value
        aliases += [drop for drop in result.dropped if drop.alias_of]
    added = added_names(rules, source=list(state), converted=list(mapped), target=list(converted.state_dict))
    assert added == set(converted.added) and set(mapped) | added == set(converted.state_dict)
    assert all(torch.equal(mapped[key], converted.state_dict[key]) for key in mapped)
    assert (
        mapped["bbox_head.cls_branches.0.weight"].shape == (80, 256)
        and mapped["dn_query_generator.label_embedding.weight"].shape[0] == 80
    )
    assert {drop.alias_of for drop in aliases} >= {"class_embed.0.weight", "bbox_embed.0.layers.0.weight"}


def test_map_named_tensor_checks_if_zero_only_when_asked() -> None:
    rules = load_rules("dino-original-to-mmdet")
    grad = torch.ones(256)
    assert map_named_tensor("input_proj.0.0.bias", grad, rules).dropped[0].rule.endswith("'input-proj-conv-bias'")
    with pytest.raises(ConversionError, match="is not zero"):
        map_named_tensor("input_proj.0.0.bias", grad, rules, check_if_zero=True)
    meta = map_named_tensor("class_embed.3.weight", torch.empty(91, 256, device="meta"), rules)
    assert meta.values_changed and meta.tensors[0][1].shape == (80, 256)  # names and shapes without data


class _Shared(nn.Module):
    """A model holding one Linear under two names (as Mask DINO's ``_bbox_embed`` / ``bbox_embed.0``)."""

    def __init__(self, alias_first: bool) -> None:
        super().__init__()
        shared = nn.Linear(4, 6)
        if alias_first:
            self._embed = shared
            self.embed = nn.ModuleList([shared])
        else:
            self.embed = nn.ModuleList([shared])
            self._embed = shared
        self.extra = nn.Linear(4, 3)
        self.scale = nn.Parameter(torch.ones(()))  # a training-only weight the port has no place for

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed[0](x).sum(1) * self.extra(x).sum(1) * self.scale


class _Target(nn.Module):
    """The port: the shared Linear once, its rows in another class order, a buffer of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Linear(4, 6)
        self.extra = nn.Linear(4, 3)
        self.register_buffer("counter", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(x).sum(1) * self.extra(x).sum(1)


RULES = [
    {"stage": "aliases", "kind": "drop_alias", "from": r"^_embed\.(.*)$", "of": "embed.0.{1}"},
    {
        "stage": "rows",
        "kind": "class_rows",
        "from": r"^embed\.0\.(weight|bias)$",
        "index": [4, 0, 1, 2, 3],
        "background": "last",
    },
    {"kind": "rename", "from": r"^embed\.0\.", "to": "cls."},
    {"kind": "add", "key": "counter", "dtype": "int64"},
    {"kind": "drop", "from": r"^scale$"},
]


@pytest.mark.parametrize("alias_first", [False, True])
def test_aliases_class_rows_and_added_buffers_pair_by_design(tmp_path: Path, alias_first: bool) -> None:
    """A gradient recorded under the alias (named_parameters lists a shared tensor once, under the name it
    met first) stands for the kept key; with both names recorded (kind param) the alias is compared once."""
    torch.manual_seed(0)
    source = _Shared(alias_first)
    target = _Target()
    converted = convert_state_dict(source.state_dict(), RULES, target_names=list(target.state_dict()))
    target.load_state_dict(converted.state_dict, strict=True)
    x = torch.randn(5, 4)
    for model, run in ((source, "a"), (target, "b")):
        with Recorder(tmp_path / run) as recorder:
            taps = ModelTaps(model, recorder, lambda: 0, grads=["*"])
            model(x).sum().backward()
            taps.remove()
            for name, value in model.state_dict().items():
                recorder.record(name, value, step=0, kind="param")
    grads = {e.name for e in open_run(tmp_path / "a").entries(kind="grad")}
    assert ("_embed.weight" in grads) is alias_first and ("embed.0.weight" in grads) is not alias_first
    result = compare_runs(tmp_path / "a", tmp_path / "b", name_map=RULES)
    assert result.passed, [(i.key, i.reason) for i in result.items if not i.passed]
    keys = {(i.kind, i.key) for i in result.items}
    assert keys == {
        (kind, f"{m}.{p}") for kind in ("grad", "param") for m in ("cls", "extra") for p in ("weight", "bias")
    }
    by_design = {(d["side"], d["kind"], d["key"]) for d in result.settings["unpaired_by_design"]}
    assert {("b", "param", "counter"), ("a", "grad", "scale"), ("a", "param", "scale")} <= by_design
    assert any(side == "a" and kind == "param" and key.startswith("_embed.") for side, kind, key in by_design)
    cls = next(i for i in result.items if i.key == "cls.weight" and i.kind == "grad")
    assert cls.key_a in ("_embed.weight", "embed.0.weight") and cls.max_abs == 0
    unmapped = compare_runs(tmp_path / "a", tmp_path / "b", name_map=[r for r in RULES if r["kind"] != "class_rows"])
    assert {i.key for i in unmapped.items if not i.passed} == {"cls.weight", "cls.bias"}


def test_a_rule_that_cannot_apply_to_a_recorded_gradient_is_bad_input(tmp_path: Path) -> None:
    for run in ("a", "b"):
        with Recorder(tmp_path / run) as recorder:
            recorder.record("embed.0.weight", torch.zeros(3, 4), step=0, kind="grad")
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    proc = _compare_cli(str(tmp_path / "a"), str(tmp_path / "b"), "--map", str(rules), "--kinds", "grad")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert (
        proc.stderr.startswith("error: step 0 rank 0 grad 'embed.0.weight': rule #1 class_rows")
        and "3 rows" in proc.stderr
    )


def test_losses_pair_through_the_preset(tmp_path: Path) -> None:
    """detectron2's PanopticFPN loss names against mmdet's log_vars (with its total ``loss`` and ``acc``)."""
    d2 = {
        "loss_rpn_cls": 0.5,
        "loss_rpn_loc": 0.25,
        "loss_cls": 1.0,
        "loss_box_reg": 0.75,
        "loss_mask": 0.5,
        "loss_sem_seg": 2.0,
    }
    mm = {
        "loss": 5.0,
        "loss_rpn_cls": 0.5,
        "loss_rpn_bbox": 0.25,
        "loss_cls": 1.0,
        "acc": 90.0,
        "loss_bbox": 0.75,
        "loss_mask": 0.5,
        "loss_seg": 2.5,
    }
    for run, losses in (("a", d2), ("b", mm)):
        with Recorder(tmp_path / run) as recorder:
            recorder.record("losses", {k: torch.tensor(v) for k, v in losses.items()}, step=0, kind="loss")
    result = compare_runs(tmp_path / "a", tmp_path / "b", name_map=PRESET)
    assert not result.a_only and not result.b_only
    assert {i.key_a: (i.key, i.passed) for i in result.items} == {
        "losses.loss_rpn_cls": ("losses.loss_rpn_cls", True),
        "losses.loss_rpn_loc": ("losses.loss_rpn_bbox", True),
        "losses.loss_cls": ("losses.loss_cls", True),
        "losses.loss_box_reg": ("losses.loss_bbox", True),
        "losses.loss_mask": ("losses.loss_mask", True),
        "losses.loss_sem_seg": ("losses.loss_seg", False),
    }
    assert {d["key"] for d in result.settings["unpaired_by_design"]} == {"losses.loss", "losses.acc"}
    assert result.first_divergence.key == "losses.loss_seg"


def test_matchings_compare_exactly(tmp_path: Path) -> None:
    """Canonical matchings from a Hungarian (query, target) list and from an assigner's 1-based gt_inds agree;
    a normaliser that differs in the 7th digit is a divergence (zero tolerance for kind matching)."""
    from types import SimpleNamespace

    from bridge.matching import record_matching

    hungarian = [(torch.tensor([7, 2, 5]), torch.tensor([0, 2, 1]))]
    assigner = SimpleNamespace(gt_inds=torch.tensor([0, 0, 3, 0, 0, 2, 0, 1]))
    assert torch.equal(canonical_matching(hungarian)[0]["query"], canonical_matching(assigner)[0]["query"])
    for run, output, num_masks in (("a", hungarian, 3.0), ("b", assigner, 3.0000002)):
        with Recorder(tmp_path / run) as recorder:
            record_matching(recorder, "matcher", output, step=0, normalisers={"num_masks": num_masks})
    result = compare_runs(tmp_path / "a", tmp_path / "b")
    assert {i.key: i.passed for i in result.items} == {
        "matcher.images.0.query": True,
        "matcher.images.0.target": True,
        "matcher.images.0.ignored": True,
        "matcher.normalisers.num_masks": False,
    }


# --- the real frameworks: detectron2's PanopticFPN and mmdet's, converted weights, same input and loss ---


def _build_pair() -> tuple[nn.Module, nn.Module]:
    """detectron2's PanopticFPN R50 (seed 0) and mmdet's configured like it, loaded with the converted weights."""
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from panoptic_fpn_demo import d2_model, mmdet_model_like_d2
    finally:
        sys.path.remove(str(REPO / "examples"))
    _cfg, d2_net = d2_model(seed=0, size=128)
    mm_net = mmdet_model_like_d2()
    mm_net.load_state_dict(convert_state_dict(d2_net.state_dict(), PRESET).state_dict, strict=True)
    return d2_net, mm_net


def _record_semantic_grads(
    run_dir: Path, model: nn.Module, features, logits_of, image: torch.Tensor, perturb: dict[str, float] | None = None
) -> None:
    """Record every gradient (backward order) of ``mean(semantic logits ** 2)``: invariant to the order of the
    classes, so both frameworks' losses are equal while the classifier's rows are in different orders."""
    for name, shift in (perturb or {}).items():
        dict(model.named_parameters())[name].register_hook(lambda grad, shift=shift: grad + shift)
    with Recorder(run_dir) as recorder:
        taps = ModelTaps(model, recorder, lambda: 0, grads=["*"])
        logits = logits_of(features(image))
        loss = (logits**2).mean()
        recorder.record("losses", {"loss_semantic": loss}, step=0, kind="loss")
        loss.backward()
        taps.remove()


@pytest.fixture(scope="module")
def panoptic_grad_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs ``d2``, ``mmdet`` and ``mmdet_perturbed`` (two gradients shifted on the mmdet side)."""
    root = tmp_path_factory.mktemp("grads")
    torch.manual_seed(1)
    image = torch.randn(1, 3, 128, 160)
    d2_model, mm_model = _build_pair()
    _record_semantic_grads(root / "d2", d2_model, d2_model.backbone, lambda f: d2_model.sem_seg_head.layers(f), image)
    _record_semantic_grads(
        root / "mmdet", mm_model, mm_model.extract_feat, lambda f: mm_model.semantic_head(f)["seg_preds"], image
    )
    _record_semantic_grads(
        root / "mmdet_perturbed",
        mm_model,
        mm_model.extract_feat,
        lambda f: mm_model.semantic_head(f)["seg_preds"],
        image,
        perturb={"backbone.layer2.0.conv1.weight": 1.0, "neck.fpn_convs.1.conv.weight": 1.0},
    )
    return root


def _compare_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "bridge.compare", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_panoptic_fpn_gradients_pair_through_the_preset(panoptic_grad_runs: Path, tmp_path: Path) -> None:
    report = tmp_path / "grads.json"
    proc = _compare_cli(
        str(panoptic_grad_runs / "d2"),
        str(panoptic_grad_runs / "mmdet"),
        "--map",
        PRESET,
        "--kinds",
        "grad",
        "--json",
        str(report),
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    data = json.loads(report.read_text())
    items = {item["key"]: item for item in data["items"]}
    d2_grads = open_run(panoptic_grad_runs / "d2").entries(kind="grad")
    assert len(items) == len(d2_grads) > 60 and data["unpaired"] == {"a_only": [], "b_only": []}
    logits = items["semantic_head.conv_logits.weight"]
    assert logits["key_a"] == "sem_seg_head.predictor.weight" and logits["shape_a"] == [54, 128, 1, 1]
    assert logits["max_abs"] == 0 and max(item["rel_l2"] for item in items.values()) < 1e-5  # grads ~0.3
    assert items["backbone.layer4.2.conv3.weight"]["key_a"] == "backbone.bottom_up.res5.2.conv3.weight"
    assert [item["key"] for item in data["items"]][0].startswith("semantic_head.conv_logits.")  # nearest the loss
    # without the class-row rule, the classifier's gradient rows are in detectron2's order and differ
    rules = [r for r in load_rules(PRESET).specs() if r["kind"] != "class_rows"]
    unmapped = compare_runs(panoptic_grad_runs / "d2", panoptic_grad_runs / "mmdet", name_map=rules, kinds=["grad"])
    assert {i.key for i in unmapped.items if not i.passed} == {
        "semantic_head.conv_logits.weight",
        "semantic_head.conv_logits.bias",
    }


def test_perturbed_gradient_is_the_first_divergence_in_backward_order(panoptic_grad_runs: Path) -> None:
    result = compare_runs(
        panoptic_grad_runs / "d2", panoptic_grad_runs / "mmdet_perturbed", name_map=PRESET, kinds=["grad"]
    )
    assert {i.key for i in result.items if not i.passed} == {
        "backbone.layer2.0.conv1.weight",
        "neck.fpn_convs.1.conv.weight",
    }
    # the FPN output conv's gradient is computed before the backbone's, though its name sorts after it
    assert result.first_divergence.key == "neck.fpn_convs.1.conv.weight"
    assert result.first_divergence.name == "backbone.fpn_output3.weight"
    order = [i.key for i in result.items]
    assert order.index("neck.fpn_convs.1.conv.weight") < order.index("backbone.layer2.0.conv1.weight")


def test_hooks_record_grads_losses_and_matchings_that_pair_through_the_preset(
    onesample_config: OneSampleConfig, tmp_path: Path
) -> None:
    """One training step of detectron2's PanopticFPN (RecordHook) and of mmdet's configured like it, on the
    replayed batch (BridgeRecordHook): every gradient, loss and matching pairs through the preset, nothing is
    unpaired but mmdet's total ``loss`` and ``acc``. (Each side has its own random weights: only the pairing
    is checked here.)"""
    from mmengine.runner import Runner

    record_d2_training(
        onesample_config,
        tmp_path / "d2",
        "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml",
        "coco_2017_train_panoptic_onesample_separated",
        iterations=[0],
        grads=["*"],
        matchers={"rpn_matcher": "proposal_generator.anchor_matcher", "roi_matcher": "roi_heads.proposal_matcher"},
    )
    cfg = small_mmdet_train_config(
        "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py",
        onesample_config,
        epochs=1,
        task="panoptic",
        work_dir=str(tmp_path / "work"),
        hooks=[
            dict(type="BridgeReplayHook", run_dir=str(tmp_path / "d2"), sem_seg_label_map="panoptic_fpn"),
            dict(
                type="BridgeRecordHook",
                run_dir=str(tmp_path / "mmdet"),
                iterations=[0],
                grads=["*"],
                matchers={"rpn_matcher": "rpn_head.assigner", "roi_matcher": "roi_head.bbox_assigner"},
            ),
        ],
    )
    cfg.model.backbone.update(style="caffe", norm_cfg=dict(type="BN", requires_grad=False))  # as detectron2's
    Runner.from_cfg(cfg).train()

    result = compare_runs(tmp_path / "d2", tmp_path / "mmdet", name_map=PRESET, kinds=["grad", "loss", "matching"])
    assert not result.a_only and not result.b_only, (result.a_only[:5], result.b_only[:5])
    kinds = [i.kind for i in result.items]
    d2_grads = open_run(tmp_path / "d2").entries(kind="grad")
    assert kinds.count("grad") == len(d2_grads) > 100
    assert kinds.count("loss") == 6 and {i.key for i in result.items if i.kind == "loss"} >= {
        "losses.loss_rpn_bbox",
        "losses.loss_bbox",
        "losses.loss_seg",
    }
    matchings = {i.key: i for i in result.items if i.kind == "matching"}
    assert {key.split(".")[0] for key in matchings} == {"rpn_matcher", "roi_matcher"}
    # anchors and ground truth do not depend on the weights: detectron2's Matcher and mmdet's MaxIoUAssigner
    # assign the same anchors to the same boxes and ignore the same ones
    rpn = [i for key, i in matchings.items() if key.startswith("rpn_matcher.")]
    assert len(rpn) == 3 and all(i.passed for i in rpn) and matchings["rpn_matcher.images.0.query"].numel > 0
    assert {d["key"] for d in result.settings["unpaired_by_design"]} == {"losses.loss", "losses.acc"}
    grads = [i for i in result.items if i.kind == "grad"]
    assert grads[0].key.startswith(("semantic_head.conv_logits.", "roi_head.", "rpn_head."))  # backward order
    assert grads[-1].key.startswith("backbone.layer2.")  # res3, the first trainable stage, comes last
    logits = next(i for i in grads if i.key == "semantic_head.conv_logits.weight")
    assert logits.key_a == "sem_seg_head.predictor.weight" and logits.shape_a == logits.shape_b == [54, 128, 1, 1]
