"""Round-trip and bad-input tests of the shared tensor format (bridge.runs / bridge.tree)."""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import KINDS, BridgeError, Entry, FormatError, Recorder, Run, open_run
from bridge.tree import TENSOR_DTYPES

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def bits(t: torch.Tensor) -> torch.Tensor:
    """Raw bytes of a tensor (NaN-safe, bit-exact comparison)."""
    t = t.contiguous()
    if t.dim() == 0:
        t = t.reshape(1)
    return t.view(torch.uint8) if t.dtype != torch.bool else t.to(torch.uint8)


def same(a: Any, b: Any) -> bool:
    """Deep equality: tensors bit-exact with equal dtype/shape, floats NaN-safe, tuples may be lists."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(bits(a.detach().cpu()), bits(b)))
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return isinstance(b, float) and (a == b or (math.isnan(a) and math.isnan(b)))
    return type(a) is type(b) and a == b


def random_tensor(dtype_name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A tensor with arbitrary bit patterns of the given dtype (includes NaNs/infs for floats)."""
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    itemsize = torch.empty((), dtype=dtype).element_size()
    raw = torch.randint(0, 256, (*shape, itemsize), generator=gen, dtype=torch.uint8)
    return raw.view(dtype).reshape(shape)


# ---------------------------------------------------------------- hypothesis round trips

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
tensors = st.builds(random_tensor, st.sampled_from(TENSOR_DTYPES), shapes, st.integers(0, 2**16))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
)
keys = st.text(alphabet="abcdefgh_XY0", min_size=1, max_size=5)
values = st.recursive(
    st.one_of(tensors, scalars),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple), st.dictionaries(keys, inner, max_size=3)
    ),
    max_leaves=8,
)


@FAST
@given(value=values, step=st.integers(0, 10**6), kind=st.sampled_from(KINDS))
def test_roundtrip_nested(value: Any, step: int, kind: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        with Recorder(d, framework="test", rank=0) as rec:
            rec.record("v", value, step=step, kind=kind)
        run = open_run(d)
        assert same(value, run.get("v", step=step, kind=kind))
        assert run.steps() == [step] and run.ranks() == [0]
        for e in run.entries():
            if e.is_tensor:
                assert run.tensor(e).dtype == getattr(torch, e.dtype)


@FAST
@given(dtype=st.sampled_from(TENSOR_DTYPES), shape=shapes, seed=st.integers(0, 2**16))
def test_roundtrip_dtypes(dtype: str, shape: tuple[int, ...], seed: int) -> None:
    t = random_tensor(dtype, shape, seed)
    with tempfile.TemporaryDirectory() as d:
        with Recorder(d, rank=0) as rec:
            rec.record("t", t, step=0)
        run = open_run(d)
        (entry,) = run.entries()
        assert entry.dtype == dtype and entry.shape == tuple(shape) and entry.path == "" and entry.key == "t"
        assert same(t, run.tensor(entry))
        assert same(t, run.get("t", step=0))


@pytest.mark.parametrize("dtype", TENSOR_DTYPES)
def test_every_supported_dtype(tmp_path: Path, dtype: str) -> None:
    t = random_tensor(dtype, (7, 3), 1)
    with Recorder(tmp_path, rank=0) as rec:
        rec.record("t", t, step=0)
    run = open_run(tmp_path)
    assert same(t, run.tensor(run.entries()[0]))
    assert same(t, torch.cat(list(run.tensor_slices(run.entries()[0], 2))))


def test_float8_and_bfloat16_present() -> None:
    for name in ("float64", "float32", "float16", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool",
                 "float8_e4m3fn", "float8_e5m2"):
        assert name in TENSOR_DTYPES


# ---------------------------------------------------------------- structure, entries, slices


class Boxes:
    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


class Instances:
    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def get_fields(self) -> dict[str, Any]:
        return self._fields


def test_detectron2_like_batch(tmp_path: Path) -> None:
    image = torch.rand(3, 8, 6)
    boxes = torch.rand(2, 4)
    batch = [{"file_name": "x.jpg", "height": 8, "width": 6, "image": image,
              "instances": Instances(gt_boxes=Boxes(boxes), gt_classes=torch.tensor([3, 1]))}]
    with Recorder(tmp_path, framework="detectron2", rank=0) as rec:
        rec.record("batch", batch, step=0, kind="batch")
    run = open_run(tmp_path)
    paths = [e.path for e in run.entries()]
    assert paths == ["0.file_name", "0.height", "0.width", "0.image", "0.instances.gt_boxes", "0.instances.gt_classes"]
    back = run.get("batch", step=0, kind="batch")
    assert back[0]["file_name"] == "x.jpg" and back[0]["height"] == 8
    assert torch.equal(back[0]["image"], image)
    assert torch.equal(back[0]["instances"]["gt_boxes"], boxes)
    assert run.meta["framework"] == "detectron2" and run.meta["format_version"] == 1
    assert run.meta["torch_version"] == torch.__version__ and run.meta["created"]


def test_entries_listing_and_filters(tmp_path: Path) -> None:
    with Recorder(tmp_path, rank=0) as rec:
        rec.record("a", {"x": torch.zeros(2), "n": 1}, step=0, kind="output")
        rec.record("l", torch.tensor(1.5), step=0, kind="loss")
        rec.record("a", (torch.ones(3), "s"), step=1)
    # Delete the tensor files: listing must still work because it loads nothing.
    for f in (tmp_path / "rank0").glob("*.safetensors"):
        f.unlink()
    run = open_run(tmp_path)
    es = run.entries()
    assert [e.index for e in es] == [0, 1, 2, 3, 4]
    assert [e.key for e in es] == ["a.x", "a.n", "l", "a.0", "a.1"]
    assert all(isinstance(e, Entry) for e in es)
    assert [e.key for e in run.entries(kind="loss")] == ["l"]
    assert [e.key for e in run.entries(step=1)] == ["a.0", "a.1"]
    assert run.entries(rank=3) == []
    assert run.steps() == [0, 1]
    n = run.entries()[1]
    assert (n.is_tensor, n.dtype, n.shape, n.file, n.value) == (False, "int", (), "", 1)
    with pytest.raises(FormatError, match="missing"):
        run.tensor(es[0])


def test_tensor_slices(tmp_path: Path) -> None:
    big = torch.randn(103, 5)
    with Recorder(tmp_path, rank=0) as rec:
        rec.record("big", big, step=0)
        rec.record("scalar", torch.tensor(2.0), step=0)
        rec.record("empty", torch.zeros(0, 3), step=0)
    run = open_run(tmp_path)
    big_e, scalar_e, empty_e = run.entries()
    chunks = list(run.tensor_slices(big_e, 10))
    assert len(chunks) == 11 and all(c.shape[0] <= 10 for c in chunks)
    assert torch.equal(torch.cat(chunks), big)
    assert [c.item() for c in run.tensor_slices(scalar_e, 4)] == [2.0]
    assert [c.shape for c in run.tensor_slices(empty_e, 4)] == [torch.Size([0, 3])]
    with pytest.raises(FormatError):
        list(run.tensor_slices(big_e, 0))


def test_noncontiguous_shared_grad_tensors(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    w = torch.randn(3, 3, requires_grad=True)
    value = {"t": base.t(), "view": base[1:3, ::2], "same": base, "again": base, "w": w * 2, "exp": torch.ones(1).expand(4)}
    with Recorder(tmp_path, rank=0) as rec:
        rec.record("v", value, step=0)
    back = open_run(tmp_path).get("v", step=0)
    for k, v in value.items():
        assert torch.equal(back[k], v.detach()), k
        assert not back[k].requires_grad


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # decided at collection, never skipped


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_on_any_device_is_stored_on_cpu(tmp_path: Path, device: str) -> None:
    t = torch.randn(4, 4, device=device)
    with Recorder(tmp_path, rank=0) as rec:
        rec.record("t", t, step=0)
    out = open_run(tmp_path).get("t", step=0)
    assert out.device.type == "cpu" and torch.equal(out, t.cpu())


def test_get_missing_names_everything(tmp_path: Path) -> None:
    with Recorder(tmp_path, rank=0) as rec:
        rec.record("loss_cls", torch.tensor(1.0), step=2, kind="loss")
    run = open_run(tmp_path)
    with pytest.raises(FormatError) as info:
        run.get("loss_box", step=5, kind="loss", rank=1)
    msg = str(info.value)
    for part in (str(tmp_path), "loss_box", "step=5", "'loss'", "rank=1"):
        assert part in msg
    with pytest.raises(FormatError, match=r"loss_cls@2/loss"):
        run.get("loss_box", step=2, kind="loss", rank=0)


def test_no_framework_imports() -> None:
    """bridge/ is neutral ground: importing all of it in a fresh interpreter loads no framework."""
    import subprocess

    code = ("import sys, bridge, bridge.runs, bridge.taps, bridge.compare, bridge.convert, bridge.subset, "
            "bridge.meta, bridge.panoptic, bridge.panoptic_parity, bridge.onesample, bridge.initcheck\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('detectron2', 'mmdet', 'mmengine', 'mmcv')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs",
    [dict(name="a", step=0, kind="nope"), dict(name="a", step=-1), dict(name="a/b", step=0),
     dict(name="", step=0), dict(name="a", step=1.5), dict(name="a", step=True)],
)
def test_record_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with Recorder(tmp_path, rank=0) as rec:
        with pytest.raises(FormatError):
            rec.record(value=torch.zeros(1), **kwargs)


def test_record_rejects_bad_leaves(tmp_path: Path) -> None:
    with Recorder(tmp_path, rank=0) as rec:
        with pytest.raises(FormatError, match=r"'bad'.*'x\.1'.*object"):
            rec.record("bad", {"x": [1, object()]}, step=0)
        with pytest.raises(FormatError, match="complex"):
            rec.record("c", torch.zeros(2, dtype=torch.complex64), step=0)
        with pytest.raises(FormatError, match="not a str"):
            rec.record("k", {1: torch.zeros(1)}, step=0)
        loop: list[Any] = []
        loop.append(loop)
        with pytest.raises(FormatError, match="cycle"):
            rec.record("loop", loop, step=0)
        rec.record("ok", 1, step=0)
        with pytest.raises(FormatError, match="already recorded"):
            rec.record("ok", 2, step=0)
    assert isinstance(FormatError("x"), BridgeError)
    run = open_run(tmp_path)  # failed records left nothing behind
    assert [e.key for e in run.entries()] == ["ok"]
    assert list((tmp_path / "rank0").glob("*.tmp")) == []


def test_recorder_refuses_existing_rank_dir(tmp_path: Path) -> None:
    Recorder(tmp_path, rank=0).close()
    with pytest.raises(FormatError, match="already holds"):
        Recorder(tmp_path, rank=0)


def _one_record(tmp_path: Path) -> tuple[Path, Path]:
    with Recorder(tmp_path, rank=0) as rec:
        rec.record("t", {"a": torch.arange(6.0).reshape(2, 3)}, step=0)
    return tmp_path / "rank0" / "manifest.json", tmp_path / "rank0" / "000000-s0-output.safetensors"


def _edit_manifest(manifest: Path, edit: Any) -> None:
    data = orjson.loads(manifest.read_bytes())
    edit(data)
    manifest.write_bytes(orjson.dumps(data))


def test_missing_run_dir_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="does not exist"):
        open_run(tmp_path / "nope")
    with pytest.raises(FormatError, match="no rank"):
        open_run(tmp_path)
    (tmp_path / "rank0").mkdir()
    with pytest.raises(FormatError, match="missing manifest"):
        open_run(tmp_path)


def test_manifest_not_json(tmp_path: Path) -> None:
    manifest, _ = _one_record(tmp_path)
    manifest.write_text("{not json")
    with pytest.raises(FormatError, match=r"manifest\.json.*not valid JSON"):
        open_run(tmp_path)


def test_unknown_format_version(tmp_path: Path) -> None:
    manifest, _ = _one_record(tmp_path)
    _edit_manifest(manifest, lambda d: d.update(format_version=99))
    with pytest.raises(FormatError, match="format_version 99"):
        open_run(tmp_path)


@pytest.mark.parametrize("bad", ["../x.safetensors", "/etc/passwd", "rank0/../../x", "..\\x"])
def test_file_outside_run_dir(tmp_path: Path, bad: str) -> None:
    manifest, _ = _one_record(tmp_path)
    _edit_manifest(manifest, lambda d: d["records"][0].update(file=bad))
    with pytest.raises(FormatError, match="outside the run dir"):
        open_run(tmp_path)


def test_malformed_manifest_entry(tmp_path: Path) -> None:
    manifest, _ = _one_record(tmp_path)
    _edit_manifest(manifest, lambda d: d["records"][0]["leaves"][0].pop("shape"))
    with pytest.raises(FormatError, match="malformed"):
        open_run(tmp_path)


def test_tensor_file_missing_truncated_corrupt(tmp_path: Path) -> None:
    _, file = _one_record(tmp_path)
    run = open_run(tmp_path)
    entry = run.entries()[0]
    good = file.read_bytes()
    file.write_bytes(good[: len(good) - 5])
    with pytest.raises(FormatError, match=r"000000-s0-output\.safetensors.*'t\.a'"):
        run.tensor(entry)
    file.write_bytes(b"\xff" * 40)
    with pytest.raises(FormatError, match="corrupt"):
        run.tensor(entry)
    file.write_bytes(b"")
    with pytest.raises(FormatError, match="corrupt"):
        list(run.tensor_slices(entry, 1))
    file.unlink()
    with pytest.raises(FormatError, match="missing"):
        run.get("t", step=0)


def test_tensor_key_missing_and_mismatch(tmp_path: Path) -> None:
    manifest, _ = _one_record(tmp_path)
    _edit_manifest(manifest, lambda d: d["records"][0]["leaves"][0].update(path="b"))
    with pytest.raises(FormatError, match="has no tensor 't.b'"):
        open_run(tmp_path).tensor(open_run(tmp_path).entries()[0])
    _edit_manifest(manifest, lambda d: d["records"][0]["leaves"][0].update(path="a", shape=[3, 2]))
    with pytest.raises(FormatError, match=r"float32\[2, 3\] but the manifest says float32\[3, 2\]"):
        open_run(tmp_path).get("t", step=0)
    _edit_manifest(manifest, lambda d: d["records"][0]["leaves"][0].update(shape=[2, 3], dtype="int32"))
    with pytest.raises(FormatError, match="manifest says int32"):
        open_run(tmp_path).get("t", step=0)


def test_interrupted_run_keeps_earlier_records(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, rank=0)
    rec.record("first", {"x": torch.ones(3)}, step=0)
    rec.record("second", torch.zeros(2), step=1)
    # Simulate a crash: no close(), a stray temp file, the later tensor file lost.
    (tmp_path / "rank0" / ".000002-s2-output.safetensors.abc.tmp").write_bytes(b"partial")
    (tmp_path / "rank0" / "000001-s1-output.safetensors").unlink()
    run = open_run(tmp_path)
    assert run.meta["closed"] is False
    assert torch.equal(run.get("first", step=0)["x"], torch.ones(3))
    with pytest.raises(FormatError):
        run.get("second", step=1)


def test_interrupted_before_manifest_update(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, rank=0)
    rec.record("first", torch.ones(3), step=0)
    saved = (tmp_path / "rank0" / "manifest.json").read_bytes()
    rec.record("second", torch.zeros(2), step=1)
    # Crash after the tensor file was written but before the manifest was replaced.
    (tmp_path / "rank0" / "manifest.json").write_bytes(saved)
    run = open_run(tmp_path)
    assert [e.name for e in run.entries()] == ["first"]
    assert torch.equal(run.get("first", step=0), torch.ones(3))
    assert isinstance(run, Run)


def test_atomic_writes_get_the_usual_file_mode(tmp_path: Path) -> None:
    """Reports and runs written through a temporary file are readable like any other file (not 0600)."""
    import os

    from bridge.atomic import atomic_write_bytes

    target = tmp_path / "report.json"
    atomic_write_bytes(target, b"{}")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
