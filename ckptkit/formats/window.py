"""Reading a window of a tensor stored in C order: the byte-range primitives every
partial read goes through (ckptkit.slicing's module doc says how each format uses them).

A window is one `Axis` per dimension; `read_box` reads its bytes as runs inside the
tensor's span in its file (runs separated by less than a page read together through a
bounded scratch buffer, everything else run by run straight into the result), all
through `read_ranges` from a `ByteSource` (the storage layer's read handles, which
`shard_source` and `file_source` give). Each format's reader backend reads its windows
with these (`read_window`), so the formats layer needs nothing above it.
"""
from __future__ import annotations

import math
import mmap
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from ..errors import CheckpointError

if TYPE_CHECKING:
    from .bundle import BundleData

__all__ = ["Axis", "ByteSource", "is_whole", "select", "finish", "shard_source", "file_source", "read_ranges",
           "map_private", "read_box", "PAGE", "SCRATCH", "RUN_BATCH"]

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


def is_whole(axes: tuple[Axis, ...], shape: tuple[int, ...]) -> bool:
    """True when the window takes every element of `shape` (in whatever direction)."""
    return all(a.first == 0 and a.count == dim and (a.step == 1 or dim <= 1)
               for a, dim in zip(axes, shape, strict=True))


def select(arr: np.ndarray, axes: tuple[Axis, ...]) -> np.ndarray:
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


def file_source(source: Any) -> ByteSource:
    """The open file behind a .safetensors or .npz reader (its `handle`)."""
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
