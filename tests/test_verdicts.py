"""Trustworthy verdicts under bad input (issue 21): no vacuous PASS, no input destroyed, no traceback.

Every CLI runs in-process through its ``main(argv)``; ``call`` returns the exit status (argparse's
``SystemExit`` included) with what went to stdout and stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bridge import Recorder
from bridge.atomic import atomic_write_bytes
from bridge.cli import check_outputs, guarded_main
from bridge.coco.semseg_png import read_panoptic_rgb, write_semantic_pngs
from bridge.compare import __main__ as compare_cli
from bridge.compare.engine import compare_runs
from bridge.convert import __main__ as convert_cli
from bridge.convert.rules import load_rules
from bridge.errors import BridgeError, ConversionError, FormatError
from bridge.initcheck import pair_text
from bridge.initcheck.__main__ import main as initcheck_main
from bridge.meta.__main__ import main as meta_main
from bridge.panoptic import CanonicalPanoptic, canonical_from_panoptic_png, save_npz
from bridge.panoptic.__main__ import main as panoptic_main
from bridge.runs import KINDS
from bridge.subset.__main__ import main as subset_main

REPO = Path(__file__).resolve().parents[1]


def call(
    main: Callable[[Sequence[str]], int], argv: Sequence[object], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run a CLI's main in-process: (exit status, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, needle: str = "") -> bool:
    """True when stderr holds no traceback and its last line is ``error: ...`` containing ``needle``."""
    lines = err.strip().splitlines()
    return "Traceback" not in err and bool(lines) and "error:" in lines[-1] and needle in lines[-1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(run: Path, leaves: dict[str, object], kind: str = "activation") -> Path:
    with Recorder(run) as rec:
        for name, value in leaves.items():
            rec.record(name, value, step=0, kind=kind)
    return run


@pytest.fixture()
def runs(tmp_path: Path) -> tuple[Path, Path]:
    a = record(tmp_path / "a", {"x": torch.zeros(3)})
    b = record(tmp_path / "b", {"x": torch.full((3,), 1000.0)})
    return a, b


# ---------------------------------------------------------------- 1. no vacuous PASS


def test_unknown_kind_is_bad_input_not_pass(runs, capsys) -> None:
    code, out, err = call(compare_cli.main, [*runs, "--kinds", "activations"], capsys)
    assert code == 2 and one_error_line(err, "unknown kind") and "PASS" not in out
    for kind in KINDS:  # every kind the format knows is accepted (whatever KINDS holds)
        code, _out, err = call(compare_cli.main, [*runs, "--kinds", kind, "--quiet"], capsys)
        assert code in (1, 2) and "unknown kind" not in err


def test_nothing_compared_is_never_pass(runs, tmp_path: Path, capsys) -> None:
    assert call(compare_cli.main, [*runs, "--kinds", "activation", "--quiet"], capsys)[0] == 1
    code, out, err = call(compare_cli.main, [*runs, "--kinds", "grad"], capsys)  # a filter matching nothing
    assert code == 2 and one_error_line(err, "nothing compared") and "PASS" not in out
    e1, e2 = tmp_path / "e1", tmp_path / "e2"
    Recorder(e1).close()
    Recorder(e2).close()
    code, out, err = call(compare_cli.main, [e1, e2], capsys)
    assert code == 2 and one_error_line(err, "both runs are empty")
    assert not compare_runs(e1, e2).passed


# ---------------------------------------------------------------- 2. tolerances


@pytest.mark.parametrize(
    "option, value", [("--atol", "nan"), ("--rtol", "nan"), ("--atol", "inf"), ("--rtol", "-1"), ("--atol", "-0.5")]
)
def test_tolerance_must_be_finite_and_non_negative(runs, option: str, value: str, capsys) -> None:
    code, out, err = call(compare_cli.main, [*runs, f"{option}={value}"], capsys)
    assert code == 2 and option in err and "PASS" not in out


@pytest.mark.parametrize("spec", ["*=nan,0", "*=0,nan", "*=inf,0", "*=-1,0"])
def test_tol_rule_must_be_finite(runs, spec: str, capsys) -> None:
    code, _out, err = call(compare_cli.main, [*runs, "--tol", spec], capsys)
    assert code == 2 and one_error_line(err, "--tol")
    with pytest.raises(BridgeError):
        compare_runs(*runs, atol=float("nan"))


# ---------------------------------------------------------------- 3. outputs never overwrite inputs


def test_compare_outputs_refused_inside_runs(runs, tmp_path: Path, capsys) -> None:
    manifest = runs[0] / "rank0" / "manifest.json"
    before = digest(manifest)
    for argv in (
        [*runs, "--json", runs[0] / "report.json"],
        [*runs, "--html", manifest],
        [*runs, "--json", tmp_path / "r.x", "--html", tmp_path / "r.x"],
    ):
        code, _out, err = call(compare_cli.main, argv, capsys)
        assert code == 2 and one_error_line(err)
    assert digest(manifest) == before and not (runs[0] / "report.json").exists()
    assert not (tmp_path / "r.x").exists()


def test_convert_outputs_refused_onto_inputs(tmp_path: Path, capsys) -> None:
    src = tmp_path / "m.pth"
    torch.save({"model": {"x": torch.ones(2)}}, src)
    rules = tmp_path / "r.yaml"
    rules.write_text("- {kind: rename, from: '^x$', to: 'y'}\n")
    before = digest(src), digest(rules)
    for argv in (
        [src, "-o", src, "--rules", rules],
        [src, "-o", tmp_path / "o.pth", "--rules", rules, "--report", src],
        [src, "-o", tmp_path / "o.pth", "--rules", rules, "--report", rules],
        [src, "-o", tmp_path / "o.pth", "--rules", rules, "--report", tmp_path / "o.pth"],
    ):
        code, _out, err = call(convert_cli.main, argv, capsys)
        assert code == 2 and one_error_line(err, "refusing") or one_error_line(err, "same file"), err
    assert (digest(src), digest(rules)) == before and not (tmp_path / "o.pth").exists()


def test_initcheck_subset_panoptic_outputs_refused(tmp_path: Path, capsys) -> None:
    a = tmp_path / "a.pth"
    torch.save({"x": torch.ones(2)}, a)
    before = digest(a)
    code, _out, err = call(initcheck_main, [a, a, "--report", a], capsys)
    assert code == 2 and one_error_line(err, "refusing") and digest(a) == before
    # subset: the first file's output named like the second input
    first = tmp_path / "x.json"
    second = tmp_path / "x_subset_first_1.json"
    doc = {"images": [{"id": 1}], "annotations": [], "categories": []}
    first.write_text(json.dumps(doc))
    second.write_text(json.dumps(doc))
    before = digest(second)
    code, _out, err = call(subset_main, [first, second, "--first", "1"], capsys)
    assert code == 2 and one_error_line(err) and digest(second) == before
    npz = tmp_path / "p.npz"
    save_npz(_panoptic(4, 4), npz)
    before = digest(npz)
    code, _out, err = call(panoptic_main, [npz, npz, "--json", npz], capsys)
    assert code == 2 and one_error_line(err, "refusing") and digest(npz) == before


def test_check_outputs_resolves_links_and_dirs(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x")
    (tmp_path / "link.bin").symlink_to(src)
    with pytest.raises(BridgeError, match="refusing"):
        check_outputs({"SRC": src}, {"-o": tmp_path / "sub" / ".." / "link.bin"})
    with pytest.raises(BridgeError, match="directory"):
        check_outputs({"SRC": src}, {"-o": tmp_path})
    check_outputs({"SRC": src}, {"-o": tmp_path / "other.bin", "--report": None})


# ---------------------------------------------------------------- 4. one error line, never a traceback


def test_guarded_main_turns_a_crash_into_exit_2(capsys) -> None:
    @guarded_main
    def main(argv: Sequence[str] | None = None) -> int:
        return 1 // 0

    assert main([]) == 2
    assert one_error_line(capsys.readouterr().err, "ZeroDivisionError")


@pytest.mark.parametrize(
    "value, needle",
    [
        (2**70, "torch cannot hold"),
        (np.array(["a", "b"]), "not numbers"),
        (np.array(["2020-01-01"], dtype="datetime64[D]"), "not numbers"),
    ],
)
def test_checkpoint_values_torch_cannot_hold(tmp_path: Path, value: object, needle: str, capsys) -> None:
    src = tmp_path / "m.pkl"
    src.write_bytes(pickle.dumps({"model": {"w": np.zeros(2), "bad": value}}))
    code, _out, err = call(convert_cli.main, [src, "-o", tmp_path / "o.pth", "--preset", "d2-resnet-to-mmdet"], capsys)
    assert code == 2 and one_error_line(err, needle) and "'bad'" in err


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.zeros(2, dtype=torch.complex64),
        lambda: torch.quantize_per_tensor(torch.zeros(2), 0.1, 0, torch.quint8),
        lambda: torch.zeros(2).to(torch.float8_e4m3fnuz),
    ],
)
def test_tensors_safetensors_cannot_store(tmp_path: Path, make: Callable[[], torch.Tensor], capsys) -> None:
    src = tmp_path / "m.pth"
    torch.save({"w": make()}, src)
    rules = tmp_path / "r.yaml"
    rules.write_text("- {kind: rename, from: '^w$', to: 'v'}\n")
    code, _out, err = call(convert_cli.main, [src, "-o", tmp_path / "o.safetensors", "--rules", rules], capsys)
    assert code == 2 and one_error_line(err, "'v'") and "o.safetensors" in err
    assert not list(tmp_path.glob("*o.safetensors*"))  # neither the output nor a temporary file


@pytest.mark.parametrize(
    "text, needle",
    [
        (b"- {kind: split, from: x, to: [a, b], dim: q}\n", "'dim'"),
        (b"- {kind: add, key: k, shape: [-3]}\n", "'shape'"),
        (b"- {kind: class_rows, from: x, index: [true]}\n", "'index'"),
        (b"- {kind: [1], from: x}\n", "unknown kind"),
        (b"- {kind: rename, from: x, to: y, stage: [1]}\n", "'stage'"),
        (b"\xff\xfe- {kind: rename}\n", "not UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "nested"),
        (b"a: &a [x, x, x]\nb: &b [*a, *a, *a]\nrules: [*b, *b]\n", "aliases"),
        (b"- {kind: rename, from: '(a+)+$', to: b}\n", "nests unbounded"),
    ],
    ids=["dim", "shape", "index", "kind", "stage", "utf8", "nested", "aliases", "regex"],
)
def test_bad_rule_files(tmp_path: Path, text: bytes, needle: str, capsys) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_bytes(text)
    with pytest.raises(ConversionError, match=needle.replace("[", r"\[")):
        load_rules(rules)
    src = tmp_path / "m.pth"
    torch.save({"x": torch.ones(2)}, src)
    code, _out, err = call(convert_cli.main, [src, "-o", tmp_path / "o.pth", "--rules", rules], capsys)
    assert code == 2 and one_error_line(err, needle)


def test_int_leaf_beyond_float_range_and_markup_keys(tmp_path: Path, capsys) -> None:
    a = record(tmp_path / "a", {"big": 10**400, "k": {"a[/x]": torch.ones(2)}, "[bold]k": torch.ones(1)}, kind="meta")
    b = record(
        tmp_path / "b", {"big": 10**400 + 1, "k": {"a[/x]": torch.ones(2)}, "[bold]k": torch.ones(1)}, kind="meta"
    )
    code, out, err = call(compare_cli.main, [a, b], capsys)
    assert code == 1 and "Traceback" not in err and "k.a[/x]" in out and "[bold]k" in out
    assert call(compare_cli.main, [a, a], capsys)[0] == 0
    with pytest.raises(FormatError, match="too large"):
        with Recorder(tmp_path / "c") as rec:
            rec.record("huge", 10**5000, step=0)


def _nested(depth: int) -> list:
    value: list = [1]
    for _ in range(depth):
        value = [value]
    return value


def _meta(framework: object = "detectron2", **changes: object) -> dict:
    doc = {
        "framework": framework,
        "source": "s",
        "classes": ["a", "b"],
        "isthing": [True, False],
        "dataset_id_to_label": {"1": 0, "2": 1},
        "colors": None,
        "void_label": None,
        "ignore_label": 255,
        "label_divisor": 1000,
        "evaluator": {"max_dets": [1, 10, 100]},
        "raw": {},
    }
    return doc | changes


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[" * 100000 + "]" * 100000, "nested"),
        (json.dumps(_meta(evaluator={"x": _nested(40)})), "nested"),
        ('{"framework": ' + "9" * 5000 + "}", "unreadable JSON"),
        (json.dumps(_meta(dataset_id_to_label={"x": 0})), "dataset_id_to_label"),
        (json.dumps(_meta(framework=["x"])), "'framework'"),
        (json.dumps(_meta(isthing=["yes", "no"])), "isthing"),
    ],
    ids=["deep", "deep-evaluator", "long-int", "id-keys", "framework", "isthing"],
)
def test_pathological_meta_json(tmp_path: Path, text: str, needle: str, capsys) -> None:
    bad, good = tmp_path / "bad.json", tmp_path / "good.json"
    bad.write_text(text)
    good.write_text(json.dumps(_meta()))
    code, _out, err = call(meta_main, [good, bad], capsys)
    assert code == 2 and one_error_line(err, needle)


def test_meta_markup_in_framework_names(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_meta(framework="[/x]")))
    b.write_text(json.dumps(_meta(framework="[bold]", classes=["a", "c"])))
    code, out, err = call(meta_main, [a, b], capsys)
    assert code == 1 and "Traceback" not in err and "[/x]" in out


def _panoptic(h: int, w: int, seg_id: int = 1) -> CanonicalPanoptic:
    seg = np.zeros((h, w), dtype=np.int64)
    seg[: h // 2] = seg_id
    cat = np.where(seg > 0, 7, 0)
    return CanonicalPanoptic(cat, seg, [{"id": seg_id, "category_id": 7, "isthing": 1, "area": int((seg > 0).sum())}])


def test_panoptic_bad_npz_and_ids(tmp_path: Path, capsys) -> None:
    good = tmp_path / "good.npz"
    save_npz(_panoptic(8, 8), good)
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    code, _out, err = call(panoptic_main, [good, truncated], capsys)
    assert code == 2 and one_error_line(err, "trunc.npz")
    for seg_id in (2**40, -5):
        seg = np.full((4, 4), seg_id, dtype=np.int64)
        evil = tmp_path / f"ids{seg_id}.npz"
        np.savez(
            evil, category=np.full((4, 4), 3), segment=seg, segments=np.array([[seg_id, 3, 1, 16, 0]], dtype=np.int64)
        )
        code, _out, err = call(panoptic_main, [good, evil], capsys)
        assert code == 2 and one_error_line(err, "ids must lie in")


def test_panoptic_size_difference_fails_that_image(tmp_path: Path, capsys) -> None:
    a, b, report = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "r.json"
    save_npz(_panoptic(8, 8), a)
    save_npz(_panoptic(8, 6), b)
    code, out, err = call(panoptic_main, [a, b, "--json", report], capsys)
    assert code == 1 and "size" in out and not err
    image = next(iter(json.loads(report.read_text())["images"].values()))
    assert image == {"identical": False, "size_a": [8, 8], "size_b": [8, 6]}


# ---------------------------------------------------------------- 5./6. panoptic PNGs, subset ids, path escape


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_panoptic_png_must_be_rgb_of_the_image_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[..., 0] = 5
    info = [{"id": 5, "category_id": 1, "isthing": 1}]
    assert canonical_from_panoptic_png(_png(tmp_path / "ok.png", rgb), info, size=(4, 6)).segments[0]["area"] == 24
    with pytest.raises(BridgeError, match="8-bit RGB"):
        canonical_from_panoptic_png(_png(tmp_path / "gray.png", rgb[..., 0]), info)
    with pytest.raises(BridgeError, match="8-bit RGB"):
        canonical_from_panoptic_png(_png(tmp_path / "16.png", rgb[..., 0].astype(np.uint16) * 300, "I;16"), info)
    with pytest.raises(BridgeError, match="4x6"):
        canonical_from_panoptic_png(tmp_path / "ok.png", info, size=(6, 4))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(BridgeError, match="decompression bomb"):
        read_panoptic_rgb(tmp_path / "ok.png")


def _panoptic_json(file_name: str) -> dict:
    return {
        "images": [{"id": 1, "height": 4, "width": 6}],
        "annotations": [{"image_id": 1, "file_name": file_name, "segments_info": []}],
        "categories": [{"id": 1, "isthing": 1}],
    }


def test_semantic_pngs_stay_in_the_cache(tmp_path: Path) -> None:
    source, out = tmp_path / "pan" / "x", tmp_path / "cache"
    source.mkdir(parents=True)
    _png(tmp_path / "pan" / "evil.png", np.zeros((4, 6, 3), dtype=np.uint8))
    for name in ("../evil.png", str(tmp_path / "pan" / "evil.png")):
        with pytest.raises(BridgeError, match="image 1"):
            write_semantic_pngs(_panoptic_json(name), source, out, "all_classes")
    assert not (tmp_path / "evil.png").exists() and not out.exists()
    _png(source / "small.png", np.zeros((3, 6, 3), dtype=np.uint8))
    with pytest.raises(BridgeError, match="image 1"):
        write_semantic_pngs(_panoptic_json("small.png"), source, out, "all_classes")


def test_subset_refuses_duplicate_and_bool_ids(tmp_path: Path, capsys) -> None:
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"images": [{"id": 1}, {"id": 1}], "annotations": []}))
    code, _out, err = call(subset_main, [ann, "--first", "1", "--out-dir", tmp_path / "o"], capsys)
    assert code == 2 and one_error_line(err, "appears 2 times")
    ann.write_text(json.dumps({"images": [{"id": True}], "annotations": []}))
    code, _out, err = call(subset_main, [ann, "--first", "1", "--out-dir", tmp_path / "o"], capsys)
    assert code == 2 and one_error_line(err, "integer 'id'")
    ann.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    code, _out, err = call(subset_main, [ann, "--ids", "", "--out-dir", tmp_path / "o"], capsys)
    assert code == 2 and "--ids" in err and not (tmp_path / "o").exists()


# ---------------------------------------------------------------- 7. smaller ones


def test_recorder_exclusive_create(tmp_path: Path) -> None:
    first = Recorder(tmp_path / "r", rank=0)
    with pytest.raises(FormatError, match="already holds a recording"):
        Recorder(tmp_path / "r", rank=0)
    first.close()
    with pytest.raises(FormatError, match="already holds a recording"):
        Recorder(tmp_path / "r", rank=0)


def test_temp_files_of_killed_writers_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".out.json.{dead_pid}.abc123.tmp"
    live = tmp_path / f".out.json.{os.getppid()}.def456.tmp"
    stale.write_bytes(b"half")
    live.write_bytes(b"in progress")
    atomic_write_bytes(tmp_path / "out.json", b"{}")
    assert not stale.exists() and live.exists() and (tmp_path / "out.json").read_bytes() == b"{}"


def test_initcheck_shows_digits_that_differ_and_the_ks_test() -> None:
    assert pair_text(0.1234567, 0.1234561) == "0.123457/0.123456"
    assert pair_text(0.12345671, 0.12345674) == "0.12345671/0.12345674"
    assert pair_text(1.0, 1.0) == "1/1"


def test_initcheck_report_names_the_ks_critical_value(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    a, b, report = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "r.json"
    torch.save({"w": torch.randn(2000)}, a)
    torch.save({"w": torch.randn(2000) + 0.3}, b)
    code, out, _err = call(initcheck_main, [a, b, "--report", report], capsys)
    row = json.loads(report.read_text())["rows"][0]
    assert code == 1 and row["verdict"] == "different-distribution" and row["ks"] > row["ks_critical"]
    assert "KS D/critical" in out


def test_entry_points_run_guarded() -> None:
    """Every ``python -m`` entry point of the project goes through guarded_main."""
    for path in [*REPO.glob("bridge/**/*.py"), *REPO.glob("d2_side/*.py"), *REPO.glob("mmdet_side/*.py")]:
        text = path.read_text()
        if "\ndef main(" in text:
            assert "@guarded_main\ndef main(" in text, path


def test_initcheck_keys_with_braces_and_unicode_digits(tmp_path: Path, capsys) -> None:
    a, b, report = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "r.json"
    torch.save({"x.{d}": torch.ones(2), "l.².w": torch.ones(1)}, a)
    torch.save({"x.{1}": torch.ones(2), "l.0.w": torch.ones(1)}, b)
    code, out, err = call(initcheck_main, [a, b, "--report", report], capsys)
    assert code == 1 and not err and "x.{d}" in out and report.exists()
