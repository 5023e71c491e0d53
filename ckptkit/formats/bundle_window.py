"""A window of a V2 bundle entry (plain or partitioned), read through formats/window.py:
only the bytes of the window, or the whole entry (crc32c checked) where the window
covers it or the entry holds strings. See ckptkit.slicing's module doc."""
from __future__ import annotations

import math

import numpy as np

from .. import dtypes as _dtypes
from ..errors import CheckpointError
from .bundle import BIG, BundleData, decode_key
from .slices import TensorSlice, encode_tensor_name_slice
from .window import Axis, is_whole, read_box, select, shard_source

__all__ = ["read_window"]


def read_window(data: BundleData, key: str, axes: tuple[Axis, ...], verify: bool) -> np.ndarray:
    """The ascending window of a V2 entry (plain or partitioned), every dimension kept."""
    entry, dtype, shape, _ = data.checked(key)
    assert dtype is not None  # checked() with known_dtype raises for unknown dtypes
    if entry.slices:
        return _read_partitioned(data, key, dtype, shape, axes, verify)
    counts = tuple(a.count for a in axes)
    if not all(counts):
        return np.empty(counts, dtype=dtype.numpy)
    if dtype.is_string or is_whole(axes, shape):
        return select(data.read_full(key, verify=verify), axes)  # crc32c checked
    out = np.empty(math.prod(counts) * dtype.itemsize, dtype=np.uint8)
    read_box(shard_source(data, entry.shard_id), entry.offset, shape, dtype.itemsize, axes, out, key=key)
    if data.index.header.endianness == BIG and dtype.itemsize > 1:
        return out.view(dtype.numpy.newbyteorder(">")).astype(dtype.numpy).reshape(counts)
    return out.view(dtype.numpy).reshape(counts)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _read_partitioned(data: BundleData, key: str, dtype: _dtypes.DType, shape: tuple[int, ...],
                      axes: tuple[Axis, ...], verify: bool) -> np.ndarray:
    """Assemble the window from the slices it overlaps (checked() has verified that the
    slices tile the shape, so every element of the window comes from exactly one)."""
    counts = tuple(a.count for a in axes)
    out = np.empty(counts, dtype=dtype.numpy)
    if not all(counts):
        return out
    for proto in data.index.entry(key).slices:
        tslice = TensorSlice.from_proto(proto)  # checked() parsed these already
        local, region = [], []
        for a, (lo_bound, hi_bound) in zip(axes, tslice.bounds(shape), strict=True):
            lo = min(max(_ceil_div(lo_bound - a.first, a.step), 0), a.count)
            hi = min(max(_ceil_div(hi_bound - a.first, a.step), 0), a.count)
            if lo >= hi:
                break
            local.append(Axis(a.first + lo * a.step - lo_bound, hi - lo, a.step if hi - lo > 1 else 1))
            region.append(slice(lo, hi))
        else:
            slice_key = decode_key(encode_tensor_name_slice(key, tslice))
            try:
                out[tuple(region)] = read_window(data, slice_key, tuple(local), verify)
            except CheckpointError as exc:  # name the variable, not its binary slice key
                raise type(exc)(f"slice {tslice.spec()}: {exc.message}", path=exc.path, key=key) from None
    return out
