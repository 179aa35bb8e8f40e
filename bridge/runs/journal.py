"""Append-only JSON-lines journal: one line per record, written at O(1) cost and read back after a crash.

A line is written with one ``write`` (looped on short writes), optionally fsynced, and removed again
if the write failed, so the file is always whole lines plus, at worst, one torn last line from a process
killed mid-write. Readers ignore that torn last line (it has no ``\\n``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from bridge.errors import FormatError


def append_line(path: Path, encoded: bytes, *, fsync: bool = False) -> None:
    """Append one JSON object, already encoded (no newline inside), as a line of ``path``.

    The line is in the operating system's hands when this returns (a killed process cannot lose it);
    ``fsync=True`` also waits until it is on disk. The file is created if missing. On any failure it
    is truncated back to its previous size before the error propagates.
    """
    line = encoded + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Return the JSON objects of the journal at ``path`` in order; ``[]`` if there is none.

    A last line without ``\\n`` (torn by a crash) is ignored. Raises FormatError naming the file and
    line number for a complete line that is not a JSON object.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise FormatError(f"{path}: cannot read journal: {exc.strerror or exc}") from exc
    lines = data.split(b"\n")[:-1]  # the part after the last newline is empty or torn
    objects: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise FormatError(f"{path}: line {number} is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise FormatError(f"{path}: line {number} is not a JSON object")
        objects.append(obj)
    return objects
