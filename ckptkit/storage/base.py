"""What ckptkit needs from a place that holds files: the interface every store implements.

Everything above this package (the formats, the reader, the Saver, the edits) sees
checkpoint files only through a `Storage` and the `ReadHandle`s it opens, so the same
code reads a checkpoint on a local disk, in an S3 bucket or behind an HTTP server.
Paths are strings: local paths for `LocalStorage`, URLs (`s3://bucket/run/model.ckpt`)
for the fsspec stores; `os.path.join`/`dirname`/`basename` work on both.
"""
from __future__ import annotations

import abc
import contextlib
import io
import os
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Protocol

from ..errors import CheckpointError, ConcurrentModificationError, DataLossError

if TYPE_CHECKING:
    from _typeshed import SupportsWrite
    from typing_extensions import Buffer

    from .crc import AnyBuffer

COPY_CHUNK = 8 << 20  # bytes per read when copying files: big calls, still cache-sized

Identity = tuple  # what a store says about a file version: equal tuples, same bytes
Progress = Callable[[int], None]  # told the byte count of each piece done


class ShardFile(Protocol):
    """A data shard being written (a local ShardWriter, an object store's upload): bytes
    appended at `offset`, each write returning crc32c(data, crc), unmasked."""

    path: str  # where `publish` puts it
    offset: int

    def write(self, data: AnyBuffer, crc: int = 0) -> int: ...

    def close(self) -> None:
        """Everything written is on its way (flushed, fsynced locally); idempotent."""


class NewFile(Protocol):
    """A small file being written in a transaction (an index, a `.meta`, a state file, an
    `.npz`): appended to, published by `Transaction.publish` (a local AtomicFile, an
    object store's upload)."""

    path: str  # where `publish` puts it

    @property
    def file(self) -> IO[bytes]:
        """The binary file object written to (for writers that want one: zipfile)."""

    def write(self, data: Buffer) -> int: ...

    def close(self) -> None:
        """Everything written is on its way (flushed, fsynced locally); idempotent."""

    def discard(self) -> None:
        """Give the file up: it is never published (and its temp bytes are deleted)."""


class Transaction(Protocol):
    """`with store.commit(directory) as tx:` — new files in `directory` published together.

    Create files with `file`/`shard`/`link` (in publication order: the index last), name
    old files to delete with `delete_after`, then `publish()`. Leaving the block without
    publishing (an exception, or no `publish`) aborts: nothing new becomes visible. Every
    path must be in `directory` (else a CheckpointError). Implemented by the local
    journaled commit (journal.LocalCommit: atomic, under the directory's lock) and the
    object stores' ordered uploads (remote.ObjectCommit), both checked by
    tests/storage/store_kit.py.
    """

    directory: str

    def __enter__(self) -> Transaction: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None, /) -> None: ...

    def file(self, path: str) -> NewFile:
        """A new small file to be published at `path`."""

    def shard(self, path: str) -> ShardFile:
        """A new data shard to be published at `path` (streamed: big writes, bounded memory)."""

    def link(self, source: str, path: str, what: str = "data shard", progress: Progress | None = None) -> None:
        """Publish `source`'s bytes at `path` too (a hard link where the store can, else a
        copy); `progress` is told the bytes done."""

    def delete_after(self, path: str) -> None:
        """Delete `path` once the new files are published (unless one of them is `path`)."""

    def guard(self, path: str, since: Identity | None) -> None:
        """Publication fails (ConcurrentModificationError, nothing published) unless `path`
        still has the identity `since` it had when the caller read it."""

    def publish(self) -> None:
        """Make every new file visible, data before the index (creation order), then
        delete what `delete_after` named."""

    def abort(self) -> None:
        """Give every new file up; nothing new becomes visible."""


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, as containers set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


# Threads that read a big local tensor's pieces: preadv and crc32c release the GIL, so
# each core copies and sums its own pieces; 2 even on one core (one waits on the disk
# while the other sums), at most 8 (past that, memory bandwidth is the limit).
LOCAL_READ_THREADS = min(8, max(2, usable_cpus()))


class ReadHandle(abc.ABC):
    """One open file: its size when opened, and reads of byte ranges."""

    path: str
    what: str  # which file of a checkpoint this is ("data shard"), for errors
    size: int
    identity: Identity | None  # the version opened (see Storage.identity)
    piece_bytes: int = COPY_CHUNK  # big reads are split in pieces of this size ...
    read_threads: int = LOCAL_READ_THREADS  # ... read by this many threads at once

    @abc.abstractmethod
    def readinto(self, buf: memoryview, offset: int) -> int:
        """Read up to len(buf) bytes at `offset` into `buf`; return how many (0 at the end)."""

    def read(self, size: int, offset: int) -> bytes:
        """`size` bytes at `offset` (fewer only at the end of the file, as it was when opened:
        a buffer is never larger than the file)."""
        size = max(0, min(size, self.size - offset))
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = self.readinto(view[got:], offset + got)
            if not n:
                break
            got += n
        return bytes(buf[:got])

    def read_all(self) -> bytes:
        return self.read(self.size, 0)

    def read_exactly(self, buf: memoryview, offset: int, key: str | None = None) -> None:
        """Fill `buf` with the bytes at `offset`, short reads retried. A file that ends first
        is a DataLossError, and every error names this file and tensor `key`."""
        got = 0
        while got < len(buf):
            try:
                n = self.readinto(buf[got:], offset + got)
            except CheckpointError as exc:
                raise type(exc)(exc.message, path=exc.path, key=key) from None
            if not n:
                raise DataLossError(f"{self.what} ended early", path=self.path, key=key)
            got += n

    def as_file(self) -> io.RawIOBase:
        """A seekable file object over the handle (for readers that want one: zipfile)."""
        return _HandleFile(self)

    def mmap(self) -> Any | None:
        """A read-only memory map of the whole file, or None where the store has none."""
        return None

    def fileno(self) -> int | None:
        """The OS descriptor of a local file (for zero-copy paths), else None."""
        return None

    def map_private(self, offset: int, size: int) -> memoryview | None:
        """A copy-on-write map of `size` bytes at `offset` (pages from the page cache, writes
        private to the map: never reaching the file or another map), or None where the store
        has no maps. The memoryview keeps the map alive."""
        return None

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> ReadHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _HandleFile(io.RawIOBase):
    def __init__(self, handle: ReadHandle) -> None:
        self.handle = handle
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buf: Buffer) -> int:
        n = self.handle.readinto(memoryview(buf).cast("B"), self.pos) if self.pos < self.handle.size else 0
        self.pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.handle.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos


# Opens a file of whichever store holds it: (path or URL, what it is for messages) -> handle.
Opener = Callable[[str, str], ReadHandle]


class Storage(abc.ABC):
    """A filesystem or object store. See local.py and remote.py for the two kinds."""

    #: whether directories are real (must exist before files go in them)
    hierarchical: bool = True

    # ---- reading and looking
    @abc.abstractmethod
    def open(self, path: str, what: str, pending: Mapping[str, str] | None = None) -> ReadHandle:
        """Open a regular file for reading; errors are CheckpointErrors naming `path` and `what`.
        `pending` is `pending(...)` of the checkpoint the file belongs to."""

    def pending(self, last_final: str) -> dict[str, str]:
        """{final path: temp path} of a commit published but not yet applied, whose last file
        is `last_final` (journal.py); readers open those temps instead. {}: none."""
        return {}

    def published_identity(self, last_final: str) -> Identity | None:
        """The identity of what a reader opening `last_final` now would read."""
        return self.identity(last_final)

    def read_bytes(self, path: str, what: str) -> bytes:
        """All of a small file (an index, a `.meta`, a SavedModel)."""
        with self.open(path, what) as f:
            return f.read_all()

    @abc.abstractmethod
    def kind(self, path: str) -> str | None:
        """"file", "dir", "link" (local symlinks only), "other" or None (absent)."""

    def isfile(self, path: str) -> bool:
        return self.kind(path) == "file"

    def isdir(self, path: str) -> bool:
        return self.kind(path) == "dir"

    def exists(self, path: str) -> bool:
        return self.kind(path) is not None

    @abc.abstractmethod
    def entries(self, directory: str) -> list[tuple[str, str]]:
        """(name, kind) of each entry of `directory` (kinds as `kind`, symlinks not followed);
        [] when it can't be listed."""

    def listdir(self, directory: str) -> list[str]:
        """Names (not paths) of the entries of `directory`; [] when it can't be listed."""
        return [name for name, _ in self.entries(directory)]

    @abc.abstractmethod
    def size(self, path: str) -> int: ...

    @abc.abstractmethod
    def mtime(self, path: str) -> float | None:
        """Seconds since the epoch of the last change, None where unknown."""

    @abc.abstractmethod
    def identity(self, path: str) -> Identity | None:
        """A tuple that changes whenever the file at `path` is replaced or rewritten; None: absent."""

    def realpath(self, path: str) -> str:
        return path

    # ---- writing
    @abc.abstractmethod
    def makedirs(self, directory: str) -> None: ...

    def mkdir(self, directory: str) -> None:
        """Create one directory (its parent must exist), as TF's Saver does."""
        return None  # stores without directories have nothing to create

    @abc.abstractmethod
    def remove(self, path: str) -> bool:
        """Delete one file (a symlink itself, never its target); False if it was absent, where
        the store can tell (S3 deletes whatever was there and answers alike: True)."""

    def sync_directory(self, directory: str) -> None:
        """Make renames and deletions in `directory` durable (where that means anything)."""
        return None

    @abc.abstractmethod
    def commit(self, directory: str, *, lock_timeout: float | None, role: str) -> Transaction:
        """A transaction publishing new files in `directory` (see `Transaction`)."""

    def lock(self, directory: str, timeout: float | None, role: str) -> contextlib.AbstractContextManager[None]:
        """Hold `directory`'s writer lock (stores without locks: nothing)."""
        return _no_lock()


@contextlib.contextmanager
def _no_lock() -> Iterator[None]:
    yield


def copy_range(source: ReadHandle, offset: int, size: int, out: SupportsWrite[bytes], *, path: str,
               key: str | None = None, progress: Progress | None = None) -> None:
    """Copy `size` bytes at `offset` of `source` (a ReadHandle of the file `path`) to `out`,
    in chunks; a file shorter than that is a DataLossError (callers checked `size` already)."""
    while size:
        chunk = source.read(min(size, COPY_CHUNK), offset)
        if not chunk:
            raise DataLossError("file ended early", path=path, key=key)
        out.write(chunk)
        offset += len(chunk)
        size -= len(chunk)
        if progress is not None:
            progress(len(chunk))


def check_unchanged(guards: Mapping[str, Identity | None], identity: Callable[[str], Identity | None]) -> None:
    """Raise ConcurrentModificationError unless every guarded file still has the identity it
    had when it was read: what every commit checks last, before it publishes."""
    for path, before in guards.items():
        if identity(path) != before:
            raise ConcurrentModificationError(
                "changed by another program while this edit ran; nothing was written, run it again", path=path)
