"""Streaming writes of one data shard: page-aligned bounce buffers, crc32c of each chunk
while it is hot in cache, and a writer thread using O_DIRECT where the filesystem allows it.

Split from bundle.py because it is all about I/O mechanics, not the bundle format.
"""
from __future__ import annotations

import errno
import mmap
import os
import queue
import threading
from typing import TYPE_CHECKING

from ..errors import CheckpointError
from .crc import byte_view, crc32c
from .files import AtomicFile

if TYPE_CHECKING:
    from .crc import AnyBuffer

CHUNK = 8 << 20        # bytes per write call and per crc piece: big calls, still cache-sized
_BUFFERS = 3           # bounce buffers in flight (3 x 8 MiB: memory stays bounded)
_ALIGN = 4096          # O_DIRECT wants block-aligned memory, offsets and sizes


class ShardWriter:
    """Streams tensor bytes into one data shard under a temp name (AtomicFile semantics).

    Each chunk is copied into a page-aligned bounce buffer and its crc32c taken right
    there, while it is hot in cache; a background thread writes full buffers with
    O_DIRECT, so the disk works while the next chunk is copied and summed. Direct I/O
    skips the page cache: the bytes are on the device when the thread is done, the final
    fsync has almost nothing left to do, and a save costs no page-cache churn (allocating
    1 GiB of fresh cache pages is slow and erratic on VMs). Where O_DIRECT is refused
    (tmpfs, some FUSE or network filesystems) plain writes do the same job.
    Memory: `_BUFFERS` chunks, whatever the tensor sizes.
    """

    def __init__(self, path: str, *, direct: bool = True) -> None:
        self.path = path
        self.atomic = AtomicFile(path)
        self.offset = 0
        self._fd: int | None = None
        self._direct_fd: int | None = None  # owned by the writer thread once it runs
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        try:
            self._fd = os.open(self.atomic.temp, os.O_WRONLY)
            if direct and hasattr(os, "O_DIRECT"):
                try:
                    self._direct_fd = os.open(self.atomic.temp, os.O_WRONLY | os.O_DIRECT)
                except OSError:
                    pass
            if self._direct_fd is not None:
                buffers = [mmap.mmap(-1, CHUNK) for _ in range(_BUFFERS)]
                self._free: queue.Queue = queue.Queue()
                for buf in buffers[1:]:
                    self._free.put(buf)
                self._full: queue.Queue = queue.Queue()
                self._buf = buffers[0]
                self._buf_start = 0  # file offset of self._buf[0]
                self._fill = 0
                self._thread = threading.Thread(target=self._drain, name="ckptkit-shard-writer", daemon=True)
                self._thread.start()
        except BaseException:
            self.discard()
            raise

    def write(self, data: AnyBuffer, crc: int = 0) -> int:
        """Append `data` (any buffer); return crc32c(data, crc), unmasked."""
        fd = self._fd
        if fd is None:
            raise ValueError(f"write to closed shard {self.path}")
        view = byte_view(data)
        n = len(view)
        if self._thread is None:
            for pos in range(0, n, CHUNK):
                piece = view[pos:pos + CHUNK]
                crc = crc32c(piece, crc)
                _pwrite_all(fd, piece, self.offset + pos)
        else:
            pos = 0
            while pos < n:
                take = min(CHUNK - self._fill, n - pos)
                dest = memoryview(self._buf)[self._fill:self._fill + take]
                dest[:] = view[pos:pos + take]
                crc = crc32c(dest, crc)
                self._fill += take
                pos += take
                if self._fill == CHUNK:
                    self._submit(CHUNK)
                    self._buf = self._free.get()
                    self._fill = 0
        self.offset += n
        return crc

    def _submit(self, size: int) -> None:
        if self._error is not None:
            raise self._error
        self._full.put((self._buf, size, self._buf_start))
        self._buf_start += size

    def _drain(self) -> None:
        """Writer thread: buffers to disk in order; the first error is kept for the caller."""
        while True:
            item = self._full.get()
            if item is None:
                return
            buf, size, offset = item
            try:
                if self._error is None:
                    self._write_block(memoryview(buf)[:size], offset)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error = exc
            self._free.put(buf)

    def _write_block(self, view: memoryview, offset: int) -> None:
        if self._direct_fd is not None:
            try:
                _pwrite_all(self._direct_fd, view, offset)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                fd, self._direct_fd = self._direct_fd, None  # no direct I/O here after all
                os.close(fd)
        assert self._fd is not None  # closed only after this thread is joined
        _pwrite_all(self._fd, view, offset)

    def close(self) -> None:
        """Write what is buffered, wait for the writer thread, fsync (idempotent)."""
        if self._thread is not None:
            whole = self._fill - self._fill % _ALIGN
            tail = memoryview(self._buf)[whole:self._fill]
            if whole:
                self._submit(whole)
            self._full.put(None)
            self._thread.join()
            self._thread = None
            if self._error is not None:
                raise self._error
            if len(tail):  # the unaligned tail goes through the page cache
                assert self._fd is not None  # open while the thread ran
                _pwrite_all(self._fd, tail, self._buf_start)
        if self._fd is not None:
            os.fsync(self._fd)
        self._close_fds()
        self.atomic.close()

    def _close_fds(self) -> None:
        fds = (self._fd, self._direct_fd)
        self._fd = self._direct_fd = None
        for fd in fds:
            if fd is not None:
                os.close(fd)

    def commit(self) -> None:
        self.close()
        self.atomic.commit()

    def discard(self) -> None:
        if self._thread is not None:
            self._error = self._error or CheckpointError("write abandoned", path=self.path)
            self._full.put(None)
            self._thread.join()
            self._thread = None
        self._close_fds()
        self.atomic.discard()


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while len(view):
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
