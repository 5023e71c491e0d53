"""Atomic file writes: temp name, fsync, rename; and sweeping up what a crash left.

A checkpoint is often the only copy of days of training, so nothing ckptkit writes
ever appears under its real name half-written. Temp files are named
`REAL_NAME.ckptkit-tmp-WRITER-PID-RANDOM` (TEMP_MARKER), where WRITER identifies the
machine, boot and pid namespace of the writing process: a later save can then tell
a dead writer's leftovers (safe to delete) from a live writer's work in progress,
even when the directory is shared with other machines or containers.
"""
from __future__ import annotations

import io
import os
import re
import stat
import time
from types import TracebackType
from typing import IO, TYPE_CHECKING

from ..errors import CheckpointError, DataLossError, NotFoundError

if TYPE_CHECKING:
    from _typeshed import SupportsRead
    from typing_extensions import Buffer

TEMP_MARKER = ".ckptkit-tmp-"
# A temp file untouched this long is stale whoever wrote it: a live writer keeps
# writing to at least one of its temp files (they are all written within one save).
STALE_TEMP_SECONDS = 3600.0

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_TEMP_TAIL = re.compile(r"(?:(?P<writer>[0-9a-f]{8})-)?(?P<pid>\d+)-[0-9a-f]+")
_writer_id: str | None = None


def writer_id() -> str:
    """8 hex digits naming (host, boot, pid namespace): where a pid means one process.

    Two processes with the same writer id and pid are the same process; a pid seen
    under another writer id (another machine sharing the directory over NFS, another
    container) says nothing about processes here.
    """
    global _writer_id
    if _writer_id is None:
        import hashlib  # noqa: PLC0415 - only writers need an id; readers start faster without
        import socket  # noqa: PLC0415 - as above

        parts = [socket.gethostname()]
        try:
            with open("/proc/sys/kernel/random/boot_id", "rb") as f:
                parts.append(f.read(64).decode("ascii", "replace").strip())
        except OSError:
            parts.append("")
        try:
            parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
        except OSError:
            parts.append("")
        _writer_id = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]
    return _writer_id


def temp_name(path: str) -> str:
    return f"{path}{TEMP_MARKER}{writer_id()}-{os.getpid()}-{os.urandom(4).hex()}"


def is_temp_name(name: str) -> bool:
    return TEMP_MARKER in name


def parse_temp_name(name: str) -> tuple[str | None, int] | None:
    """(writer id or None for old-style names, pid) of a ckptkit temp file name, else None."""
    head, sep, tail = name.rpartition(TEMP_MARKER)
    if not sep or not head:
        return None
    m = _TEMP_TAIL.fullmatch(tail)
    if m is None:
        return None
    return m["writer"], int(m["pid"])


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: exists, owned by someone else
        return True
    return True


def sweep_stale_temps(directory: str, *, max_age: float = STALE_TEMP_SECONDS,
                      now: float | None = None) -> list[str]:
    """Delete ckptkit temp files in `directory` (not below it) whose writer is gone.

    A temp file is stale, and deleted, when
    - its writer ran here (same writer id: host, boot, pid namespace) and that pid is
      no longer alive; or
    - every temp file of its writer (same writer id and pid) is older than `max_age`
      seconds — the rule for writers elsewhere, whose pids can't be checked.
    Anything else is left alone: a concurrent writer on another machine sharing the
    directory keeps its files. Only regular files (and symlinks, which are removed
    themselves) with a parseable temp name are touched. Returns the paths deleted.
    """
    now = time.time() if now is None else now
    try:
        entries = list(os.scandir(directory or os.curdir))
    except OSError:
        return []
    groups: dict[tuple[str | None, int], list[tuple[str, float]]] = {}
    for entry in entries:
        parsed = parse_temp_name(entry.name)
        if parsed is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            continue
        groups.setdefault(parsed, []).append((entry.path, st.st_mtime))
    here = writer_id()
    removed = []
    for (writer, pid), files in groups.items():
        dead_here = writer == here and not _pid_alive(pid)
        all_old = all(now - mtime > max_age for _, mtime in files)
        if not (dead_here or all_old):
            continue
        for path, _ in files:
            try:
                os.unlink(path)
            except OSError:  # gone already, or not ours to delete: leave it
                continue
            removed.append(path)
    if removed:
        fsync_dir(directory)
    return removed


def open_regular(path: str, what: str) -> io.FileIO:
    """Open `path` for unbuffered binary reading, refusing anything but a regular file.

    Opened non-blocking, then checked with fstat, so that a FIFO or device where a
    checkpoint file is expected fails at once instead of hanging. Errors are
    CheckpointErrors naming the file and which file of the checkpoint (`what`) it is.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: NUL in the path
        raise NotFoundError(f"{what} not found", path=path) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {what}: {exc.strerror or exc}", path=path) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise CheckpointError(f"{what} is a directory", path=path)
        raise DataLossError(f"{what} is not a regular file", path=path)
    return os.fdopen(fd, "rb", buffering=0)


def read_whole(file: SupportsRead[bytes], what: str, path: str) -> bytes:
    """All of an opened (small) checkpoint file: an index, a `.meta`, a SavedModel; a read
    error is a CheckpointError naming the file and which file of the checkpoint it is."""
    try:
        return file.read()
    except OSError as exc:
        raise CheckpointError(f"cannot read {what}: {exc.strerror or exc}", path=path) from None


def fsync_dir(directory: str) -> None:
    """Make renames in `directory` durable (no-op where directories can't be opened)."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicFile:
    """A binary file written under a temp name and renamed into place by commit().

    Use as a context manager: leaving the block by an exception deletes the temp file.
    Several AtomicFiles are published together, in order, by a `journal.LocalCommit`.
    """

    def __init__(self, path: str, temp: str | None = None) -> None:
        self.path = path
        self.done = False
        if temp is None:
            self.temp = temp_name(path)
            self.file = open(self.temp, "xb")
        else:  # adopt a finished temp file (a hard link made by the caller)
            self.temp = temp
            self.file = open(os.devnull, "wb")
            self.file.close()

    def write(self, data: Buffer) -> int:
        return self.file.write(data)

    def close(self) -> None:
        """Flush and fsync the temp file (idempotent)."""
        if not self.file.closed:
            try:
                self.file.flush()
                os.fsync(self.file.fileno())
            finally:
                _close_quietly(self.file)

    def commit(self) -> None:
        self.close()
        os.replace(self.temp, self.path)
        self.done = True

    def discard(self) -> None:
        """Delete the temp file: always, even when flushing what is buffered fails again
        (a full disk fails the write, then fails the flush in close as well)."""
        _close_quietly(self.file)
        if not self.done:
            self.done = True
            try:
                os.unlink(self.temp)
            except OSError:
                pass

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.discard()


def _close_quietly(file: IO[bytes]) -> None:
    """Close `file`, dropping unwritten buffered bytes if flushing them fails."""
    try:
        file.close()
    except OSError:
        try:  # close() flushed and failed: the fd is still open; drop the buffer and close it
            os.close(file.fileno())
        except (OSError, ValueError):
            pass
