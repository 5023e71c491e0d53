"""Streaming conversion between checkpoints, `.npz` and `.safetensors`, chosen by file extension.

The bytes of `.safetensors` and `.npz` are read and written by `ckptkit.formats.safetensors`
and `ckptkit.formats.npz` (their names are re-exported here, as before); this module holds
the policy: what to convert, cast, rename or leave out, one tensor in memory at a time.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from .. import dtypes as _dtypes
from .. import selection, storage
from ..errors import AlreadyExistsError, CheckpointError, InvalidArgumentError, NotFoundError, UnsupportedError
from ..formats import registry, values
from ..formats.npz import read_npz, write_npz  # re-exported: part of this module's API
from ..formats.objectgraph import OBJECT_GRAPH_KEY, friendly_names
from ..formats.safetensors import read_safetensors, write_safetensors  # re-exported, as before
from ..formats.tensor_file import TensorFile, read_all
from ..location import Location
from ..reader import CheckpointReader
from ..storage.base import Progress
from ..tf1.state import V1, V2, checkpoint_files
from .torch_layout import Change, torch_layout

__all__ = ["OBJECT_GRAPH_KEY", "SAFETENSORS_FORMAT", "check_destination", "convert", "existing_destination",
           "friendly_names_of", "open_source", "read_any", "read_npz", "read_safetensors", "safetensors_metadata",
           "source_bytes", "write_npz", "write_safetensors"]



# --------------------------------------------------------------------------- sources

class _CheckpointSource:
    """A checkpoint's tensors as TF lists them (partitioned variables whole; V1 or V2)."""

    def __init__(self, path: str | Location) -> None:
        self.reader = CheckpointReader(path)
        self.names = list(self.reader)
        self._dtypes = self.reader.get_variable_to_dtype_map()
        self._shapes = self.reader.get_variable_to_shape_map()

    def meta(self, name: str) -> tuple[_dtypes.DType, tuple[int, ...]]:
        return self._dtypes[name], tuple(self._shapes[name])

    def read(self, name: str) -> np.ndarray:
        return self.reader.get_tensor(name)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> _CheckpointSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Source = _CheckpointSource | TensorFile


def open_source(path: str | os.PathLike | Location, raw_names: bool = False) -> Source:
    """The tensors of a checkpoint, .npz or .safetensors file (by extension): `names`,
    `meta(name)` (dtype, shape) without reading data, `read(name)`; a context manager.
    A Location (resolved where the path entered) is opened as it is. `raw_names` (or
    the Location's): a Keras file's tensors by their HDF5 paths (registry.Format.renames)."""
    name = path.prefix if isinstance(path, Location) else storage.fspath(path)
    raw_names = raw_names or (isinstance(path, Location) and path.raw_names)
    fmt = registry.by_extension(name)
    if fmt is not None:
        found: TensorFile = (fmt.code().open_file(name, raw_names=True) if raw_names and fmt.renames
                                            else fmt.code().open_file(name))
        return found
    return _CheckpointSource(path if isinstance(path, Location) else name)


def read_any(path: str | os.PathLike, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint, .npz or .safetensors file, by extension (all in memory:
    `convert` streams instead)."""
    with open_source(path) as source:
        return read_all(source, progress)


def source_bytes(path: str | os.PathLike | Location) -> int:
    """Roughly the bytes `read_any` will read (for progress bars)."""
    location = path if isinstance(path, Location) else None
    path = location.prefix if location is not None else storage.fspath(path)
    if registry.by_extension(path) is None:
        with CheckpointReader(location or path) as reader:
            shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
            return sum(math.prod(shapes[k]) * (0 if dtypes[k].is_string else dtypes[k].itemsize)
                       for k in reader)
    try:
        return storage.of(path).size(path)
    except CheckpointError:
        return 0


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
    """Give a CheckpointError raised without a file (a bad slice, a bad value) `path`."""
    try:
        yield
    except CheckpointError as exc:
        if exc.path is not None:
            raise
        try:
            named = type(exc)(exc.message, path=path, key=exc.key)
        except TypeError:  # a subclass with another signature: leave it as it is
            raise exc from None
        raise named from None


def existing_destination(path: str | os.PathLike) -> list[str]:
    """The files already at destination `path` that writing there would replace: the
    file itself for a `.npz`/`.safetensors` path; for a checkpoint prefix every file TF
    gives that checkpoint (`.index`, `.data-*`, `.meta`, a V1 file at the prefix).
    Sorted; [] when nothing is there."""
    path = storage.fspath(path)
    if registry.by_extension(path) is not None:
        return [path] if storage.exists(path) and not storage.isdir(path) else []
    return sorted(set(checkpoint_files(path, V2)) | set(checkpoint_files(path, V1)))


def check_destination(path: str | os.PathLike, *, make_parents: bool = False, exist_ok: bool = True) -> None:
    """Raise a CheckpointError naming `path` if a file could not be written there.

    Checked before anything is read or written: `path` must not be a directory, and
    its directory must exist (or, with `make_parents` - a checkpoint prefix, whose
    missing directories are created as TF does - be creatable: no ancestor may be a
    file). With `exist_ok=False` (what `overwrite=False` of every writer passes), a
    destination that already exists (`existing_destination`) is refused too, so that
    nothing is replaced by accident. Permissions and free space are left to the write.
    """
    path = storage.fspath(path)
    if "\0" in path:
        raise InvalidArgumentError("path contains a NUL byte", path=repr(path))
    if storage.of(path).hierarchical:  # (an object store has no directories to check or create)
        _check_parents(path, make_parents)
    if not exist_ok and (found := existing_destination(path)):
        what = "already exists"
        if registry.by_extension(path) is None:
            shown = ", ".join(os.path.basename(f) for f in found[:4]) + (", ..." if len(found) > 4 else "")
            what = f"a checkpoint already exists here ({shown})"
        raise AlreadyExistsError(f"{what}; --overwrite (overwrite=True) replaces it", path=path)


def _check_parents(path: str, make_parents: bool) -> None:
    if storage.isdir(path) and registry.by_extension(path) is not None:
        raise InvalidArgumentError("destination is a directory", path=path)
    parent = os.path.dirname(path)
    while parent and not storage.isdir(parent):
        if storage.exists(parent):
            raise InvalidArgumentError(f"cannot write here: {parent} is not a directory", path=path)
        if not make_parents:
            raise NotFoundError(f"directory {parent} does not exist", path=path)
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up


def friendly_names_of(source: Source) -> dict[str, str]:
    """{name: friendly name} of a source's tensors (`ckptkit.formats.objectgraph.friendly_names`:
    a TF2 checkpoint's keys as its model's object paths, read from its object graph)."""
    graph = source.reader.object_graph() if isinstance(source, _CheckpointSource) else None
    return friendly_names(source.names, graph)


def _holds(fmt: registry.Format, dtype: _dtypes.DType) -> str | None:
    """Why a destination of format `fmt` can't hold `dtype` (None if it can)."""
    if fmt.stores(dtype):
        return None
    return "strings" if dtype.is_string else dtype.name


def _parse_casts(cast: Mapping[str, str] | None) -> dict[int, _dtypes.DType]:
    out: dict[int, _dtypes.DType] = {}
    for a, b in (cast or {}).items():
        src, dst = _dtypes.as_dtype(a), _dtypes.as_dtype(b)
        if src.is_string or dst.is_string:
            raise InvalidArgumentError(f"cannot cast {src.name} to {dst.name}: strings have no numeric value")
        out[src.enum] = dst
    return out


def _layout_changes(source: Source, shown: Mapping[str, str], layout: str | None,
                    torch_names: bool) -> dict[str, Change]:
    """{source name: Change} of `layout` ("torch", the one there is), decided on the
    shown names; {} for none."""
    if layout is None:
        return {}
    shapes = {shown.get(n, n): source.meta(n)[1] for n in source.names}
    classes = getattr(source, "layer_classes", None)  # a Keras 3 file's, by name
    changes = torch_layout(shapes, classes, torch_names)
    return {n: changes[shown.get(n, n)] for n in source.names}


def _plan(source: Source, fmt: registry.Format, dst: str, include: Iterable[str], exclude: Iterable[str],
          casts: Mapping[int, _dtypes.DType], rename: tuple[str, str] | None, friendly: bool,
          strict: bool, layout: str | None = None, torch_names: bool = True
          ) -> tuple[dict[str, values.Deferred], list[dict], dict[str, str], dict[str, str]]:
    """{output name: Deferred} of what to write, [{name, reason}] of what is left out,
    {output name: source name} and {output name: the layout rule that changed it}. A
    glob matching nothing is an error (raised without a path: the caller's
    `_naming(src)` names the source)."""
    plan: dict[str, values.Deferred] = {}
    sources: dict[str, str] = {}
    rules: dict[str, str] = {}
    left_out = []
    pattern, template = (None, "") if rename is None else (selection.compile_regex(rename[0]), rename[1])
    shown = friendly_names_of(source) if friendly else {}
    by_shown = {shown.get(name, name): name for name in source.names}  # friendly names are unique
    changes = _layout_changes(source, shown, layout, torch_names)
    for name in (by_shown[n] for n in selection.select(by_shown, include, exclude)):
        dtype, shape = source.meta(name)
        target = casts.get(dtype.enum, dtype)
        reason = "the object graph (names changed)" if friendly and name == OBJECT_GRAPH_KEY else None
        reason = reason or (None if _holds(fmt, target) is None else f"{fmt.name} has no {_holds(fmt, target)}")
        if reason is not None:
            if strict:
                raise UnsupportedError(f"cannot write it: {reason} (drop --strict to leave it out)",
                                       path=dst, key=name)
            left_out.append({"name": name, "reason": reason})
            continue
        out = shown.get(name, name)
        change = changes.get(name)
        if change is not None:
            out, shape = change.name, change.shape
        if pattern is not None and (m := pattern.fullmatch(out)) is not None:
            try:
                out = m.expand(template)
            except (re.error, IndexError) as exc:
                raise InvalidArgumentError(f"bad rename template {template!r}: {exc}", key=name) from None
        if out in sources:
            raise InvalidArgumentError(f"both {sources[out]!r} and {name!r} would be written as {out!r}",
                                       path=dst, key=out)
        sources[out] = name
        if change is not None and change.rule is not None:
            rules[out] = change.rule
        load = functools.partial(_load_cast, source, name, None if target is dtype else target,
                                 change if change is not None and change.perm is not None else None)
        plan[out] = values.Deferred(target, shape, load)
    if source.names and not plan:
        reasons = ", ".join(f"{d['name']} ({d['reason']})" for d in left_out[:3])
        raise UnsupportedError(f"nothing to write: every tensor selected is left out: {reasons}"
                               + (f" and {len(left_out) - 3} more" if len(left_out) > 3 else ""), path=dst)
    return plan, left_out, sources, rules


def _plan_rows(plan: Mapping[str, values.Deferred], sources: Mapping[str, str], rules: Mapping[str, str],
               source: Source) -> list[dict]:
    """What a dry run reports: one row per tensor to write, in writing order."""
    rows = []
    for out, deferred in plan.items():
        name = sources[out]
        dtype, shape = source.meta(name)
        rows.append({"name": name, "new_name": out, "dtype": deferred.dtype.name,
                     "source_dtype": dtype.name, "shape": list(deferred.shape), "source_shape": list(shape),
                     "layout": rules.get(out), "bytes": deferred.nbytes})
    return rows


def _load_cast(source: Source, name: str, target: _dtypes.DType | None, change: Change | None) -> np.ndarray:
    arr = source.read(name)
    if change is not None:
        arr = change.apply(arr)
    return arr if target is None else arr.astype(target.numpy)


# the `format` HF transformers reads a .safetensors file as: "pt" loads the names as they
# are (it refuses a file whose __metadata__ has a format outside "pt", "tf", "flax", "mlx")
SAFETENSORS_FORMAT = "pt"


def safetensors_metadata(src: str, extra: Mapping[str, str] | None, dst: str) -> dict[str, str]:
    """The `__metadata__` convert writes to a .safetensors file: `format` ("pt"), `source`
    (SRC as given; a URL without its user, password, query or fragment, where signatures
    and tokens live) and `ckptkit_version`, then the caller's `extra` pairs (which win)."""
    from .. import __version__  # noqa: PLC0415 - the package's own version

    source = src
    if "://" in src:
        from urllib.parse import urlsplit, urlunsplit  # noqa: PLC0415 - URL sources only

        parts = urlsplit(src)
        source = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
    out = {"format": SAFETENSORS_FORMAT, "source": source, "ckptkit_version": __version__}
    for key, value in (extra or {}).items():
        if not (isinstance(key, str) and isinstance(value, str)) or not key:
            raise InvalidArgumentError(f"metadata takes non-empty str keys and str values, not {key!r}: {value!r}",
                                       path=dst)
        out[key] = value
    return out


def convert(src: str | os.PathLike | Location, dst: str | os.PathLike, *, num_shards: int = 1,
            include: Iterable[str] = (), exclude: Iterable[str] = (),
            cast: Mapping[str, str] | None = None, rename: tuple[str, str] | None = None,
            friendly_names: bool = False, strict: bool = False, overwrite: bool = False,
            metadata: Mapping[str, str] | None = None, progress: Progress | None = None,
            dry_run: bool = False, layout: str | None = None, torch_names: bool = True,
            raw_names: bool = False) -> dict:
    """Copy tensors from `src` to `dst`, formats chosen by extension, one tensor in memory
    at a time (peak memory: the largest tensor, plus buffers).

    `.npz` and `.safetensors` name those formats; any other path is a checkpoint (a
    source resolves like every ckptkit path; a destination is the prefix to write).
    `include`/`exclude`: fnmatch globs on source names (`*` crosses `/`), on the friendly
    names with `friendly_names`. `cast`: {"bfloat16": "float32", ...} by TF dtype name.
    `friendly_names`: TF2 keys as the model's object paths (`friendly_names_of`: a Keras 3
    kernel keyed `optimizer/_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE` is written
    as its layer's path; the object graph, whose names no longer match, left out).
    `rename`: (REGEX, TEMPLATE): a name the regex fully matches (after friendly naming) becomes
    the expanded template (`\\1`, `\\g<name>`).
    `layout="torch"`: kernels in PyTorch's layout, decided by name and rank
    (`ckptkit.ops.torch_layout`: Dense kernels transposed, convolution kernels HWIO ->
    OIHW, depthwise kernels grouped), and with `torch_names` (the default) torch's names
    (`conv/kernel` -> `conv.weight`, `bn/moving_mean` -> `bn.running_mean`); `rename`
    then applies to those names. `raw_names`: a Keras 3 file's tensors by their HDF5
    paths (`layers/dense/vars/0`), not LAYER/VAR. Tensors the destination cannot hold
    (strings and complex128 in .safetensors, bfloat16/float8/int4 in .npz) are left out,
    or with `strict` refused before anything is written. A `.safetensors` destination gets
    a `__metadata__` (see `safetensors_metadata`), `metadata`'s pairs added; `metadata`
    for another destination is an InvalidArgumentError.
    Each include/exclude glob must match a name of `src`, and something must be left to
    write (else InvalidArgumentError/UnsupportedError, nothing written): a typo never
    writes an empty file.
    An existing `dst` (a checkpoint with any of its files there, or the file) is refused
    with AlreadyExistsError unless `overwrite`; replacing a checkpoint deletes its old
    `.meta` (a graph of other tensors) and surplus data shards in the same commit, so the
    prefix names the old checkpoint or the new one, whole, and a `checkpoint` state file
    naming it stays true.
    Returns {"src", "dst", "tensors", "bytes", "left_out": [{"name", "reason"}]}; with
    `dry_run=True` nothing is written and "plan" lists what would be: [{"name",
    "new_name", "dtype" (as written), "source_dtype", "shape" (as written),
    "source_shape", "layout" (the rule that changed it, e.g. "HWIO->OIHW", or None),
    "bytes"}].
    """
    source_at = src if isinstance(src, Location) else None  # resolved where it entered: opened as it is
    src = source_at.given or source_at.prefix if source_at is not None else storage.fspath(src)
    dst = storage.fspath(dst)
    if storage.abspath(src) == storage.abspath(dst):
        raise InvalidArgumentError("source and destination are the same file", path=dst)
    fmt = registry.destination(dst)
    if fmt.writes is None:  # a file format registered for reading only
        raise UnsupportedError(f"ckptkit reads {fmt.name} files but does not write them", path=dst)
    if metadata and "metadata" not in fmt.writes:
        raise InvalidArgumentError("metadata is written to .safetensors files only", path=dst)
    check_destination(dst, make_parents=not fmt.suffixes, exist_ok=overwrite)
    if layout not in (None, "torch"):
        raise InvalidArgumentError(f"unknown layout {layout!r}; the layouts are: torch", path=dst)
    casts = _parse_casts(cast)
    header = safetensors_metadata(src, metadata, dst) if "metadata" in fmt.writes else None
    with _naming(src), open_source(source_at or src, raw_names) as source:
        plan, left_out, sources, rules = _plan(source, fmt, dst, list(include), list(exclude), casts, rename,
                                               friendly_names, strict, layout, torch_names)
        if dry_run:
            rows = _plan_rows(plan, sources, rules, source)
            return {"src": src, "dst": dst, "dry_run": True, "tensors": len(rows),
                    "bytes": sum(r["bytes"] for r in rows), "plan": rows, "left_out": left_out}
        with _naming(dst):
            fmt.write(dst, plan, progress, metadata=header,
                      num_shards=num_shards if "num_shards" in fmt.writes else None)  # (files: one)
    nbytes = sum(d.nbytes for d in plan.values())
    return {"src": src, "dst": dst, "tensors": len(plan), "bytes": nbytes, "left_out": left_out}
