"""Statistics of tensors, streamed: min/max/mean/std, NaN/Inf/zero counts, histograms.

One accumulator serves `ckptkit stats` (every tensor of a checkpoint, read chunk by
chunk through `CheckpointReader.iter_chunks`, so a 4 GiB tensor costs a few MiB), and
`ckptkit show --stats/--hist` (a tensor already in memory, fed through the same
accumulator): both print the same numbers for the same tensor.

Means and variances are summed in float64 per chunk and the chunks combined with Chan's
parallel formula, so the result does not depend on where chunks end (to rounding).
Min, max, mean and std are over the finite values only; NaN and Inf are counted
instead. std is the population standard deviation (numpy's default, ddof=0).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .. import dtypes as _dtypes
from .. import selection
from ..errors import InvalidArgumentError
from ..reader import CheckpointReader
from ..storage.base import Progress

__all__ = ["Accumulator", "STATS_CHUNK_BYTES", "array_histogram", "array_stats", "checkpoint_stats",
           "histogram", "tensor_stats"]

STATS_CHUNK_BYTES = 1 << 20  # bytes read per step: float64 copies of a chunk stay a few MiB
DEFAULT_BINS = 20



class Accumulator:
    """Running statistics of one tensor's values, fed a chunk at a time (`add`).

    `category` is the dtype's (`DType.category`): floats count NaN/Inf/zeros and give
    min/max/mean/std of the finite values; ints the same without NaN/Inf (min/max exact);
    bools true/false counts; complex NaN/Inf/zeros and the mean modulus of the finite
    values; strings their shortest and longest length.
    """

    def __init__(self, category: str) -> None:
        self.category = category
        self.elements = 0
        self.nan = 0
        self.inf = 0
        self.zeros = 0
        self.true = 0
        self.n = 0                    # finite values summarized by mean/m2
        self.mean = 0.0
        self.m2 = 0.0                 # sum of squared deviations from the mean
        self.min: Any = None
        self.max: Any = None

    def add(self, chunk: np.ndarray) -> None:
        values = np.asarray(chunk).reshape(-1)
        self.elements += int(values.size)
        if not values.size:
            return
        category = self.category
        if category == "string":
            lengths = np.fromiter(map(len, values.tolist()), dtype=np.int64, count=values.size)
            self._extremes(int(lengths.min()), int(lengths.max()))
            return
        if category == "bool":
            self.true += int(np.count_nonzero(values))
            return
        if category == "complex":
            wide = values.astype(np.complex128)
            nan = np.isnan(wide)
            inf = np.isinf(wide) & ~nan
            self.nan += int(nan.sum())
            self.inf += int(inf.sum())
            self.zeros += int(np.count_nonzero(wide == 0))
            finite = np.abs(wide[~(nan | inf)])
            self._moments(finite)
            return
        if category == "int":
            self.zeros += int(np.count_nonzero(values == 0))
            self._extremes(int(values.min()), int(values.max()))
            self._moments(values.astype(np.float64))
            return
        wide = values.astype(np.float64)
        ok = np.isfinite(wide)
        finite = wide
        if not ok.all():  # rare: count what is not finite, summarize the rest
            bad_nan = int(np.isnan(wide).sum())
            self.nan += bad_nan
            self.inf += int(ok.size - np.count_nonzero(ok)) - bad_nan
            finite = wide[ok]
        self.zeros += int(np.count_nonzero(finite == 0))
        if finite.size:
            self._extremes(float(finite.min()), float(finite.max()))
        self._moments(finite)

    def _extremes(self, low: float, high: float) -> None:
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)

    def _moments(self, finite: np.ndarray) -> None:
        n_b = int(finite.size)
        if not n_b:
            return
        mean_b = float(finite.mean())
        m2_b = float(np.square(finite - mean_b).sum())
        n_a, n = self.n, self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * n_a * n_b / n
        self.n = n

    def result(self) -> dict:
        """The statistics as plain numbers (None where there are no values to summarize)."""
        out: dict[str, Any] = {"elements": self.elements}
        category = self.category
        if category == "string":
            out.update(min_len=self.min, max_len=self.max)
            return out
        if category == "bool":
            out.update(true=self.true, false=self.elements - self.true)
            return out
        if category in ("float", "complex"):
            out.update(nan=self.nan, inf=self.inf)
        out["zeros"] = self.zeros
        if category == "complex":
            out["mean_abs"] = self.mean if self.n else None
            return out
        out.update(min=self.min, max=self.max, mean=self.mean if self.n else None,
                   std=math.sqrt(self.m2 / self.n) if self.n else None)
        return out


def _category(array: np.ndarray) -> str:
    return "string" if array.dtype.kind in "OSU" else _dtypes.as_dtype(array.dtype).category


def _pieces(array: np.ndarray, chunk_bytes: int = STATS_CHUNK_BYTES) -> Iterator[np.ndarray]:
    flat = np.asarray(array).reshape(-1)
    step = max(1, chunk_bytes // max(flat.dtype.itemsize, 1))
    for start in range(0, flat.size, step):
        yield flat[start:start + step]


def array_stats(array: np.ndarray) -> dict:
    """Statistics of an in-memory tensor (`show --stats`): the same accumulator, and so
    the same numbers, as `ckptkit stats` streaming it from disk."""
    acc = Accumulator(_category(np.asarray(array)))
    for piece in _pieces(array):
        acc.add(piece)
    return acc.result()


tensor_stats = array_stats  # the name info.py has exported


def _histogram(chunks: Iterable[np.ndarray], bins: int, low: float, high: float) -> dict:
    """Counts of finite values in `bins` equal bins over [low, high] (np.histogram's rule:
    the last bin includes its right edge; a single value gets the range value±0.5)."""
    edges = np.histogram_bin_edges(np.empty(0), bins=bins, range=(low, high))
    counts = np.zeros(bins, dtype=np.int64)
    for chunk in chunks:
        wide = np.asarray(chunk).reshape(-1).astype(np.float64)
        wide = wide[np.isfinite(wide)]
        counts += np.histogram(wide, bins=edges)[0]
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _check_bins(bins: int) -> None:
    if not isinstance(bins, int) or bins < 1:
        raise InvalidArgumentError(f"bins must be a positive integer, got {bins!r}")


def array_histogram(array: np.ndarray, summary: dict | None = None, bins: int = DEFAULT_BINS) -> dict | None:
    """{"edges", "counts"} of an in-memory tensor's finite values (None for strings,
    complex numbers, or no finite value). `summary`: its `array_stats`, if known."""
    _check_bins(bins)
    array = np.asarray(array)
    if _category(array) in ("string", "complex"):
        return None
    summary = summary or array_stats(array)
    low, high = _range(summary)
    if low is None:
        return None
    return _histogram(_pieces(array), bins, low, high)


def _range(summary: dict) -> tuple[Any, Any]:
    if "true" in summary:  # bool: the values 0 and 1
        return (0, 1) if summary["elements"] else (None, None)
    return summary.get("min"), summary.get("max")


def histogram(reader: CheckpointReader, name: str, summary: dict, bins: int = DEFAULT_BINS,
              chunk_bytes: int = STATS_CHUNK_BYTES) -> dict | None:
    """`array_histogram` of a tensor streamed from `reader` (a second pass: the range comes
    from `summary`, its `stream_stats`)."""
    _check_bins(bins)
    category = reader.tensor_dtype(name).category
    if category in ("string", "complex"):
        return None
    low, high = _range(summary)
    if low is None:
        return None
    return _histogram(reader.iter_chunks(name, chunk_bytes), bins, low, high)


def stream_stats(reader: CheckpointReader, name: str, chunk_bytes: int = STATS_CHUNK_BYTES,
                 progress: Progress | None = None) -> dict:
    """Statistics of one tensor read chunk by chunk (its crc32c checked as it streams)."""
    acc = Accumulator(reader.tensor_dtype(name).category)
    for chunk in reader.iter_chunks(name, chunk_bytes):
        acc.add(chunk)
        if progress is not None:
            progress(chunk.nbytes if chunk.dtype.kind != "O" else 0)
    return acc.result()


def checkpoint_stats(path: str | os.PathLike, pattern: str | None = None,
                     progress: Progress | None = None, chunk_bytes: int = STATS_CHUNK_BYTES, *,
                     include: Iterable[str] = (), exclude: Iterable[str] = ()) -> dict:
    """Statistics of every numeric tensor of a checkpoint (those the globs `include` and
    `exclude` pick, `selection.select`; `pattern` is one more include glob, the old
    spelling), one chunk in memory at a time.

    Returns {"prefix", "tensors": [{"name", "dtype", "shape", "stats"}], "nan", "inf",
    "nonfinite": [names with a NaN or Inf], "ok"}: `ok` is False when any tensor holds a
    NaN or an Inf (did training diverge?). Strings are listed with `stats` None (nothing
    numeric to say; their bytes are not read).
    """
    with CheckpointReader(path) as reader:
        dtypes = reader.get_variable_to_dtype_map()
        shapes = reader.get_variable_to_shape_map()
        tensors: list[dict[str, Any]] = []
        include = [*include, *([] if pattern is None else [pattern])]
        for name in selection.select(list(reader), include, exclude, path=reader.prefix):
            dtype = dtypes[name]
            summary = None if dtype.is_string else stream_stats(reader, name, chunk_bytes, progress)
            tensors.append({"name": name, "dtype": dtype.name, "shape": list(shapes[name]), "stats": summary})
        nonfinite = [t["name"] for t in tensors if t["stats"] and (t["stats"].get("nan") or t["stats"].get("inf"))]
        return {"prefix": reader.prefix, "tensors": tensors,
                "nan": sum((t["stats"] or {}).get("nan", 0) for t in tensors),
                "inf": sum((t["stats"] or {}).get("inf", 0) for t in tensors),
                "nonfinite": nonfinite, "ok": not nonfinite}


def numeric_bytes(path: str | os.PathLike, pattern: str | None = None, *,
                  include: Iterable[str] = (), exclude: Iterable[str] = ()) -> int:
    """Bytes `checkpoint_stats` will read (for its progress bar)."""
    with CheckpointReader(path) as reader:
        dtypes, shapes = reader.get_variable_to_dtype_map(), reader.get_variable_to_shape_map()
        include = [*include, *([] if pattern is None else [pattern])]
        return sum(math.prod(shapes[k]) * dtypes[k].itemsize
                   for k in selection.select(list(reader), include, exclude, path=reader.prefix)
                   if not dtypes[k].is_string)
