"""A local file opened for reading: positioned reads (preadv), maps, its identity.

Apart from `local.py` so that the journaled commit (`journal.py`), which copies local
files into new ones, and the local store, which builds on that commit, both use it.
"""
from __future__ import annotations

import io
import mmap
import os

from ..errors import CheckpointError
from .base import ReadHandle


class LocalHandle(ReadHandle):
    """A regular file opened by `files.open_regular` (a FIFO fails at once, never hangs)."""

    def __init__(self, file: io.FileIO, path: str, what: str) -> None:
        self.file = file
        self.path = path
        self.what = what
        st = os.fstat(file.fileno())
        self.size = st.st_size
        self.identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def readinto(self, buf: memoryview, offset: int) -> int:
        try:
            return os.preadv(self.file.fileno(), [buf], offset)
        except OSError as exc:
            raise CheckpointError(f"cannot read {self.what}: {exc.strerror or exc}", path=self.path) from None

    def read_all(self) -> bytes:
        try:
            return self.file.read()  # one read to the end, whatever the size said
        except OSError as exc:
            raise CheckpointError(f"cannot read {self.what}: {exc.strerror or exc}", path=self.path) from None

    def mmap(self) -> mmap.mmap | None:
        if not self.size:
            return None
        try:
            return mmap.mmap(self.file.fileno(), self.size, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot map {self.what}: {exc}", path=self.path) from None

    def as_file(self) -> io.FileIO:
        return self.file

    def fileno(self) -> int:
        return self.file.fileno()

    def map_private(self, offset: int, size: int) -> memoryview | None:
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        try:
            mapped = mmap.mmap(self.file.fileno(), offset + size - start, flags=mmap.MAP_PRIVATE,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot map {self.what}: {exc}", path=self.path) from None
        return memoryview(mapped)[offset - start:]

    def close(self) -> None:
        self.file.close()
