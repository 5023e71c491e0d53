"""What the `ckptkit` commands report, as plain data: listings, stats, diffs, checks.

The CLI only renders what these functions return (rich tables or JSON), so every
number it prints can be had from Python too, and tested without a terminal.
"""
from __future__ import annotations

import glob
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .. import selection, storage
from ..errors import CheckpointError, InvalidArgumentError, NotFoundError, StorageError, TensorNotFoundError
from ..formats import registry
from ..formats.objectgraph import OBJECT_GRAPH_KEY, Node, ObjectGraph, friendly_names
from ..reader import CheckpointReader
from ..storage.files import TEMP_MARKER
from ..tf1.state import STATE_FILENAME, checkpoint_exists, get_checkpoint_state
from ..tf2.objectgraph_edit import graph_problems

if TYPE_CHECKING:
    import numpy as np

__all__ = ["TensorInfo", "list_tensors", "scope_path", "scope_tree", "object_tree", "object_keys", "tensor_stats",
           "verify_checkpoint", "VerifyReport", "diff_checkpoints", "describe_state"]


@dataclass
class TensorInfo:
    """One tensor as the checkpoint's metadata describes it (no data read)."""

    name: str
    dtype: str               # TF's name: float32, bfloat16, string...
    shape: list[int]
    elements: int
    bytes: int | None        # bytes on disk (V2 strings: lengths + checksum + bytes); None if unknown
    shard: int | None        # V2 data shard (None for V1 and partitioned variables)
    sliced: bool = False     # a partitioned variable, stored as several slices

    def as_dict(self) -> dict:
        return asdict(self)


def _infos(reader: CheckpointReader) -> list[TensorInfo]:
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    infos = []
    for name in reader:
        shape, dtype = shapes[name], dtypes[name]
        elements = math.prod(shape)
        sliced = bool(reader.slices(name))
        size = shard = None
        if reader.format_version == 2 and not sliced:
            entry = reader.entry(name)
            size, shard = entry.size, entry.shard_id
        elif not dtype.is_string:
            size = elements * dtype.itemsize
        infos.append(TensorInfo(name, dtype.name, list(shape), elements, size, shard, sliced))
    return infos


def list_tensors(path: str | os.PathLike) -> tuple[str, list[TensorInfo]]:
    """(prefix, one TensorInfo per tensor in key order), as TF lists them (V1 and V2;
    a partitioned variable once, whole)."""
    with CheckpointReader(path) as reader:
        return reader.prefix, _infos(reader)


def scope_path(name: str) -> list[str]:
    """A TF1 name's scopes: 'dense/kernel/Adam' -> ['dense', 'kernel', 'Adam']."""
    return name.split("/")


def object_tree(path: str | os.PathLike, start: str | None = None) -> dict | None:
    """A TF2 checkpoint's object tree (`ObjectGraph.format_tree` with every tensor's dtype
    and shape), from the root or from the object at path `start`; None for TF1."""
    with CheckpointReader(path) as reader:
        graph = reader.object_graph()
        if graph is None:
            return None
        node = None if start is None else find_object(graph, start, reader.prefix)
        dtypes = {k: d.name for k, d in reader.get_variable_to_dtype_map().items()}
        return graph.format_tree(reader.get_variable_to_shape_map(), dtypes, node)


def find_object(graph: ObjectGraph, path: str, prefix: str | None = None) -> Node:
    """The object at `path` (any path of edges from the root), or TensorNotFoundError."""
    try:
        return graph.find(path)
    except KeyError:
        raise TensorNotFoundError("neither a tensor nor an object path in the checkpoint's object graph",
                                  path=prefix, key=path) from None


def tensor_for(reader: CheckpointReader, name: str) -> str:
    """The key `show NAME` reads: NAME itself, or in a TF2 checkpoint the tensor the object
    at path NAME saves (its VARIABLE_VALUE, or its only attribute)."""
    if name in reader:
        return name
    graph = reader.object_graph()
    if graph is None:
        raise TensorNotFoundError("tensor not found in checkpoint", path=reader.prefix, key=name)
    node = find_object(graph, name, reader.prefix)
    keys = {a.name: a.checkpoint_key for a in node.attributes}
    if "VARIABLE_VALUE" in keys:
        return keys["VARIABLE_VALUE"]
    if len(keys) == 1:
        return next(iter(keys.values()))
    saved = ", ".join(keys) or "nothing itself"
    raise InvalidArgumentError(f"the object saves {saved}; name one tensor (ckptkit ls CKPT {name} lists them)",
                               path=reader.prefix, key=name)


def object_keys(path: str | os.PathLike, start: str) -> list[str]:
    """Keys saved by the object at path `start` of a TF2 checkpoint, the objects below it and
    their optimizer slots (TensorNotFoundError if the checkpoint has no such object)."""
    with CheckpointReader(path) as reader:
        graph = reader.object_graph()
        if graph is None:
            raise TensorNotFoundError("tensor not found in checkpoint (and it has no object graph)",
                                      path=reader.prefix, key=start)
        node = find_object(graph, start, reader.prefix)
        return [a.checkpoint_key for n in graph.subtree(node) for a in n.attributes]


def scope_tree(infos: Iterable[TensorInfo],
               path_of: Callable[[str], list[str]] = scope_path) -> dict:
    """Nested {component: subtree}, leaves under the key None hold the TensorInfo.

    `path_of` is the hook for other views of the same keys (the TF2 object graph
    names its tensors by object path instead of by scope).
    """
    root: dict = {}
    for info in infos:
        node = root
        for part in path_of(info.name):
            node = node.setdefault(part, {})
        node[None] = info
    return root


def tensor_stats(array: np.ndarray) -> dict:
    """min/max/mean/std, NaN/Inf/zero counts (numbers), true/false counts (bool), lengths
    (strings): `ckptkit.ops.stats.array_stats`, the code `ckptkit stats` streams with."""
    from .stats import array_stats  # noqa: PLC0415 - stats imports reader, as this module does

    return array_stats(array)


@dataclass
class VerifyReport:
    prefix: str
    tensors: int = 0
    bytes: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (key, message)
    format: str = "v2"       # "v2", "v1", "safetensors", "npz"
    # TF2: (key, message) where the object graph and the index disagree
    graph_problems: list[tuple[str, str]] = field(default_factory=list)
    # journals of commits a dead writer left in the directory: TF sees half-replaced files
    pending: list[str] = field(default_factory=list)

    @property
    def checked(self) -> str:
        """What was checked: checksums (TF checkpoints), or readability (formats without any)."""
        return registry.get(self.format).verified

    @property
    def checksums(self) -> bool:
        """Whether the format stores checksums (else only readability was checked)."""
        return registry.get(self.format).checksums

    @property
    def ok(self) -> bool:
        return not self.errors and not self.graph_problems and not self.pending


def verify_checkpoint(path: str | os.PathLike,
                      progress: Callable[[int], None] | None = None, *,
                      include: Iterable[str] = (), exclude: Iterable[str] = ()) -> VerifyReport:
    """Read every tensor, checking every crc32c; collect (not raise) per-tensor damage.

    A `.safetensors` or `.npz` file has no checksums: its header is checked on open
    (safetensors: every dtype, shape and data offset fits the file; npz: every member's
    .npy header, no object arrays) and every tensor is read (`VerifyReport.checked`
    says which). A partitioned variable is read whole, which checks each of its slices. A damaged
    index cannot be checked tensor by tensor: that raises as on any read.
    `progress(n)` is called with the bytes of each tensor checked.

    A TF2 checkpoint's object graph is checked against the keys too (`graph_problems`):
    every attribute's checkpoint_key must be in the index (else TF's restore fails with
    "Key ... not found"), and every key must be saved by an object reachable from the
    root (else no restore ever reads it).

    `include`/`exclude` (globs, `selection.select`) check only the tensors they pick, and
    report only the object graph problems of those keys.

    `pending`: journals of commits a dead writer left in the checkpoint's directory.
    ckptkit reads through them (the new checkpoint), but TF sees the half-replaced files
    until they are completed (`storage.recover`, `ckptkit recover DIR`): not ok.
    """
    with CheckpointReader(path, verify=True) as reader:
        report = VerifyReport(reader.prefix, format=reader.format,
                              pending=storage.pending_commits(os.path.dirname(reader.prefix)))
        infos = _infos(reader)
        include, exclude = list(include), list(exclude)
        picked = set(selection.select([i.name for i in infos], include, exclude, path=reader.prefix))
        for info in infos:
            if info.name not in picked:
                continue
            try:
                value = reader.get_tensor(info.name)
            except StorageError:
                raise  # the store failed to deliver the bytes: nothing is known about them
            except CheckpointError as exc:
                report.errors.append((info.name, str(exc)))
            except OSError as exc:
                report.errors.append((info.name, f"{reader.prefix}: key {info.name!r}: "
                                                 f"{exc.strerror or exc}"))
            else:
                report.bytes += info.bytes if info.bytes is not None else value.nbytes
            report.tensors += 1
            if progress is not None:
                progress(info.bytes or 0)
        if OBJECT_GRAPH_KEY in reader and not any(k == OBJECT_GRAPH_KEY for k, _ in report.errors):
            try:
                graph = reader.object_graph()
            except CheckpointError as exc:
                report.graph_problems.append((OBJECT_GRAPH_KEY, str(exc)))
            else:
                assert graph is not None  # the reader holds OBJECT_GRAPH_KEY
                report.graph_problems += graph_problems(graph, reader.keys())
            if include or exclude:
                report.graph_problems = [(k, m) for k, m in report.graph_problems if k in picked]
        return report


def total_bytes(path: str | os.PathLike, *, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> int:
    """Bytes of tensor data (as far as the metadata tells): the work of a full read (of
    the tensors `include`/`exclude` pick)."""
    prefix, infos = list_tensors(path)
    picked = set(selection.select([i.name for i in infos], include, exclude, path=prefix))
    return sum(i.bytes or 0 for i in infos if i.name in picked)


def _comparable(array: np.ndarray) -> np.ndarray:
    import numpy as np  # noqa: PLC0415 - listing a checkpoint imports no numpy

    if array.dtype.kind in "OSUb":
        return array
    if array.dtype.kind == "c":
        return array.astype(np.complex128)
    return array.astype(np.float64)


def _compare(a: np.ndarray, b: np.ndarray, atol: float, rtol: float = 0.0) -> tuple[int, float | None, float | None]:
    """(elements that differ beyond atol + rtol * max(|a|, |b|), max |a-b| and max relative
    difference |a-b| / max(|a|, |b|) over finite pairs; None for strings and bools)."""
    import numpy as np  # noqa: PLC0415 - listing a checkpoint imports no numpy

    if a.dtype.kind in "OSU" or a.dtype.kind == "b":
        return int(np.count_nonzero(a.reshape(-1) != b.reshape(-1))), None, None
    x, y = _comparable(a), _comparable(b)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        delta = np.abs(x - y)
        scale = np.maximum(np.abs(x), np.abs(y))
        if a.dtype.kind in "iu":  # exact: int64 values past 2^53 that differ by 1 still differ
            same = a == b
            if atol or rtol:
                same |= delta <= atol + rtol * scale
        else:
            same = (x == y) | (np.isnan(x) & np.isnan(y)) | (delta <= atol + rtol * scale)
        relative = np.where(delta == 0, 0.0, delta / np.where(scale == 0, 1.0, scale))
    finite = np.isfinite(delta)
    max_abs = float(delta[finite].max()) if finite.any() else (0.0 if not delta.size else None)
    max_rel = float(relative[finite].max()) if finite.any() else (0.0 if not delta.size else None)
    return int((~same).sum()), max_abs, max_rel


DIFF_CHUNK_BYTES = 1 << 20  # compared per step, of each side


def _larger(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _named(reader: CheckpointReader, friendly: bool) -> dict[str, TensorInfo]:
    """{name diff reports: TensorInfo (whose `name` is the key to read)}: the keys, or with
    `friendly` their friendly names (`convert --friendly-names`'), the object graph left out."""
    infos = _infos(reader)
    if not friendly:
        return {i.name: i for i in infos}
    names = friendly_names(reader.keys(), reader.object_graph())
    return {names[i.name]: i for i in infos if i.name != OBJECT_GRAPH_KEY}


def diff_checkpoints(path_a: str | os.PathLike, path_b: str | os.PathLike, *,
                     atol: float = 0.0, rtol: float = 0.0, friendly_names: bool = False,
                     include: Iterable[str] = (), exclude: Iterable[str] = ()) -> dict:
    """Keys only in A, only in B, dtype/shape changes, and value changes beyond `atol` +
    `rtol` * max(|a|, |b|) (per element).

    `friendly_names` matches and reports tensors by the names `convert --friendly-names`
    writes (each side's own object graph; the graphs themselves are not compared), so
    two Keras 3 checkpoints, or one and its friendly-named conversion, pair up by
    their model's paths.

    Values compare exactly by default (NaN equals NaN, 0.0 equals -0.0); `equal` is
    True when nothing differs. Tensors are compared a chunk at a time (bounded memory).
    Each tensor whose values differ is listed with how many
    elements differ, the max absolute difference and the max relative difference
    |a-b| / max(|a|, |b|) (0 where both are 0), over the pairs whose difference is finite.
    `include`/`exclude` (globs, `selection.select`, over the names of A and B together)
    compare only the names they pick.
    """
    import numpy as np  # noqa: PLC0415 - listing a checkpoint imports no numpy

    with CheckpointReader(path_a) as ra, CheckpointReader(path_b) as rb:
        infos_a, infos_b = _named(ra, friendly_names), _named(rb, friendly_names)
        include, exclude = list(include), list(exclude)
        if include or exclude:  # on the names reported (friendly ones with friendly_names)
            picked = set(selection.select(list(dict.fromkeys([*infos_a, *infos_b])), include, exclude,
                                          path=f"{ra.prefix}, {rb.prefix}"))
            infos_a = {n: i for n, i in infos_a.items() if n in picked}
            infos_b = {n: i for n, i in infos_b.items() if n in picked}
        result: dict[str, Any] = {"a": ra.prefix, "b": rb.prefix,
                                  "only_a": [n for n in infos_a if n not in infos_b],
                                  "only_b": [n for n in infos_b if n not in infos_a],
                                  "changed": [], "values": [], "compared": 0}
        for name, ia in infos_a.items():
            ib = infos_b.get(name)
            if ib is None:
                continue
            if (ia.dtype, ia.shape) != (ib.dtype, ib.shape):
                result["changed"].append({"name": name, "a": {"dtype": ia.dtype, "shape": ia.shape},
                                          "b": {"dtype": ib.dtype, "shape": ib.shape}})
                continue
            mismatched, max_abs, max_rel = 0, None, None
            chunks = zip(ra.iter_chunks(ia.name, DIFF_CHUNK_BYTES, in_order=True),
                         rb.iter_chunks(ib.name, DIFF_CHUNK_BYTES, in_order=True), strict=True)
            chunk_abs: float | None
            chunk_rel: float | None
            for a, b in chunks:  # a chunk of each at a time: any tensor size fits
                if a.dtype.kind != "O" and np.array_equal(np.ascontiguousarray(a).view(np.uint8),
                                                          np.ascontiguousarray(b).view(np.uint8)):
                    n, chunk_abs, chunk_rel = 0, 0.0, 0.0  # the same bytes (the usual case): equal
                else:
                    n, chunk_abs, chunk_rel = _compare(a, b, atol, rtol)
                mismatched += n
                max_abs = _larger(max_abs, chunk_abs)
                max_rel = _larger(max_rel, chunk_rel)
            result["compared"] += 1
            if mismatched:
                result["values"].append({"name": name, "dtype": ia.dtype, "mismatched": mismatched,
                                         "elements": ia.elements, "max_abs_diff": max_abs,
                                         "max_rel_diff": max_rel})
    result["equal"] = not (result["only_a"] or result["only_b"] or result["changed"] or result["values"])
    return result


def _files_of(prefix: str) -> list[dict]:
    directory, base = os.path.split(prefix)
    names = storage.match(directory, glob.escape(base) + ".*")
    if storage.isfile(prefix):
        names.insert(0, prefix)
    return [{"name": os.path.basename(n), "bytes": storage.of(n).size(n)} for n in names
            if storage.isfile(n) and TEMP_MARKER not in n]


def describe_state(directory: str | os.PathLike = ".") -> dict:
    """The directory's `checkpoint` file: latest, every listed checkpoint with its save
    time and whether (and which) files exist."""
    directory = storage.fspath(directory)
    state_path = storage.join(directory, STATE_FILENAME)
    if storage.isfile(directory):
        raise NotFoundError("expected a directory holding a 'checkpoint' state file", path=directory)
    state = get_checkpoint_state(directory, strict=True)  # read once: None when there is no state file
    if state is None:
        raise NotFoundError("no 'checkpoint' state file", path=state_path)
    stamps = list(state.all_model_checkpoint_timestamps)
    paths = list(state.all_model_checkpoint_paths)
    if state.model_checkpoint_path not in paths:
        paths.append(state.model_checkpoint_path)
    checkpoints = []
    for i, path in enumerate(paths):
        stamp = stamps[i] if len(stamps) == len(state.all_model_checkpoint_paths) and i < len(stamps) else None
        checkpoints.append({"path": path, "latest": path == state.model_checkpoint_path,
                            "timestamp": stamp, "exists": checkpoint_exists(path),
                            "files": _files_of(path)})
    return {"directory": directory, "state_file": state_path,
            "latest": state.model_checkpoint_path,
            "latest_exists": checkpoint_exists(state.model_checkpoint_path),
            "last_preserved_timestamp": state.last_preserved_timestamp or None,
            "checkpoints": checkpoints}
