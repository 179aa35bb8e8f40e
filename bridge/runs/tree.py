"""Flatten nested recorded values into leaves plus a JSON structure, and rebuild them.

A value is a tree of dicts (str keys), lists and tuples whose leaves are tensors or
JSON scalars (int, float, str, bool, None). Objects with a ``get_fields()`` method
(detectron2 ``Instances``) are flattened as dicts of their fields; objects with a
tensor ``.tensor`` attribute (detectron2 ``Boxes``/``BitMasks``) are flattened to that
tensor. Both are duck-typed: no framework is imported here. numpy arrays become tensors
and numpy scalars Python scalars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bridge.errors import FormatError

#: torch dtype name -> safetensors dtype code, for every dtype safetensors stores, loads and slices itself.
DTYPE_CODES: dict[str, str] = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e8m0fnu": "F8_E8M0",
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
}
#: safetensors dtype code -> torch dtype name.
CODE_DTYPES: dict[str, str] = {code: name for name, code in DTYPE_CODES.items()}
#: torch dtypes that safetensors has no code for, stored as their raw bytes (a uint8 tensor of shape
#: ``shape + [itemsize]``). float4_e2m1fn_x2 is here too: safetensors writes it as ``F4`` with a shape
#: counted in 4-bit values and cannot slice it.
BYTES_DTYPES: tuple[str, ...] = (
    "complex32",
    "complex64",
    "complex128",
    "bcomplex32",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float4_e2m1fn_x2",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "bits8",
    "bits16",
    "int1",
    "int2",
    "int3",
    "int4",
    "int5",
    "int6",
    "int7",
    "uint1",
    "uint2",
    "uint3",
    "uint4",
    "uint5",
    "uint6",
    "uint7",
)
#: Quantized dtypes: refused, since their scale and zero point live outside the tensor data.
QUANTIZED_DTYPES: tuple[str, ...] = ("qint8", "qint32", "quint8", "quint4x2", "quint2x4")
#: ``storage`` of a leaf whose file holds its raw bytes; leaves without the field hold the tensor itself.
STORAGE_BYTES = "bytes"
STORAGE_NATIVE = "native"


def _present(names: Any) -> tuple[str, ...]:
    return tuple(n for n in names if isinstance(getattr(torch, n, None), torch.dtype))


#: Names of the torch dtypes a tensor leaf may have (those present in this torch build).
TENSOR_DTYPES: tuple[str, ...] = _present(DTYPE_CODES) + _present(BYTES_DTYPES)
#: Deepest nesting of containers in one recorded value (the manifest's JSON must stay within orjson's limit).
MAX_DEPTH = 100

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class StoredTensor:
    """A tensor leaf as written: ``data`` goes into the safetensors file, ``dtype``/``shape`` are the recorded tensor's."""

    data: torch.Tensor
    dtype: str
    shape: tuple[int, ...]
    storage: str


@dataclass(frozen=True)
class Leaf:
    """One leaf of a flattened value: its dotted path and the StoredTensor or scalar found there."""

    path: str
    value: Any
    is_tensor: bool


def dtype_name(dtype: torch.dtype) -> str:
    """Return a torch dtype's name without the ``torch.`` prefix (``torch.float32`` -> ``"float32"``)."""
    return str(dtype).removeprefix("torch.")


def scalar_dtype(value: Any) -> str | None:
    """Return the manifest dtype of a JSON scalar leaf ("int","float","str","bool","none"), else None."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return None


def encode_scalar(value: Any) -> Any:
    """Encode a scalar leaf for JSON: non-finite floats and ints outside int64 become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "nan", "inf", "-inf"
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64_MIN <= value <= _INT64_MAX:
        try:
            return str(value)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise FormatError(f"int leaf of {value.bit_length()} bits is too large to record") from None
    return value


def decode_scalar(dtype: str, value: Any) -> Any:
    """Invert :func:`encode_scalar` given the leaf's manifest dtype."""
    if dtype == "float" and isinstance(value, str):
        return float(value)
    if dtype == "float" and isinstance(value, int):
        return float(value)
    if dtype == "int" and isinstance(value, str):
        return int(value)
    return value


def _raw_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """Return the bytes of ``tensor`` as a contiguous CPU uint8 tensor of shape ``shape + [itemsize]``.

    Works in uint8 over the tensor's own storage, so dtypes that torch cannot copy (int4, uint3, ...)
    and non-contiguous views are handled alike.
    """
    tensor = tensor.resolve_conj().resolve_neg()
    size = tensor.dtype.itemsize
    data = torch.empty(0, dtype=torch.uint8, device=tensor.device)
    data.set_(
        tensor.untyped_storage(),
        tensor.storage_offset() * size,
        (*tensor.shape, size),
        (*(stride * size for stride in tensor.stride()), 1),
    )
    return data.to("cpu").clone(memory_format=torch.contiguous_format)


def prepare_tensor(tensor: torch.Tensor, where: str) -> StoredTensor:
    """Return a detached, contiguous CPU copy of ``tensor`` that owns its storage, ready to be written.

    Raises FormatError (naming ``where``) for nested, sparse, quantized or subclassed tensors,
    dtypes this format does not know, and tensors that cannot be copied to the CPU (meta tensors).
    """
    if tensor.is_nested:
        raise FormatError(f"{where}: cannot record a nested tensor; record tensor.unbind() (a list) instead")
    if tensor.layout != torch.strided:
        raise FormatError(f"{where}: cannot record a tensor with layout {tensor.layout}; densify it first")
    name = dtype_name(tensor.dtype)
    if tensor.is_quantized or name in QUANTIZED_DTYPES:
        raise FormatError(
            f"{where}: quantized dtype {name} cannot be stored; record tensor.dequantize() "
            "(and its q_scale()/q_zero_point()) instead"
        )
    if name not in TENSOR_DTYPES:
        raise FormatError(f"{where}: dtype {name} cannot be stored (supported: {', '.join(TENSOR_DTYPES)})")
    detached = tensor.detach()
    if type(detached) is not torch.Tensor:
        raise FormatError(
            f"{where}: cannot record a tensor subclass {type(tensor).__qualname__}; "
            "record a plain tensor (e.g. tensor.as_subclass(torch.Tensor) or DTensor.full_tensor())"
        )
    try:
        if name in DTYPE_CODES:
            # clone() always gives fresh, contiguous storage: breaks sharing with views of the same storage.
            data, storage = detached.to("cpu").clone(memory_format=torch.contiguous_format), STORAGE_NATIVE
        else:
            data, storage = _raw_bytes(detached), STORAGE_BYTES
    except Exception as exc:  # e.g. meta tensors
        raise FormatError(f"{where}: cannot copy tensor on device {tensor.device} to CPU: {exc}") from exc
    return StoredTensor(data, name, tuple(tensor.shape), storage)


def stored_layout(dtype: str, shape: tuple[int, ...], storage: str) -> tuple[str, tuple[int, ...]]:
    """Return the (torch dtype name, shape) that the safetensors file holds for a tensor leaf."""
    if storage == STORAGE_BYTES:
        return "uint8", (*shape, getattr(torch, dtype).itemsize)
    return dtype, shape


def restore_tensor(data: torch.Tensor, dtype: str, storage: str) -> torch.Tensor:
    """Turn what the file holds back into the recorded tensor (a no-op unless stored as bytes)."""
    if storage != STORAGE_BYTES:
        return data
    return data.view(getattr(torch, dtype)).reshape(data.shape[:-1])


def numpy_to_tensor(array: np.ndarray, where: str) -> torch.Tensor:
    """Return a tensor holding a copy of ``array``; raises FormatError for dtypes torch has no match for."""
    copy = np.array(array, copy=True, order="C")
    if not copy.dtype.isnative:
        copy = copy.astype(copy.dtype.newbyteorder("="))
    try:
        return torch.from_numpy(copy)
    except TypeError as exc:
        raise FormatError(f"{where}: cannot record a numpy array of dtype {array.dtype}: {exc}") from exc


def numpy_to_scalar(value: np.generic, where: str) -> Any:
    """Return the Python scalar equal to a numpy scalar; raises FormatError when there is none (complex, datetime, ...)."""
    scalar = value.item()
    if scalar_dtype(scalar) is None:
        raise FormatError(
            f"{where}: cannot record a numpy scalar of type {type(value).__name__} "
            f"(it is a {type(scalar).__name__} in Python, not an int, float, str, bool or None)"
        )
    return scalar


def flatten(name: str, value: Any) -> tuple[dict[str, Any], list[Leaf]]:
    """Split ``value`` into a JSON structure node and its leaves in depth-first order.

    Structure nodes: ``{"type": "leaf", "path": p}``, ``{"type": "list"|"tuple", "items": [...]}``,
    ``{"type": "dict", "keys": [...], "items": [...]}``; nodes that came from a duck-typed object
    or a numpy value carry ``"origin": class name``. Raises FormatError naming ``name`` and the path
    of a bad leaf, or of the container nested deeper than MAX_DEPTH.
    """
    leaves: list[Leaf] = []
    seen_paths: set[str] = set()
    stack: set[int] = set()

    def where(path: str) -> str:
        return f"record {name!r}, path {path!r}" if path else f"record {name!r}"

    def add_leaf(path: str, leaf: Any, is_tensor: bool) -> dict[str, Any]:
        if path in seen_paths:
            raise FormatError(f"{where(path)}: two leaves share this path (a dict key containing '.' collides)")
        seen_paths.add(path)
        leaves.append(Leaf(path, leaf, is_tensor))
        return {"type": "leaf", "path": path}

    def child(path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def visit(obj: Any, path: str, depth: int) -> dict[str, Any]:
        if isinstance(obj, torch.Tensor):
            return add_leaf(path, prepare_tensor(obj, where(path)), True)
        if isinstance(obj, np.generic):  # before the scalar test: np.float64 and np.str_ subclass float and str
            return {**add_leaf(path, numpy_to_scalar(obj, where(path)), False), "origin": type(obj).__name__}
        if scalar_dtype(obj) is not None:
            return add_leaf(path, obj, False)
        if isinstance(obj, np.ndarray):
            node = add_leaf(path, prepare_tensor(numpy_to_tensor(obj, where(path)), where(path)), True)
            return {**node, "origin": "ndarray"}
        if id(obj) in stack:
            raise FormatError(f"{where(path)}: value contains itself (a reference cycle)")
        origin: str | None = None
        if isinstance(obj, (dict, list, tuple)):
            container = obj
        elif callable(getattr(obj, "get_fields", None)):
            container, origin = obj.get_fields(), type(obj).__name__
            if not isinstance(container, dict):
                raise FormatError(f"{where(path)}: {origin}.get_fields() returned {type(container).__name__}, not dict")
        elif isinstance(getattr(obj, "tensor", None), torch.Tensor):
            node = add_leaf(path, prepare_tensor(obj.tensor, where(path)), True)
            return {**node, "origin": type(obj).__name__}
        else:
            raise FormatError(f"{where(path)}: cannot record a leaf of type {type(obj).__qualname__}")
        if depth >= MAX_DEPTH:
            raise FormatError(f"{where(path)}: value is nested more than {MAX_DEPTH} containers deep")
        stack.add(id(obj))
        try:
            if isinstance(container, dict):
                keys = list(container.keys())
                for key in keys:
                    if not isinstance(key, str):
                        raise FormatError(f"{where(path)}: dict key {key!r} is not a str")
                node = {
                    "type": "dict",
                    "keys": keys,
                    "items": [visit(container[k], child(path, k), depth + 1) for k in keys],
                }
            else:
                kind = "tuple" if isinstance(container, tuple) else "list"
                node = {
                    "type": kind,
                    "items": [visit(v, child(path, str(i)), depth + 1) for i, v in enumerate(container)],
                }
        finally:
            stack.discard(id(obj))
        if origin is not None:
            node["origin"] = origin
        return node

    try:
        structure = visit(value, "", 0)
    except RecursionError as exc:  # a deep value met a deep call stack (e.g. recording from a nested hook)
        raise FormatError(f"{where('')}: value is nested too deeply to flatten ({exc})") from None
    return structure, leaves


def unflatten(structure: Any, load_leaf: Any, where: str) -> Any:
    """Rebuild a value from its structure node; ``load_leaf(path)`` returns each leaf's value.

    Tuples come back as tuples, dicts keep their key order, duck-typed objects come back as
    dicts (or as their tensor). Raises FormatError naming ``where`` on a malformed node.
    """
    if not isinstance(structure, dict) or "type" not in structure:
        raise FormatError(f"{where}: malformed structure node {structure!r:.80}")
    kind = structure["type"]
    try:
        if kind == "leaf":
            return load_leaf(structure["path"])
        if kind == "dict":
            keys, items = structure["keys"], structure["items"]
            if len(keys) != len(items):
                raise FormatError(f"{where}: dict node has {len(keys)} keys but {len(items)} items")
            return {k: unflatten(v, load_leaf, where) for k, v in zip(keys, items)}
        if kind in ("list", "tuple"):
            items = [unflatten(v, load_leaf, where) for v in structure["items"]]
            return tuple(items) if kind == "tuple" else items
    except (KeyError, TypeError) as exc:
        raise FormatError(f"{where}: malformed {kind} node in structure: {exc!r}") from exc
    raise FormatError(f"{where}: unknown structure node type {kind!r}")
