"""Byte-level encodings shared by the SSTable and bundle formats.

LevelDB-style varints and fixed-width little-endian integers, and TF's *masked*
crc32c (a crc stored next to the data it covers is masked so that a crc of bytes
that contain crcs stays well distributed).
"""
from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeAlias

# The raw crc32c and buffer views are the storage layer's (it sums shards as it writes
# them); they are re-exported here for the formats.
from ..storage.crc import byte_view as byte_view
from ..storage.crc import crc32c as crc32c

if TYPE_CHECKING:
    import mmap

    import numpy as np

    from ..storage.crc import AnyBuffer as AnyBuffer

    # What the byte-at-a-time decoders index into (and take len() of).
    Bytes: TypeAlias = bytes | bytearray | memoryview | mmap.mmap


MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF

FIXED32 = struct.Struct("<I")
FIXED64 = struct.Struct("<Q")


class VarintError(ValueError):
    """A varint ran past the end of its buffer or past 64 bits (callers add the file name)."""


def mask_crc(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & _U32) + MASK_DELTA) & _U32


def unmask_crc(masked: int) -> int:
    rot = (masked - MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32


def masked_crc32c(data: AnyBuffer) -> int:
    return mask_crc(crc32c(data, 0))


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: Bytes, pos: int, limit: int | None = None) -> tuple[int, int]:
    """Decode the varint at buf[pos:]; return (value, position after it)."""
    end = len(buf) if limit is None else limit
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise VarintError("truncated varint")
        byte = buf[pos]
        pos += 1
        if shift == 63 and byte > 1:
            raise VarintError("varint longer than 64 bits")
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


# --------------------------------------------------------------------------- many varints at once

def encode_varints(values: Iterable[int] | np.ndarray) -> bytes:
    """The varints of many unsigned ints, concatenated (numpy: no per-value Python loop)."""
    import numpy as np  # noqa: PLC0415 - listing a checkpoint imports no numpy

    v = np.asarray(values, dtype=np.uint64).reshape(-1)
    if not v.size:
        return b""
    nbytes = np.ones(v.size, dtype=np.int64)
    for k in range(1, 10):
        nbytes += v >= np.uint64(1 << (7 * k))
    ends = np.cumsum(nbytes)
    starts = ends - nbytes
    out = np.empty(int(ends[-1]), dtype=np.uint8)
    for k in range(int(nbytes.max())):
        has = nbytes > k
        more = (nbytes[has] > k + 1).astype(np.uint8) << np.uint8(7)
        out[starts[has] + k] = ((v[has] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8) | more
    return out.tobytes()


def decode_varints(buf: Bytes, count: int, pos: int = 0) -> tuple[np.ndarray, int]:
    """Decode `count` consecutive varint64s at buf[pos:]; return (uint64 array, end position).

    Raises VarintError when the buffer ends first or a varint is longer than 64 bits.
    """
    import numpy as np  # noqa: PLC0415 - listing a checkpoint imports no numpy

    if count == 0:
        return np.zeros(0, dtype=np.uint64), pos
    window = np.frombuffer(buf, dtype=np.uint8, count=min(len(buf) - pos, 10 * count), offset=pos) \
        if len(buf) > pos else np.zeros(0, dtype=np.uint8)
    ends = np.flatnonzero(window < 0x80)[:count] + 1
    if ends.size < count:
        raise VarintError("truncated varint")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1]
    lengths = ends - starts
    longest = int(lengths.max())
    if longest > 10 or (longest == 10 and window[ends[lengths == 10] - 1].max() > 1):
        raise VarintError("varint longer than 64 bits")
    values = np.zeros(count, dtype=np.uint64)
    for k in range(longest):
        has = lengths > k
        values[has] |= (window[starts[has] + k] & np.uint8(0x7F)).astype(np.uint64) << np.uint64(7 * k)
    return values, pos + int(ends[-1])


# --------------------------------------------------------------------------- crc of concatenations

_POLY = 0x82F63B78  # crc32c, bit-reflected


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the crc polynomial (bit-reflected: x^0 is the top bit)."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


_X2N = [1 << 30]  # x^(2^k) mod p: x^1, x^2, x^4, ...
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))
_SHIFTS: dict[int, int] = {}


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """crc32c(A + B) from crc1 = crc32c(A), crc2 = crc32c(B) and len(B), in microseconds.

    Lets pieces of one tensor be read and summed on several threads. The factor
    x^(8 len2) mod p is cached per length: the pieces of a read are mostly one size.
    """
    shift = _SHIFTS.get(len2)
    if shift is None:
        shift, n, k = 1 << 31, len2, 3
        while n:
            if n & 1:
                shift = _multmodp(_X2N[k & 31], shift)
            n >>= 1
            k += 1
        if len(_SHIFTS) < 64:
            _SHIFTS[len2] = shift
    return _multmodp(shift, crc1) ^ crc2
