"""Hostile inputs for the command-line tools, and the contract every run of them must keep (issue 21).

``make_case(rng, workdir)`` writes generated inputs into ``workdir`` (malformed JSON / YAML / safetensors /
manifests / checkpoints / PNGs / npz, path tricks, odd numbers) and returns a :class:`Case`: which
``main(argv)`` to run and which paths it may write. ``check_case(case)`` runs it in-process and returns the
contract breaks: an exit status outside {0, 1, 2}, an exception escaping ``main``, a traceback or no
``error:`` line on exit 2, an input changed, a file written outside the named outputs (or any file on
exit 2), a JSON output that does not parse, a temporary file left behind.

Used by ``tests/test_fuzz_cli.py`` (hypothesis, bounded) and ``benchmarks/fuzz_cli.py`` (N cases).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import random
import shutil
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bridge.runs import KINDS, Recorder

ODD_NUMBERS = ["nan", "inf", "-inf", "-1", "0", "1e-300", "1e308", "1e999", "abc", "", "0x10", "1_0", "-0", "3"]
MARKUP = ["[/x]", "[bold]", "[", "]", "[/]", "[red]x[/red]", "\\[", "é", "\x1b[31m"]


@dataclass
class Case:
    """One generated command: ``main(argv)`` and the outputs it may write (relative to ``workdir``)."""

    name: str
    main: Callable[[Sequence[str]], int]
    argv: list[str]
    workdir: Path
    outputs: set[str] = field(default_factory=set)
    output_prefixes: tuple[str, ...] = ()  # outputs with generated names (subset) start like one of these
    code: int | None = None  # the exit status, once checked
    stderr: str = ""  # what it printed on stderr, once checked

    def allowed(self, rel: str) -> bool:
        """True when the command may create ``rel``."""
        named = {os.path.normpath(o) for o in self.outputs}
        return os.path.normpath(rel) in named or any(rel.startswith(p) for p in self.output_prefixes)


# ---------------------------------------------------------------- generators of hostile bytes


def _text(rng: random.Random, n: int = 8) -> str:
    alphabet = "abcxyz._-/0123456789" + "".join(MARKUP) + "{}()*+?\\^$|"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, n)))


def _position(rng: random.Random, size: int) -> int:
    """A position in ``size`` bytes whose draw does not depend on ``size``: serialized files may vary in length
    from run to run (torch.save writes a serialization id), and hypothesis needs the same draws when it replays."""
    return rng.randrange(1 << 24) % size


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Truncate, flip bytes, splice garbage or leave ``data`` as it is."""
    op = rng.randrange(5)
    if op == 0 or not data:
        return data
    if op == 1:
        return data[: _position(rng, len(data))]
    if op == 2:
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            buf[_position(rng, len(buf))] = rng.randrange(256)
        return bytes(buf)
    if op == 3:
        at = _position(rng, len(data))
        return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + data[at:]
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))


def _odd_value(rng: random.Random) -> object:
    return rng.choice(
        [
            None,
            True,
            False,
            0,
            -1,
            1,
            2**31,
            2**63,
            2**64 + 5,
            -(2**70),
            10**400,
            1.5,
            float("nan"),
            float("inf"),
            "x",
            "",
            "1",
            [],
            {},
            [1, "a"],
            {"a": 1},
            [[[[[]]]]],
            -0.0,
            1e308,
        ]
    )


def _odd_json(rng: random.Random, depth: int = 0) -> object:
    if depth > 3 or rng.random() < 0.4:
        return _odd_value(rng)
    if rng.random() < 0.5:
        return [_odd_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {_text(rng, 5): _odd_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _dump_json(rng: random.Random, doc: object) -> bytes:
    """JSON text of ``doc`` (NaN allowed), sometimes deeply nested or damaged."""
    r = rng.random()
    if r < 0.05:
        return b"[" * 50000 + b"]" * 50000
    if r < 0.08:
        return b'{"a": ' + b"9" * 6000 + b"}"
    try:
        data = json.dumps(doc, default=str).encode()
    except (ValueError, TypeError):
        data = b"{}"
    return _mutate_bytes(rng, data) if rng.random() < 0.15 else data


def _tensor(rng: random.Random) -> torch.Tensor:
    shape = [rng.randint(0, 3) for _ in range(rng.randint(0, 3))]
    dtype = rng.choice(
        [
            torch.float32,
            torch.float64,
            torch.float16,
            torch.bfloat16,
            torch.int64,
            torch.int32,
            torch.uint8,
            torch.bool,
            torch.complex64,
            torch.float8_e4m3fn,
            torch.float8_e4m3fnuz,
        ]
    )
    values = torch.Generator().manual_seed(rng.randrange(2**31))  # the case depends on rng alone
    t = torch.randn(shape, dtype=torch.float64, generator=values) * rng.choice([1, 1e-30, 1e30])
    if t.numel() and rng.random() < 0.3:
        t.view(-1)[0] = rng.choice([float("nan"), float("inf"), -float("inf")])
    if dtype.is_complex:
        return t.to(torch.complex64)
    if dtype in (torch.int64, torch.int32, torch.uint8, torch.bool):
        return torch.nan_to_num(t).clamp(-100, 100).to(dtype)
    return t.to(dtype)


def _key(rng: random.Random) -> str:
    return rng.choice(
        [
            "backbone.res2.0.conv1.weight",
            "x",
            "a.b.1.c",
            "stem.conv1.weight",
            "",
            "module.x",
            "k" + rng.choice(MARKUP),
            _text(rng, 12) or "y",
        ]
    )


def _rules_yaml(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.1:
        return b"a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nrules: [*b, *b, *b]\n"
    if r < 0.15:
        return b"\xff\xfe\x00bad"
    if r < 0.2:
        return b"[" * 3000 + b"]" * 3000
    rules = []
    for _ in range(rng.randint(0, 4)):
        kind = rng.choice(
            ["rename", "drop", "drop_alias", "split", "concat", "class_rows", "reshape", "transpose", "add", "bogus", 7]
        )
        rule: dict[str, object] = {
            "kind": kind,
            "from": rng.choice(["^x$", "(.*)", "(a+)+$", "[", "^(backbone)\\.(.*)$", _text(rng)]),
        }
        for name in rng.sample(
            [
                "to",
                "of",
                "with",
                "dim",
                "sizes",
                "index",
                "shape",
                "dims",
                "key",
                "value",
                "dtype",
                "on",
                "stage",
                "if_zero",
                "background",
                "keep_trailing",
            ],
            rng.randint(0, 4),
        ):
            rule[name] = rng.choice([_odd_value(rng), "{1}", ["a", "b"], [0, 1], [-1], "y", [2**40], 99])
        rules.append(rule)
    data = json.dumps(rules, default=str).encode()  # JSON is YAML
    return _mutate_bytes(rng, data) if rng.random() < 0.2 else data


def _checkpoint(rng: random.Random, path: Path) -> None:
    state: dict[str, object] = {_key(rng): _tensor(rng) for _ in range(rng.choice([0, 1, 2, 2, 3, 4]))}
    if rng.random() < 0.3:
        state[_key(rng)] = _odd_value(rng)
    suffix = path.suffix
    if suffix == ".pkl":
        arrays = {
            k: (
                v.to(torch.float32).numpy()
                if isinstance(v, torch.Tensor)
                and not v.is_complex()
                and v.dtype not in (torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.bfloat16)
                else v
            )
            for k, v in state.items()
        }
        arrays = {k: v for k, v in arrays.items() if not isinstance(v, torch.Tensor)}
        if rng.random() < 0.3:
            arrays["s"] = rng.choice([np.array(["a"]), np.array([1], dtype="datetime64[D]"), np.int64(3), 2**70])
        data = pickle.dumps({"model": arrays}, protocol=2)
    elif suffix == ".safetensors":
        from safetensors.torch import save

        try:
            data = save(
                {
                    k: v
                    for k, v in state.items()
                    if isinstance(v, torch.Tensor) and not v.is_complex() and "fnuz" not in str(v.dtype)
                }
            )
        except Exception:  # a generator; anything it cannot save becomes garbage bytes
            data = b"garbage"
    else:
        buf = io.BytesIO()
        torch.save(rng.choice([state, {"model": state}, {"state_dict": state}]), buf)
        data = buf.getvalue()
    path.write_bytes(_mutate_bytes(rng, data) if rng.random() < 0.25 else data)


# ---------------------------------------------------------------- cases per CLI


def _output(rng: random.Random, workdir: Path, inputs: list[str], name: str) -> str:
    """An output path: usually fresh, sometimes an input, inside an input directory or odd."""
    r = rng.random()
    if r < 0.15 and inputs:
        return rng.choice(inputs)
    if r < 0.25 and inputs:
        return f"{rng.choice(inputs)}/{name}"
    if r < 0.3:
        return "."
    if r < 0.35:
        return f"sub/../{name}"
    return f"out/{name}"


def _record_run(rng: random.Random, run: Path) -> None:
    with Recorder(run, framework=rng.choice(["detectron2", "mmdet", "[/x]", None]), rank=0) as rec:
        for n in range(rng.randint(0, 4)):
            value: object = rng.choice(
                [
                    _tensor(rng),
                    {"a": _tensor(rng), "b": [_tensor(rng)]},
                    rng.choice([1, 2.5, 10**400, -(2**70), "s", None, True, float("nan")]),
                ]
            )
            try:
                rec.record(
                    rng.choice(["x", "y", "a[/x]", "[bold]z", f"r{n}"]),
                    value,
                    step=rng.randint(0, 1),
                    kind=rng.choice(KINDS),
                )
            except Exception:  # the generator asks for duplicates and leaves the Recorder refuses
                pass
    if rng.random() < 0.2:  # damage the run
        files = sorted(p for p in run.rglob("*") if p.is_file())
        if files:
            victim = rng.choice(files)
            if victim.name == "manifest.json" and rng.random() < 0.5:
                doc = json.loads(victim.read_text())
                if doc["records"]:
                    rec = rng.choice(doc["records"])
                    rec[rng.choice(["file", "step", "kind", "name", "leaves"])] = rng.choice(
                        ["../../../etc/passwd", "/etc/passwd", -1, "activations", [], {}, None, 2**70, "x"]
                    )
                victim.write_text(json.dumps(doc))
            else:
                victim.write_bytes(_mutate_bytes(rng, victim.read_bytes()))


def case_compare(rng: random.Random, workdir: Path) -> Case:
    from bridge.compare.__main__ import main

    _record_run(rng, workdir / "a")
    if rng.random() < 0.3:  # the same run twice: a pass, when nothing else is wrong
        shutil.copytree(workdir / "a", workdir / "b")
    else:
        _record_run(rng, workdir / "b")
    argv = ["a", "b", "--device", "cpu"]
    if rng.random() < 0.3:
        argv += ["--kinds", rng.choice([",".join(rng.sample(KINDS, 2)), "activations", "", ",", "grad", "x,meta"])]
    for option in ("--atol", "--rtol"):
        if rng.random() < 0.3:
            argv.append(f"{option}={rng.choice(ODD_NUMBERS)}")
    if rng.random() < 0.3:
        argv += ["--tol", f"{rng.choice(['*', 'x*', '['])}={rng.choice(ODD_NUMBERS)},{rng.choice(ODD_NUMBERS)}"]
    if rng.random() < 0.2:
        (workdir / "map.yaml").write_bytes(_rules_yaml(rng))
        argv += ["--map", "map.yaml"]
    outputs = set()
    for option, name in (("--json", "r.json"), ("--html", "r.html")):
        if rng.random() < 0.5:
            out = _output(rng, workdir, ["a", "b", "a/rank0/manifest.json"], name)
            argv += [option, out]
            outputs.add(out)
    argv.append("--quiet") if rng.random() < 0.5 else None
    return Case("compare", main, argv, workdir, outputs)


def case_convert(rng: random.Random, workdir: Path) -> Case:
    from bridge.convert.__main__ import main

    src = "m" + rng.choice([".pth", ".pkl", ".safetensors", ".pt"])
    _checkpoint(rng, workdir / src)
    argv = [src]
    if rng.random() < 0.5:
        (workdir / "r.yaml").write_bytes(_rules_yaml(rng))
        argv += ["--rules", "r.yaml"]
    else:
        argv += ["--preset", rng.choice(["d2-resnet-to-mmdet", "coco91-to-coco80", "nope"])]
    if rng.random() < 0.3:
        lines = ["key\tshape\tkind"] + [
            f"{_key(rng)}\t{rng.choice(['2', '3x3', '[]', 'x', '-1', '2,2'])}\tparam" for _ in range(rng.randint(0, 3))
        ]
        (workdir / "t.tsv").write_bytes(_mutate_bytes(rng, "\n".join(lines).encode()))
        argv += ["--target", "t.tsv"]
    out = _output(rng, workdir, [src, "r.yaml"], "o" + rng.choice([".pth", ".safetensors"]))
    argv += ["-o", out]
    outputs = {out}
    if rng.random() < 0.5:
        report = _output(rng, workdir, [src, out], "report.json")
        argv += ["--report", report]
        outputs.add(report)
    if rng.random() < 0.3:
        argv.append("--keep-failed")
    return Case("convert", main, argv, workdir, outputs)


def _coco(rng: random.Random) -> dict:
    ids = [rng.choice([1, 2, 3, 1, True, "4", 2**63, -1, 1.5]) if rng.random() < 0.2 else n for n in range(1, 5)]
    images = [{"id": i, "file_name": f"{n}.jpg", "height": 4, "width": 4} for n, i in enumerate(ids)]
    annotations = [
        {"id": n, "image_id": rng.choice(ids + [99]), "segments_info": rng.choice([[], [{"id": 1}]])}
        for n in range(rng.randint(0, 5))
    ]
    doc: dict[str, object] = {"info": {}, "images": images, "annotations": annotations, "categories": []}
    if rng.random() < 0.2:
        doc[rng.choice(["images", "annotations"])] = _odd_json(rng)
    return doc


def case_subset(rng: random.Random, workdir: Path) -> Case:
    from bridge.subset.__main__ import main

    inputs = []
    for n in range(rng.randint(1, 3)):
        name = rng.choice(["x.json", f"i{n}.json", "x_subset_first_1.json", "x_onesample_1.json"])
        (workdir / name).write_bytes(_dump_json(rng, _coco(rng)))
        inputs.append(name)
    if rng.random() < 0.15:  # the first file's output is named like the second input
        for name in ("x.json", "x_subset_first_1.json"):
            (workdir / name).write_bytes(_dump_json(rng, _coco(rng)))
        return Case(
            "subset",
            main,
            ["x.json", "x_subset_first_1.json", "--first", "1"],
            workdir,
            output_prefixes=("x_subset_first_1_subset_first_1",),
        )
    mode = rng.choice(
        [
            ["--one"],
            ["--one", rng.choice(["1", "2", "99", "-1"])],
            ["--ids", rng.choice(["1,2", "", ",", "1,x", "2", "1,1"])],
            ["--first", rng.choice(["1", "2", "0", "-3", "99"])],
        ]
    )
    argv = inputs + mode
    if rng.random() < 0.3:
        argv.append(rng.choice(["--only-empty", "--only-nonempty"]))
    prefixes = tuple(f"{Path(i).stem}_" for i in inputs)
    if rng.random() < 0.5:
        argv += ["--out-dir", "out"]
        prefixes = tuple(f"out/{p}" for p in prefixes)
    return Case("subset", main, argv, workdir, output_prefixes=prefixes)


def _npz(rng: random.Random, path: Path, shape: tuple[int, int]) -> None:
    seg = np.zeros(shape, dtype=np.int64)
    seg_id = rng.choice([1] * 6 + [2, 2**40, -5, 0])
    seg[: shape[0] // 2] = seg_id
    cat = np.where(seg != 0, rng.choice([7] * 6 + [1, -2]), 0)
    table = np.array([[seg_id, 7, 1, int((seg != 0).sum()), 0]], dtype=np.int64)
    arrays = {
        "category": cat,
        "segment": seg,
        "segments": rng.choice([table] * 6 + [table[:, :4], np.zeros((0, 5)), np.array(["x"])]),
    }
    if rng.random() < 0.1:
        arrays.pop(rng.choice(list(arrays)))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    path.write_bytes(_mutate_bytes(rng, data) if rng.random() < 0.25 else data)


def case_panoptic(rng: random.Random, workdir: Path) -> Case:
    from bridge.panoptic.__main__ import main

    for name in ("a.npz", "b.npz"):
        _npz(rng, workdir / name, rng.choice([(4, 4), (4, 4), (3, 5), (0, 4)]))
    argv = ["a.npz", "b.npz", "--device", "cpu"]
    if rng.random() < 0.3:
        argv.append(f"--min-pq={rng.choice(ODD_NUMBERS)}")
    outputs = set()
    for option, name in (("--json", "p.json"), ("--html", "p.html")):
        if rng.random() < 0.5:
            out = _output(rng, workdir, ["a.npz", "b.npz"], name)
            argv += [option, out]
            outputs.add(out)
    return Case("panoptic", main, argv, workdir, outputs)


def _metadata(rng: random.Random) -> dict:
    doc: dict[str, object] = {
        "framework": rng.choice(["detectron2", "mmdet", "[/x]"]),
        "source": "s",
        "classes": ["a", "b", "c"],
        "isthing": [True, False, True],
        "dataset_id_to_label": {"1": 0, "2": 1, "3": 2},
        "colors": None,
        "void_label": None,
        "ignore_label": 255,
        "label_divisor": 1000,
        "evaluator": {"max_dets": [1, 10, 100]},
        "raw": {"num_thing_classes": 2},
    }
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        key = rng.choice(list(doc))
        if rng.random() < 0.2:
            doc.pop(key)
        else:
            doc[key] = _odd_json(rng)
    return doc


def case_meta(rng: random.Random, workdir: Path) -> Case:
    from bridge.meta.__main__ import main

    for name in ("a.json", "b.json"):
        (workdir / name).write_bytes(_dump_json(rng, _metadata(rng)))
    return Case("meta", main, ["a.json", "b.json"] + (["--plain"] if rng.random() < 0.3 else []), workdir)


def case_initcheck(rng: random.Random, workdir: Path) -> Case:
    from bridge.initcheck.__main__ import main

    for name in ("a.pth", "b.pth"):
        _checkpoint(rng, workdir / name)
    argv = ["a.pth", "b.pth"]
    if rng.random() < 0.3:
        (workdir / "r.yaml").write_bytes(_rules_yaml(rng))
        argv += ["--rules", "r.yaml"]
    outputs = set()
    if rng.random() < 0.6:
        out = _output(rng, workdir, ["a.pth", "b.pth"], "init.json")
        argv += ["--report", out]
        outputs.add(out)
    return Case("initcheck", main, argv, workdir, outputs)


def case_png(rng: random.Random, workdir: Path) -> Case:
    """Panoptic PNGs through the semantic-PNG step (no CLI of its own: a main() around the library call)."""
    from PIL import Image

    from bridge.cli import guarded_main
    from bridge.coco.semseg_png import write_semantic_pngs

    (workdir / "pan").mkdir()
    h, w = rng.choice([(4, 6), (4, 6), (1, 1)])
    array = np.zeros((h, w, 3), dtype=np.uint8)
    array[..., 0] = 5
    mode = rng.choice(["RGB"] * 6 + ["L", "I;16", "RGBA", "P", "1"])
    image = (
        Image.fromarray(array).convert(mode)
        if mode != "I;16"
        else Image.fromarray(array[..., 0].astype(np.uint16), "I;16")
    )
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = buf.getvalue()
    if rng.random() < 0.1:  # a PNG claiming to be huge: the IHDR size of a decompression bomb
        data = data[:16] + struct.pack(">II", 60000, 60000) + data[24:]
    (workdir / "pan" / "p.png").write_bytes(_mutate_bytes(rng, data) if rng.random() < 0.2 else data)
    file_name = rng.choice(["p.png"] * 6 + ["../pan/p.png", "/etc/passwd", "../../x.png", "", "sub/../p.png"])
    doc = {
        "images": [{"id": 1, "height": 4, "width": 6}],
        "annotations": [
            {"image_id": 1, "file_name": file_name, "segments_info": [{"id": 5, "category_id": rng.choice([1, 2])}]}
        ],
        "categories": [{"id": 1, "isthing": 1}],
    }
    mode_name = rng.choice(["all_classes"] * 5 + ["stuff_only"] * 4 + ["bogus"])

    @guarded_main
    def main(argv: Sequence[str] | None = None) -> int:
        write_semantic_pngs(doc, workdir / "pan", workdir / "cache", mode_name)
        return 0

    return Case("semseg_png", main, [], workdir, output_prefixes=("cache/",))


def _recipe(rng: random.Random) -> dict:
    """The demo's recipe with keys dropped or replaced by odd values."""
    doc: dict[str, object] = {
        "family": rng.choice(["panoptic_fpn", "mask_rcnn", "maskdino", "[/x]"]),
        "out": "out",
        "data": {"synthetic": {"images": 2, "size": [240, 320]}},
        "reference": {
            "framework": "detectron2",
            "config": "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml",
            "builder": "examples.panoptic_fpn_demo:build_d2",
            "options": ["MODEL.DEVICE", "cpu"],
        },
        "port": {
            "framework": "mmdet",
            "command": [
                ["{python}", "-m", "mmdet_side.config", "--base", "x.py"],
                ["{python}", "tools/test.py", "{weights}"],
            ],
            "env": {"A": "{run}"},
        },
        "convert": {"preset": "d2-panoptic-fpn-to-mmdet"},
        "stages": ["data", "reference", "convert", "port"],
        "known": [{"stage": "inference", "match": "x", "note": "y"}],
    }
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        if not doc:
            break
        section = rng.choice(list(doc))
        target = doc[section] if isinstance(doc[section], dict) and doc[section] and rng.random() < 0.6 else doc
        key = rng.choice(list(target)) if target is not doc else section
        if rng.random() < 0.25:
            target.pop(key)
        else:
            target[key] = rng.choice([_odd_json(rng), _text(rng), [], {}, None, 0, True])
    return doc


def case_align(rng: random.Random, workdir: Path) -> Case:
    """Hostile recipes through the recipe check and the plan (``--dry-run``: nothing runs, nothing is written)."""
    import yaml

    from bridge.align.__main__ import main

    data = yaml.safe_dump(_recipe(rng)).encode()
    (workdir / "recipe.yaml").write_bytes(_mutate_bytes(rng, data) if rng.random() < 0.2 else data)
    argv = ["recipe.yaml", "--dry-run"]
    if rng.random() < 0.3:
        argv += ["--stages", rng.choice(["", ",", "data,bogus", "report", _text(rng)])]
    if rng.random() < 0.2:
        argv += ["--out", rng.choice(["recipe.yaml", "", ".", _text(rng) or "o"])]
    return Case("align", main, argv, workdir)


GENERATORS: dict[str, Callable[[random.Random, Path], Case]] = {
    "compare": case_compare,
    "convert": case_convert,
    "subset": case_subset,
    "panoptic": case_panoptic,
    "meta": case_meta,
    "initcheck": case_initcheck,
    "semseg_png": case_png,
    "align": case_align,
}


def make_case(rng: random.Random, workdir: Path, cli: str | None = None) -> Case:
    """A generated case for ``cli`` (default: one chosen by ``rng``), its inputs written into ``workdir``."""
    name = cli or rng.choice(sorted(GENERATORS))
    return GENERATORS[name](rng, workdir)


# ---------------------------------------------------------------- the contract


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_symlink() and p.exists()
    }


def check_case(case: Case) -> list[str]:
    """Run ``case`` in-process; return its contract breaks (empty: the contract held)."""
    before = _snapshot(case.workdir)
    out, err = io.StringIO(), io.StringIO()
    breaks: list[str] = []
    with contextlib.chdir(case.workdir), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = case.main(case.argv)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
        except BaseException as exc:  # anything escaping main breaks the contract
            code = None
            breaks.append(f"exception escaped main: {type(exc).__name__}: {exc}"[:300])
    case.code = code
    case.stderr = text = err.getvalue()
    if code not in (0, 1, 2, None):
        breaks.append(f"exit status {code!r}")
    if "Traceback" in text:
        breaks.append("traceback on stderr")
    if code == 2 and not any("error:" in line for line in text.strip().splitlines()[-1:]):
        breaks.append(f"exit 2 without an error: line ({text.strip()[-200:]!r})")
    after = _snapshot(case.workdir)
    for rel, sha in before.items():
        if after.get(rel) != sha:
            breaks.append(f"input {rel} {'changed' if rel in after else 'removed'}")
    created = sorted(set(after) - set(before))
    for rel in created:
        if code == 2:
            breaks.append(f"wrote {rel} although it exited 2")
        elif not case.allowed(rel):
            breaks.append(f"wrote {rel}, which is not a named output")
        if rel.endswith(".tmp") or ".tmp." in Path(rel).name:
            breaks.append(f"temporary file {rel} left behind")
        elif rel.endswith(".json") and case.allowed(rel):
            try:
                json.loads((case.workdir / rel).read_bytes())
            except ValueError:
                breaks.append(f"output {rel} is not whole JSON")
    return [f"{case.name} {case.argv}: {b}" for b in breaks]
