"""One writer per checkpoint directory: an advisory lock held by every ckptkit writer.

Two Savers writing into one directory (two training jobs pointed at the same
`--model_dir`, a restarted job whose old process still runs) overwrite each other's
`checkpoint` state file and prune each other's checkpoints; an edit that reads an
index while a save replaces it would publish an index built from the old one. TF does
not notice; ckptkit does: every writer (`Saver.save`, `ckptkit.save`, edits, convert,
state updates) holds `DIR/.ckptkit.lock` with `fcntl.flock` from before it reads what
it will change until its last file is published.

Who waits: a writer that finds the lock held waits up to its own timeout and then
raises `DirectoryLockedError` naming the holder's pid, host and role. A Saver's
default timeout is 0 — a second Saver in the directory is a bug worth failing for —
but whatever its timeout, it waits up to EDIT_WAIT_SECONDS for a holder that is not a
Saver (an edit or a one-off save takes milliseconds to seconds), so running
`ckptkit rename` beside a training job never makes the job's save fail.

The lock is reentrant within a thread: a Saver holding it calls writers that take it
again (the bundle write, the state update) without deadlocking on its own flock.

Why flock: the kernel drops the lock when its holder dies, even by SIGKILL, so a
crash never leaves the directory locked, and there is no pid file to go stale.
flock locks belong to an open file description, so two Savers in one process (two
threads) exclude each other too. On NFS, Linux maps flock onto the server's
byte-range locks, which covers writers on different machines; on filesystems without
working locks (some FUSE mounts) or platforms without fcntl (Windows), the lock is
skipped with a debug log and saving works as before.

The lock file exists only while a write runs (so a directory at rest holds exactly
the files TF's Saver would leave): the holder deletes it before unlocking, and a
locker that finds its locked file no longer at the path retries with a fresh one.
It holds the holder's `pid host role since` and, on a second line, its command: the role
decides how long others wait, the rest is for messages. A writer that has waited
NOTE_AFTER_SECONDS logs one warning naming the holder (pid, command, since when), so a
Saver stuck behind a hung edit says who it waits for instead of hanging silently.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import sys
import threading
import time

from ..errors import CheckpointError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; saving still works, unguarded
    fcntl = None  # type: ignore[assignment]  # None marks "no fcntl"; every use checks for it

__all__ = ["LOCK_FILENAME", "DirectoryLock", "DirectoryLockedError", "EDIT", "EDIT_WAIT_SECONDS", "SAVER"]

LOCK_FILENAME = ".ckptkit.lock"
SAVER, EDIT = "saver", "edit"  # holder roles, written into the lock file
EDIT_WAIT_SECONDS = 60.0       # how long anyone waits for a holder that is not a Saver, and
                               # the default wait of every writer that is not a Saver
_POLL_SECONDS = 0.05
NOTE_AFTER_SECONDS = 1.0       # a writer waiting this long says whom it waits for
_COMMAND_CHARS = 200           # of the holder's command line kept in the lock file
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
_held = threading.local()      # {realpath of directory: depth} locked by this thread

_log = logging.getLogger(__name__)


class DirectoryLockedError(CheckpointError):
    """Another ckptkit writer holds the directory's lock (it is writing right now)."""


class DirectoryLock:
    """`with DirectoryLock(dir, timeout):` — exclusive while the block runs.

    `timeout` is in seconds: 0 fails at once, None waits forever.
    """

    def __init__(self, directory: str, timeout: float | None = 0.0, role: str = SAVER) -> None:
        self.directory = directory or os.curdir
        self.path = os.path.join(self.directory, LOCK_FILENAME)
        self.timeout = timeout
        self.role = role
        self._fd: int | None = None
        self._key: str | None = None
        self.outermost = False  # True when this acquire took the lock (not a reentry)

    def acquire(self) -> None:
        key = os.path.realpath(self.directory)
        depths = _held.__dict__.setdefault("depths", {})
        if key in depths:  # this thread holds it already
            depths[key] += 1
            self._key = key
            self.outermost = False
            return
        if fcntl is not None:
            self._fd = self._acquire()
        depths[key] = 1
        self._key = key
        self.outermost = True

    def _acquire(self) -> int | None:
        start = time.monotonic()
        noted = False
        while True:
            fd = self._open()
            if fd is None:
                return None
            state = self._try_lock(fd)
            if state == "locked":
                break
            if state == "unsupported":
                return None
            if state == "busy":
                holder, role = _read_holder(fd)
                limit = self.timeout
                if role != SAVER and limit is not None:
                    limit = max(limit, EDIT_WAIT_SECONDS)
                waited = time.monotonic() - start
                if not noted and waited >= NOTE_AFTER_SECONDS and (limit is None or limit > waited):
                    _log.warning("%s: waiting for another ckptkit writer to finish (%s)", self.directory, holder)
                    noted = True
                if limit is not None and waited >= limit:
                    os.close(fd)
                    waited_note = f" (waited {waited:.3g} s)" if limit else ""
                    raise DirectoryLockedError(
                        f"another ckptkit writer is writing to {self.directory} ({holder}){waited_note}; "
                        "two writers in one directory would overwrite each other's files",
                        path=self.directory)
            os.close(fd)
            if state == "busy":
                time.sleep(_POLL_SECONDS)
        try:
            os.ftruncate(fd, 0)
            command = _UNPRINTABLE.sub("?", " ".join(sys.argv))[:_COMMAND_CHARS]
            os.pwrite(fd, f"{os.getpid()} {os.uname().nodename} {self.role} {int(time.time())}\n{command}\n"
                      .encode("utf-8", "replace"), 0)
        except OSError:
            pass  # the holder note is informative only
        return fd

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
        key, self._key = self._key, None
        if key is None:
            return
        depths = _held.__dict__.setdefault("depths", {})
        depths[key] -= 1
        if depths[key]:
            return
        del depths[key]
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.unlink(self.path)  # while still locked: see the module docstring
            except OSError:
                pass
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> tuple[str, str | None]:
    """(a description of the lock's holder for messages, its role or None if unknown).

    The file holds `pid host role since` and the holder's command on a second line (an
    older ckptkit wrote the first three fields only)."""
    try:
        lines = os.pread(fd, 512, 0).decode("utf-8", "replace").split("\n")
    except OSError:
        lines = []
    fields = lines[0].split() if lines else []
    if not fields or not fields[0].isdigit():
        return "pid unknown", None
    role = fields[2] if len(fields) >= 3 else None
    parts = [f"pid {fields[0]}" + (f" on {fields[1]}" if len(fields) >= 2 else "")]
    if role:
        parts.append(role)
    command = _UNPRINTABLE.sub("?", lines[1]).strip() if len(lines) > 1 else ""
    if command:
        parts.append(f"`{command}`")
    if len(fields) >= 4 and fields[3].isdigit():
        since = int(fields[3])
        parts.append(f"since {time.strftime('%H:%M:%S', time.localtime(since))} "
                     f"({max(0, int(time.time()) - since)} s ago)")
    return ", ".join(parts), role
