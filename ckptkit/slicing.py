"""Partial reads: `reader.get_slice(name)[a:b, :, c]` reads only the bytes of that window.

The safetensors way (`safe_open(...).get_slice(name)`): the object `get_slice` returns
knows the tensor's shape and dtype (`get_shape()`, `get_dtype()`) and reads nothing until
it is indexed. Indexing takes what numpy basic indexing takes except `None`: integers
(negative ones count from the end; out of range is an error), slices with any non-zero
step (clipped to the shape, as numpy clips them) and one Ellipsis. The result equals
`reader.get_tensor(name)[index]`, as a new C-contiguous array (or the reader's framework
tensor).

How each kind of tensor is read:
- a V2 bundle entry (or a `.safetensors` tensor): the window's bytes are computed as runs
  inside the tensor's span in its file (the trailing dimensions the window takes whole
  are one run per index of the dimensions before them; consecutive rows are one run), and
  runs separated by less than a page (which the kernel reads anyway) are read together
  through a bounded scratch buffer; everything else is read run by run, with `pread`,
  straight into the result. Memory: the window plus at most one 8 MiB scratch buffer and
  8 bytes per run for at most 65,536 runs at a time.
- checksums: a window that covers the whole tensor (a partitioned variable: the whole of
  one of its slices) is read through the ordinary path and its crc32c checked. A
  partial window cannot be checked against a checksum of the whole tensor; for it the
  entry is validated as every read validates it (dtype, shape, size matching the shape,
  bytes inside the shard: `BundleData.checked`) and nothing more.
- partitioned variables: only the slices the window overlaps are read, each through
  its own partial (or whole, crc checked) read.
- `.npz` members stored uncompressed (`np.savez`) in C order are read like a
  `.safetensors` tensor, at the data offset their zip and .npy headers give; compressed
  (`np.savez_compressed`) or Fortran-order members are read whole.
- string tensors and V1 checkpoints: the whole tensor is read (crc checked where the
  format has one) and the window taken from it.

Every byte is read through `read_ranges` from a `ByteSource` (`read_exactly(buf, offset)`,
`map_private(offset, size)`): the storage layer's read handles, which `shard_source` and
`file_source` give. Those primitives live in `ckptkit.formats.window` (re-exported here),
and each format's reader backend reads its own windows (`read_window`: formats/registry.py),
so this module holds only the index parsing and `PartialTensor`.
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from . import dtypes as _dtypes
from .errors import InvalidArgumentError
from .formats.window import Axis, ByteSource, file_source, finish, map_private, read_ranges, shard_source

if TYPE_CHECKING:
    from .formats.registry import Backend

__all__ = ["PartialTensor", "Axis", "ByteSource", "parse_index", "read_window", "read_ranges", "map_private",
           "shard_source", "file_source"]

def parse_index(index: Any, shape: tuple[int, ...], *, path: str | None = None,
                key: str | None = None) -> tuple[Axis, ...]:
    """One Axis per dimension of `shape` for a numpy basic index (ints, slices, one Ellipsis)."""
    if isinstance(index, list) and not index:  # `x[[]]`: numpy and safetensors give x[0:0]
        index = slice(0, 0)
    items = index if isinstance(index, tuple) else (index,)
    ellipses = sum(1 for item in items if item is Ellipsis)
    if ellipses > 1:
        raise InvalidArgumentError("an index can only have a single ellipsis ('...')", path=path, key=key)
    explicit = len(items) - ellipses
    if explicit > len(shape):
        raise InvalidArgumentError(f"too many indices: {explicit} for a tensor of shape {list(shape)}",
                                   path=path, key=key)
    if ellipses:
        at = next(i for i, item in enumerate(items) if item is Ellipsis)
        items = items[:at] + (slice(None),) * (len(shape) - explicit) + items[at + 1:]
    else:
        items = items + (slice(None),) * (len(shape) - explicit)
    return tuple(_axis(item, dim, d, path, key) for d, (item, dim) in enumerate(zip(items, shape, strict=True)))


def _axis(item: Any, dim: int, d: int, path: str | None, key: str | None) -> Axis:
    if isinstance(item, slice):
        try:
            start, stop, step = item.indices(dim)
        except (TypeError, ValueError) as exc:  # a step of 0, a non-integer bound
            raise InvalidArgumentError(f"bad slice {_show(item)} for dimension {d}: {exc}",
                                       path=path, key=key) from None
        count = max(0, -((start - stop) // step))  # len(range(...)), for dims past 2**63 too
        if count <= 1:
            return Axis(start if count else 0, count, 1)
        if step > 0:
            return Axis(start, count, step)
        return Axis(start + (count - 1) * step, count, -step, flip=True)
    if isinstance(item, (bool, np.bool_)) or item is None:
        raise InvalidArgumentError(f"index {item!r} is not supported: use integers, slices and '...'",
                                   path=path, key=key)
    try:
        i = operator.index(item)
    except TypeError:
        raise InvalidArgumentError(f"index {item!r} is not supported: use integers, slices and '...'",
                                   path=path, key=key) from None
    if not -dim <= i < dim:
        raise InvalidArgumentError(f"index {i} is out of range for dimension {d} of size {dim}",
                                   path=path, key=key)
    return Axis(i % dim, 1, 1, drop=True)


def _show(s: slice) -> str:
    return ":".join("" if v is None else str(v) for v in (s.start, s.stop, s.step))


def read_window(backend: Backend, name: str, axes: tuple[Axis, ...], verify: bool) -> np.ndarray:
    """The window of tensor `name` of a CheckpointReader backend (format/registry.Backend:
    each format reads its own windows), finished (flips, drops)."""
    return finish(backend.read_window(name, axes, verify), axes)


class PartialTensor:
    """A tensor of a checkpoint, read only where indexed (safetensors' `get_slice` object).

    `get_shape()` and `get_dtype()` (TF's dtype name, e.g. "float32", "bfloat16") cost no
    read; `partial[index]` reads the window (see the module doc) and returns what
    `reader.get_tensor(name)[index]` would, in the reader's framework.
    """

    def __init__(self, name: str, dtype: _dtypes.DType, shape: tuple[int, ...],
                 read: Callable[[tuple[Axis, ...]], Any], *, path: str | None = None) -> None:
        """`read(axes)`: the finished window in the reader's framework (reader.get_slice
        makes it: this module needs nothing of the reader)."""
        self.name = name
        self._read = read
        self._path = path
        self._dtype = dtype
        self._shape = tuple(shape)

    def get_shape(self) -> list[int]:
        return list(self._shape)

    def get_dtype(self) -> str:
        return self._dtype.name

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> _dtypes.DType:
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a scalar tensor")
        return self._shape[0]

    def __getitem__(self, index: Any) -> Any:
        return self._read(parse_index(index, self._shape, path=self._path, key=self.name))

    def __repr__(self) -> str:
        return f"<PartialTensor {self.name!r}: {self._dtype.name}{list(self._shape)}>"
