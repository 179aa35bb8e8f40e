"""Record nested values into a run directory and read them back (format_version 1).

Layout: ``run_dir/rank{R}/manifest.json``, ``run_dir/rank{R}/journal.jsonl`` while recording (one
line per record, compacted into the manifest on close) and one safetensors file per ``record()``
call, ``run_dir/rank{R}/{record:06d}-s{step}-{kind}.safetensors``. See docs/FORMAT.md.
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

from bridge.atomic import atomic_path, atomic_write_bytes
from bridge.errors import BridgeError, FormatError
from bridge.runs.journal import append_line, read_lines
from bridge.runs.tree import (
    BYTES_DTYPES,
    CODE_DTYPES,
    STORAGE_BYTES,
    STORAGE_NATIVE,
    TENSOR_DTYPES,
    StoredTensor,
    decode_scalar,
    encode_scalar,
    flatten,
    restore_tensor,
    scalar_dtype,
    stored_layout,
    unflatten,
)

FORMAT_VERSION = 1
KINDS: tuple[str, ...] = (
    "batch",
    "output",
    "loss",
    "activation",
    "grad",
    "param",
    "meta",
    "matching",
    "optim",
    "input",
    "local",
    "rng",
)
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
_ABORT_MESSAGE_CHARS = 2000
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
    storage: str = STORAGE_NATIVE

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

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        framework: str | None = None,
        rank: int | None = None,
        *,
        lazy: bool = False,
        fsync: bool = False,
    ) -> None:
        """Start a recording for ``rank`` (default: the torch.distributed rank, else 0) in ``run_dir``.

        With ``lazy=True`` nothing is created until the first ``record()`` (hooks that may record nothing).
        Every record reaches the operating system before ``record()`` returns, so a killed process loses
        nothing it recorded; ``fsync=True`` also fsyncs each tensor file and journal line, so that an OS
        crash or power loss keeps them too (two fsyncs per record: several times slower on most disks).
        """
        self.run_dir = Path(run_dir)
        self.rank = _default_rank() if rank is None else int(rank)
        if self.rank < 0:
            raise FormatError(f"{self.run_dir}: rank must be >= 0, got {self.rank}")
        self.rank_dir = self.run_dir / f"rank{self.rank}"
        self.manifest_path = self.rank_dir / MANIFEST
        self.journal_path = self.rank_dir / JOURNAL
        self.fsync = bool(fsync)
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
        self.rank_dir.mkdir(parents=True, exist_ok=True)
        try:  # an exclusive create: of two recorders started on one rank dir, exactly one gets the journal
            os.close(os.open(self.journal_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            raise FormatError(f"{self.journal_path}: already holds a recording; record into a new run dir") from None
        if self.manifest_path.exists():
            self.journal_path.unlink(missing_ok=True)
            raise FormatError(f"{self.manifest_path}: already holds a recording; record into a new run dir")
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

        Tensors are detached, copied to CPU and made contiguous; numpy arrays are recorded as tensors
        and numpy scalars as Python scalars. Costs O(size of the value): one safetensors file and one
        journal line. Raises FormatError for a closed recorder, an unknown kind, a negative or non-int
        step, an empty name or one containing "/", a (name, step, kind) recorded before on this rank,
        or a leaf that cannot be stored.
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
            raise FormatError(
                f"{self.rank_dir}: record {name!r} step {step} kind {kind!r} was already recorded on rank {self.rank}"
            )
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
                stored: StoredTensor = leaf.value
                tensors[key] = stored.data
                row.update(dtype=stored.dtype, shape=list(stored.shape), value=None)
                if stored.storage == STORAGE_BYTES:
                    row["storage"] = STORAGE_BYTES
            else:
                row.update(dtype=scalar_dtype(leaf.value), shape=[], value=encode_scalar(leaf.value))
            leaf_rows.append(row)
        rec = {
            "name": name,
            "step": step,
            "kind": kind,
            "file": rel_file if tensors else "",
            "structure": structure,
            "leaves": leaf_rows,
        }
        try:
            line = orjson.dumps({"n": number, "record": rec})
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise FormatError(f"{self.rank_dir}: record {name!r}: value cannot be stored as JSON: {exc}") from exc
        if tensors:
            self._save_tensors(self.run_dir / rel_file, tensors, name)
        append_line(self.journal_path, line, fsync=self.fsync)
        self._manifest["records"].append(rec)
        self._next_index += len(leaves)
        self._seen.add((name, step, kind))

    def _save_tensors(self, target: Path, tensors: dict[str, torch.Tensor], name: str) -> None:
        with atomic_path(target) as tmp:
            try:
                save_file(tensors, str(tmp))
            except Exception as exc:
                raise FormatError(f"{target}: record {name!r}: safetensors cannot write it: {exc}") from exc
            if self.fsync:
                with open(tmp, "rb+") as handle:
                    os.fsync(handle.fileno())

    def close(self) -> None:
        """Compact the journal into the manifest, mark it closed and stop accepting records; idempotent."""
        self._finish(aborted=None)

    def abort(self, reason: str) -> None:
        """Like close(), but the manifest says ``"closed": false`` and ``"aborted": reason``; idempotent."""
        self._finish(aborted=str(reason))

    def _finish(self, aborted: str | None) -> None:
        if self._closed:
            return
        if self._started:
            self._manifest["closed"] = aborted is None
            if aborted is not None:
                self._manifest["aborted"] = aborted[:_ABORT_MESSAGE_CHARS]
            self._write_manifest()
            self.journal_path.unlink(missing_ok=True)
        self._closed = True

    def __enter__(self) -> Recorder:
        """Return self."""
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        """Close the recorder; when the block raised, mark it aborted with ``"<ExcType>: message"``."""
        if exc_type is None:
            self.close()
        else:
            self.abort(f"{exc_type.__name__}: {exc}")


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
    if type(version) is not int:
        raise FormatError(f"{path}: format_version must be an integer, got {version!r} ({type(version).__name__})")
    if version != FORMAT_VERSION:
        raise FormatError(f"{path}: unknown format_version {version!r} (this reader knows {FORMAT_VERSION})")
    if not isinstance(data.get("records"), list):
        raise FormatError(f"{path}: manifest has no 'records' list")
    if not isinstance(data.get("closed", False), bool):
        raise FormatError(f"{path}: 'closed' must be true or false, got {data['closed']!r}")
    if not isinstance(data.get("aborted", ""), str):
        raise FormatError(f"{path}: 'aborted' must be a string, got {data['aborted']!r}")
    return data


def _merge_journal(manifest: Path, records: list[Any], journal: Path) -> list[tuple[Path, Any]]:
    """Return (source file, record) for the manifest's records followed by the journal's later ones."""
    merged: list[tuple[Path, Any]] = [(manifest, rec) for rec in records]
    for line_number, line in enumerate(read_lines(journal), start=1):
        number, rec = line.get("n"), line.get("record")
        if type(number) is not int or not isinstance(rec, dict):
            raise FormatError(f'{journal}: line {line_number} is not {{"n": int, "record": object}}')
        if number < len(records):
            continue  # already compacted into the manifest (a crash between compaction and removal)
        if number != len(merged):
            raise FormatError(f"{journal}: line {line_number} holds record #{number}, expected #{len(merged)}")
        merged.append((journal, rec))
    return merged


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


def _parse_records(
    run_dir: Path, sourced: list[tuple[Path, Any]], rank: int
) -> tuple[list[dict[str, Any]], list[Entry]]:
    records: list[dict[str, Any]] = []
    entries: list[Entry] = []
    for number, (manifest, rec) in enumerate(sourced):
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
                dtype, storage = str(row["dtype"]), row.get("storage", STORAGE_NATIVE)
                if storage not in (STORAGE_NATIVE, STORAGE_BYTES) or (storage == STORAGE_BYTES and not is_tensor):
                    raise FormatError(f"{manifest}: {what}: leaf {row['path']!r} has unknown storage {storage!r}")
                rec_entries.append(
                    Entry(
                        index=int(row["index"]),
                        step=step,
                        rank=rank,
                        kind=kind,
                        name=name,
                        path=str(row["path"]),
                        dtype=dtype,
                        shape=tuple(int(d) for d in row["shape"]),
                        file=rel if is_tensor else "",
                        is_tensor=is_tensor,
                        value=None if is_tensor else decode_scalar(dtype, row["value"]),
                        storage=storage,
                    )
                )
            rec["structure"]
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
            (int(m.group(1)), child)
            for child in self.path.iterdir()
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
            sourced = _merge_journal(manifest, data["records"], rank_dir / JOURNAL)
            records, entries = _parse_records(self.path, sourced, rank)
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
            e
            for e in self._entries
            if (rank is None or e.rank == rank)
            and (step is None or e.step == step)
            and (kind is None or e.kind == kind)
        ]

    def header(self, rank: int = 0) -> dict[str, Any]:
        """Return ``rank``'s manifest header (format_version, framework, rank, torch_version, created, closed, aborted)."""
        if rank not in self._manifests:
            raise FormatError(f"{self.path}: no rank {rank} (ranks {self.ranks()})")
        return {k: v for k, v in self._manifests[rank].items() if k != "records"}

    def state(self, rank: int = 0) -> str:
        """Return how ``rank``'s recording ended: ``"closed"`` (close() or a clean ``with`` block),
        ``"aborted"`` (the ``with`` block raised; ``header(rank)["aborted"]`` says what) or ``"open"``
        (the process died, or is still recording: every record listed so far is complete)."""
        header = self.header(rank)
        if header.get("closed"):
            return "closed"
        return "aborted" if "aborted" in header else "open"

    def ranks(self) -> list[int]:
        """Return the ranks that have a manifest, ascending."""
        return sorted(self._manifests)

    def steps(self) -> list[int]:
        """Return every step recorded on any rank, ascending."""
        return sorted({rec["step"] for recs in self._records.values() for rec in recs})

    def _open(self, entry: Entry) -> tuple[Any, Path]:
        """Open the entry's file and check its key, dtype and shape; return (slice, file path)."""
        if not entry.is_tensor:
            raise FormatError(
                f"{self.path}: entry {entry.key!r} (rank {entry.rank}, step {entry.step}) is not a tensor"
            )
        file = self.path / _check_file(self.path, self.path / f"rank{entry.rank}" / MANIFEST, entry.file, entry.key)
        if not file.is_file():
            raise FormatError(
                f"{file}: tensor file for entry {entry.key!r} (rank {entry.rank}, step {entry.step}) is missing"
            )
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
            raise FormatError(
                f"{file}: cannot read tensor {entry.key!r}: corrupt or truncated safetensors file ({exc})"
            ) from exc
        dtype = CODE_DTYPES.get(code, code)
        if entry.storage == STORAGE_BYTES and entry.dtype not in BYTES_DTYPES:
            raise FormatError(
                f"{file}: tensor {entry.key!r} is stored as bytes of dtype {entry.dtype!r}, which is "
                f"not one of this format's byte-stored dtypes"
            )
        if entry.dtype not in TENSOR_DTYPES:
            raise FormatError(
                f"{file}: tensor {entry.key!r} has dtype {entry.dtype!r}, unknown to torch {torch.__version__}"
            )
        want_dtype, want_shape = stored_layout(entry.dtype, entry.shape, entry.storage)
        if dtype != want_dtype or shape != want_shape:
            stored = "" if entry.storage != STORAGE_BYTES else f" (stored as bytes: {want_dtype}{list(want_shape)})"
            raise FormatError(
                f"{file}: tensor {entry.key!r} is {dtype}{list(shape)} but the manifest says "
                f"{entry.dtype}{list(entry.shape)}{stored}"
            )
        return (handle, sl), file

    def tensor(self, entry: Entry) -> torch.Tensor:
        """Load one tensor leaf on CPU (memory-mapped through safetensors.safe_open)."""
        (handle, _sl), file = self._open(entry)
        try:
            return restore_tensor(handle.get_tensor(entry.key), entry.dtype, entry.storage)
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
                chunk = sl[start : start + rows]
            except Exception as exc:
                raise FormatError(f"{file}: cannot read rows {start}: of tensor {entry.key!r}: {exc}") from exc
            yield restore_tensor(chunk, entry.dtype, entry.storage)

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
        by_path = {
            e.path: e for e in self._entries if e.rank == rank and e.name == name and e.step == step and e.kind == kind
        }
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
