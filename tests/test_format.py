"""Round-trip and bad-input tests of the shared tensor format (bridge.runs / bridge.runs.tree)."""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import KINDS, BridgeError, Entry, FormatError, Recorder, Run, open_run
from bridge.runs.tree import BYTES_DTYPES, DTYPE_CODES, MAX_DEPTH, QUANTIZED_DTYPES, TENSOR_DTYPES, dtype_name, flatten

#: torch warns that complex32 / bcomplex32 support is experimental whenever one is created.
pytestmark = pytest.mark.filterwarnings("ignore:.*support is experimental")

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def bits(t: torch.Tensor) -> torch.Tensor:
    """Raw bytes of each element, as uint8 of shape + [itemsize] (NaN-safe, bit-exact comparison).

    Read in uint8 over the tensor's storage: torch cannot copy sub-byte dtypes (int1, uint3, ...).
    """
    t = t.resolve_conj().resolve_neg()
    size = t.dtype.itemsize
    out = torch.empty(0, dtype=torch.uint8)
    out.set_(t.untyped_storage(), t.storage_offset() * size, (*t.shape, size), (*(s * size for s in t.stride()), 1))
    return out.clone()


def same(a: Any, b: Any) -> bool:
    """Deep equality: tensors bit-exact with equal dtype/shape, floats NaN-safe, tuples may be lists."""
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(bits(a.detach().cpu()), bits(b))
        )
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
    itemsize = dtype.itemsize
    raw = torch.randint(0, 256, (*shape, itemsize), generator=gen, dtype=torch.uint8)
    return raw.view(dtype).reshape(shape)


# ---------------------------------------------------------------- hypothesis round trips

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
tensors = st.builds(random_tensor, st.sampled_from(TENSOR_DTYPES), shapes, st.integers(0, 2**16))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
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
    chunks = list(run.tensor_slices(run.entries()[0], 2))
    assert len(chunks) == 4 and all(same(t[2 * i : 2 * i + 2], c) for i, c in enumerate(chunks))


def test_float8_and_bfloat16_present() -> None:
    for name in (
        "float64",
        "float32",
        "float16",
        "bfloat16",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "bool",
        "float8_e4m3fn",
        "float8_e5m2",
        "float8_e8m0fnu",
        "complex64",
        "complex128",
        "int4",
        "uint4",
    ):
        assert name in TENSOR_DTYPES


#: Every dtype this torch has, by canonical name ("float", "half", "cfloat", ... are aliases of these).
TORCH_DTYPES = sorted({dtype_name(v) for v in vars(torch).values() if isinstance(v, torch.dtype)})


def test_every_torch_dtype_is_handled() -> None:
    """A dtype a new torch adds fails here until bridge/runs/tree.py stores it (natively or as bytes) or refuses it."""
    unhandled = [n for n in TORCH_DTYPES if n not in TENSOR_DTYPES and n not in QUANTIZED_DTYPES]
    assert unhandled == [], f"torch dtypes bridge/runs/tree.py does not handle: {unhandled}"
    assert not set(DTYPE_CODES) & set(BYTES_DTYPES) and not set(TENSOR_DTYPES) & set(QUANTIZED_DTYPES)
    assert len(TORCH_DTYPES) >= 40  # the enumeration found torch's dtypes


@pytest.mark.filterwarnings("ignore:.*quantized tensor creation")
@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_every_torch_dtype_round_trips_or_is_refused(tmp_path: Path, dtype: str) -> None:
    if dtype in QUANTIZED_DTYPES:
        with Recorder(tmp_path, rank=0) as rec:
            with pytest.raises(FormatError, match=rf"record 'q', path 'w'.*quantized dtype {dtype}.*dequantize"):
                rec.record("q", {"w": torch.empty(2, 3, dtype=getattr(torch, dtype))}, step=0)
        assert open_run(tmp_path).entries() == []
        return
    t = random_tensor(dtype, (5, 3), 7)
    with Recorder(tmp_path, rank=0) as rec:
        rec.record("t", {"x": t, "col": t[:, 1], "cols": t.t()}, step=0)
    run = open_run(tmp_path)
    stored_as_bytes = dtype in BYTES_DTYPES
    for entry in run.entries():
        assert entry.dtype == dtype and entry.storage == ("bytes" if stored_as_bytes else "native")
    back = run.get("t", step=0)
    assert same(t, back["x"]) and same(t[:, 1], back["col"]) and same(t.t(), back["cols"])
    for start, chunk in zip(range(0, 5, 2), run.tensor_slices(run.entries()[0], 2)):
        assert same(t[start : start + 2], chunk)
    leaf = orjson.loads((tmp_path / "rank0" / "manifest.json").read_bytes())["records"][0]["leaves"][0]
    assert leaf["dtype"] == dtype and leaf.get("storage") == ("bytes" if stored_as_bytes else None)


def test_bytes_storage_in_the_file(tmp_path: Path) -> None:
    """Byte-stored leaves hold uint8 of shape + [itemsize]; float8_e8m0fnu is a native safetensors dtype."""
    from safetensors import safe_open

    c = torch.randn(2, 3, dtype=torch.complex64)
    e8 = random_tensor("float8_e8m0fnu", (4,), 3)
    with Recorder(tmp_path, rank=0) as rec:
        rec.record(
            "v",
            {
                "c": c.conj(),
                "e8": e8,
                "empty": torch.zeros(0, 2, dtype=torch.complex128),
                "scalar": torch.tensor(1 + 2j),
            },
            step=0,
        )
    with safe_open(str(tmp_path / "rank0" / "000000-s0-output.safetensors"), "pt") as f:
        assert (f.get_slice("v.c").get_dtype(), f.get_slice("v.c").get_shape()) == ("U8", [2, 3, 8])
        assert f.get_slice("v.e8").get_dtype() == "F8_E8M0"
        assert f.get_slice("v.scalar").get_shape() == [8]  # complex64: 8 bytes
    back = open_run(tmp_path).get("v", step=0)
    assert same(c.conj().resolve_conj(), back["c"]) and same(e8, back["e8"])
    assert back["empty"].shape == (0, 2) and back["scalar"].item() == 1 + 2j


def test_bytes_storage_mismatch_is_named(tmp_path: Path) -> None:
    with Recorder(tmp_path, rank=0) as rec:
        rec.record("c", torch.zeros(2, 3, dtype=torch.complex64), step=0)
    manifest = tmp_path / "rank0" / "manifest.json"
    _edit_manifest(manifest, lambda d: d["records"][0]["leaves"][0].update(dtype="complex128"))
    with pytest.raises(
        FormatError, match=r"'c' is uint8\[2, 3, 8\] but the manifest says complex128\[2, 3\] \(stored as bytes"
    ):
        open_run(tmp_path).get("c", step=0)
    _edit_manifest(manifest, lambda d: d["records"][0]["leaves"][0].update(dtype="float32"))
    with pytest.raises(FormatError, match="not one of this format's byte-stored dtypes"):
        open_run(tmp_path).get("c", step=0)
    _edit_manifest(manifest, lambda d: d["records"][0]["leaves"][0].update(storage="zip"))
    with pytest.raises(FormatError, match=r"manifest\.json.*unknown storage 'zip'"):
        open_run(tmp_path)


def test_numpy_values_are_converted(tmp_path: Path) -> None:
    """numpy arrays are recorded as tensors, numpy scalars as the equal Python scalars."""
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    read_only = np.arange(3, dtype=np.int64)
    read_only.flags.writeable = False
    value = {
        "f32": base,
        "strided": base[:, ::2],
        "big_endian": np.arange(4, dtype=">i4"),
        "ro": read_only,
        "zero_d": np.array(True),
        "f": np.float32(1.5),
        "i": np.int64(-3),
        "b": np.bool_(True),
        "s": np.str_("x"),
        "nan": np.float64("nan"),
        "u16": np.arange(3, dtype=np.uint16),
    }
    with Recorder(tmp_path, rank=0) as rec:
        rec.record("np", value, step=0)
    back = open_run(tmp_path).get("np", step=0)
    assert torch.equal(back["f32"], torch.from_numpy(base)) and torch.equal(
        back["strided"], torch.from_numpy(base[:, ::2].copy())
    )
    assert back["big_endian"].dtype == torch.int32 and back["big_endian"].tolist() == [0, 1, 2, 3]
    assert back["ro"].tolist() == [0, 1, 2] and back["zero_d"].shape == () and back["zero_d"].item() is True
    assert back["u16"].dtype == torch.uint16
    for key, want in (("f", 1.5), ("i", -3), ("b", True), ("s", "x")):
        assert type(back[key]) is type(want) and back[key] == want, key
    assert isinstance(back["nan"], float) and math.isnan(back["nan"])
    with Recorder(tmp_path / "bad", rank=0) as rec:
        with pytest.raises(FormatError, match=r"record 'o', path 'a'.*numpy array of dtype object"):
            rec.record("o", {"a": np.array([object()])}, step=0)
        with pytest.raises(FormatError, match=r"record 'z', path '0'.*numpy scalar of type complex128"):
            rec.record("z", [np.complex128(1j)], step=0)
        with pytest.raises(FormatError, match=r"record 'd'.*numpy scalar of type datetime64"):
            rec.record("d", np.datetime64("2020-01-01"), step=0)


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
    batch = [
        {
            "file_name": "x.jpg",
            "height": 8,
            "width": 6,
            "image": image,
            "instances": Instances(gt_boxes=Boxes(boxes), gt_classes=torch.tensor([3, 1])),
        }
    ]
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
    value = {
        "t": base.t(),
        "view": base[1:3, ::2],
        "same": base,
        "again": base,
        "w": w * 2,
        "exp": torch.ones(1).expand(4),
    }
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


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(name="a", step=0, kind="nope"),
        dict(name="a", step=-1),
        dict(name="a/b", step=0),
        dict(name="", step=0),
        dict(name="a", step=1.5),
        dict(name="a", step=True),
    ],
)
def test_record_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with Recorder(tmp_path, rank=0) as rec:
        with pytest.raises(FormatError):
            rec.record(value=torch.zeros(1), **kwargs)


@pytest.mark.filterwarnings("ignore:.*quantized tensor creation", "ignore:The PyTorch API of nested tensors")
def test_record_rejects_bad_leaves(tmp_path: Path) -> None:
    with Recorder(tmp_path, rank=0) as rec:
        with pytest.raises(FormatError, match=r"'bad'.*'x\.1'.*object"):
            rec.record("bad", {"x": [1, object()]}, step=0)
        with pytest.raises(FormatError, match=r"record 'q'.*quantized dtype qint8"):
            rec.record("q", torch.quantize_per_tensor(torch.rand(3), 0.1, 0, torch.qint8), step=0)
        nested = torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)], layout=torch.jagged)
        with pytest.raises(FormatError, match=r"record 'n', path 'x'.*nested tensor"):
            rec.record("n", {"x": nested}, step=0)
        with pytest.raises(FormatError, match=r"record 'n2'.*nested tensor"):
            rec.record("n2", torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]), step=0)
        with pytest.raises(FormatError, match=r"record 's', path '0'.*layout torch.sparse_coo"):
            rec.record("s", [torch.eye(2).to_sparse()], step=0)
        with pytest.raises(FormatError, match=r"record 'm'.*device meta"):
            rec.record("m", torch.empty(2, device="meta"), step=0)
        with pytest.raises(FormatError, match=r"record 'sub'.*tensor subclass Sub"):
            rec.record("sub", torch.zeros(2).as_subclass(Sub), step=0)
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


class Sub(torch.Tensor):
    """A tensor subclass (its detach() stays a Sub)."""


def _nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    inner = value
    for _ in range(depth - 1):
        inner.append([])
        inner = inner[0]
    return value


def test_too_deep_values_are_refused(tmp_path: Path) -> None:
    with Recorder(tmp_path, rank=0) as rec:
        rec.record("ok", _nested_lists(MAX_DEPTH), step=0)
        with pytest.raises(
            FormatError, match=rf"record 'deep', path '(0\.){{{MAX_DEPTH - 1}}}0'.*more than {MAX_DEPTH}"
        ):
            rec.record("deep", _nested_lists(MAX_DEPTH + 1), step=0)
        with pytest.raises(FormatError, match=rf"more than {MAX_DEPTH}"):
            rec.record("deeper", _nested_lists(5000), step=0)
    assert [e.name for e in open_run(tmp_path).entries()] == []  # an empty list has no leaves
    assert open_run(tmp_path).steps() == [0]


def test_recursion_error_in_flatten_names_the_record() -> None:
    """Recording from deep in a call stack may hit Python's recursion limit first: still a FormatError."""
    import inspect

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + 40)
    try:
        with pytest.raises(FormatError, match="record 'deep': value is nested too deeply to flatten"):
            flatten("deep", _nested_lists(60))
    finally:
        sys.setrecursionlimit(old)


def test_recorder_refuses_existing_rank_dir(tmp_path: Path) -> None:
    Recorder(tmp_path, rank=0).close()
    with pytest.raises(FormatError, match="already holds"):
        Recorder(tmp_path, rank=0)
    (tmp_path / "rank1").mkdir()
    (tmp_path / "rank1" / "journal.jsonl").write_bytes(b"")
    with pytest.raises(FormatError, match=r"rank1/journal\.jsonl: already holds"):
        Recorder(tmp_path, rank=1)


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


@pytest.mark.parametrize("bad", [True, 1.0, "1", None])
def test_format_version_must_be_an_int(tmp_path: Path, bad: Any) -> None:
    manifest, _ = _one_record(tmp_path)
    _edit_manifest(manifest, lambda d: d.update(format_version=bad))
    with pytest.raises(FormatError, match=r"rank0/manifest\.json: format_version must be an integer, got"):
        open_run(tmp_path)


@pytest.mark.parametrize("field, bad", [("closed", "yes"), ("closed", 1), ("aborted", 3)])
def test_closed_and_aborted_types(tmp_path: Path, field: str, bad: Any) -> None:
    manifest, _ = _one_record(tmp_path)
    _edit_manifest(manifest, lambda d: d.update({field: bad}))
    with pytest.raises(FormatError, match=rf"manifest\.json: '{field}' must be"):
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
    assert run.meta["closed"] is False and run.state() == "open"
    assert torch.equal(run.get("first", step=0)["x"], torch.ones(3))
    with pytest.raises(FormatError):
        run.get("second", step=1)


def test_interrupted_before_journal_line(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, rank=0)
    rec.record("first", torch.ones(3), step=0)
    journal = tmp_path / "rank0" / "journal.jsonl"
    saved = journal.read_bytes()
    rec.record("second", torch.zeros(2), step=1)
    # Crash after the tensor file was written but before its journal line was: only a stray file is left.
    journal.write_bytes(saved)
    run = open_run(tmp_path)
    assert [e.name for e in run.entries()] == ["first"]
    assert torch.equal(run.get("first", step=0), torch.ones(3))
    assert isinstance(run, Run)


def test_record_appends_to_the_journal_and_close_compacts(tmp_path: Path) -> None:
    """record() leaves the manifest untouched (O(1) per record); close() folds the journal into it."""
    rec = Recorder(tmp_path, framework="test", rank=0)
    manifest, journal = tmp_path / "rank0" / "manifest.json", tmp_path / "rank0" / "journal.jsonl"
    header = manifest.read_bytes()
    for step in range(5):
        rec.record("x", {"t": torch.full((2,), float(step)), "step": step}, step=step)
    assert manifest.read_bytes() == header
    lines = [orjson.loads(line) for line in journal.read_bytes().splitlines()]
    assert [line["n"] for line in lines] == list(range(5)) and lines[2]["record"]["step"] == 2
    while_open = open_run(tmp_path)
    assert while_open.steps() == list(range(5)) and while_open.get("x", step=3)["t"].tolist() == [3.0, 3.0]
    rec.close()
    assert not journal.exists()
    data = orjson.loads(manifest.read_bytes())
    assert data["closed"] is True and [r["step"] for r in data["records"]] == list(range(5))
    assert data["records"] == [line["record"] for line in lines]
    closed = open_run(tmp_path)
    assert closed.state() == "closed" and closed.entries() == while_open.entries()


def test_torn_and_corrupt_journal_lines(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, rank=0, fsync=True)
    for step in range(3):
        rec.record("x", torch.tensor([step]), step=step)
    journal = tmp_path / "rank0" / "journal.jsonl"
    good = journal.read_bytes()
    journal.write_bytes(good + b'{"n": 3, "record": {"name": "x", "st')  # killed mid-write
    assert open_run(tmp_path).steps() == [0, 1, 2]
    lines = good.splitlines(keepends=True)
    journal.write_bytes(lines[0] + b"{torn\n" + lines[2])
    with pytest.raises(FormatError, match=r"rank0/journal\.jsonl: line 2 is not valid JSON"):
        open_run(tmp_path)
    journal.write_bytes(lines[0] + lines[2])
    with pytest.raises(FormatError, match=r"journal\.jsonl: line 2 holds record #2, expected #1"):
        open_run(tmp_path)
    journal.write_bytes(lines[0] + b"[1, 2]\n")
    with pytest.raises(FormatError, match=r"journal\.jsonl: line 2 is not a JSON object"):
        open_run(tmp_path)
    journal.write_bytes(lines[0] + b'{"n": 1}\n')
    with pytest.raises(FormatError, match=r"journal\.jsonl: line 2 is not \{"):
        open_run(tmp_path)
    bad_leaf = orjson.loads(lines[1])
    bad_leaf["record"]["leaves"][0]["shape"] = "x"
    journal.write_bytes(lines[0] + orjson.dumps(bad_leaf) + b"\n")
    with pytest.raises(FormatError, match=r"journal\.jsonl: record #1 'x' step 1.*malformed"):
        open_run(tmp_path)


def test_crash_between_compaction_and_journal_removal(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, rank=0)
    rec.record("a", torch.ones(2), step=0)
    rec.record("b", torch.ones(2), step=1)
    journal = tmp_path / "rank0" / "journal.jsonl"
    left_over = journal.read_bytes()
    rec.close()
    journal.write_bytes(left_over)  # the manifest was replaced but the journal not yet removed
    run = open_run(tmp_path)
    assert [e.name for e in run.entries()] == ["a", "b"] and run.state() == "closed"


def test_with_block_that_raises_marks_the_run_aborted(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="boom"):
        with Recorder(tmp_path, framework="test", rank=0) as rec:
            rec.record("a", torch.arange(3), step=0)
            raise ValueError("boom")
    data = orjson.loads((tmp_path / "rank0" / "manifest.json").read_bytes())
    assert data["closed"] is False and data["aborted"] == "ValueError: boom" and len(data["records"]) == 1
    assert not (tmp_path / "rank0" / "journal.jsonl").exists()
    run = open_run(tmp_path)
    assert run.state() == "aborted" and run.header()["aborted"] == "ValueError: boom"
    assert run.meta["aborted"] == "ValueError: boom" and run.get("a", step=0).tolist() == [0, 1, 2]
    with pytest.raises(FormatError, match="record.*after close"):
        rec.record("b", 1, step=1)
    with pytest.raises(FormatError, match=r"no rank 3 \(ranks \[0\]\)"):
        run.state(3)
    with Recorder(tmp_path / "clean", rank=0) as rec:
        rec.record("a", 1, step=0)
    assert open_run(tmp_path / "clean").state() == "closed" and "aborted" not in open_run(tmp_path / "clean").meta


def test_atomic_writes_get_the_usual_file_mode(tmp_path: Path) -> None:
    """Reports and runs written through a temporary file are readable like any other file (not 0600)."""
    import os

    from bridge.atomic import atomic_write_bytes

    target = tmp_path / "report.json"
    atomic_write_bytes(target, b"{}")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_format_md_example_is_what_the_recorder_writes(tmp_path: Path) -> None:
    """docs/FORMAT.md's manifest example is the manifest of the value it describes (creation time aside)."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md").read_text()
    example = orjson.loads(doc.split("## Manifest schema")[1].split("```json")[1].split("```")[0])
    batch = [
        {
            "file_name": "a.jpg",
            "height": 480,
            "image": torch.zeros(3, 480, 640, dtype=torch.uint8),
            "instances": Instances(gt_boxes=Boxes(torch.zeros(2, 4))),
            "freqs": torch.zeros(8, dtype=torch.complex64),
        }
    ]
    with Recorder(tmp_path, framework="detectron2", rank=0) as rec:
        rec.record("batch", batch, step=0, kind="batch")
    written = orjson.loads((tmp_path / "rank0" / "manifest.json").read_bytes())
    assert written == {**example, "torch_version": torch.__version__, "created": written["created"]}
