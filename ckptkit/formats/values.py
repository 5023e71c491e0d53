"""What writers take as a tensor: anything array-like, or a `Deferred` read when its turn comes.

`to_array` gives the C-contiguous array and TF dtype a writer stores; `meta_of` the
dtype and shape without loading a `Deferred`. Shared by every writer: the V2 bundle
(bundle_writer.py), `.npz` and `.safetensors`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .. import dtypes as _dtypes
from ..errors import DataLossError, InvalidArgumentError, UnsupportedError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["Deferred", "as_array", "contiguous", "loaded", "meta_of", "to_array"]


class Deferred(NamedTuple):
    """A tensor to be written whose bytes are read only when its turn comes: dtype and
    shape are known up front (for shard assignment, headers), `load()` gives the array.

    Writers (BundleWriter, convert's .npz and .safetensors writers) accept it wherever
    they accept an array, so a conversion holds one tensor in memory at a time.
    """

    dtype: _dtypes.DType
    shape: tuple[int, ...]
    load: Callable[[], Any]
    # Optional: the same values as flat arrays of `dtype`, a piece at a time, in C order.
    # BundleWriter then streams them into the shard (numeric dtypes), so not even one
    # whole tensor need be in memory; other writers call `load`.
    chunks: Callable[[], Iterable[np.ndarray]] | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the data (0 for strings, whose size is known only once read)."""
        return 0 if self.dtype.is_string else math.prod(self.shape) * self.dtype.itemsize


def meta_of(value: ArrayLike | Deferred, key: str | None = None) -> tuple[_dtypes.DType, tuple[int, ...]]:
    """(TF dtype, shape) of an array-like or a Deferred, without loading a Deferred."""
    if isinstance(value, Deferred):
        return value.dtype, tuple(value.shape)
    arr, dtype = as_array(value, key)
    return dtype, tuple(arr.shape)


def loaded(value: ArrayLike | Deferred, key: str | None = None) -> tuple[np.ndarray, _dtypes.DType]:
    """`to_array(value)`, loading a Deferred first and holding it to what it declared."""
    if not isinstance(value, Deferred):
        return to_array(value, key)
    arr, dtype = to_array(value.load(), key)
    if dtype.enum != value.dtype.enum or tuple(arr.shape) != tuple(value.shape):
        raise DataLossError(f"read {dtype.name}{list(arr.shape)} where {value.dtype.name}"
                            f"{list(value.shape)} was declared", key=key)
    return arr, dtype


def as_array(value: ArrayLike, key: str | None = None) -> tuple[np.ndarray, _dtypes.DType]:
    """`value` as an array (no copy of an ndarray) and its TF dtype; see to_array."""
    if isinstance(value, (str, bytes)):
        value = np.array(value, dtype=object)
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":
        return arr.astype(object, copy=False) if arr.dtype.kind != "O" else arr, _dtypes.STRING
    try:
        return arr, _dtypes.as_dtype(arr.dtype)
    except UnsupportedError as exc:
        raise InvalidArgumentError(exc.message, key=key) from None


def contiguous(arr: np.ndarray, dtype: _dtypes.DType) -> np.ndarray:
    """`arr` as the C-contiguous array of `dtype` a shard stores (strings as they are)."""
    if dtype.is_string or (arr.dtype == dtype.numpy and arr.flags.c_contiguous):
        return arr
    return np.ascontiguousarray(arr, dtype=dtype.numpy)


def to_array(value: ArrayLike, key: str | None = None) -> tuple[np.ndarray, _dtypes.DType]:
    """A C-contiguous little-endian array and its TF dtype, from anything array-like."""
    arr, dtype = as_array(value, key)
    return contiguous(arr, dtype), dtype
