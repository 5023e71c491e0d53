"""Byte-level encodings shared by the SSTable and bundle formats.

LevelDB-style varints and fixed-width little-endian integers, and TF's *masked*
crc32c (a crc stored next to the data it covers is masked so that a crc of bytes
that contain crcs stays well distributed).
"""
from __future__ import annotations

import struct

import crc32c as _crc32c

MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF

FIXED32 = struct.Struct("<I")
FIXED64 = struct.Struct("<Q")


class VarintError(ValueError):
    """A varint ran past the end of its buffer or past 64 bits (callers add the file name)."""


def crc32c(data, value: int = 0) -> int:
    """crc32c (Castagnoli) of `data`, extending `value`; hardware accelerated, buffers welcome."""
    return _crc32c.crc32c(data, value)


def mask_crc(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & _U32) + MASK_DELTA) & _U32


def unmask_crc(masked: int) -> int:
    rot = (masked - MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32


def masked_crc32c(data) -> int:
    return mask_crc(_crc32c.crc32c(data))


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf, pos: int, limit: int | None = None) -> tuple[int, int]:
    """Decode the varint at buf[pos:]; return (value, position after it)."""
    end = len(buf) if limit is None else limit
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise VarintError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise VarintError("varint longer than 64 bits")
