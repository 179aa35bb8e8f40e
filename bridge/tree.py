"""Flatten nested recorded values into leaves plus a JSON structure, and rebuild them.

A value is a tree of dicts (str keys), lists and tuples whose leaves are tensors or
JSON scalars (int, float, str, bool, None). Objects with a ``get_fields()`` method
(detectron2 ``Instances``) are flattened as dicts of their fields; objects with a
tensor ``.tensor`` attribute (detectron2 ``Boxes``/``BitMasks``) are flattened to that
tensor. Both are duck-typed: no framework is imported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .errors import FormatError

#: torch dtype name -> safetensors dtype code, for every dtype safetensors can store and load.
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
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
}
#: safetensors dtype code -> torch dtype name.
CODE_DTYPES: dict[str, str] = {code: name for name, code in DTYPE_CODES.items()}
#: Names of the torch dtypes a tensor leaf may have (those present in this torch build).
TENSOR_DTYPES: tuple[str, ...] = tuple(n for n in DTYPE_CODES if isinstance(getattr(torch, n, None), torch.dtype))

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Leaf:
    """One leaf of a flattened value: its dotted path and the tensor or scalar found there."""

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
        return str(value)
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


def prepare_tensor(tensor: torch.Tensor, where: str) -> torch.Tensor:
    """Return a detached, contiguous CPU copy of ``tensor`` that owns its storage.

    Raises FormatError (naming ``where``) for layouts or dtypes safetensors cannot store.
    """
    if tensor.layout != torch.strided:
        raise FormatError(f"{where}: cannot record a tensor with layout {tensor.layout}; densify it first")
    name = dtype_name(tensor.dtype)
    if name not in TENSOR_DTYPES:
        raise FormatError(f"{where}: dtype {name} cannot be stored (supported: {', '.join(TENSOR_DTYPES)})")
    try:
        out = tensor.detach().to("cpu")
    except Exception as exc:  # e.g. meta tensors
        raise FormatError(f"{where}: cannot copy tensor on device {tensor.device} to CPU: {exc}") from exc
    # clone() always gives fresh, contiguous storage: breaks sharing with views of the same storage.
    return out.clone(memory_format=torch.contiguous_format)


def flatten(name: str, value: Any) -> tuple[dict[str, Any], list[Leaf]]:
    """Split ``value`` into a JSON structure node and its leaves in depth-first order.

    Structure nodes: ``{"type": "leaf", "path": p}``, ``{"type": "list"|"tuple", "items": [...]}``,
    ``{"type": "dict", "keys": [...], "items": [...]}``; nodes that came from a duck-typed object
    carry ``"origin": class name``. Raises FormatError naming ``name`` and the path of a bad leaf.
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

    def visit(obj: Any, path: str) -> dict[str, Any]:
        if isinstance(obj, torch.Tensor):
            return add_leaf(path, prepare_tensor(obj, where(path)), True)
        if scalar_dtype(obj) is not None:
            return add_leaf(path, obj, False)
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
        stack.add(id(obj))
        try:
            if isinstance(container, dict):
                keys = list(container.keys())
                for key in keys:
                    if not isinstance(key, str):
                        raise FormatError(f"{where(path)}: dict key {key!r} is not a str")
                node = {"type": "dict", "keys": keys,
                        "items": [visit(container[k], child(path, k)) for k in keys]}
            else:
                kind = "tuple" if isinstance(container, tuple) else "list"
                node = {"type": kind, "items": [visit(v, child(path, str(i))) for i, v in enumerate(container)]}
        finally:
            stack.discard(id(obj))
        if origin is not None:
            node["origin"] = origin
        return node

    structure = visit(value, "")
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
