"""LevelDB-style SSTables, as TensorFlow writes them (`core/lib/io/table*.cc`).

A table is data blocks, an (empty) metaindex block, an index block and a 48-byte
footer. Every block carries a 5-byte trailer: compression type and masked crc32c.
Block entries are prefix-compressed against the previous key, with restart points
every `restart_interval` entries. This module knows bytes only: no protos, no policy.
The writer reproduces TF's table builder decisions (block cut points, index key
shortening) so that the same entries give the same bytes.
"""
from __future__ import annotations

import bisect
import itertools
import mmap
import operator
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .. import storage
from ..errors import DataLossError
from .coding import FIXED32, FIXED64, VarintError, crc32c, decode_varint, encode_varint, mask_crc, unmask_crc

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

    from .coding import Bytes

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
MAX_HANDLE_SIZE = 20  # two varint64s
BLOCK_SIZE = 256 * 1024
RESTART_INTERVAL = 16
NO_COMPRESSION = 0
SNAPPY_COMPRESSION = 1


# --------------------------------------------------------------------------- reading

def _snappy_decompress(data: bytes, path: str | os.PathLike | None) -> bytes:
    """Snappy blocks appear in V1 files and V2 indexes written by TF 1.x and early 2.x builds.

    A block that is not valid snappy is a DataLossError naming the file, whatever the
    decoder raises. The uncompressed length a block claims (its leading varint) is
    checked first against what snappy can expand to (every 2 or 3 input bytes give at
    most 64 output bytes), so a lying length never drives an allocation.
    """
    try:
        claimed, _ = decode_varint(data, 0)
    except VarintError:
        raise DataLossError("snappy block has a malformed length", path=path) from None
    if claimed > 32 * len(data) + 64:
        raise DataLossError(f"snappy block of {len(data)} bytes claims {claimed} bytes uncompressed",
                            path=path)
    import cramjam  # noqa: PLC0415 - a dependency, imported only when a snappy block shows up

    try:
        out = bytes(cramjam.snappy.decompress_raw(data))
    except Exception as exc:  # noqa: BLE001 - cramjam.DecompressionError, or anything else
        raise DataLossError(f"snappy block is corrupt ({exc})", path=path) from None
    if len(out) != claimed:
        raise DataLossError("snappy block decompressed to the wrong length", path=path)
    return out


def decode_handle(buf: Bytes, pos: int, limit: int | None = None) -> tuple[int, int, int]:
    """Decode a BlockHandle (offset, size) at buf[pos:]; return (offset, size, end)."""
    offset, pos = decode_varint(buf, pos, limit)
    size, pos = decode_varint(buf, pos, limit)
    return offset, size, pos


def encode_handle(offset: int, size: int) -> bytes:
    return encode_varint(offset) + encode_varint(size)


def block_entries(block: Bytes, path: str | os.PathLike | None = None) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of one decoded block (trailer removed), as bytes, in order.

    One tight loop over the block: the three varints of an entry are nearly always one
    byte each, so that case is decoded inline and the general decoder runs only for
    long keys or values. A list, not a generator: a 100k-entry index decodes in ~0.1 s.
    """
    n = len(block)
    if n < 4:
        raise DataLossError("table block too short", path=path)
    num_restarts = FIXED32.unpack_from(block, n - 4)[0]
    if num_restarts > (n - 4) // 4:
        raise DataLossError("table block has a bad restart count", path=path)
    end = n - 4 - 4 * num_restarts
    if not isinstance(block, bytes):
        block = bytes(block)
    out: list[tuple[bytes, bytes]] = []
    append = out.append
    pos = 0
    key = b""
    try:
        while pos < end:
            shared = block[pos]
            unshared = block[pos + 1]
            vlen = block[pos + 2]
            if (shared | unshared | vlen) < 0x80:
                pos += 3
            else:
                shared, pos = decode_varint(block, pos, end)
                unshared, pos = decode_varint(block, pos, end)
                vlen, pos = decode_varint(block, pos, end)
            kend = pos + unshared
            vend = kend + vlen
            if shared > len(key) or vend > end:
                raise DataLossError("table block entry is malformed", path=path)
            key = key[:shared] + block[pos:kend] if shared else block[pos:kend]
            append((key, block[kend:vend]))
            pos = vend
    except (VarintError, IndexError) as exc:
        raise DataLossError(f"table block entry is malformed ({exc})", path=path) from None
    return out


def iter_block(block: Bytes, path: str | os.PathLike | None = None) -> Iterator[tuple[bytes, bytes]]:
    """Yield (key, value) for every entry of one decoded block (trailer removed)."""
    return iter(block_entries(block, path))


class TableReader:
    """Reads a whole SSTable held in memory (index files are small next to their data)."""

    def __init__(self, data: bytes | mmap.mmap, path: str | os.PathLike | None = None) -> None:
        self.path = path
        self.data = data
        if len(data) < FOOTER_SIZE:
            raise DataLossError(f"file too short to be a table ({len(data)} bytes)", path=path)
        footer = len(data) - FOOTER_SIZE
        if FIXED64.unpack_from(data, len(data) - 8)[0] != MAGIC:
            raise DataLossError("not a table: bad magic number in footer", path=path)
        try:
            meta_off, meta_size, pos = decode_handle(data, footer, footer + 40)
            index_off, index_size, _ = decode_handle(data, pos, footer + 40)
        except VarintError:
            raise DataLossError("table footer is malformed", path=path) from None
        self.read_block(meta_off, meta_size)  # unused (no filters), but damage there is damage
        index = self.read_block(index_off, index_size)
        self._index_keys: list[bytes] = []
        self._handles: list[tuple[int, int]] = []
        for key, value in block_entries(index, path):
            try:
                off, size, _ = decode_handle(value, 0)
            except VarintError:
                raise DataLossError("table index entry is malformed", path=path) from None
            self._index_keys.append(key)
            self._handles.append((off, size))

    @classmethod
    def open(cls, path: str | os.PathLike, what: str = "table file") -> TableReader:
        """Read the table at `path`; `what` names it in errors ("checkpoint index")."""
        path = os.fspath(path)
        return cls(storage.of(path).read_bytes(path, what), path)

    @property
    def num_blocks(self) -> int:
        return len(self._handles)

    def read_block(self, offset: int, size: int) -> bytes:
        """The contents of the block at `offset`, checksum verified and decompressed."""
        data = self.data
        end = offset + size
        if end + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE:
            raise DataLossError(f"table block at {offset} runs past the end of the file", path=self.path)
        ctype = data[end]
        stored = unmask_crc(FIXED32.unpack_from(data, end + 1)[0])
        actual = crc32c(memoryview(data)[offset:end + 1])
        if stored != actual:
            raise DataLossError(f"table block at offset {offset} fails its checksum", path=self.path)
        block = data[offset:end]
        if ctype == NO_COMPRESSION:
            return block
        if ctype == SNAPPY_COMPRESSION:
            return _snappy_decompress(block, self.path)
        raise DataLossError(f"table block at {offset} has unknown compression type {ctype}", path=self.path)

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) in key order; keys must be strictly increasing (DataLossError)."""
        prev = None
        for off, size in self._handles:
            entries = block_entries(self.read_block(off, size), self.path)
            if not entries:
                continue
            if prev is not None and entries[0][0] <= prev:
                raise DataLossError("table keys are out of order", path=self.path)
            keys = [k for k, _ in entries]
            # strictly increasing (sorted, no duplicates): one C-speed pass of comparisons
            if not all(map(operator.lt, keys, itertools.islice(keys, 1, None))):
                raise DataLossError("table keys are out of order", path=self.path)
            prev = keys[-1]
            yield from entries

    def get(self, key: bytes) -> bytes | None:
        """The value stored under `key`, or None."""
        i = bisect.bisect_left(self._index_keys, key)
        if i == len(self._handles):
            return None
        for k, v in block_entries(self.read_block(*self._handles[i]), self.path):
            if k == key:
                return v
            if k > key:
                break
        return None


# --------------------------------------------------------------------------- writing

def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """A short key k with start <= k < limit (TF's bytewise comparator rule)."""
    n = min(len(start), len(limit))
    i = 0
    while i < n and start[i] == limit[i]:
        i += 1
    if i < n:
        byte = start[i]
        if byte < 0xFF and byte + 1 < limit[i]:
            return start[:i] + bytes([byte + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """A short key >= `key` (TF: increment the first byte that is not 0xff)."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


class _BlockBuilder:
    def __init__(self, restart_interval: int) -> None:
        self.restart_interval = restart_interval
        self.reset()

    def reset(self) -> None:
        self.buf = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last_key = b""
        self.empty = True

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < self.restart_interval:
            last = self.last_key
            n = min(len(last), len(key))
            while shared < n and last[shared] == key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buf))
            self.counter = 0
        buf = self.buf
        for number in (shared, len(key) - shared, len(value)):
            if number < 0x80:
                buf.append(number)
            else:
                buf += encode_varint(number)
        buf += key[shared:]
        buf += value
        self.last_key = key
        self.counter += 1
        self.empty = False

    def size_estimate(self) -> int:
        return len(self.buf) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        out = self.buf
        for r in self.restarts:
            out += FIXED32.pack(r)
        out += FIXED32.pack(len(self.restarts))
        return bytes(out)


class TableWriter:
    """Writes a table to a binary file object, in TF's layout. Keys must come sorted."""

    def __init__(self, file: SupportsWrite[bytes], block_size: int = BLOCK_SIZE,
                 restart_interval: int = RESTART_INTERVAL) -> None:
        self.file = file
        self.block_size = block_size
        self.offset = 0
        self.data_block = _BlockBuilder(restart_interval)
        self.index_block = _BlockBuilder(1)
        self.last_key: bytes | None = None
        self.pending_handle: tuple[int, int] | None = None

    def add(self, key: bytes, value: bytes) -> None:
        if self.last_key is not None:
            if key <= self.last_key:
                raise ValueError(f"table keys must be added in increasing order: {key!r} after {self.last_key!r}")
            if len(key) + len(value) >= 2 * self.block_size:
                self._flush()
        if self.pending_handle is not None:
            assert self.last_key is not None  # a written block held keys
            self.index_block.add(_shortest_separator(self.last_key, key), encode_handle(*self.pending_handle))
            self.pending_handle = None
        self.last_key = key
        self.data_block.add(key, value)
        if self.data_block.size_estimate() >= self.block_size:
            self._flush()

    def _flush(self) -> None:
        if self.data_block.empty:
            return
        self.pending_handle = self._write_block(self.data_block)

    def _write_block(self, block: _BlockBuilder) -> tuple[int, int]:
        contents = block.finish()
        block.reset()
        trailer = bytes([NO_COMPRESSION])
        crc = mask_crc(crc32c(trailer, crc32c(contents)))
        self.file.write(contents)
        self.file.write(trailer + FIXED32.pack(crc))
        handle = (self.offset, len(contents))
        self.offset += len(contents) + BLOCK_TRAILER_SIZE
        return handle

    def finish(self) -> None:
        self._flush()
        metaindex = self._write_block(_BlockBuilder(RESTART_INTERVAL))
        if self.pending_handle is not None:
            assert self.last_key is not None  # a written block held keys
            self.index_block.add(_short_successor(self.last_key), encode_handle(*self.pending_handle))
            self.pending_handle = None
        index = self._write_block(self.index_block)
        footer = (encode_handle(*metaindex) + encode_handle(*index)).ljust(2 * MAX_HANDLE_SIZE, b"\0")
        self.file.write(footer + FIXED64.pack(MAGIC))
        self.offset += FOOTER_SIZE
