"""CheckpointReader: what TF's `tf.train.load_checkpoint` gives, without TensorFlow.

Resolves whatever path a user has (a prefix, any file of a checkpoint, a legacy V1
file or shard pattern, a directory holding a `checkpoint` state file, or a `.npz` or
`.safetensors` file) to a checkpoint, then reads its metadata eagerly (it is small) and tensor data lazily, one
tensor at a time. V2 bundles, V1 tables, `.safetensors` and `.npz` files answer through
the same API; partitioned variables of either TF format are listed and returned whole,
as TF lists them.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from . import dtypes as _dtypes
from .errors import CheckpointError, NotFoundError, TensorNotFoundError, UnsupportedError
from .format import bundle, naming, v1
from .format.files import is_temp_name
from .format.npz import NpzFile
from .format.safetensors import SafetensorsFile
from .frameworks import target as _framework_target
from .state import get_checkpoint_state, latest_checkpoint

if TYPE_CHECKING:
    from .slicing import PartialTensor

_T = TypeVar("_T")

__all__ = ["CheckpointReader", "NewCheckpointReader", "load_checkpoint", "resolve_prefix",
           "list_variables", "load_variable", "load"]

def resolve_prefix(path: str | os.PathLike, *, as_prefix: bool = False) -> str:
    """The checkpoint prefix a user's path names.

    Accepts a prefix, a `.index`, `.data-*` or `.meta` file, a SavedModel directory or
    its `saved_model.pb` (its variables, `variables/variables`), or a directory (its
    latest checkpoint, per the `checkpoint` state file, else the one checkpoint in it,
    else `DIR.index` beside it: a save prefix that is an existing directory, which TF's
    Saver writes next to the directory). A legacy V1 checkpoint resolves to its file,
    or for sharded V1 files to TF's pattern `PREFIX-?????-of-NNNNN`. An existing `.npz`
    or `.safetensors` file (by extension) is returned as it is.

    `as_prefix=True` takes `path` as a save prefix first, as TF's `Saver.restore` and
    `NewCheckpointReader` do: when `PATH.index` exists it is the checkpoint, even if
    `PATH` is also a directory holding checkpoints of its own (`tf.train.load_checkpoint`
    and the default here read the directory's latest checkpoint instead).
    """
    path = os.fspath(path)
    if as_prefix and os.path.isfile(naming.index_filename(path)):
        return path
    if naming.tensor_file_format(path) is not None and os.path.isfile(path):
        return path  # a .npz / .safetensors file is read as it is: no prefix to find
    if os.path.isdir(path):
        return _resolve_directory(path)
    if os.path.basename(path) in naming.SAVED_MODEL_FILENAMES and os.path.isfile(path):
        return _saved_model_variables(os.path.dirname(path) or ".")
    for suffix in (naming.INDEX_SUFFIX, "." + naming.META_SUFFIX):
        if path.endswith(suffix) and os.path.isfile(naming.index_filename(path[: -len(suffix)])):
            return path[: -len(suffix)]
    stripped = naming.DATA_SUFFIX.sub("", path)
    if stripped != path and os.path.isfile(naming.index_filename(stripped)):
        return stripped
    if os.path.isfile(naming.index_filename(path)):
        return path
    found = v1.find_v1_files(path)
    if found is not None:
        return found[0]
    if os.path.exists(path):
        raise NotFoundError("not a TensorFlow checkpoint (no matching .index file, not a V1 table)", path=path)
    raise NotFoundError("no checkpoint at this path", path=path)


def _resolve_directory(directory: str) -> str:
    if naming.saved_model_file(directory) is not None:
        return _saved_model_variables(directory)
    # strict: a state file that does not parse fails here (TF's load_checkpoint fails too)
    # rather than silently opening some other checkpoint of the directory
    prefix = latest_checkpoint(directory, strict=True)
    if prefix is not None:
        return prefix
    try:
        return _only_checkpoint_in(directory)
    except NotFoundError:
        # `Saver.save(values, "run")` with `run/` an existing directory writes `run.index`
        # beside it (as TF does); the directory itself names no checkpoint, so that one.
        # (`run/`, with its slash, names the directory only: `run/.index` is no such file.)
        if not os.path.isfile(naming.index_filename(directory)):
            raise
        return directory


def _saved_model_variables(export_dir: str) -> str:
    """The variables checkpoint of a SavedModel directory (TF: `variables/variables`)."""
    prefix = naming.saved_model_variables_prefix(export_dir)
    if not os.path.isfile(naming.index_filename(prefix)):
        raise NotFoundError("SavedModel without variables (no variables/variables.index)", path=export_dir)
    return prefix


def _only_checkpoint_in(directory: str) -> str:
    """A directory without a usable state file (files copied without it, or written by
    `ckptkit.save`) names its checkpoint when it holds exactly one V2 checkpoint."""
    suffix = naming.INDEX_SUFFIX
    try:
        names = sorted(n[: -len(suffix)] for n in os.listdir(directory)
                       if n.endswith(suffix) and not is_temp_name(n))
    except OSError as exc:
        raise CheckpointError(f"cannot list directory: {exc.strerror or exc}", path=directory) from None
    if len(names) == 1:
        return os.path.join(directory, names[0])
    if not names:
        raise NotFoundError("no checkpoint found in directory (no 'checkpoint' state file, "
                            "no .index file)", path=directory)
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    state = get_checkpoint_state(directory, strict=True)
    if state is not None and state.model_checkpoint_path:
        raise NotFoundError(f"the 'checkpoint' state file names {state.model_checkpoint_path}, which does not "
                            f"exist, and {len(names)} other checkpoints are here ({shown}): name one",
                            path=directory)
    raise NotFoundError(f"no 'checkpoint' state file says which of {len(names)} checkpoints "
                        f"to use ({shown}): name one", path=directory)


class _V2:
    """A V2 bundle behind CheckpointReader's API."""

    format_version = 2

    def __init__(self, prefix: str) -> None:
        self.index = bundle.BundleIndex(prefix)
        self.data = bundle.BundleData(self.index)

    def names(self) -> list[str]:
        return self.index.visible_keys()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.index.meta(name)[1]

    def dtype_enum(self, name: str) -> int:
        return self.index.meta(name)[0]

    def metas(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        return self.index.metas(self.names())

    def read(self, name: str, verify: bool, copy: bool = True):
        return self.data.read_full(name, verify=verify, copy=copy)

    def debug_string(self) -> bytes:
        """TF's BundleReader::DebugString: every entry without slices, slice keys included."""
        lines = []
        for key in self.index.keys():
            entry = self.index.entry(key)
            if entry.slices:
                continue
            dims = ",".join(str(d) for d in bundle.shape_of(entry, self.index.path, key))
            lines.append(f"{key} ({_dtypes.enum_name(entry.dtype)}) [{dims}]\n")
        return "".join(lines).encode("utf-8", "surrogateescape")

    def close(self) -> None:
        self.data.close()


class _V1:
    """A legacy V1 checkpoint (one or more table files) behind CheckpointReader's API."""

    format_version = 1

    def __init__(self, name: str) -> None:
        found = v1.find_v1_files(name)
        if found is None:
            raise NotFoundError("no V1 checkpoint file at this path", path=name)
        self.checkpoint = v1.V1Checkpoint(*found)
        self.index = self.data = None

    def names(self) -> list[str]:
        return self.checkpoint.names()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.checkpoint.shape(name)

    def dtype_enum(self, name: str) -> int:
        return self.checkpoint.dtype_enum(name)

    def metas(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        return {k: (self.dtype_enum(k), self.shape(k)) for k in self.names()}

    def read(self, name: str, verify: bool, copy: bool = True):
        return self.checkpoint.read(name)  # block crcs are always verified; V1 has no others

    def debug_string(self) -> bytes:
        return self.checkpoint.debug_string()

    def close(self) -> None:
        self.checkpoint.close()


class _TensorFile:
    """A `.safetensors` or `.npz` file behind CheckpointReader's API (format_version 0).

    Every header is checked on open (safetensors: dtypes, shapes and data offsets inside
    the file; npz: each member's .npy header, object arrays refused before anything is
    unpickled); each tensor is read when asked for. Neither format stores checksums, so
    `verify` has nothing to check beyond that. Names are listed sorted, as TF lists keys.
    """

    format_version = 0

    def __init__(self, path: str, fmt: str) -> None:
        self.format = fmt
        self.path = path
        self.file: SafetensorsFile | NpzFile = SafetensorsFile(path) if fmt == "safetensors" else NpzFile(path)
        self.index = self.data = None
        self._names = sorted(self.file.names)

    def names(self) -> list[str]:
        return list(self._names)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.file.meta(name)[1]

    def dtype_enum(self, name: str) -> int:
        return self.file.meta(name)[0].enum

    def metas(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        return {k: (self.dtype_enum(k), self.shape(k)) for k in self._names}

    def read(self, name: str, verify: bool, copy: bool = True):
        return self.file.read(name)  # always a new array: no checksums to verify

    def debug_string(self) -> bytes:
        lines = []
        for name in self._names:
            dtype, shape = self.file.meta(name)
            lines.append(f"{name} ({_dtypes.enum_name(dtype.enum)}) [{','.join(map(str, shape))}]\n")
        return "".join(lines).encode("utf-8", "surrogateescape")

    def close(self) -> None:
        self.file.close()


_REOPENS = 3  # times get_tensor reopens a checkpoint replaced under it before giving up


class CheckpointReader(Mapping):
    """Read-only access to one checkpoint, keyed by tensor name.

    A Mapping (`keys()`, `reader[name]`, `name in reader`, `len`, iteration) and a
    context manager (closes the data files). `get_tensor` verifies each tensor's
    crc32c, as TF does; pass `verify=False` to skip that.

    Keys are what TF's reader lists: a partitioned variable appears once, under its
    name and full shape, and `get_tensor` returns it whole (every slice's checksum
    verified); the binary keys its slices are stored under are not listed (TF's
    `debug_string` does show them for V2, and so does ours, to match it byte for byte).
    `format_version` is 2 for bundles, 1 for legacy V1 tables and 0 for a `.safetensors`
    or `.npz` file (`format` names it: "v2", "v1", "safetensors", "npz").

    A `.safetensors` or `.npz` file (chosen by its extension) is read as it is: its
    header is checked on open (offsets inside the file; no object arrays, nothing is
    ever unpickled) and each tensor read when asked for. Those formats hold no
    checksums, so there is no crc32c to verify; `files` is the file itself, `num_shards`
    1, `slices()` empty, `object_graph()` None unless a `_CHECKPOINTABLE_OBJECT_GRAPH`
    string is stored, and `entry()` raises UnsupportedError. `mmap` does not apply:
    every tensor is a new array.

    `mmap=True` makes `get_tensor` return read-only numpy views of the memory-mapped
    data shard instead of new arrays (no copy, pages read on first touch); the crc32c
    is still checked on every call unless `verify=False`. `get_tensor(name, copy=...)`
    chooses per call. A view stays valid after `close()` (the mapping lives as long as
    an array uses it); checkpoint files are replaced by rename, never rewritten in
    place, so a view keeps showing the bytes it was checked against. String tensors,
    partitioned variables, big-endian bundles and V1 checkpoints are always copied.

    `framework="torch"` or `"jax"` (and `device=`, e.g. "cuda") make `get_tensor`, `[]`
    and `get_slice` return that framework's tensors (see ckptkit.frameworks);
    `get_slice(name)[window]` reads only the window (see ckptkit.slicing).
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = True, mmap: bool = False,
                 as_prefix: bool = False, framework: str = "numpy", device: Any = None) -> None:
        self.prefix = resolve_prefix(path, as_prefix=as_prefix)
        self._target = _framework_target(framework, device, path=self.prefix)  # before any data is read
        self.framework = framework
        self.verify = verify
        self.mmap = mmap
        self.generation = 0  # how many times a replaced checkpoint was reopened (see get_tensor)
        self._open()

    def _open(self) -> None:
        fmt = naming.tensor_file_format(self.prefix)
        if os.path.isfile(naming.index_filename(self.prefix)):
            self._backend: _V2 | _V1 | _TensorFile = _V2(self.prefix)
        elif fmt is not None and os.path.isfile(self.prefix):
            self._backend = _TensorFile(self.prefix, fmt)
        else:
            self._backend = _V1(self.prefix)
        self._index = self._backend.index  # V2 only (None for V1): for index-level tools
        self._data = self._backend.data
        self._names = self._backend.names()
        self._name_set = set(self._names)
        self._meta_map: dict[str, tuple[int, tuple[int, ...]]] | None = None

    # ---- TF's CheckpointReader API
    def get_variable_to_shape_map(self) -> dict[str, list[int]]:
        metas = self._metas()
        with bundle.gc_paused():
            return {k: list(shape) for k, (_, shape) in metas.items()}

    def get_variable_to_dtype_map(self) -> dict[str, _dtypes.DType]:
        metas = self._metas()
        enums = [enum for enum, _ in metas.values()]
        first = dict(zip(reversed(enums), reversed(list(metas)), strict=True))  # a bad dtype names its first key
        found = {enum: _dtypes.from_enum(enum, path=self.prefix, key=k) for enum, k in first.items()}
        return dict(zip(metas, map(found.__getitem__, enums), strict=True))

    def _metas(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """{name: (dtype enum, shape)} of every listed tensor, decoded once per reader."""
        if self._meta_map is None:
            self._meta_map = self._backend.metas()
        return self._meta_map

    def has_tensor(self, name: str) -> bool:
        return name in self._name_set

    def get_tensor(self, name: str, *, copy: bool | None = None) -> np.ndarray:
        """The tensor `name`, crc32c verified (unless the reader has verify=False).

        `copy=False` returns a read-only view of the mapped shard where the data allow it
        (see the class doc); the default follows the reader's `mmap` option. With a
        `framework`, the framework's tensor instead (torch tensors never view the map).
        """
        copy = not self.mmap if copy is None else copy
        target = self._target
        if target is not None:
            return self._reading(name, lambda b: target.read(b, name, self.verify, copy, path=self.prefix))
        return self._reading(name, lambda b: b.read(name, self.verify, copy))

    def get_slice(self, name: str) -> PartialTensor:
        """`name` to be read in part: `reader.get_slice(name)[a:b, :, 3]` reads only those
        elements (`.get_shape()`, `.get_dtype()` read nothing); see ckptkit.slicing."""
        from .slicing import PartialTensor  # noqa: PLC0415 - only partial reads need it

        return PartialTensor(self, name)

    def _reading(self, name: str, read: Callable[[Any], _T]) -> _T:
        """`read(backend)` for tensor `name`, reopening a checkpoint replaced under the reader."""
        for attempt in range(_REOPENS + 1):
            if name not in self._name_set:
                raise TensorNotFoundError("tensor not found in checkpoint", path=self.prefix, key=name)
            try:
                return read(self._backend)
            except bundle.IndexReplacedError:
                if attempt == _REOPENS:
                    raise
                # A writer replaced the checkpoint (a re-save of this prefix) after this
                # reader read its index: read the new one, as a fresh reader would.
                self._backend.close()
                self._open()
                self.generation += 1
        raise AssertionError("unreachable")

    def debug_string(self) -> bytes:
        """TF's format: one `name (DT_FLOAT) [2,3]` line per tensor, as bytes."""
        return self._backend.debug_string()

    # ---- extras
    @property
    def format_version(self) -> int:
        return self._backend.format_version

    @property
    def format(self) -> str:
        """"v2", "v1", "safetensors" or "npz"."""
        backend = self._backend
        return backend.format if isinstance(backend, _TensorFile) else f"v{backend.format_version}"

    @property
    def num_shards(self) -> int:
        """Data shards of a V2 bundle; files of a V1 checkpoint; 1 for a .npz/.safetensors file."""
        backend = self._backend
        if isinstance(backend, _TensorFile):
            return 1
        if isinstance(backend, _V1):
            return len(backend.checkpoint.files)
        return backend.index.num_shards

    @property
    def files(self) -> list[str]:
        """The files holding this checkpoint's tensors (V2: the index and the data shards
        its entries reference, every entry validated; a header's shard count alone
        names no file; a .npz/.safetensors file: itself)."""
        backend = self._backend
        if isinstance(backend, _TensorFile):
            return [backend.path]
        if isinstance(backend, _V1):
            return list(backend.checkpoint.files)
        n = backend.index.num_shards
        return [backend.index.path] + [naming.data_filename(self.prefix, s, n)
                                       for s in backend.data.referenced_shards()]

    def entry(self, name: str):
        """The raw BundleEntryProto for `name` (dtype, shape, shard, offset, size, crc); V2 only.

        A partitioned variable's entry lists its `slices` and holds no data itself.
        """
        if isinstance(self._backend, _TensorFile):
            raise UnsupportedError(f"{self._backend.format} files have no bundle entries",
                                   path=self.prefix, key=name)
        if self._index is None:
            raise UnsupportedError("V1 checkpoints have no bundle entries", path=self.prefix, key=name)
        return self._entry(name)

    def slices(self, name: str) -> list:
        """The TensorSlices a partitioned tensor is stored as ([] for a tensor stored whole)."""
        from .format.slices import TensorSlice  # noqa: PLC0415 - rarely needed

        if name not in self._name_set:
            raise TensorNotFoundError("tensor not found in checkpoint", path=self.prefix, key=name)
        backend = self._backend
        if isinstance(backend, _TensorFile):
            return []
        if isinstance(backend, _V1):
            found = backend.checkpoint.slices(name)
            return found if len(found) > 1 else []
        return [TensorSlice.from_proto(p) for p in self._entry(name).slices]

    def object_graph(self):
        """The TF2 object graph (`ckptkit.objectgraph.ObjectGraph`), or None for TF1 checkpoints."""
        from .objectgraph import ObjectGraph  # noqa: PLC0415 - only TF2 tools need it

        return ObjectGraph.from_reader(self)

    def _entry(self, name: str):
        assert self._index is not None  # V2 only: callers turn V1 away first
        try:
            return self._index.entry(name)
        except KeyError:
            raise TensorNotFoundError("tensor not found in checkpoint", path=self.prefix, key=name) from None

    # ---- Mapping protocol
    def __getitem__(self, name: str) -> np.ndarray:
        return self.get_tensor(name)

    def __contains__(self, name: object) -> bool:
        return name in self._name_set

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<CheckpointReader {self.prefix!r}: {len(self)} tensors>"


def NewCheckpointReader(path: str | os.PathLike) -> CheckpointReader:  # noqa: N802 - TF's name
    """TF's `NewCheckpointReader`: `path` is a save prefix first (`PATH.index` wins over a
    directory `PATH`), then resolved like `load_checkpoint`."""
    return CheckpointReader(path, as_prefix=True)


def load_checkpoint(path: str | os.PathLike) -> CheckpointReader:
    """TF's `tf.train.load_checkpoint`: a directory means its latest checkpoint."""
    return CheckpointReader(path)


def list_variables(path: str | os.PathLike) -> list[tuple[str, list[int]]]:
    """[(name, shape)] sorted by name, like `tf.train.list_variables`."""
    with CheckpointReader(path) as reader:
        return sorted(reader.get_variable_to_shape_map().items())


def load_variable(path: str | os.PathLike, name: str) -> np.ndarray:
    """One tensor of a checkpoint, like `tf.train.load_variable`: a trailing `:0` (a
    graph tensor's name, `v:0`) is dropped first, as TF drops it; `v:1` is left alone."""
    if isinstance(name, str) and name.endswith(":0"):
        name = name[:-2]
    with CheckpointReader(path) as reader:
        return reader.get_tensor(name)


def load(path: str | os.PathLike, *, framework: str = "numpy", device: Any = None) -> dict[str, Any]:
    """Every tensor of a checkpoint, as {name: array}: all from one checkpoint, even when a
    writer replaces it meanwhile (then the new one is read whole). `framework="torch"` or
    `"jax"` (with `device=`, e.g. "cuda") gives that framework's tensors instead."""
    with CheckpointReader(path, framework=framework, device=device) as reader:
        for _ in range(_REOPENS):
            generation = reader.generation
            try:
                values = {name: reader.get_tensor(name) for name in list(reader)}
            except TensorNotFoundError:  # a name of the checkpoint that was replaced
                if reader.generation == generation:
                    raise
                continue
            if reader.generation == generation:
                return values
        raise bundle.IndexReplacedError("the checkpoint was replaced again and again while it was "
                                        "being read", path=reader.prefix)
