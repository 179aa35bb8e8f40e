"""The RNG tape on the real frameworks, each side in its own process with another global RNG state:
mmdet's DINO with denoising on (and with dropout on), detectron2's Mask R-CNN ROI and RPN sampling through
the trainer hooks; a resized draw, a draw with no recorded counterpart and left-over draws are reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from bridge import open_run
from bridge.rng import load_tape
from tests.conftest import REPO

DINO_SCRIPT = textwrap.dedent("""
    import contextlib, json, sys
    from pathlib import Path
    import torch
    import mmdet
    from mmengine.config import Config
    from mmengine.structures import InstanceData
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from bridge import Recorder
    from bridge.rng import record, replay

    SCOPES = {"model": "", "encoder": "encoder", "decoder": "decoder"}  # DN noise is drawn by the model itself
    GRADS = ["decoder.layers.0.cross_attn.sampling_offsets.weight", "dn_query_generator.label_embedding.weight",
             "encoder.layers.1.ffn.layers.0.0.weight", "backbone.layer4.2.conv3.weight"]

    def build(dropout):
        cfg = Config.fromfile(str(Path(mmdet.__file__).parent / ".mim/configs/dino/dino-4scale_r50_8xb2-12e_coco.py"))
        cfg.model.backbone.init_cfg = None
        cfg.model.num_queries = 100
        cfg.model.encoder.num_layers = cfg.model.decoder.num_layers = 2
        for layer in (cfg.model.encoder.layer_cfg, cfg.model.decoder.layer_cfg):
            layer.ffn_cfg.ffn_drop = dropout
            layer.self_attn_cfg.dropout = dropout
        cfg.model.decoder.layer_cfg.cross_attn_cfg.dropout = dropout
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()  # DINO's level_embed is uninitialised memory until then
        model.train()
        image = (torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
        sample = DetDataSample(metainfo=dict(img_shape=(128, 128), ori_shape=(128, 128), scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[10.0, 15.0, 60.0, 100.0], [50.0, 30.0, 120.0, 90.0]]),
                                           labels=torch.tensor([3, 17]))
        return model, model.data_preprocessor({"inputs": [image], "data_samples": [sample]}, training=True)

    def step(model, data, block):
        with block as tape:
            losses = model(data["inputs"], data["data_samples"], mode="loss")
        sum(value for key, value in losses.items() if "loss" in key).backward()
        params = dict(model.named_parameters())
        out = {"losses": {k: v.detach() for k, v in losses.items()}, "grads": {n: params[n].grad for n in GRADS}}
        return out, tape

    register_all_modules()
    mode, work, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    results, errors = {}, {}
    for dropout in (0.0, 0.1):
        model, data = build(dropout)
        torch.manual_seed(seed)
        if mode == "record":
            with Recorder(work / f"tape_{dropout}") as recorder:
                results[f"record_{dropout}"], tape = step(model, data, record(recorder, 0, model, SCOPES))
            errors[f"summary_{dropout}"] = tape.summary()
            continue
        results[f"plain_{dropout}"], _ = step(model, data, contextlib.nullcontext())
        model, data = build(dropout)
        torch.manual_seed(seed)
        results[f"replay_{dropout}"], tape = step(model, data, replay(work / f"tape_{dropout}", 0, 0, model, SCOPES))
        errors[f"summary_{dropout}"] = tape.summary()
        other = work / f"tape_{0.1 if dropout == 0.0 else 0.0}"
        model, data = build(dropout)
        try:
            step(model, data, replay(other, 0, 0, model, SCOPES, match="queue"))
        except Exception as exc:
            errors[f"other_tape_{dropout}"] = f"{type(exc).__name__}: {exc}"
    torch.save(results, work / f"{mode}.pt")
    (work / f"{mode}.json").write_text(json.dumps(errors))
""")


def _python(args: list[str], cwd: Path | None = None) -> str:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=900, cwd=cwd)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return done.stdout


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dino_denoising_and_dropout_replayed_bit_exactly_in_another_process(tmp_path: Path) -> None:
    script = tmp_path / "dino_step.py"
    script.write_text(DINO_SCRIPT)
    _python([str(script), "record", str(tmp_path), "1"])
    _python([str(script), "replay", str(tmp_path), "2"])
    recorded, replayed = (
        torch.load(tmp_path / "record.pt", weights_only=True),
        torch.load(tmp_path / "replay.pt", weights_only=True),
    )
    notes = {
        **json.loads((tmp_path / "record.json").read_text()),
        **{f"b_{k}": v for k, v in json.loads((tmp_path / "replay.json").read_text()).items()},
    }
    for dropout in ("0.0", "0.1"):
        a, plain, b = recorded[f"record_{dropout}"], replayed[f"plain_{dropout}"], replayed[f"replay_{dropout}"]
        assert any(k.startswith("dn_loss") or "_dn" in k for k in a["losses"]), sorted(a["losses"])
        assert not _equal(a["losses"], plain["losses"]), f"dropout {dropout}: losses equal without the tape"
        assert _equal(a["losses"], b["losses"]), f"dropout {dropout}: losses differ with the tape"
        assert _equal(a["grads"], b["grads"]), f"dropout {dropout}: gradients differ with the tape"
        assert notes[f"b_summary_{dropout}"] == notes[f"summary_{dropout}"] | {
            label: {"recorded": c["recorded"], "replayed": c["recorded"], "left_over": 0}
            for label, c in notes[f"summary_{dropout}"].items()
        }
    assert notes["summary_0.0"]["model"]["recorded"] == 4  # CdnQueryGenerator: 2 for labels, 2 for boxes
    assert notes["summary_0.0"]["encoder"]["recorded"] == 0
    assert notes["summary_0.1"]["encoder"]["recorded"] > 0 and notes["summary_0.1"]["decoder"]["recorded"] > 0
    ops = {draw.op for draw in load_tape(tmp_path / "tape_0.1", 0)[1]}
    assert {"rand_like", "randint_like", "bernoulli_"} <= ops
    missing = notes["b_other_tape_0.1"]  # dropout on in B, A's tape without dropout
    assert missing.startswith("RngTapeMissing: ") and "bernoulli_" in missing and "in scope 'encoder'" in missing
    left_over = notes["b_other_tape_0.0"]  # dropout off in B, A's tape with dropout
    assert left_over.startswith("RngTapeLeftover: ") and "left over" in left_over and "bernoulli_" in left_over


D2_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from bridge.coco.onesample import OneSampleConfig
    from tests.conftest import record_d2_training

    coco_root, cache, run_dir, draws = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    replay_dir, scopes, size = sys.argv[5], sys.argv[6].split(","), sys.argv[7]
    record_d2_training(OneSampleConfig.create(Path(coco_root), None, Path(cache)), Path(run_dir),
                       "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", "coco_2017_train_onesample",
                       iterations=[0], activations=["roi_heads.box_predictor"], rng_draws_before_training=draws,
                       rng_scopes=scopes if not replay_dir else (), rng_replay_dir=replay_dir,
                       rng_replay_scopes=scopes if replay_dir else (), extra_opts=["INPUT.MIN_SIZE_TRAIN", f"({size},)"])
""")


def _d2_step(
    tmp_path: Path,
    coco_root: Path,
    name: str,
    draws: int,
    replay_dir: str = "",
    scopes: str = "proposal_generator,roi_heads",
    size: int = 96,
) -> subprocess.CompletedProcess:
    script = tmp_path / "d2_step.py"
    script.write_text(D2_SCRIPT)
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run(
        [
            sys.executable,
            str(script),
            str(coco_root),
            str(tmp_path / "cache"),
            str(tmp_path / name),
            str(draws),
            replay_dir,
            scopes,
            str(size),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_mask_rcnn_sampling_replayed_through_the_detectron2_hooks(coco_root: Path, tmp_path: Path) -> None:
    for name, draws, replay_dir in (("a", 0, ""), ("b_plain", 7, ""), ("b_replay", 7, str(tmp_path / "a"))):
        done = _d2_step(tmp_path, coco_root, name, draws, replay_dir)
        assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    runs = {name: open_run(tmp_path / name) for name in ("a", "b_plain", "b_replay")}
    draws = load_tape(tmp_path / "a", 0)[1]
    assert {d.scope for d in draws} == {"proposal_generator", "roi_heads"} and {d.op for d in draws} == {"randperm"}
    assert all("detectron2/modeling/sampling.py:" in d.site for d in draws)

    def values(run_name: str) -> tuple[dict, list]:
        run = runs[run_name]
        return run.get("losses", step=0, kind="loss"), list(
            run.get("roi_heads.box_predictor", step=0, kind="activation")
        )

    losses_a, sampled_a = values("a")
    losses_plain, sampled_plain = values("b_plain")
    losses_b, sampled_b = values("b_replay")
    assert not all(torch.equal(x, y) for x, y in zip(sampled_a, sampled_plain)), "sampling equal without the tape"
    assert all(torch.equal(x, y) for x, y in zip(sampled_a, sampled_b))  # the same sampled proposals, scored alike
    assert _equal(losses_a, losses_b) and not _equal(losses_a, losses_plain)

    resized = _d2_step(tmp_path, coco_root, "b_resized", 7, str(tmp_path / "a"), size=128)
    assert resized.returncode != 0
    message = next(line for line in resized.stderr.splitlines() if "RngTapeMismatch: " in line)
    assert "the replaying side draws randperm[" in message and "where the tape has randperm[" in message
    assert message.count("detectron2/modeling/sampling.py:") == 2, message  # both call sites
    left_over = _d2_step(tmp_path, coco_root, "b_left_over", 7, str(tmp_path / "a"), scopes="roi_heads")
    assert left_over.returncode != 0
    message = next(line for line in left_over.stderr.splitlines() if "RngTapeLeftover: " in line)
    assert "left over when the block ended (per scope: {'proposal_generator': " in message


RUNNER_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import torch
    from mmengine.hooks import Hook
    from mmengine.runner import Runner
    from mmdet.registry import HOOKS
    from bridge.coco.onesample import OneSampleConfig
    from tests.conftest import small_mmdet_train_config

    @HOOKS.register_module()
    class ShiftRngHook(Hook):
        def __init__(self, draws):
            self.draws = draws

        def before_train(self, runner):
            torch.rand(self.draws)

    coco_root, cache, work, draws, replay_dir = sys.argv[1:6]
    scopes = {"model": ""}  # DINO's CdnQueryGenerator overrides __call__: its draws are the model's own
    hooks = [dict(type="ShiftRngHook", draws=int(draws)),
             dict(type="BridgeRecordHook", run_dir=f"{work}/run", iterations=[0], rng_scopes={} if replay_dir else scopes)]
    if replay_dir:
        hooks.append(dict(type="BridgeReplayHook", rng_replay_dir=replay_dir, rng_scopes=scopes))
    cfg = small_mmdet_train_config("mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py",
                                   OneSampleConfig.create(Path(coco_root), None, Path(cache)), epochs=1,
                                   hooks=hooks, work_dir=f"{work}/work", task="detection")
    cfg.model.num_queries = 100
    cfg.model.encoder.num_layers = cfg.model.decoder.num_layers = 2
    cfg.train_dataloader.dataset.pipeline = [
        dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True),
        dict(type="Resize", scale=(160, 128), keep_ratio=True), dict(type="PackDetInputs")]
    cfg.randomness = dict(seed=0)
    runner = Runner.from_cfg(cfg)
    runner.train()
    replay_hooks = [h for h in runner.hooks if type(h).__name__ == "BridgeReplayHook"]
    Path(f"{work}/summaries.json").write_text(json.dumps(replay_hooks[0].summaries if replay_hooks else {}))
""")


def test_dino_tape_through_the_mmdet_hooks_in_a_runner(coco_root: Path, tmp_path: Path) -> None:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER_SCRIPT)
    for name, draws, replay_dir in (("a", 1, ""), ("b_plain", 7, ""), ("b_replay", 7, str(tmp_path / "a" / "run"))):
        _python(
            [str(script), str(coco_root), str(tmp_path / "cache"), str(tmp_path / name), str(draws), replay_dir],
            cwd=tmp_path,
        )
    losses = {
        name: open_run(tmp_path / name / "run").get("losses", step=0, kind="loss")
        for name in ("a", "b_plain", "b_replay")
    }
    assert any("dn_loss" in key for key in losses["a"]), sorted(losses["a"])
    assert not _equal(losses["a"], losses["b_plain"]) and _equal(losses["a"], losses["b_replay"])
    assert json.loads((tmp_path / "b_replay" / "summaries.json").read_text()) == {
        "0": {"model": {"recorded": 4, "replayed": 4, "left_over": 0}}
    }
