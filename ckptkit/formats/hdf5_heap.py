"""HDF5 global heap collections checked as h5py reads them, before the HDF5 library parses one.

A global heap collection (signature `GCOL`) holds an HDF5 file's variable-length data: the
string attributes of a Keras file (layer names, `model_config`). The HDF5 library walks a
collection's objects without checking that the walk advances: a free-space object of size
0 (one flipped bit of the collection's size is enough to reach one) makes it loop forever,
in C, where no Python code can interrupt it, and an object running past the collection
makes it read past its buffer. `GuardedFile` is the file object h5py reads through: the
library reads a collection at its address (first `_MIN_SIZE` bytes, then the rest), so a
read that starts with the signature is a collection about to be parsed, and it is walked
here first, the way the library walks it (H5HG__cache_heap_deserialize), reading it whole
from the file. A bad one is a DataLossError naming the file; every other read passes
through untouched, so this costs one read per collection and nothing where a file has none.
See the HDF5 file format specification, "Global Heap" and "Superblock".
"""
from __future__ import annotations

import io
import struct
from typing import Any

from ..errors import DataLossError

__all__ = ["GuardedFile", "check_collection"]

_SIGNATURE = b"GCOL\x01"  # signature and version 1, the only version there is
_MIN_SIZE = 4096          # the format's smallest collection; the library reads this much first


def lengths_size(superblock: bytes) -> int:
    """The superblock's "size of lengths" (bytes of a length field), 8 where it is unreadable
    (the library refuses such a file itself)."""
    version = superblock[8] if len(superblock) > 8 else 0
    at = 14 if version in (0, 1) else 10
    size = superblock[at] if len(superblock) > at else 8
    return size if size in (2, 4, 8, 16) else 8


def check_collection(data: bytes, offset: int, file_size: int, lengths: int, path: str) -> None:
    """Refuse the collection at `offset` whose bytes from its start are `data` (all of it
    where the file holds it): a size under the format's minimum or past the end of the file,
    an object that runs past the collection or a walk that does not advance."""
    def refuse(why: str) -> DataLossError:
        return DataLossError(f"corrupt HDF5 global heap collection at byte {offset}: {why}", path=path)

    header = len(_SIGNATURE) + 3 + lengths  # signature, version, reserved, collection size
    if len(data) < header:
        raise refuse("truncated header")
    size = int.from_bytes(data[8:8 + lengths], "little")
    if size < _MIN_SIZE:
        raise refuse(f"size {size} is under the format's minimum {_MIN_SIZE}")
    if offset + size > file_size or len(data) < size:
        raise refuse(f"size {size} runs past the end of the file ({file_size} bytes)")
    object_header = 2 + 2 + 4 + lengths  # index, reference count, reserved, object size
    p = header
    while p < size:
        if p + object_header > size:  # too small for an object: free space, as the library reads it
            break
        (index,) = struct.unpack_from("<H", data, p)
        object_size = int.from_bytes(data[p + 8:p + 8 + lengths], "little")
        # object 0 is free space, its size counting its header; the others are padded to 8
        need = object_header + (object_size + 7) // 8 * 8 if index else object_size
        if need == 0:
            raise refuse(f"a free-space object of size 0 at byte {offset + p}")
        if p + need > size:
            raise refuse(f"object {index} at byte {offset + p} ({object_size} bytes) runs past the "
                         f"collection's end ({size} bytes)")
        p += need


class GuardedFile(io.RawIOBase):
    """`raw` (a seekable binary file object) for h5py, each global heap collection checked
    by `check_collection` when the library reads it."""

    def __init__(self, raw: Any, size: int, path: str) -> None:
        self.raw = raw
        self.size = size
        self.path = path
        self.lengths: int | None = None
        self.checked: set[int] = set()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self.raw.seek(offset, whence))

    def tell(self) -> int:
        return int(self.raw.tell())

    def readinto(self, buf: Any) -> int:
        at = self.raw.tell()
        view = memoryview(buf).cast("B")
        n = int(self.raw.readinto(view) or 0)
        if n >= len(_SIGNATURE) and view[:len(_SIGNATURE)] == _SIGNATURE and at not in self.checked:
            self._check(at)
            self.checked.add(at)
        return n

    def _check(self, at: int) -> None:
        """Read the collection at `at` whole and check it; the file position is kept."""
        back = self.raw.tell()
        try:
            if self.lengths is None:
                self.raw.seek(0)
                self.lengths = lengths_size(self.raw.read(16) or b"")
            self.raw.seek(at + 8)
            claimed = int.from_bytes(self.raw.read(self.lengths) or b"", "little")
            self.raw.seek(at)
            data = self.raw.read(min(max(claimed, 16 + self.lengths), self.size - at)) or b""
        finally:
            self.raw.seek(back)
        check_collection(data, at, self.size, self.lengths, self.path)
