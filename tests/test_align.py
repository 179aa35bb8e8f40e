"""``python -m bridge.align RECIPE``: recipes are checked with errors naming the file and key, each side runs
in its own process, a failing side stops the loop at its stage (exit 2, nothing half-written), and two runs
whose only difference is the framework's output structure are aligned (exit 0). The demo recipe end to end:
tests/test_demo.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bridge.align.__main__ import main
from bridge.align.plan import Layout, plan
from bridge.align.recipe import RecipeError, load_recipe, parse_recipe
from bridge.errors import BridgeError
from tests.conftest import REPO

DEMO = REPO / "examples" / "panoptic_fpn_demo.yaml"


def write_recipe(tmp_path: Path, recipe: dict, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def structures_recipe(out: Path) -> dict:
    """Reference and port are command sides recording the same predictions in their own framework's structures."""

    def side(framework: str) -> dict:
        return {
            "framework": framework,
            "cwd": str(REPO),
            "command": ["{python}", "-m", "tests.align_structures", framework, "{run}"],
        }

    return {
        "out": str(out),
        "data": {"synthetic": {"images": 1, "size": [48, 64]}},
        "reference": side("detectron2"),
        "port": side("mmdet"),
        "stages": ["data", "reference", "port", "compare", "report"],
    }


def test_runs_differing_only_in_output_structure_are_aligned(tmp_path: Path) -> None:
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path, structures_recipe(out))
    result = subprocess.run(
        [sys.executable, "-m", "bridge.align", str(recipe)], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    # every stage's command is printed, each side in its own process
    assert f"[reference] cd {REPO} && env BRIDGE_COCO_ROOT=" in result.stdout
    assert "-m tests.align_structures detectron2" in result.stdout
    assert "[compare] " in result.stdout and "[report] " in result.stdout and "ALIGNED: " in result.stdout
    report = json.loads((out / "report.json").read_text())
    stages = {stage["name"]: stage["status"] for stage in report["stages"]}
    assert report["passed"] is True and stages["inference"] == "pass" and stages["evaluation"] == "pass"
    evaluation = " ".join(next(s["findings"] for s in report["stages"] if s["name"] == "evaluation"))
    assert "instances instances." in evaluation and "semantic semantic." in evaluation, evaluation
    assert "DIFFERS" not in evaluation and "without a partner" not in evaluation
    assert (out / "report.html").read_text().count("<html") == 1
    assert "tests.align_structures mmdet" in (out / "commands.sh").read_text()


def test_dry_run_prints_the_demo_commands_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main([str(DEMO), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("]")[0][1:] for line in lines] == [
        "data",
        "reference",
        "convert",
        "port",
        "port",
        "compare",
        "report",
    ]
    reference, port = lines[1], lines[4]
    assert "-m d2_side.record_model --config COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml" in reference
    assert "backbone.bottom_up.res?" in reference and "--save-weights" in reference
    assert "-m mmdet_side.record_model" in port and "--replay" in port and "backbone.layer?" in port
    assert "--preset d2-panoptic-fpn-to-mmdet" in lines[2]
    assert not out.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("reference"), "key 'reference': missing"),
        (
            lambda r: r["port"].update(framework="caffe"),
            "key 'port.framework': expected one of detectron2, mmdet, got 'caffe'",
        ),
        (lambda r: r["port"].update(builder="no_colon"), "key 'port.builder': expected MODULE:FUNCTION"),
        (lambda r: r.update(stages=["data", "train"]), "key 'stages': unknown stage 'train'"),
        (lambda r: r.update(colour="red"), "key 'colour': unknown key"),
        (
            lambda r: r["reference"].update(command=["python", "train_net.py"]),
            "key 'reference': give either builder or command",
        ),
        (lambda r: r["data"].update(synthetic={"images": 0}), "key 'data.synthetic.images': expected 1..99"),
        (lambda r: r.update(known=[{"stage": "inference", "match": "x"}]), "key 'known[0].note': missing"),
        (lambda r: r.update(data={"coco_root": "$BRIDGE_NO_SUCH_VARIABLE/coco"}), "key 'data.coco_root': "),
        (
            lambda r: r["reference"].update(config_setup=["maskdino"]),
            "key 'reference.config_setup': expected MODULE:FUNCTION",
        ),
        (lambda r: r["known"][1].update(accept=True), "key 'known[1].accept': only an evaluator-metadata difference"),
    ],
)
def test_bad_recipe_is_one_error_line_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change, message: str
) -> None:
    recipe = yaml.safe_load(DEMO.read_text())
    change(recipe)
    path = write_recipe(tmp_path, recipe)
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: {message}"), err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["", "[1, 2]", "reference: {framework: detectron2\n", "\x00"])
def test_unreadable_recipe_is_bad_input(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and "Traceback" not in err
    with pytest.raises(RecipeError, match="cannot read"):
        load_recipe(tmp_path / "missing.yaml")


def test_a_failing_side_stops_at_its_stage_with_its_stderr_and_nothing_half_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    recipe = structures_recipe(out)
    recipe["port"]["command"] = [
        "{python}",
        "-c",
        "import sys, pathlib; pathlib.Path(sys.argv[1]).mkdir(); sys.exit('port exploded: no such config')",
        "{run}",
    ]
    path = write_recipe(tmp_path, recipe)
    result = subprocess.run(
        [sys.executable, "-m", "bridge.align", str(path)], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: stage port failed (exit 1)") and "port exploded" in result.stderr
    assert "Traceback" not in result.stderr
    assert "[port] " in result.stdout and "[compare]" not in result.stdout
    assert not (out / "runs" / "port").exists()  # the failed stage's partial run is removed
    assert not (out / "report.html").exists() and not (out / "compare.json").exists()
    assert (out / "runs" / "reference" / "rank0" / "manifest.json").exists()  # finished stages stay, rerunnable
    assert "port exploded" in (out / "logs" / "port.log").read_text()


def test_a_side_interpreter_that_does_not_exist_fails_its_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = structures_recipe(tmp_path / "out")
    recipe["reference"]["python"] = str(tmp_path / "no-python")
    recipe["stages"] = ["reference", "report"]
    assert main([str(write_recipe(tmp_path, recipe))]) == 2
    assert capsys.readouterr().err.startswith("error: stage reference: cannot run ")


def test_an_out_folder_of_other_content_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    (out / "coco").mkdir(parents=True)
    (out / "coco" / "keep.txt").write_text("a user's file")
    assert main([str(write_recipe(tmp_path, structures_recipe(out)))]) == 2
    assert "was not written by python -m bridge.align" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == ["coco", "keep.txt"]


def test_the_recipes_in_docs_align_md_are_valid_and_plan(tmp_path: Path) -> None:
    """docs/ALIGN.md's recipe reference and its Mask DINO recipe pass the recipe check and plan their commands."""
    page = REPO / "docs" / "ALIGN.md"
    blocks = re.findall(r"^```yaml\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)
    assert len(blocks) == 2
    for block in blocks:
        recipe = parse_recipe(yaml.safe_load(block), page, out=str(tmp_path / "out"))
        stages = plan(Layout(recipe))
        assert [stage.name for stage in stages][-2:] == ["compare", "report"]
    maskdino = {stage.name: stage for stage in stages}
    reference = maskdino["reference"].steps[0].argv
    assert reference[reference.index("--config-setup") + 1] == "maskdino_setup:reference"
    assert (
        "MODEL.MaskDINO.TEST.SEMANTIC_ON" in reference
        and "/src/MaskDINO" in maskdino["reference"].steps[0].env["PYTHONPATH"]
    )
    config, record = (step.argv for step in maskdino["port"].steps)
    assert config[config.index("--base") + 1].endswith("maskdino_r50_8xb2-lsj-50e_coco-panoptic.py")
    assert record[record.index("--replay") + 1] == str(tmp_path / "out" / "runs" / "reference")
    assert record[record.index("--weights") + 1] == str(tmp_path / "out" / "port_weights.pth")
    assert "--preset maskdino-d2-to-mmdet" in maskdino["convert"].steps[0].shell()
    assert "--target port_state_dict.pth" in maskdino["convert"].steps[0].shell()
    assert [entry.get("accept") for entry in recipe.known] == [True] * 4


def add_bridge_test_keys(cfg) -> None:
    """A config set-up as a research repo's ``add_*_config``: a detectron2 key the stock config lacks, or on an
    mmdet config a changed model setting."""
    if hasattr(cfg, "merge_from_file"):
        from detectron2.config import CfgNode

        cfg.BRIDGE_TEST = CfgNode({"POINTS": 100})
    else:
        cfg.model.backbone.depth = 101


def test_config_setup_runs_before_the_config_is_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from d2_side.record_model import load_config as load_d2_config
    from mmdet_side.record_model import load_config as load_mmdet_config

    setup = "tests.test_align:add_bridge_test_keys"
    d2 = load_d2_config("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml", ["BRIDGE_TEST.POINTS", "12544"], [setup])
    assert d2.BRIDGE_TEST.POINTS == 12544
    with pytest.raises(BridgeError, match="BRIDGE_TEST"):  # without the set-up the key is unknown to detectron2
        load_d2_config("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml", ["BRIDGE_TEST.POINTS", "1"])
    mm = load_mmdet_config("mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py", [], [setup])
    assert mm.model.backbone.depth == 101
    with pytest.raises(BridgeError, match="--config-setup 'tests.test_align:no_such_function'"):
        load_mmdet_config(
            "mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py", [], ["tests.test_align:no_such_function"]
        )
    recipe = yaml.safe_load(DEMO.read_text())
    recipe["reference"]["config_setup"] = [setup]
    assert main([str(write_recipe(tmp_path, recipe)), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    reference = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("[reference]"))
    assert f"--config-setup {setup}" in reference


def test_normalized_input_of_a_model_that_normalizes_inside_forward() -> None:
    """Mask2Former / Mask DINO normalize and pad in ``forward`` (no ``preprocess_image``): the detectron2 side
    records the same tensor from ``pixel_mean``, ``pixel_std`` and ``size_divisibility``."""
    import torch

    from d2_side.record_model import normalized_input

    class InlineNormalizing(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("pixel_mean", torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1), False)
            self.register_buffer("pixel_std", torch.tensor([2.0, 2.0, 4.0]).view(3, 1, 1), False)
            self.size_divisibility = 32

    image = torch.arange(3 * 40 * 50, dtype=torch.float32).view(3, 40, 50)
    tensor = normalized_input(InlineNormalizing(), [{"image": image}])
    assert tensor.shape == (1, 3, 64, 64) and not tensor[..., 40:, :].any() and not tensor[..., 50:].any()
    assert torch.equal(
        tensor[0, :, :40, :50],
        (image - torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1)) / torch.tensor([2.0, 2.0, 4.0]).view(3, 1, 1),
    )
    assert normalized_input(torch.nn.Linear(2, 2), [{"image": image}]) is None
