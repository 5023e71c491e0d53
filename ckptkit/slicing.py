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
`file_source` give.
"""
from __future__ import annotations

import math
import mmap
import operator
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from . import dtypes as _dtypes
from .errors import CheckpointError, InvalidArgumentError, TensorNotFoundError
from .format.bundle import BIG, BundleData, decode_key
from .format.npz import NpzFile
from .format.safetensors import SafetensorsFile
from .format.slices import TensorSlice, encode_tensor_name_slice

if TYPE_CHECKING:
    from .reader import CheckpointReader

__all__ = ["PartialTensor", "Axis", "ByteSource", "parse_index", "read_window", "read_ranges", "map_private",
           "shard_source", "file_source"]

PAGE = mmap.PAGESIZE  # runs closer than this share a page: read them in one go
SCRATCH = 8 << 20     # the most bytes read at once to gather runs that share pages
RUN_BATCH = 1 << 16   # run offsets computed at a time (8 bytes each)


class Axis(NamedTuple):
    """What a window takes of one dimension: `count` indices from `first` by `step` (> 0),
    ascending; `flip` reverses them (a negative step), `drop` removes the dimension (an
    integer index)."""

    first: int
    count: int  # type: ignore[assignment]  # a field named count shadows tuple.count, on purpose
    step: int
    flip: bool = False
    drop: bool = False


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


def is_whole(axes: tuple[Axis, ...], shape: tuple[int, ...]) -> bool:
    """True when the window takes every element of `shape` (in whatever direction)."""
    return all(a.first == 0 and a.count == dim and (a.step == 1 or dim <= 1)
               for a, dim in zip(axes, shape, strict=True))


def _select(arr: np.ndarray, axes: tuple[Axis, ...]) -> np.ndarray:
    """The window (ascending, every dimension kept) of an array already in memory."""
    if not axes:
        return arr  # a scalar: arr[()] would be the element, not a 0-d array
    return arr[tuple(slice(a.first, a.first + (a.count - 1) * a.step + 1, a.step) if a.count else slice(0, 0)
                     for a in axes)]


def finish(arr: np.ndarray, axes: tuple[Axis, ...]) -> np.ndarray:
    """Apply the window's reversals and dropped dimensions to its ascending read."""
    if any(a.flip for a in axes):
        arr = arr[tuple(slice(None, None, -1) if a.flip else slice(None) for a in axes)]
    if any(a.drop for a in axes):
        arr = arr.reshape(tuple(a.count for a in axes if not a.drop))
    return arr if arr.flags.c_contiguous else arr.copy(order="C")  # ascontiguousarray makes 0-d 1-d


# --------------------------------------------------------------------------- reading

class ByteSource(Protocol):
    """What partial reads read from: the two methods of the storage layer's read handle
    that they use. A storage layer's handles fit as they are."""

    def read_exactly(self, buf: memoryview, offset: int, key: str | None = None) -> None:
        """Fill `buf` with the bytes at `offset`; errors name the file and `key`."""

    def map_private(self, offset: int, size: int) -> memoryview | None:
        """A copy-on-write map of the bytes, or None where they cannot be mapped (then reads copy)."""


def shard_source(data: BundleData, shard: int) -> ByteSource:
    """Data shard `shard` of a bundle, opened and checked as every read checks it."""
    return data.shard_handle(shard)


def file_source(source: SafetensorsFile | NpzFile) -> ByteSource:
    """The open file behind a .safetensors or .npz reader."""
    return source.handle


def read_ranges(source: ByteSource, ranges: Iterable[tuple[int, memoryview]], *, key: str | None) -> None:
    """Fill each buffer with the source's bytes at its offset: the byte-range primitive
    every partial read goes through. A read error or an early end of file names the file
    and key (`ReadHandle.read_exactly`)."""
    for offset, buf in ranges:
        source.read_exactly(buf, offset, key)


def map_private(source: ByteSource, offset: int, size: int, *, path: str | None,
                key: str | None) -> memoryview | None:
    """A copy-on-write mapping of `size` bytes at `offset` of `source` (None where it
    cannot be mapped): pages come from the page cache; writes stay private to this
    mapping (never reach the file, nor another mapping of the same bytes). The
    memoryview keeps the mapping alive."""
    try:
        return source.map_private(offset, size)
    except CheckpointError as exc:
        raise type(exc)(exc.message, path=path or exc.path, key=key) from None


def read_box(source: ByteSource, base: int, shape: tuple[int, ...], itemsize: int, axes: tuple[Axis, ...],
             out: np.ndarray, *, key: str | None) -> None:
    """Read the window `axes` of a C-order tensor of `shape` stored at `base` in `source` into
    `out` (uint8, exactly the window's bytes, ascending C order).

    The window is cut into runs of equal length: the trailing dimensions it takes whole,
    with the last dimension it does not (all of its selected indices when their step is
    1, else one index). Run offsets are computed for RUN_BATCH runs at a time.
    """
    rank = len(shape)
    strides = [itemsize * math.prod(shape[d + 1:]) for d in range(rank)]
    t = rank
    while t > 0 and axes[t - 1].first == 0 and axes[t - 1].count == shape[t - 1] \
            and (axes[t - 1].step == 1 or shape[t - 1] <= 1):
        t -= 1
    if t == 0:  # the whole tensor: one run
        read_ranges(source, [(base, out.data)], key=key)
        return
    j = t - 1
    if axes[j].step == 1:
        run, outer, base = axes[j].count * strides[j], list(range(j)), base + axes[j].first * strides[j]
    else:
        run, outer = strides[j], list(range(j + 1))
    offsets = [(axes[d].first + np.arange(axes[d].count, dtype=np.int64) * axes[d].step) * strides[d]
               for d in outer]
    counts = tuple(axes[d].count for d in outer)
    total = math.prod(counts)
    scratch: list[np.ndarray] = []  # allocated on first use, reused
    for b0 in range(0, total, RUN_BATCH):
        b1 = min(total, b0 + RUN_BATCH)
        starts = np.full(b1 - b0, base, dtype=np.int64)
        if counts:
            for offs, idx in zip(offsets, np.unravel_index(np.arange(b0, b1, dtype=np.int64), counts),
                                 strict=True):
                starts += offs[idx]
        _read_runs(source, starts, run, out[b0 * run:b1 * run], scratch, key)


def _read_runs(source: ByteSource, starts: np.ndarray, run: int, out: np.ndarray, scratch: list[np.ndarray],
               key: str | None) -> None:
    """Read runs of `run` bytes at ascending `starts` into consecutive pieces of `out`.

    Runs whose gap is under a page and that fit SCRATCH together form a group: one read
    of the group's span into scratch, then the runs are gathered out (np.take over a
    sliding window view: no index array per byte). A lone run, or a group without gaps,
    is read straight into `out`.
    """
    n = len(starts)
    ends = starts + run
    breaks = np.flatnonzero(starts[1:] - ends[:-1] >= PAGE) + 1
    bounds = [0, *breaks.tolist(), n]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        i = lo
        while i < hi:
            # the most runs from i whose span fits SCRATCH (at least one)
            k = max(1, int(np.searchsorted(ends[i:hi], starts[i] + SCRATCH, side="right")))
            span = int(ends[i + k - 1] - starts[i])
            dest = out[i * run:(i + k) * run]
            if span == k * run:  # contiguous: straight into the result
                read_ranges(source, [(int(starts[i]), dest.data)], key=key)
            else:
                if not scratch or len(scratch[0]) < span:
                    scratch[:] = [np.empty(min(SCRATCH, max(span, PAGE)), dtype=np.uint8)]
                buf = scratch[0][:span]
                read_ranges(source, [(int(starts[i]), buf.data)], key=key)
                windows = np.lib.stride_tricks.sliding_window_view(buf, run)
                np.take(windows, starts[i:i + k] - starts[i], axis=0, out=dest.reshape(k, run))
            i += k


def _read_plain(data: BundleData, key: str, axes: tuple[Axis, ...], verify: bool) -> np.ndarray:
    """The ascending window of a V2 entry (plain or partitioned), every dimension kept."""
    entry, dtype, shape, _ = data.checked(key)
    assert dtype is not None  # checked() with known_dtype raises for unknown dtypes
    if entry.slices:
        return _read_partitioned(data, key, dtype, shape, axes, verify)
    counts = tuple(a.count for a in axes)
    if not all(counts):
        return np.empty(counts, dtype=dtype.numpy)
    if dtype.is_string or is_whole(axes, shape):
        return _select(data.read_full(key, verify=verify), axes)  # crc32c checked
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
                out[tuple(region)] = _read_plain(data, slice_key, tuple(local), verify)
            except CheckpointError as exc:  # name the variable, not its binary slice key
                raise type(exc)(f"slice {tslice.spec()}: {exc.message}", path=exc.path, key=key) from None
    return out


def _read_safetensors(source: SafetensorsFile, name: str, axes: tuple[Axis, ...]) -> np.ndarray:
    dtype, listed, (begin, _) = source.specs[name]
    shape = tuple(listed)
    counts = tuple(a.count for a in axes)
    _dtypes.check_numpy_shape(counts, dtype, source.path, name)  # `[0, 2**70]`: no bytes, no numpy shape
    if is_whole(axes, shape) or not all(counts):
        return _select(source.read(name), axes) if all(counts) else np.empty(counts, dtype=dtype.numpy)
    out = np.empty(math.prod(counts) * dtype.itemsize, dtype=np.uint8)
    read_box(file_source(source), source.data_start + begin, shape, dtype.itemsize, axes, out, key=name)
    return out.view(dtype.numpy).reshape(counts)


def _read_npz(source: NpzFile, name: str, axes: tuple[Axis, ...]) -> np.ndarray:
    tf_dtype, shape = source.meta(name)
    counts = tuple(a.count for a in axes)
    _dtypes.check_numpy_shape(counts, tf_dtype, source.path, name)  # `[0, 2**70]`: no bytes, no numpy shape
    if not all(counts):
        return np.empty(counts, dtype=tf_dtype.numpy)
    found = None if is_whole(axes, shape) or tf_dtype.is_string else source.stored_data(name)
    if found is None:
        arr = _select(source.read(name), axes)
    else:
        offset, stored = found
        out = np.empty(math.prod(counts) * stored.itemsize, dtype=np.uint8)
        read_box(file_source(source), offset, shape, stored.itemsize, axes, out, key=name)
        arr = out.view(stored).reshape(counts)
    return arr if tf_dtype.is_string else arr.astype(tf_dtype.numpy, copy=False)  # big-endian: to native


def read_window(backend: Any, name: str, axes: tuple[Axis, ...], verify: bool) -> np.ndarray:
    """The window of tensor `name` of a CheckpointReader backend, finished (flips, drops)."""
    data = getattr(backend, "data", None)
    file = getattr(backend, "file", None)
    if isinstance(data, BundleData):
        arr = _read_plain(data, name, axes, verify)
    elif isinstance(file, SafetensorsFile):
        arr = _read_safetensors(file, name, axes)
    elif isinstance(file, NpzFile):
        arr = _read_npz(file, name, axes)
    else:  # V1 tables: the whole tensor, then the window
        arr = _select(backend.read(name, verify), axes)
    return finish(arr, axes)


class PartialTensor:
    """A tensor of a checkpoint, read only where indexed (safetensors' `get_slice` object).

    `get_shape()` and `get_dtype()` (TF's dtype name, e.g. "float32", "bfloat16") cost no
    read; `partial[index]` reads the window (see the module doc) and returns what
    `reader.get_tensor(name)[index]` would, in the reader's framework.
    """

    def __init__(self, reader: CheckpointReader, name: str) -> None:
        if not reader.has_tensor(name):
            raise TensorNotFoundError("tensor not found in checkpoint", path=reader.prefix, key=name)
        enum, shape = reader._metas()[name]
        self.name = name
        self._reader = reader
        self._dtype = _dtypes.from_enum(enum, path=reader.prefix, key=name)
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
        reader, name = self._reader, self.name
        axes = parse_index(index, self._shape, path=reader.prefix, key=name)
        arr = reader._reading(name, lambda backend: read_window(backend, name, axes, reader.verify))
        target = reader._target
        return arr if target is None else target.convert(arr, self._dtype, path=reader.prefix, key=name)

    def __repr__(self) -> str:
        return f"<PartialTensor {self.name!r}: {self._dtype.name}{list(self._shape)}>"
