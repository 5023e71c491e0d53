"""The local filesystem: today's fast paths (preadv, mmap, O_DIRECT shard writes, flock,
journaled commits with atomic renames) behind the `Storage` interface."""
from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from contextlib import AbstractContextManager

from ..errors import DataLossError
from .base import Identity, Opener, Storage
from .files import fsync_dir, open_regular
from .journal import LocalCommit, identity, locked_directory, open_pending, pending_renames, published_identity
from .local_handle import LocalHandle
from .lock import EDIT, EDIT_WAIT_SECONDS


class LocalStorage(Storage):
    """Plain paths and `file://` URLs. `open_url` opens a file of any store: a commit
    here may copy a remote checkpoint's file into a local one (`Transaction.link`)."""

    def __init__(self, open_url: Opener) -> None:
        self.open_url = open_url

    def open(self, path: str, what: str, pending: Mapping[str, str] | None = None) -> LocalHandle:
        file = open_pending(path, pending, what) if pending else open_regular(path, what)
        return LocalHandle(file, path, what)

    def pending(self, last_final: str) -> dict[str, str]:
        return pending_renames(last_final)

    def published_identity(self, last_final: str) -> Identity | None:
        return published_identity(last_final)

    def kind(self, path: str) -> str | None:
        try:
            mode = os.lstat(path).st_mode
        except (OSError, ValueError):
            return None
        if stat.S_ISLNK(mode):
            try:
                mode = os.stat(path).st_mode
            except (OSError, ValueError):
                return "link"  # dangling
        if stat.S_ISREG(mode):
            return "file"
        if stat.S_ISDIR(mode):
            return "dir"
        return "other"

    def entries(self, directory: str) -> list[tuple[str, str]]:
        try:
            found = list(os.scandir(directory or os.curdir))
        except (OSError, ValueError):  # missing, not a directory, unreadable, NUL in the name
            return []
        out = []
        for entry in found:
            try:
                kind = ("link" if entry.is_symlink() else "file" if entry.is_file(follow_symlinks=False)
                        else "dir" if entry.is_dir(follow_symlinks=False) else "other")
            except OSError:
                continue
            out.append((entry.name, kind))
        return out

    def listdir(self, directory: str) -> list[str]:
        try:
            return os.listdir(directory or os.curdir)
        except (OSError, ValueError):
            return []

    def size(self, path: str) -> int:
        try:
            return os.stat(path).st_size
        except OSError as exc:
            raise DataLossError(f"cannot stat: {exc.strerror or exc}", path=path) from None

    def mtime(self, path: str) -> float | None:
        try:
            return os.stat(path).st_mtime
        except OSError:
            return None

    def identity(self, path: str) -> Identity | None:
        return identity(path)

    def realpath(self, path: str) -> str:
        return os.path.realpath(path or os.curdir)

    def makedirs(self, directory: str) -> None:
        if directory:
            os.makedirs(directory, exist_ok=True)

    def mkdir(self, directory: str) -> None:
        """Create one directory (its parent must exist), as TF's Saver does."""
        os.mkdir(directory)

    def remove(self, path: str) -> bool:
        try:
            os.unlink(path)  # on a symlink: removes the link, not its target
        except FileNotFoundError:
            return False
        return True

    def sync_directory(self, directory: str) -> None:
        fsync_dir(directory)

    def commit(self, directory: str, *, lock_timeout: float | None = EDIT_WAIT_SECONDS,
               role: str = EDIT) -> LocalCommit:
        return LocalCommit(directory, lock_timeout=lock_timeout, role=role, open_url=self.open_url)

    def lock(self, directory: str, timeout: float | None, role: str) -> AbstractContextManager[None]:
        return locked_directory(directory, timeout, role)
