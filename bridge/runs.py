"""Record nested values into a run directory and read them back (format_version 1).

Layout: ``run_dir/rank{R}/manifest.json`` plus one safetensors file per ``record()`` call,
``run_dir/rank{R}/{record:06d}-s{step}-{kind}.safetensors``. See docs/FORMAT.md.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import orjson
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .atomic import atomic_path, atomic_write_bytes
from .errors import BridgeError, FormatError
from .tree import CODE_DTYPES, decode_scalar, dtype_name, encode_scalar, flatten, scalar_dtype, unflatten

FORMAT_VERSION = 1
KINDS: tuple[str, ...] = ("batch", "output", "loss", "activation", "grad", "param", "meta")
MANIFEST = "manifest.json"
_RANK_DIR = re.compile(r"^rank(\d+)$")


@dataclass(frozen=True)
class Entry:
    """One leaf of one recorded value, as listed in a rank's manifest (no tensor data)."""

    index: int
    step: int
    rank: int
    kind: str
    name: str
    path: str
    dtype: str
    shape: tuple[int, ...]
    file: str
    is_tensor: bool
    value: Any

    @property
    def key(self) -> str:
        """``name`` for a bare value, else ``name.path``; also the tensor's key in its file."""
        return self.name if not self.path else f"{self.name}.{self.path}"


def _default_rank() -> int:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return 0


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Recorder:
    """Write values of one rank into ``run_dir/rank{R}/``; use as a context manager or call close()."""

    def __init__(self, run_dir: str | os.PathLike[str], framework: str | None = None, rank: int | None = None,
                 *, lazy: bool = False) -> None:
        """Start a recording for ``rank`` (default: the torch.distributed rank, else 0) in ``run_dir``.

        With ``lazy=True`` nothing is created until the first ``record()`` (hooks that may record nothing).
        """
        self.run_dir = Path(run_dir)
        self.rank = _default_rank() if rank is None else int(rank)
        if self.rank < 0:
            raise FormatError(f"{self.run_dir}: rank must be >= 0, got {self.rank}")
        self.rank_dir = self.run_dir / f"rank{self.rank}"
        self.manifest_path = self.rank_dir / MANIFEST
        self._manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "framework": framework,
            "rank": self.rank,
            "torch_version": torch.__version__,
            "created": _now(),
            "closed": False,
            "records": [],
        }
        self._next_index = 0
        self._seen: set[tuple[str, int, str]] = set()
        self._closed = False
        self._started = False
        if not lazy:
            self._start()

    def _start(self) -> None:
        if self.manifest_path.exists():
            raise FormatError(f"{self.manifest_path}: already holds a recording; record into a new run dir")
        self.rank_dir.mkdir(parents=True, exist_ok=True)
        self._started = True
        self._write_manifest()

    def _write_manifest(self) -> None:
        try:
            data = orjson.dumps(self._manifest, option=orjson.OPT_INDENT_2)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise FormatError(f"{self.manifest_path}: cannot encode manifest as JSON: {exc}") from exc
        atomic_write_bytes(self.manifest_path, data)

    def record(self, name: str, value: Any, *, step: int, kind: str = "output") -> None:
        """Record ``value`` (tensor or nested dict/list/tuple of tensors and JSON scalars) under ``name``.

        Tensors are detached, copied to CPU and made contiguous. Raises FormatError for a closed
        recorder, an unknown kind, a negative or non-int step, an empty name or one containing
        "/", a (name, step, kind) recorded before on this rank, or a leaf that cannot be stored.
        """
        if self._closed:
            raise FormatError(f"{self.rank_dir}: record({name!r}) after close()")
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or "\x00" in name:
            raise FormatError(f"{self.rank_dir}: bad record name {name!r} (must be a non-empty str without '/')")
        if kind not in KINDS:
            raise FormatError(f"{self.rank_dir}: record {name!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise FormatError(f"{self.rank_dir}: record {name!r}: step must be an int >= 0, got {step!r}")
        if (name, step, kind) in self._seen:
            raise FormatError(f"{self.rank_dir}: record {name!r} step {step} kind {kind!r} was already recorded on rank {self.rank}")
        structure, leaves = flatten(name, value)
        if not self._started:
            self._start()
        number = len(self._manifest["records"])
        rel_file = f"rank{self.rank}/{number:06d}-s{step}-{kind}.safetensors"
        tensors: dict[str, torch.Tensor] = {}
        leaf_rows: list[dict[str, Any]] = []
        for offset, leaf in enumerate(leaves):
            key = name if not leaf.path else f"{name}.{leaf.path}"
            row: dict[str, Any] = {"index": self._next_index + offset, "path": leaf.path, "is_tensor": leaf.is_tensor}
            if leaf.is_tensor:
                tensors[key] = leaf.value
                row.update(dtype=dtype_name(leaf.value.dtype), shape=list(leaf.value.shape), value=None)
            else:
                row.update(dtype=scalar_dtype(leaf.value), shape=[], value=encode_scalar(leaf.value))
            leaf_rows.append(row)
        rec = {"name": name, "step": step, "kind": kind, "file": rel_file if tensors else "",
               "structure": structure, "leaves": leaf_rows}
        try:
            orjson.dumps(rec)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise FormatError(f"{self.rank_dir}: record {name!r}: value cannot be stored as JSON: {exc}") from exc
        if tensors:
            target = self.run_dir / rel_file
            with atomic_path(target) as tmp:
                save_file(tensors, str(tmp))
                with open(tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
        self._manifest["records"].append(rec)
        try:
            self._write_manifest()
        except BaseException:
            self._manifest["records"].pop()
            raise
        self._next_index += len(leaves)
        self._seen.add((name, step, kind))

    def close(self) -> None:
        """Mark the manifest closed and stop accepting records; calling it twice is harmless."""
        if self._closed:
            return
        if self._started:
            self._manifest["closed"] = True
            self._write_manifest()
        self._closed = True

    def __enter__(self) -> Recorder:
        """Return self."""
        return self

    def __exit__(self, *exc_info: Any) -> None:
        """Close the recorder (also when the block raised)."""
        self.close()


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise FormatError(f"{path}: cannot read manifest: {exc.strerror or exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise FormatError(f"{path}: manifest is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise FormatError(f"{path}: manifest is not a JSON object")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise FormatError(f"{path}: unknown format_version {version!r} (this reader knows {FORMAT_VERSION})")
    if not isinstance(data.get("records"), list):
        raise FormatError(f"{path}: manifest has no 'records' list")
    return data


def _check_file(run_dir: Path, manifest: Path, rel: Any, what: str) -> str:
    if not isinstance(rel, str):
        raise FormatError(f"{manifest}: {what}: file {rel!r} is not a string")
    if rel == "":
        return rel
    pure = PurePosixPath(rel)
    if pure.is_absolute() or os.path.isabs(rel) or ".." in pure.parts or "\\" in rel:
        raise FormatError(f"{manifest}: {what}: file {rel!r} points outside the run dir")
    root = run_dir.resolve()
    if not (run_dir / rel).resolve().is_relative_to(root):
        raise FormatError(f"{manifest}: {what}: file {rel!r} points outside the run dir")
    return rel


def _parse_records(run_dir: Path, manifest: Path, data: dict[str, Any], rank: int) -> tuple[list[dict[str, Any]], list[Entry]]:
    records: list[dict[str, Any]] = []
    entries: list[Entry] = []
    for number, rec in enumerate(data["records"]):
        what = f"record #{number}"
        try:
            name, step, kind = rec["name"], rec["step"], rec["kind"]
            what = f"record #{number} {name!r} step {step} kind {kind!r}"
            if not isinstance(name, str) or not isinstance(step, int) or kind not in KINDS:
                raise FormatError(f"{manifest}: {what}: bad name, step or kind")
            rel = _check_file(run_dir, manifest, rec["file"], what)
            rec_entries = []
            for row in rec["leaves"]:
                is_tensor = bool(row["is_tensor"])
                if is_tensor and not rel:
                    raise FormatError(f"{manifest}: {what}: tensor leaf {row['path']!r} has no file")
                dtype = str(row["dtype"])
                rec_entries.append(Entry(
                    index=int(row["index"]), step=step, rank=rank, kind=kind, name=name, path=str(row["path"]),
                    dtype=dtype, shape=tuple(int(d) for d in row["shape"]), file=rel if is_tensor else "",
                    is_tensor=is_tensor, value=None if is_tensor else decode_scalar(dtype, row["value"]),
                ))
            rec["structure"]  # noqa: B018 - must exist
        except FormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{manifest}: {what}: malformed entry ({exc!r})") from exc
        records.append(rec)
        entries.extend(rec_entries)
    return records, entries


class Run:
    """A recorded run directory opened for reading: manifests are parsed, tensors load lazily."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open ``path``; raises FormatError if it is missing, has no rank manifest, or one is bad."""
        self.path = Path(path)
        if not self.path.is_dir():
            raise FormatError(f"{self.path}: run dir does not exist")
        rank_dirs = sorted(
            (int(m.group(1)), child) for child in self.path.iterdir()
            if child.is_dir() and (m := _RANK_DIR.match(child.name))
        )
        self._manifests: dict[int, dict[str, Any]] = {}
        self._records: dict[int, list[dict[str, Any]]] = {}
        self._entries: list[Entry] = []
        for rank, rank_dir in rank_dirs:
            manifest = rank_dir / MANIFEST
            if not manifest.is_file():
                raise FormatError(f"{manifest}: missing manifest for rank {rank}")
            data = _read_manifest(manifest)
            if data.get("rank", rank) != rank:
                raise FormatError(f"{manifest}: manifest says rank {data.get('rank')!r} but lives in rank{rank}/")
            records, entries = _parse_records(self.path, manifest, data, rank)
            self._manifests[rank] = data
            self._records[rank] = records
            self._entries.extend(sorted(entries, key=lambda e: e.index))
        if not self._manifests:
            raise FormatError(f"{self.path}: no rank*/{MANIFEST} found; not a run dir")
        first = self._manifests[min(self._manifests)]
        self.meta: dict[str, Any] = {k: v for k, v in first.items() if k != "records"}
        self.meta["ranks"] = sorted(self._manifests)
        self.meta["frameworks"] = {r: m.get("framework") for r, m in self._manifests.items()}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, ranks={self.ranks()}, entries={len(self._entries)})"

    def entries(self, *, rank: int | None = None, step: int | None = None, kind: str | None = None) -> list[Entry]:
        """List leaf entries in recording order (by rank, then index), optionally filtered; loads no tensors."""
        return [
            e for e in self._entries
            if (rank is None or e.rank == rank) and (step is None or e.step == step) and (kind is None or e.kind == kind)
        ]

    def ranks(self) -> list[int]:
        """Return the ranks that have a manifest, ascending."""
        return sorted(self._manifests)

    def steps(self) -> list[int]:
        """Return every step recorded on any rank, ascending."""
        return sorted({rec["step"] for recs in self._records.values() for rec in recs})

    def _open(self, entry: Entry) -> tuple[Any, Path]:
        """Open the entry's file and check its key, dtype and shape; return (slice, file path)."""
        if not entry.is_tensor:
            raise FormatError(f"{self.path}: entry {entry.key!r} (rank {entry.rank}, step {entry.step}) is not a tensor")
        file = self.path / _check_file(self.path, self.path / f"rank{entry.rank}" / MANIFEST, entry.file, entry.key)
        if not file.is_file():
            raise FormatError(f"{file}: tensor file for entry {entry.key!r} (rank {entry.rank}, step {entry.step}) is missing")
        try:
            handle = safe_open(str(file), framework="pt", device="cpu")
            keys = set(handle.keys())
            if entry.key not in keys:
                raise FormatError(f"{file}: has no tensor {entry.key!r} (holds {sorted(keys)[:10]})")
            sl = handle.get_slice(entry.key)
            shape, code = tuple(sl.get_shape()), sl.get_dtype()
        except FormatError:
            raise
        except Exception as exc:  # SafetensorError, OSError, ... on truncated/corrupt files
            raise FormatError(f"{file}: cannot read tensor {entry.key!r}: corrupt or truncated safetensors file ({exc})") from exc
        dtype = CODE_DTYPES.get(code, code)
        if dtype != entry.dtype or shape != entry.shape:
            raise FormatError(
                f"{file}: tensor {entry.key!r} is {dtype}{list(shape)} but the manifest says {entry.dtype}{list(entry.shape)}"
            )
        return (handle, sl), file

    def tensor(self, entry: Entry) -> torch.Tensor:
        """Load one tensor leaf on CPU (memory-mapped through safetensors.safe_open)."""
        (handle, _sl), file = self._open(entry)
        try:
            return handle.get_tensor(entry.key)
        except Exception as exc:
            raise FormatError(f"{file}: cannot load tensor {entry.key!r}: {exc}") from exc

    def tensor_slices(self, entry: Entry, rows: int) -> Iterator[torch.Tensor]:
        """Yield a tensor leaf in chunks of at most ``rows`` along dim 0; a 0-d or empty tensor is yielded once."""
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise FormatError(f"{self.path}: tensor_slices rows must be an int >= 1, got {rows!r}")
        (handle, sl), file = self._open(entry)
        if len(entry.shape) == 0 or entry.shape[0] == 0:
            yield self.tensor(entry)
            return
        for start in range(0, entry.shape[0], rows):
            try:
                chunk = sl[start:start + rows]
            except Exception as exc:
                raise FormatError(f"{file}: cannot read rows {start}: of tensor {entry.key!r}: {exc}") from exc
            yield chunk

    def _find(self, name: str, step: int, kind: str, rank: int) -> dict[str, Any]:
        for rec in self._records.get(rank, []):
            if rec["name"] == name and rec["step"] == step and rec["kind"] == kind:
                return rec
        have = [f"{r['name']}@{r['step']}/{r['kind']}" for r in self._records.get(rank, [])]
        listing = ", ".join(have[:20]) + (f", ... ({len(have)} in all)" if len(have) > 20 else "")
        raise FormatError(
            f"{self.path}: no record name={name!r} step={step} kind={kind!r} rank={rank}; "
            f"ranks {self.ranks()}; rank {rank} has: {listing or 'nothing'}"
        )

    def get(self, name: str, *, step: int, kind: str = "output", rank: int = 0) -> Any:
        """Rebuild the value recorded as (name, step, kind) on ``rank``, tensors loaded on CPU."""
        rec = self._find(name, step, kind, rank)
        by_path = {e.path: e for e in self._entries if e.rank == rank and e.name == name and e.step == step and e.kind == kind}
        where = f"{self.path}: record {name!r} step {step} kind {kind!r} rank {rank}"

        def load_leaf(path: str) -> Any:
            entry = by_path.get(path)
            if entry is None:
                raise FormatError(f"{where}: structure names leaf {path!r} that the manifest does not list")
            return self.tensor(entry) if entry.is_tensor else entry.value

        return unflatten(rec["structure"], load_leaf, where)


def open_run(run_dir: str | os.PathLike[str]) -> Run:
    """Open a recorded run directory for reading; raises FormatError if it is missing or malformed."""
    return Run(run_dir)


__all__ = ["KINDS", "FORMAT_VERSION", "Entry", "Recorder", "Run", "open_run", "BridgeError", "FormatError"]
