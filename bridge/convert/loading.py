"""Load checkpoints safely (.safetensors, .pth/.pt, detectron2 .pkl) and save converted ones atomically."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bridge.atomic import atomic_path
from bridge.convert.unpickler import restricted_load, unsafe_load
from bridge.errors import BridgeError, ConversionError

_WRAPPERS = ("state_dict", "model", "module")


def _to_tensor(key: str, value: Any, where: str) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic)) and np.asarray(value).dtype.kind not in "biufc":
        raise ConversionError(f"{where}: key {key!r} holds a numpy {np.asarray(value).dtype} array, not numbers")
    try:
        if isinstance(value, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(value) if not value.flags.writeable else value)
        if isinstance(value, (np.generic, int, float, bool)):
            return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, OverflowError, RuntimeError) as exc:
        raise ConversionError(
            f"{where}: key {key!r}: torch cannot hold {_short_repr(value)} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    return None


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def unwrap_state_dict(obj: Any, where: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """Find the state dict inside common wrappers and return it as ``{name: Tensor}``.

    Unwraps ``{'state_dict': ...}``, ``{'model': ...}`` and ``{'module': ...}`` (repeatedly), strips a
    ``module.`` prefix shared by every key, converts numpy arrays without copying, and skips non-tensor
    entries only at the wrapper level (e.g. detectron2's ``__author__``).
    """
    for _ in range(4):
        if isinstance(obj, dict):
            inner = next((obj[w] for w in _WRAPPERS if isinstance(obj.get(w), dict)), None)
            if inner is not None:
                obj = inner
                continue
        break
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"{where}: no state dict found (expected a mapping of names to tensors)")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ConversionError(f"{where}: non-string key {key!r}")
        tensor = _to_tensor(key, value, where)
        if tensor is None:
            raise ConversionError(f"{where}: key {key!r} holds {type(value).__name__}, not a tensor")
        out[key] = tensor
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module.") :]: v for k, v in out.items()}
    return out


def _torch_load(path: Path, weights_only: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc) and "zip" not in str(exc):
            raise
    return torch.load(path, map_location="cpu", weights_only=weights_only)


def _looks_like_torch_file(path: Path) -> bool:
    """True when ``path`` starts like a file of torch.save: a zip archive or a pickle (protocol 2+)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _looks_like_safetensors(path: Path) -> bool:
    """True when ``path`` starts like a safetensors file: an 8-byte little-endian header size, then ``{``."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def load_raw(path: str | Path, *, unsafe_pickle: bool = False) -> Any:
    """Load the object stored in a checkpoint file, safely unless ``unsafe_pickle``. A ``.safetensors``
    suffix, or content that starts like one, is read with safetensors."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors" or (suffix not in (".pkl", ".pickle") and _looks_like_safetensors(path)):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as exc:
            raise ConversionError(f"corrupt safetensors file {path}: {exc}") from None
    if suffix in (".pkl", ".pickle"):
        return unsafe_load(path) if unsafe_pickle else restricted_load(path)
    if not _looks_like_torch_file(path):
        raise ConversionError(f"{path}: not a torch checkpoint (zip or legacy pickle)")
    try:
        return _torch_load(path, weights_only=not unsafe_pickle)
    except Exception as exc:  # every failure is reported as bad input
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ConversionError(
                f"{path} needs objects the safe loader refuses ({text}); "
                "pass --unsafe-pickle only if you trust this file"
            ) from None
        raise ConversionError(f"cannot load {path}: {type(exc).__name__}: {text}") from None


def load_checkpoint(path: str | Path, *, unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Load a checkpoint (.safetensors, .pth/.pt, detectron2 .pkl) as a flat ``{name: Tensor}`` dict.

    Safe by default: torch files load with ``weights_only=True`` (memory-mapped where possible),
    pickles with a restricted unpickler.  ``unsafe_pickle=True`` allows arbitrary pickled objects.
    """
    return unwrap_state_dict(load_raw(path, unsafe_pickle=unsafe_pickle), str(path))


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse a manifest shape: ``64x3x7x7``, ``[256, 3, 3, 3]``, ``256,3``, ``[]`` or '' (scalar)."""
    cleaned = text.strip().strip("[]()").strip()
    if not cleaned:
        return ()
    parts = [p for p in re.split(r"[x,\s]+", cleaned) if p]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ConversionError(f"bad shape {text!r}") from None


def load_manifest(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Read a key manifest TSV (``key<TAB>shape<TAB>kind``, optional header) into ``{key: shape}``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConversionError(f"manifest not found: {path}") from None
    except UnicodeDecodeError:
        raise ConversionError(f"manifest {path} is not UTF-8 text") from None
    shapes: dict[str, tuple[int, ...]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if number == 1 and cols[0] == "key":
            continue
        if len(cols) < 2:
            raise ConversionError(f"{path}:{number}: expected key<TAB>shape[<TAB>kind]")
        try:
            shapes[cols[0]] = parse_shape(cols[1])
        except ConversionError as exc:
            raise ConversionError(f"{path}:{number}: {exc}") from None
    if not shapes:
        raise ConversionError(f"manifest {path} lists no keys")
    return shapes


def load_target_shapes(path: str | Path, *, unsafe_pickle: bool = False) -> dict[str, tuple[int, ...]]:
    """Target key shapes from a manifest TSV (``.tsv``) or from a checkpoint file."""
    if Path(path).suffix.lower() in (".tsv", ".txt"):
        return load_manifest(path)
    return {k: tuple(v.shape) for k, v in load_checkpoint(path, unsafe_pickle=unsafe_pickle).items()}


def _fsync(path: Path) -> None:
    """Flush a file that a library wrote by name to the disk, before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _safetensors_refusal(key: str, tensor: torch.Tensor) -> str | None:
    """Why safetensors cannot store ``tensor`` (None when it can)."""
    if tensor.is_quantized:
        return f"key {key!r} is a quantized tensor ({tensor.dtype})"
    if tensor.is_complex():
        return f"key {key!r} is a complex tensor ({tensor.dtype})"
    if "fnuz" in str(tensor.dtype):
        return f"key {key!r} has dtype {str(tensor.dtype).removeprefix('torch.')}, which safetensors has no code for"
    if tensor.is_sparse or tensor.layout != torch.strided:
        return f"key {key!r} is not a dense tensor ({tensor.layout})"
    return None


def write_checkpoint_file(
    state_dict: dict[str, torch.Tensor],
    dest: str | Path,
    meta: dict[str, Any],
    *,
    as_safetensors: bool,
    fsync: bool = False,
    shown_as: str | Path | None = None,
    container: str = "state_dict",
) -> None:
    """Write ``{'state_dict', 'meta'}`` with torch.save (or a .safetensors file when ``as_safetensors``) to
    ``dest`` directly; errors name ``shown_as`` (the path the user gave) instead of ``dest``.
    ``container="model"`` writes ``{'model', 'meta'}``, as detectron2's checkpointer reads it. Raises
    ConversionError for tensors safetensors cannot store (quantized, complex, float8 *fnuz*, sparse)."""
    dest = Path(dest)
    shown = shown_as if shown_as is not None else dest
    meta = dict(meta)
    meta.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if as_safetensors:
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        for k, v in state_dict.items():
            refusal = _safetensors_refusal(k, v)
            if refusal:
                raise ConversionError(f"{shown}: cannot write .safetensors: {refusal}; write a .pth instead")
            v = v.contiguous()
            ident = v.untyped_storage().data_ptr()
            if v.numel() and ident in seen:  # safetensors refuses shared storage: copy later aliases
                v = v.clone()
            seen.add(ident)
            tensors[k] = v
        try:
            save_file(tensors, str(dest), metadata={"meta": json.dumps(meta, sort_keys=True, default=str)})
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ConversionError(f"{shown}: safetensors cannot write it: {str(exc).splitlines()[0]}") from None
        if fsync:
            _fsync(dest)
    else:
        with open(dest, "wb") as handle:
            torch.save({container: state_dict, "meta": meta}, handle)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())


def save_checkpoint(
    state_dict: dict[str, torch.Tensor], path: str | Path, meta: dict[str, Any], *, fsync: bool = False
) -> None:
    """Write ``{'state_dict', 'meta'}`` with torch.save, or a .safetensors file, atomically (temporary file
    renamed over ``path``): a process that dies leaves the old file or the whole new one. ``fsync=True`` also
    flushes the temporary file to disk before the rename, so that an OS crash or power loss does too."""
    path = Path(path)
    with atomic_path(path) as tmp:
        write_checkpoint_file(
            state_dict, tmp, meta, as_safetensors=path.suffix.lower() == ".safetensors", fsync=fsync, shown_as=path
        )


def load_strict(model: torch.nn.Module, path: str | Path) -> int:
    """Load the checkpoint ``path`` (read safely, :func:`load_checkpoint`) into ``model`` with strict=True and
    return how many tensors it held; :class:`~bridge.errors.BridgeError` naming the file and the missing,
    unexpected or mis-shaped keys when they do not fit."""
    state = load_checkpoint(path)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not fit; torch's first line only names the model class
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else str(exc)
        raise BridgeError(f"{path}: does not fit the model with strict=True ({detail})") from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise BridgeError(
            f"{path}: does not fit the model with strict=True: {len(missing)} missing "
            f"({', '.join(missing[:3])}), {len(unexpected)} unexpected ({', '.join(unexpected[:3])})"
        )
    return len(state)
