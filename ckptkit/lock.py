"""One writer per checkpoint directory: an advisory lock held while a Saver saves.

Two Savers writing into one directory (two training jobs pointed at the same
`--model_dir`, a restarted job whose old process still runs) overwrite each other's
`checkpoint` state file and prune each other's checkpoints. TF does not notice;
ckptkit does: `Saver.save` holds `DIR/.ckptkit.lock` with `fcntl.flock` from the
first byte written until the state file is updated and old checkpoints are pruned.
A second Saver that tries to save meanwhile waits up to its `lock_timeout` (default
0: not at all) and then raises `DirectoryLockedError` naming the holder's pid and host.

Why flock: the kernel drops the lock when its holder dies, even by SIGKILL, so a
crash never leaves the directory locked, and there is no pid file to go stale.
flock locks belong to an open file description, so two Savers in one process (two
threads) exclude each other too. On NFS, Linux maps flock onto the server's
byte-range locks, which covers writers on different machines; on filesystems without
working locks (some FUSE mounts) or platforms without fcntl (Windows), the lock is
skipped with a debug log and saving works as before.

The lock file exists only while a save runs (so a directory at rest holds exactly
the files TF's Saver would leave): the holder deletes it before unlocking, and a
locker that finds its locked file no longer at the path retries with a fresh one.
It holds the holder's `pid host`, for the error message only.
"""
from __future__ import annotations

import errno
import logging
import os
import time

from .errors import CheckpointError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; saving still works, unguarded
    fcntl = None

__all__ = ["LOCK_FILENAME", "DirectoryLock", "DirectoryLockedError"]

LOCK_FILENAME = ".ckptkit.lock"
_POLL_SECONDS = 0.05

_log = logging.getLogger(__name__)


class DirectoryLockedError(CheckpointError):
    """Another ckptkit Saver holds the directory's lock (it is saving right now)."""


class DirectoryLock:
    """`with DirectoryLock(dir, timeout):` — exclusive while the block runs.

    `timeout` is in seconds: 0 fails at once, None waits forever.
    """

    def __init__(self, directory: str, timeout: float | None = 0.0) -> None:
        self.directory = directory or os.curdir
        self.path = os.path.join(self.directory, LOCK_FILENAME)
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None:
            return
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            fd = self._open()
            if fd is None:
                return
            state = self._try_lock(fd)
            if state == "locked":
                break
            if state == "unsupported":
                return
            if state == "busy" and deadline is not None and time.monotonic() >= deadline:
                holder = _read_holder(fd)
                os.close(fd)
                waited = f" (waited {self.timeout:g} s)" if self.timeout else ""
                raise DirectoryLockedError(
                    f"another ckptkit Saver is writing to {self.directory} ({holder}){waited}; "
                    "two Savers in one directory would overwrite each other's state file",
                    path=self.directory)
            os.close(fd)
            if state == "busy":
                time.sleep(_POLL_SECONDS)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {os.uname().nodename}\n".encode(), 0)
        except OSError:
            pass  # the holder note is informative only
        self._fd = fd

    def _open(self) -> int | None:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                           | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CheckpointError(f"lock file {LOCK_FILENAME} is a symlink; refusing to use it",
                                      path=self.path) from None
            # A read-only directory: the save itself will fail with a clear error.
            _log.debug("cannot open lock file %s: %s; saving without a lock", self.path, exc)
            return None

    def _try_lock(self, fd: int) -> str:
        """"locked" (and the path still names this file), "busy", "stale" or "unsupported"."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return "busy"
            os.close(fd)  # ENOLCK, EINVAL: this filesystem has no locks
            _log.debug("cannot lock %s: %s; saving without a lock", self.path, exc)
            return "unsupported"
        try:
            same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        return "locked" if same else "stale"  # stale: its holder deleted it as we waited

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.unlink(self.path)  # while still locked: see the module docstring
            except OSError:
                pass
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> "DirectoryLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
    except OSError:
        text = []
    if len(text) >= 2 and text[0].isdigit():
        return f"pid {text[0]} on {text[1]}"
    if text and text[0].isdigit():
        return f"pid {text[0]}"
    return "pid unknown"
