"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

Temporary files are named ``.<target name>.<pid>.<random>.tmp`` beside the target. A process killed
mid-write cannot remove its own, so the first write of a later process into that folder removes the
temporary files whose writing process no longer exists (see docs/EXIT_CODES.md).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def remove_dead_temps(directory: str | os.PathLike[str], prefix: str = ".", suffix: str = ".tmp") -> list[Path]:
    """Remove the files ``<prefix>...<pid>.<random><suffix>`` in ``directory`` whose process ``pid`` no longer
    exists (temporary files of killed writers); return the removed paths. Live processes' files are kept."""
    directory = Path(directory)
    removed: list[Path] = []
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix) and n.endswith(suffix)]
    except OSError:
        return removed
    for name in names:
        parts = name[: -len(suffix)].split(".")
        pid_text = parts[-2] if len(parts) >= 3 else ""
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            with contextlib.suppress(OSError):
                (directory / name).unlink()
                removed.append(directory / name)
    return removed


#: Directories this process has already cleaned of dead writers' temporary files (scanned once each, so
#: that writing many files into one folder, like a Recorder, stays linear).
_CLEANED: set[Path] = set()


def remove_stale_temps(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files left in ``target``'s folder by writers that were killed (their process is
    gone), once per folder and process; return the removed paths. Live processes' files are kept."""
    folder = Path(target).parent.resolve()
    if folder in _CLEANED:
        return []
    _CLEANED.add(folder)
    return remove_dead_temps(folder)


def _make_temp(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual file mode
    return tmp_path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``, else remove it."""
    target = Path(target)
    tmp_path = _make_temp(target)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


class AtomicGroup:
    """Several outputs of one command, written to temporary files and renamed into place together by
    :meth:`commit` (or all removed by :meth:`discard`): a command that fails leaves none of them."""

    def __init__(self) -> None:
        """An empty group."""
        self._staged: dict[Path, Path] = {}

    def path(self, target: str | os.PathLike[str]) -> Path:
        """Return the temporary path to write ``target``'s content to (the same one when asked again)."""
        target = Path(target)
        if target not in self._staged:
            self._staged[target] = _make_temp(target)
        return self._staged[target]

    def write_bytes(self, target: str | os.PathLike[str], data: bytes) -> None:
        """Stage ``data`` as the content of ``target``."""
        with open(self.path(target), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def commit(self, targets: list[str | os.PathLike[str]] | None = None) -> None:
        """Rename the staged files (only ``targets`` when given) into place; remove any others."""
        keep = None if targets is None else {Path(t) for t in targets}
        for target, tmp in list(self._staged.items()):
            if keep is None or target in keep:
                os.replace(tmp, target)
            else:
                tmp.unlink(missing_ok=True)
            del self._staged[target]

    def discard(self) -> None:
        """Remove every staged temporary file."""
        for tmp in self._staged.values():
            tmp.unlink(missing_ok=True)
        self._staged.clear()


@contextlib.contextmanager
def atomic_group() -> Iterator[AtomicGroup]:
    """Yield an :class:`AtomicGroup`; whatever the block did not :meth:`~AtomicGroup.commit` is removed
    when it ends (normally or by an exception)."""
    group = AtomicGroup()
    try:
        yield group
    finally:
        group.discard()


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``target`` only when the block succeeds."""
    with atomic_path(target) as tmp_path:
        with open(tmp_path, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_open(target, "wb") as handle:
        handle.write(data)
