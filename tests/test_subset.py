"""bridge.subset on real files written by the synthetic generator (and, with BRIDGE_SHARED, real COCO)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.coco.synthetic import write_synthetic_coco
from bridge.errors import SubsetError
from bridge.subset import cut_subset
from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]


def naive(path: Path, ids: list[int]) -> dict:
    """The plain json.load -> filter reference."""
    data = json.loads(Path(path).read_text())
    data["images"] = [i for i in data["images"] if i["id"] in ids]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    return data


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bridge.subset", *map(str, args)], cwd=REPO, capture_output=True, text=True
    )


@pytest.fixture()
def tree(tmp_path: Path):
    return write_synthetic_coco(tmp_path / "coco", num_images=4, empty_image_ids=[101, 103])


def _ids(path: Path) -> list[int]:
    return [i["id"] for i in json.loads(path.read_text())["images"]]


@pytest.mark.parametrize("kind", ["instances", "panoptic"])
@pytest.mark.parametrize(
    "kwargs, ids, name",
    [
        ({"one": True}, [102], "onesample_102"),
        ({"one": 103}, [103], "onesample_103"),
        ({"one": True, "only": "empty"}, [101], "onesample_101"),
        ({"ids": [104, 101]}, [101, 104], "subset_ids_104-101"),
        ({"first": 2}, [101, 102], "subset_first_2"),
        ({"first": 3, "only": "nonempty"}, [102, 104], "subset_first_3_nonempty"),
        ({"first": 5, "only": "empty"}, [101, 103], "subset_first_5_empty"),
    ],
)
def test_modes_equal_naive(tree, tmp_path: Path, kind: str, kwargs: dict, ids: list[int], name: str) -> None:
    src = tree.instances_json() if kind == "instances" else tree.panoptic_json()
    [out] = cut_subset([src], out_dir=tmp_path / "out", **kwargs)
    assert out == tmp_path / "out" / f"{src.stem}_{name}.json"
    assert json.loads(out.read_text()) == naive(src, ids)


def test_several_files_keep_same_ids_beside_input(tree) -> None:
    outs = cut_subset([tree.panoptic_json(), tree.instances_json()], first=2, only="nonempty")
    assert [p.parent for p in outs] == [tree.panoptic_json().parent] * 2
    assert _ids(outs[0]) == _ids(outs[1]) == [102, 104]
    pan = json.loads(outs[0].read_text())
    orig = {a["image_id"]: a for a in json.loads(tree.panoptic_json().read_text())["annotations"]}
    assert [a["segments_info"] for a in pan["annotations"]] == [orig[i]["segments_info"] for i in (102, 104)]


def test_top_level_keys_preserved_and_absent_stay_absent(tmp_path: Path) -> None:
    src = tmp_path / "odd.json"
    doc = {
        "type": "instances",
        "images": [{"id": 7, "file_name": 'a"[{.jpg'}, {"id": 8}],
        "extra": {"nested": [1, {"image_id": 8}]},
        "annotations": [
            {"id": 1, "image_id": 7, "note": '"image_id": 8 ]}', "attributes": {"image_id": 8}},
            {"image_id": 8, "id": 2},
        ],
        "categories": [],
        "n": 3.5,
    }
    src.write_text(json.dumps(doc, indent=2))
    [out] = cut_subset([src], one=7)
    result = json.loads(out.read_text())
    assert list(result) == list(doc) and "info" not in result and "licenses" not in result
    assert result == naive(src, [7])


def test_cli_success_prints_paths(tree, tmp_path: Path) -> None:
    proc = run_cli(tree.instances_json(), tree.panoptic_json(), "--ids", "102,104", "--out-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    paths = [Path(p) for p in proc.stdout.split()]
    assert [p.name for p in paths] == [
        "instances_val2017_subset_ids_102-104.json",
        "panoptic_val2017_subset_ids_102-104.json",
    ]
    assert all(_ids(p) == [102, 104] for p in paths)
    proc = run_cli(tree.instances_json(), "--one", "--out-dir", tmp_path)
    assert proc.returncode == 0 and Path(proc.stdout.strip()).name == "instances_val2017_onesample_102.json"


def _bad_inputs(tree, tmp: Path) -> list[tuple[list, str]]:
    """(arguments, the whole error line after ``error: ``) of each bad input."""
    other = write_synthetic_coco(tmp / "other", num_images=2)  # val ids 101, 102 only
    fewer = tmp / "fewer.json"
    fewer.write_bytes(other.instances_json().read_bytes())
    malformed = tmp / "malformed.json"
    malformed.write_text(tree.instances_json().read_text()[:-40])
    not_coco = tmp / "notcoco.json"
    not_coco.write_text(json.dumps({"images": [{"id": 1}], "foo": []}))
    a_list = tmp / "list.json"
    a_list.write_text("[1, 2]")
    val, train = tree.instances_json(), tree.instances_json("train2017")
    return [
        ([val, "--one", "999"], f"{val}: image id 999 not found"),
        ([val, "--ids", "102,998"], f"{val}: image id 998 not found"),
        ([val, "--one", "101", "--only-nonempty"], f"{val}: image id 101 is not nonempty"),
        ([val, fewer, "--ids", "102,104"], f"{fewer}: image id 104 not found"),
        (
            [val, other.instances_json(), "--ids", "102"],
            f"{other.instances_json()}: output {tmp / 'out' / 'instances_val2017_subset_ids_102.json'} would collide "
            "with another file",
        ),
        (
            [tree.panoptic_json(), tree.root / "nope.json", "--first", "1"],
            f"{tree.root / 'nope.json'}: cannot read (No such file or directory)",
        ),
        ([val, malformed, "--first", "1"], f"{malformed}: malformed JSON (unterminated string)"),
        ([not_coco, "--first", "1"], f"{not_coco}: not a COCO file (no 'annotations' list)"),
        ([a_list, "--first", "1"], f"{a_list}: not a COCO file (top level is not a JSON object)"),
        ([train, val, "--one"], f"{val}: image id 201 not found"),  # --one picks from the first file
    ]


def test_bad_inputs_exit_2_and_write_nothing(tree, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for args, message in _bad_inputs(tree, tmp_path):
        proc = run_cli(*args, "--out-dir", out)
        assert (proc.returncode, proc.stderr) == (2, f"error: {message}\n"), args
        assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


def test_api_raises_subset_error(tree) -> None:
    with pytest.raises(SubsetError, match=r"instances_val2017\.json: image id 999 not found$"):
        cut_subset([tree.instances_json()], ids=[999])
    with pytest.raises(SubsetError, match="^--first needs a positive count, got 0$"):
        cut_subset([tree.instances_json()], first=0)


_SHARED = SHARED_DATA
_SHARED_FILES = (
    []
    if not _SHARED
    else [
        Path(_SHARED) / "coco_instances_sample" / "instances_val2017_79img.json",
        Path(_SHARED) / "coco_panoptic_sample" / "panoptic_examples.json",
    ]
)
if _SHARED_FILES:

    @pytest.mark.parametrize("src", _SHARED_FILES, ids=lambda p: p.name)
    @pytest.mark.parametrize(
        "kwargs",
        [{"one": True}, {"first": 2}, {"first": 3, "only": "nonempty"}],
        ids=["one", "first2", "first3nonempty"],
    )
    def test_shared_real_coco(src: Path, kwargs: dict, tmp_path: Path) -> None:
        doc = json.loads(src.read_text())
        order = [image["id"] for image in doc["images"]]
        annotated = {a["image_id"] for a in doc["annotations"] if a.get("segments_info", True)}  # panoptic: non-empty
        candidates = [i for i in order if i in annotated] if "one" in kwargs or "only" in kwargs else order
        expected = candidates[:1] if "one" in kwargs else candidates[: kwargs["first"]]
        [out] = cut_subset([src], out_dir=tmp_path, **kwargs)
        result = json.loads(out.read_text())
        assert [image["id"] for image in result["images"]] == expected
        assert result == naive(src, expected) and list(result) == list(doc)
