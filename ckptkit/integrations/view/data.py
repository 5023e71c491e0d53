"""What `ckptkit view` shows, as plain data: the numbers the page draws, computed here so
that they can be tested without a browser.

`checkpoint_summary` is every tensor's row (name, dtype, shape, elements, bytes and the
`stats` accumulator's min/max/mean/std/NaN/Inf, plus the L2 norm and max |x| derived
from them), the TF2 object tree and the EMA pairs. It reads every numeric byte once, so
it is cached by the checkpoint's identity: the path, size and mtime of each of its files
(the MEMORY_KEEP last in memory, and for local checkpoints the CACHE_KEEP used last as
JSON under `cache_dir()`); a rewritten checkpoint has another identity and is read
again. A tensor whose bytes fail their crc32c gets `damaged` (the error's text) instead
of statistics: one bad tensor does not hide the others.

`tensor_detail` is one tensor's histogram and, for a 2-D tensor, its heat map (block
means of the finite values, at most HEAT_CELLS x HEAT_CELLS, streamed in C order).
`run_checkpoints` says whether a path is a training run (a directory whose state file
lists several checkpoints); `run_summary` gives each tensor's series across its steps
and `relative_change` what moved between two of them (||b - a|| / ||a|| per tensor).
Norms and max |x| are over the finite values, as every other statistic here.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ... import storage
from ...errors import DataLossError
from ...formats import state_file as state
from ...formats.objectgraph import friendly_names
from ...location import Location, locate
from ...ops import info
from ...ops import stats as _stats
from ...reader import CheckpointReader

__all__ = ["EMA_SUFFIX", "HEAT_CELLS", "HIST_BINS", "cache_dir", "checkpoint_summary", "pending_bytes",
           "relative_change", "run_checkpoints", "run_summary", "step_of", "tensor_detail"]

SCHEMA = 2              # bump when a row's fields change: cached summaries of another schema are ignored
HIST_BINS = 40
HEAT_CELLS = 64         # a heat map is at most this many cells a side
EMA_SUFFIX = "/ExponentialMovingAverage"
CACHE_ENV = "CKPTKIT_CACHE_DIR"
CACHE_KEEP = 200        # summaries kept on disk (the oldest beyond this are deleted)
MEMORY_KEEP = 16        # summaries kept in memory by a process
BATCH_BYTES = 32 << 20  # small tensors are read this many bytes at a time

Progress = Callable[[int], None]

_memory: dict[str, dict[str, Any]] = {}
_memory_lock = threading.Lock()


def cache_dir() -> str:
    """Where summaries are kept: $CKPTKIT_CACHE_DIR, else $XDG_CACHE_HOME/ckptkit/view,
    else ~/.cache/ckptkit/view."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        return chosen
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ckptkit", "view")


def identity(reader: CheckpointReader) -> str:
    """The checkpoint's identity: its prefix and the size and mtime of each of its local
    files (a V2 checkpoint's index and data shards, found by name: listing them through
    the index would cost a pass over it); for a URL, its prefix and file names only (such
    a summary is kept in memory alone)."""
    if reader.format == "v2" and not storage.is_url(reader.prefix):
        pattern = glob.escape(reader.prefix) + ".data-*"
        paths = [reader.prefix + ".index", *sorted(glob.glob(pattern))]
    else:
        paths = reader.files
    files: list[Any] = []
    for path in paths:
        if storage.is_url(path):
            files.append(path)
            continue
        st = os.stat(path)
        files.append([path, st.st_size, st.st_mtime_ns])
    return json.dumps([SCHEMA, reader.prefix, reader.format, files])


def _disk_path(key: str) -> str:
    return os.path.join(cache_dir(), hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest() + ".json")


def _cached(key: str, use_disk: bool) -> dict[str, Any] | None:
    with _memory_lock:
        if key in _memory:
            return _memory[key]
    if not use_disk:
        return None
    try:
        with open(_disk_path(key), encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("identity") != key:
        return None
    with contextlib.suppress(OSError):
        os.utime(_disk_path(key))  # used: the last to be pruned
    _keep(key, found)
    return found


def _keep(key: str, summary: dict[str, Any]) -> None:
    with _memory_lock:
        _memory.pop(key, None)
        _memory[key] = summary  # the newest last: the oldest go first
        while len(_memory) > MEMORY_KEEP:
            del _memory[next(iter(_memory))]


def _remember(key: str, summary: dict[str, Any], use_disk: bool) -> None:
    _keep(key, summary)
    if not use_disk:
        return
    directory = cache_dir()
    temp = None
    try:  # a cache: a failure to keep it costs a recomputation, never the answer
        os.makedirs(directory, mode=0o700, exist_ok=True)  # summaries hold tensor names: the user's alone
        fd, temp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(summary))  # one C-encoded string: json.dump's chunks are several times slower
        os.replace(temp, _disk_path(key))
        temp = None
        _prune(directory)
    except OSError:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)


def _prune(directory: str) -> None:
    """Keeps the CACHE_KEEP summaries used or written last (a read touches its file)."""
    kept = [e for e in os.scandir(directory) if e.name.endswith(".json")]
    if len(kept) <= CACHE_KEEP:
        return
    kept.sort(key=lambda e: e.stat().st_mtime, reverse=True)
    for entry in kept[CACHE_KEEP:]:
        with contextlib.suppress(OSError):
            os.unlink(entry.path)


def _on_disk(reader: CheckpointReader) -> bool:
    return not storage.is_url(reader.prefix)


def pending_bytes(paths: Iterable[str | os.PathLike | Location], *, cache: bool = True) -> int:
    """Bytes `checkpoint_summary` will read for these checkpoints (those not cached yet):
    the total of a progress bar."""
    total = 0
    for path in paths:
        with CheckpointReader(path) as reader:
            if cache and _cached(identity(reader), _on_disk(reader)) is not None:
                continue
            dtypes, shapes = reader.get_variable_to_dtype_map(), reader.get_variable_to_shape_map()
            total += sum(math.prod(shapes[k]) * dtypes[k].itemsize for k in reader if not dtypes[k].is_string)
    return total


def _norms(summary: dict[str, Any]) -> tuple[float | None, float | None]:
    """(L2 norm, max |x|) of the finite values, from the accumulator's moments:
    sum(x^2) = n (std^2 + mean^2)."""
    if "true" in summary:
        return math.sqrt(summary["true"]), (1.0 if summary["true"] else 0.0) if summary["elements"] else None
    mean, std = summary.get("mean"), summary.get("std")
    if mean is None or std is None:
        return None, None
    finite = summary["elements"] - summary.get("nan", 0) - summary.get("inf", 0)
    return math.sqrt(finite * (std * std + mean * mean)), float(max(abs(summary["min"]), abs(summary["max"])))


def _row(tensor: info.TensorInfo) -> dict[str, Any]:
    return {"name": tensor.name, "dtype": tensor.dtype, "shape": tensor.shape, "elements": tensor.elements,
            "bytes": tensor.bytes, "min": None, "max": None, "mean": None, "std": None, "nan": None, "inf": None,
            "norm": None, "maxabs": None, "damaged": None, "friendly": None}


def _apply(row: dict[str, Any], summary: dict[str, Any]) -> None:
    """Copies an accumulator's result into a row (non-finite numbers as None)."""
    for field in ("min", "max", "mean", "std", "nan", "inf"):
        row[field] = _finite(summary.get(field))
    if "true" in summary:  # bool: the fraction true is its mean
        row["min"], row["max"] = (0, 1) if summary["elements"] else (None, None)
        row["mean"] = summary["true"] / summary["elements"] if summary["elements"] else None
    row["norm"], row["maxabs"] = (_finite(v) for v in _norms(summary))


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _fill(row: dict[str, Any], reader: CheckpointReader, progress: Progress | None) -> None:
    """One tensor's statistics, streamed; a tensor that fails its checksum is marked damaged."""
    try:
        summary = _stats.stream_stats(reader, row["name"], progress=progress)
    except DataLossError as exc:
        row["damaged"] = str(exc)
        return
    _apply(row, summary)


def _fill_all(rows: list[dict[str, Any]], reader: CheckpointReader, progress: Progress | None) -> None:
    """Every numeric row's statistics: tensors up to a chunk's size are read together
    (`get_tensors`: few large reads, where one stream per tensor costs most of the time
    of a checkpoint of many small tensors) and fed to the same accumulator as the
    streamed ones (`stats.array_stats`), so the numbers are the same; a batch holding a
    damaged tensor is streamed tensor by tensor to mark just that one."""
    numeric = [r for r in rows if reader.tensor_dtype(r["name"]).category != "string"]
    batch: list[dict[str, Any]] = []
    size = 0

    def flush() -> None:
        nonlocal size
        try:
            arrays = reader.get_tensors([r["name"] for r in batch])
        except DataLossError:
            for r in batch:
                _fill(r, reader, progress)
        else:
            for r in batch:
                _apply(r, _stats.array_stats(arrays[r["name"]]))
            if progress is not None:
                progress(size)
        batch.clear()
        size = 0

    for row in numeric:
        nbytes = row["bytes"] if row["bytes"] is not None else row["elements"] * 16
        if nbytes > _stats.STATS_CHUNK_BYTES:
            _fill(row, reader, progress)
            continue
        batch.append(row)
        size += nbytes
        if size >= BATCH_BYTES:
            flush()
    if batch:
        flush()


def _ema_pairs(names: Iterable[str]) -> dict[str, str]:
    """{variable: its ExponentialMovingAverage shadow} for the shadows whose variable is saved."""
    present = set(names)
    return {n[: -len(EMA_SUFFIX)]: n for n in present if n.endswith(EMA_SUFFIX) and n[: -len(EMA_SUFFIX)] in present}


def checkpoint_summary(path: str | os.PathLike | Location, progress: Progress | None = None, *,
                       cache: bool = True) -> dict[str, Any]:
    """{"prefix", "format", "identity", "tensors": [row], "tree": the TF2 object tree or
    None, "ema": {variable: shadow}} (see the module doc); rows in the checkpoint's key
    order, each {"name", "dtype", "shape", "elements", "bytes", "min", "max", "mean",
    "std", "nan", "inf", "norm", "maxabs", "damaged", "friendly"} (None where it does not
    apply; "friendly": a TF2 key's object path, `diff --friendly-names`' naming)."""
    location = locate(path)
    with CheckpointReader(location) as reader:
        key = identity(reader)
        use_disk = cache and _on_disk(reader)
        found = _cached(key, use_disk) if cache else None
        if found is not None:
            return found
        rows = [_row(t) for t in info.list_tensors(location)[1]]
        graph = reader.object_graph()
        if graph is not None:  # a TF2 key says little (optimizer/_variables/3/...): its object path says more
            friendly = friendly_names([r["name"] for r in rows], graph)
            for row in rows:
                row["friendly"] = friendly[row["name"]] if friendly[row["name"]] != row["name"] else None
        _fill_all(rows, reader, progress)
        summary = {"prefix": reader.prefix, "format": reader.format, "identity": key, "tensors": rows,
                   "tree": info.object_tree(location), "ema": _ema_pairs(r["name"] for r in rows)}
    _remember(key, summary, use_disk)
    return summary


# --------------------------------------------------------------------------- one tensor

def _heat_map(reader: CheckpointReader, name: str, shape: list[int]) -> dict[str, Any]:
    """Block means of the finite values of a 2-D tensor, streamed in C order."""
    rows, cols = shape
    step_r, step_c = max(1, math.ceil(rows / HEAT_CELLS)), max(1, math.ceil(cols / HEAT_CELLS))
    out_r, out_c = math.ceil(rows / step_r), math.ceil(cols / step_c)
    sums = np.zeros(out_r * out_c)
    counts = np.zeros(out_r * out_c)
    start = 0
    for chunk in reader.iter_chunks(name, in_order=True):
        values = np.asarray(chunk).reshape(-1).astype(np.float64)
        flat = np.arange(start, start + values.size)
        start += values.size
        cell = (flat // cols // step_r) * out_c + (flat % cols) // step_c
        finite = np.isfinite(values)
        sums += np.bincount(cell[finite], weights=values[finite], minlength=sums.size)
        counts += np.bincount(cell[finite], minlength=counts.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    cells = [None if not math.isfinite(v) else float(v) for v in means.tolist()]
    present = [v for v in cells if v is not None]
    return {"rows": out_r, "cols": out_c, "block": [step_r, step_c], "values": cells,
            "min": min(present, default=None), "max": max(present, default=None)}


def tensor_detail(reader: CheckpointReader, row: dict[str, Any], bins: int = HIST_BINS) -> dict[str, Any]:
    """{"name", "histogram": {"edges", "counts"} or None, "heatmap": ... or None,
    "damaged"} of the tensor a summary row describes."""
    name = row["name"]
    out: dict[str, Any] = {"name": name, "histogram": None, "heatmap": None, "damaged": row.get("damaged")}
    category = reader.tensor_dtype(name).category
    if out["damaged"] or category in ("string", "complex") or row["min"] is None:
        return out
    try:
        summary = {"min": row["min"], "max": row["max"], "elements": row["elements"]}
        out["histogram"] = _stats.histogram(reader, name, summary, bins)
        if len(row["shape"]) == 2 and row["elements"]:
            out["heatmap"] = _heat_map(reader, name, row["shape"])
    except DataLossError as exc:  # damaged since the summary was made
        out.update(histogram=None, heatmap=None, damaged=str(exc))
    return out


# --------------------------------------------------------------------------- a training run

_STEP = re.compile(r"-(\d+)$")


def step_of(prefix: str) -> int | None:
    """The global step a Saver or CheckpointManager wrote into a prefix (`model.ckpt-300`)."""
    found = _STEP.search(prefix)
    return int(found.group(1)) if found else None


def run_checkpoints(path: str | os.PathLike) -> list[str] | None:
    """The checkpoints of a training run, oldest first: what the `checkpoint` state file of
    directory `path` lists and still exists, when that is more than one; else None."""
    path = storage.fspath(path)
    if not storage.isdir(path):
        return None
    recorded = state.get_checkpoint_state(path)
    if recorded is None:
        return None
    paths = [p for p in recorded.all_model_checkpoint_paths if state.checkpoint_exists(p)]
    return paths if len(paths) > 1 else None


def run_summary(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """{"checkpoints": [{"prefix", "step"}], "series": {name: {"norm", "mean", "std",
    "maxabs"}: one value per checkpoint (None where it lacks the tensor or it is damaged)}}
    from the runs' `checkpoint_summary`s, oldest first."""
    names: dict[str, None] = {}
    for s in summaries:
        names.update((r["name"], None) for r in s["tensors"] if r["norm"] is not None or r["damaged"])
    series = {n: {k: [None] * len(summaries) for k in ("norm", "mean", "std", "maxabs")} for n in names}
    for i, s in enumerate(summaries):
        for r in s["tensors"]:
            if r["name"] in series:
                for k in ("norm", "mean", "std", "maxabs"):
                    series[r["name"]][k][i] = r[k]
    return {"checkpoints": [{"prefix": s["prefix"], "step": step_of(s["prefix"])} for s in summaries],
            "series": series}


def _change(a: CheckpointReader, b: CheckpointReader, name: str) -> dict[str, Any]:
    diff2 = base2 = 0.0
    for x, y in zip(a.iter_chunks(name, in_order=True), b.iter_chunks(name, in_order=True), strict=True):
        wa, wb = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        base2 += float(np.square(wa).sum())
        diff2 += float(np.square(wb - wa).sum())
    norm_a, diff = math.sqrt(base2), math.sqrt(diff2)
    change = diff / norm_a if norm_a else (0.0 if diff == 0 else None)
    if change is not None and not math.isfinite(change):
        change = None
    return {"name": name, "change": change, "diff_norm": diff if math.isfinite(diff) else None,
            "norm_a": norm_a if math.isfinite(norm_a) else None, "damaged": None}


def relative_change(path_a: str | os.PathLike | Location, path_b: str | os.PathLike | Location) -> list[dict[str, Any]]:
    """Per tensor both checkpoints hold with the same numeric dtype and shape: {"name",
    "change": ||b - a|| / ||a|| (None when a is all zeros and b is not, or either holds
    NaN/Inf), "diff_norm", "norm_a", "damaged"}; largest change first."""
    out = []
    with CheckpointReader(path_a) as a, CheckpointReader(path_b) as b:
        shapes_a, shapes_b = a.get_variable_to_shape_map(), b.get_variable_to_shape_map()
        for name in a:
            if name not in b or shapes_a[name] != shapes_b[name]:
                continue
            dtype = a.tensor_dtype(name)
            if dtype != b.tensor_dtype(name) or dtype.category not in ("float", "int"):
                continue
            try:
                out.append(_change(a, b, name))
            except DataLossError as exc:
                out.append({"name": name, "change": None, "diff_norm": None, "norm_a": None, "damaged": str(exc)})
    out.sort(key=lambda r: (r["change"] is None, -(r["change"] or 0.0), r["name"]))
    return out

