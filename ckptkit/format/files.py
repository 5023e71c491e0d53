"""Atomic file writes: temp name, fsync, rename.

A checkpoint is often the only copy of days of training, so nothing ckptkit writes
ever appears under its real name half-written. Temp files carry a recognizable
marker (TEMP_MARKER) so a later save can sweep up what a crash left behind.
"""
from __future__ import annotations

import os
import secrets

TEMP_MARKER = ".ckptkit-tmp-"


def temp_name(path: str) -> str:
    return f"{path}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}"


def is_temp_name(name: str) -> bool:
    return TEMP_MARKER in name


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
    Several AtomicFiles can be committed in an order chosen by the caller.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.temp = temp_name(path)
        self.file = open(self.temp, "wb")
        self.done = False

    def write(self, data) -> int:
        return self.file.write(data)

    def close(self) -> None:
        """Flush and fsync the temp file (idempotent)."""
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()

    def commit(self) -> None:
        self.close()
        os.replace(self.temp, self.path)
        self.done = True

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        if not self.done:
            try:
                os.unlink(self.temp)
            except FileNotFoundError:
                pass
            self.done = True

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()


def write_file_atomic(path: str, data: bytes) -> None:
    """Write a whole small file atomically and durably."""
    with AtomicFile(path) as f:
        f.write(data)
        f.commit()
    fsync_dir(os.path.dirname(path))
