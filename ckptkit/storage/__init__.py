"""The one place where bytes meet a filesystem.

`of(path)` is the store holding `path`: the local filesystem for plain paths and
`file://` URLs, an fsspec filesystem for every other URL (`s3://`, `gs://`,
`http(s)://`, `hf://`, `memory://`, ...). Options for a remote store (credentials,
endpoints) come the fsspec way: `storage_options=` on the API calls that take it
(applied with `options(...)` for the duration of the call), or fsspec's own
configuration (environment variables `FSSPEC_S3_*`, `~/.config/fsspec/*.json`, the
store's usual credential chain) for the CLI.

Writes go through `Commit(directory)`: the journaled temp-and-rename protocol on local
disks (journal.py), ordered uploads on object stores (remote.py).
"""
from __future__ import annotations

import contextlib
import contextvars
import fnmatch
import os
import posixpath
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError
from .base import Identity, ReadHandle, Storage, Transaction
from .journal import Recovery, pending_journals
from .journal import recover as recover_journals
from .local import LocalStorage
from .lock import EDIT, EDIT_WAIT_SECONDS, DirectoryLock
from .urls import URL, is_url, local_path

if TYPE_CHECKING:
    import aiohttp

__all__ = ["LOCAL", "Commit", "Identity", "ReadHandle", "Recovery", "Storage", "abspath", "exists", "fspath",
           "is_url", "isabs", "isdir", "isfile", "join", "locked_directory", "match", "of", "pending_commits",
           "recover", "relpath", "options", "same_directory", "Transaction", "write_file"]

_options: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar("ckptkit_storage_options",
                                                                                    default=None)
_stores: dict[tuple, Storage] = {}
_MAX_PATTERN = 1024  # file names are at most 255 bytes; a longer pattern is no real one
HTTP_TIMEOUT_SECONDS = 60.0  # a stalled HTTP server: a CheckpointError after this, not a hang
CONNECT_TIMEOUT_SECONDS = 5.0  # an HTTP server that does not accept the connection: given up on


@contextlib.contextmanager
def options(storage_options: Mapping[str, Any] | None) -> Iterator[None]:
    """Use `storage_options` (fsspec's keyword arguments for the store) for URLs opened
    inside the block; None leaves the current ones."""
    if storage_options is None:
        yield
        return
    token = _options.set(dict(storage_options))
    try:
        yield
    finally:
        _options.reset(token)


def _open_url(path: str, what: str) -> ReadHandle:
    """Open a file of whichever store holds it (what commits copy in from other stores)."""
    return of(path).open(path, what)


LOCAL = LocalStorage(_open_url)


def of(path: str) -> Storage:
    """The store that holds `path`."""
    m = URL.match(path)
    if m is None or m["protocol"].lower() == "file":
        return LOCAL
    protocol = m["protocol"].lower()
    opts = _options.get() or {}
    cache_key = (protocol, tuple(sorted((k, repr(v)) for k, v in opts.items())))
    store = _stores.get(cache_key)
    if store is None:
        store = _stores[cache_key] = _fsspec_store(protocol, dict(opts), path)
    return store


def _fsspec_store(protocol: str, opts: dict, path: str) -> Storage:
    """The fsspec filesystem for `protocol`, made within FIRST_CONTACT_SECONDS (some
    stores look for credentials on the network when made)."""
    from . import backends  # noqa: PLC0415 - remote URLs only

    try:
        import fsspec  # noqa: PLC0415 - optional: only remote URLs need it
    except ImportError:
        raise CheckpointError(f"reading {protocol}:// URLs needs fsspec: "
                              f"{backends.install_hint(protocol, fsspec_missing=True)}", path=path) from None
    from .remote import FIRST_CONTACT_SECONDS, FsspecStorage, within  # noqa: PLC0415 - remote URLs only

    def make() -> Any:
        with backends.quick_credentials(protocol, opts):
            return fsspec.filesystem(protocol, **opts)

    started = time.monotonic()
    try:
        if protocol in ("http", "https") and "client_kwargs" not in opts:
            opts["client_kwargs"] = {"timeout": _http_timeout()}
        fs = within(FIRST_CONTACT_SECONDS, path, make)
    except ImportError as exc:
        raise CheckpointError(backends.missing_backend(protocol, exc), path=path) from None
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"cannot use {protocol}:// URLs: {exc}", path=path) from None
    return FsspecStorage(fs, protocol, _open_url, contact_until=started + FIRST_CONTACT_SECONDS)


def _http_timeout() -> aiohttp.ClientTimeout:
    """aiohttp's default is 5 minutes for a whole request: a stalled server would hang a read
    that long. Connecting gets CONNECT_TIMEOUT_SECONDS (an unreachable host fails in
    seconds) and each read of the body HTTP_TIMEOUT_SECONDS instead (pass `client_kwargs` in
    storage_options to choose others)."""
    import aiohttp  # noqa: PLC0415 - fsspec's HTTP store brings it

    return aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECONDS, sock_read=HTTP_TIMEOUT_SECONDS)


def isabs(path: str) -> bool:
    return is_url(path) or os.path.isabs(local_path(path))


def join(directory: str, name: str) -> str:
    return posixpath.join(directory, name) if is_url(directory) else os.path.join(directory, name)


def abspath(path: str) -> str:
    """Absolute form of a local path; URLs are absolute already."""
    return path if is_url(path) else os.path.abspath(path)


def relpath(path: str, start: str) -> str:
    """`path` relative to `start` when both are local and `path` is absolute; else `path`."""
    if is_url(path) or is_url(start) or not os.path.isabs(path):
        return path
    return os.path.relpath(path, start)


def same_directory(a: str, b: str) -> bool:
    if is_url(a) or is_url(b):
        return a.rstrip("/") == b.rstrip("/")
    return LOCAL.realpath(a) == LOCAL.realpath(b)


def Commit(directory: str, *, lock_timeout: float | None = EDIT_WAIT_SECONDS,  # noqa: N802 - used like a class
           role: str = EDIT) -> Transaction:
    """`with Commit(directory) as tx:` — the transaction publishing new files in
    `directory` (see base.Transaction for its methods and guarantees)."""
    return of(directory).commit(directory or os.curdir, lock_timeout=lock_timeout, role=role)


def locked_directory(directory: str, timeout: float | None = EDIT_WAIT_SECONDS,
                     role: str = EDIT) -> contextlib.AbstractContextManager[None]:
    """Hold `directory`'s writer lock (see lock.py); stores without locks hold nothing."""
    return of(directory).lock(directory or os.curdir, timeout, role)


def pending_commits(directory: str) -> list[str]:
    """Journals of commits a dead writer left in `directory` (local disks; object stores
    publish without journals): until a ckptkit writer completes them, TF sees the
    half-replaced files. `recover(directory)` completes or rolls them back."""
    if is_url(directory):
        return []
    return pending_journals(local_path(directory) or os.curdir)


def recover(directory: str, *, lock_timeout: float | None = EDIT_WAIT_SECONDS) -> list[Recovery]:
    """Complete (or, where another program rewrote its files since, roll back) every
    commit a dead writer left in `directory`, under its lock: what was done to each."""
    if is_url(directory):
        return []
    directory = local_path(directory) or os.curdir
    with DirectoryLock(directory, lock_timeout, role=EDIT):  # the bare lock: locked_directory recovers quietly
        return recover_journals(directory)


def write_file(path: str, data: bytes, *, lock_timeout: float | None = EDIT_WAIT_SECONDS) -> None:
    """Publish one whole small file (a `.meta`, a state file) by the commit protocol."""
    with Commit(os.path.dirname(path), lock_timeout=lock_timeout) as tx:
        tx.file(path).write(data)
        tx.publish()


def match(directory: str, name_pattern: str) -> list[str]:
    """Sorted paths of the entries of `directory` whose names match `name_pattern` (fnmatch).

    A one-directory glob for names that come from state files, which may be hostile:
    the directory is taken literally (no wildcards there, so no walk of the whole
    filesystem and no recursion), a NUL byte or an over-long pattern matches nothing
    instead of raising or compiling a 10 MB regex.
    """
    if "\0" in directory or "\0" in name_pattern or len(name_pattern) > _MAX_PATTERN:
        return []
    names = of(directory).listdir(directory)
    return sorted(join(directory, n) for n in fnmatch.filter(names, name_pattern))


def isfile(path: str) -> bool:
    return of(path).isfile(path)


def isdir(path: str) -> bool:
    return of(path).isdir(path)


def exists(path: str) -> bool:
    return of(path).exists(path)


def fspath(path: str | os.PathLike) -> str:
    """A user's path argument as ckptkit's paths: `file://` URLs become local paths."""
    return local_path(os.fspath(path))
