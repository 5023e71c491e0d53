"""CheckpointReader: what TF's `tf.train.load_checkpoint` gives, without TensorFlow.

Opens whatever path a user has (resolved by location.py: a prefix, any file of a
checkpoint, a legacy V1 file or shard pattern, a directory holding a `checkpoint` state
file, a SavedModel, a `.npz` or `.safetensors` file, at a local path or a URL), then reads
its metadata eagerly (it is small) and tensor data lazily, one tensor at a time. V2
bundles, V1 tables, `.safetensors` and `.npz` files answer through the same API;
partitioned variables of either TF format are listed and returned whole, as TF lists them.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import dtypes as _dtypes
from . import storage
from .errors import CheckpointChangedError, InvalidArgumentError, TensorNotFoundError, UnsupportedError
from .formats import bundle_index, registry
from .location import locate, resolve_prefix  # resolve_prefix re-exported: part of this module's API

if TYPE_CHECKING:
    import numpy as np

    from .formats.objectgraph import ObjectGraph
    from .formats.slices import TensorSlice
    from .formats.window import Axis
    from .integrations.frameworks import Target
    from .proto.tensor_bundle_pb2 import BundleEntryProto
    from .slicing import PartialTensor

_T = TypeVar("_T")

__all__ = ["CheckpointReader", "NewCheckpointReader", "load_checkpoint", "resolve_prefix",
           "list_variables", "load_variable", "load"]

CHUNK_BYTES = 8 << 20  # what `iter_chunks` yields at most, by default


def _cut(flat: np.ndarray, chunk_bytes: int) -> Iterator[np.ndarray]:
    if flat.dtype.kind == "O":  # strings come whole, as from a V2 bundle
        if flat.size:
            yield flat
        return
    step = max(1, chunk_bytes // max(flat.dtype.itemsize, 1))
    for start in range(0, flat.size, step):
        yield flat[start:start + step]


def _framework_target(framework: str | None, device: Any, path: str) -> Target | None:
    """frameworks.target(...), importing that module only for framework tensors."""
    if framework in (None, "numpy", "np") and device in (None, "cpu"):
        return None
    from .integrations.frameworks import target  # noqa: PLC0415 - framework tensors only

    return target(framework, device, path=path)


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
    and `get_slice` return that framework's tensors (see ckptkit.integrations.frameworks; safetensors'
    names "pt", "flax" and "np" work too, and `framework` then holds ours). Entries the
    framework cannot hold (strings such as the TF2 object graph, dtypes it lacks) stay
    listed; `get_tensor` refuses them with an UnsupportedError naming file and key, and
    `unsupported_names()` lists them with the reason (what `load` leaves out).
    `get_slice(name)[window]` reads only the window (see ckptkit.slicing).

    `raw_names=True` (or a Location's `raw_names`) keys a Keras 3 file's tensors by their
    HDF5 paths (`layers/dense/vars/0`) instead of LAYER/VAR; other formats have no other names.
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = True, mmap: bool = False,
                 as_prefix: bool = False, framework: str = "numpy", device: Any = None,
                 storage_options: Mapping[str, Any] | None = None, raw_names: bool = False) -> None:
        self.storage_options = storage_options
        with storage.options(storage_options):
            location = locate(path, as_prefix=as_prefix)
        self.raw_names = raw_names or location.raw_names
        self.prefix = location.prefix
        self._format = location.format  # a reopen (a re-saved V2 index) keeps it
        self._target = _framework_target(framework, device, self.prefix)  # before any data is read
        self.framework = "numpy" if self._target is None else self._target.framework  # aliases resolved
        self.verify = verify
        self.mmap = mmap
        self.generation = 0  # how many times a replaced checkpoint was reopened (see get_tensor)
        self._open()

    def _open(self) -> None:
        with storage.options(self.storage_options):
            self._open_backend()

    def _open_backend(self) -> None:
        self._backend: registry.Backend = registry.get(self._format).open_backend(self.prefix, self.raw_names)
        self._index = self._backend.index  # V2 only (None for other formats): for index-level tools
        self._names = self._backend.names()
        self._name_set = set(self._names)
        self._meta_map: dict[str, tuple[int, tuple[int, ...]]] | None = None
        # get_tensor's short way for numpy copies of V2 tensors (see BundleReader.read_copy)
        self._copy: Callable[[str, bool], np.ndarray] | None = \
            self._first_copy if self._index is not None else None

    def _first_copy(self, name: str, verify: bool) -> np.ndarray:
        """get_tensor's first V2 copy: opens the data reader and keeps its short way."""
        self._copy = self._bundle_data().read_copy
        return self._copy(name, verify)

    # ---- TF's CheckpointReader API
    def get_variable_to_shape_map(self) -> dict[str, list[int]]:
        metas = self._metas()
        with bundle_index.gc_paused():
            return {k: list(shape) for k, (_, shape) in metas.items()}

    def get_variable_to_dtype_map(self) -> dict[str, _dtypes.DType]:
        metas = self._metas()
        enums = [enum for enum, _ in metas.values()]
        distinct = set(enums)
        if not all(map(_dtypes.known_enum, distinct)):
            for key, (enum, _) in metas.items():  # the error names the first key with a bad dtype
                _dtypes.from_enum(enum, path=self.prefix, key=key)
        found = {enum: _dtypes.from_enum(enum) for enum in distinct}
        return dict(zip(metas, map(found.__getitem__, enums), strict=True))

    def _metas(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """{name: (dtype enum, shape)} of every listed tensor, decoded once per reader."""
        if self._meta_map is None:
            self._meta_map = self._backend.metas()
        return self._meta_map

    def tensor_dtype(self, name: str) -> _dtypes.DType:
        """`get_variable_to_dtype_map()[name]` without building the map: per-tensor loops
        over a checkpoint of 100k tensors (stats) stay linear."""
        meta = self._metas().get(name)
        if meta is None:
            raise TensorNotFoundError("tensor not found in checkpoint", path=self.prefix, key=name)
        return _dtypes.from_enum(meta[0], path=self.prefix, key=name)

    def has_tensor(self, name: str) -> bool:
        return name in self._name_set

    def get_tensor(self, name: str, *, copy: bool | None = None, sharding: Any = None) -> np.ndarray:
        """The tensor `name`, crc32c verified (unless the reader has verify=False).

        `copy=False` returns a read-only view of the mapped shard where the data allow it
        (see the class doc); the default follows the reader's `mmap` option. With a
        `framework`, the framework's tensor instead (torch tensors never view the map).

        `sharding` (a jax Sharding; the reader's framework must be "jax"): a sharded
        jax.Array built by `jax.make_array_from_callback`, each device's window read by
        `get_slice` (only its bytes; a window that is the whole tensor or a whole slice
        of a partitioned variable crc32c checked, a partial one not: see ckptkit.slicing).
        """
        if sharding is not None:
            return self._sharded(name, sharding)
        copy = not self.mmap if copy is None else copy
        target = self._target
        if copy and target is None and self._copy is not None and name in self._name_set:
            try:
                return self._copy(name, self.verify)
            except bundle_index.IndexReplacedError:
                pass  # the checkpoint was replaced: _reading reopens it
        if target is not None:
            refusal = self._refusal(name) if name in self._name_set else None
            if refusal is not None:  # before any data is read
                raise UnsupportedError(refusal, path=self.prefix, key=name)
            return self._reading(name, lambda b: target.read(b, name, self.verify, copy, path=self.prefix))
        return self._reading(name, lambda b: b.read(name, self.verify, copy))

    def unsupported_names(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """{name: why} for the tensors (of `names`, default all) this reader's framework
        cannot hand back: strings (the TF2 object graph among them) and dtypes the
        framework lacks or that ckptkit cannot decode. `get_tensor` raises the reason as an
        UnsupportedError; `load` leaves these out. Always empty for numpy."""
        if self._target is None:
            return {}
        found = {}
        for name in self._names if names is None else names:
            if name not in self._name_set:
                raise TensorNotFoundError("tensor not found in checkpoint", path=self.prefix, key=name)
            refusal = self._refusal(name)
            if refusal is not None:
                found[name] = refusal
        return found

    def _refusal(self, name: str) -> str | None:
        """Why this reader's framework cannot hold tensor `name` (None: it can, or numpy)."""
        if self._target is None:
            return None
        enum = self._backend.dtype_enum(name)
        if not _dtypes.known_enum(enum):
            return f"unsupported TensorFlow DataType {enum}"
        refusal = self._target.refusal(_dtypes.from_enum(enum))
        from .formats.objectgraph import OBJECT_GRAPH_KEY  # noqa: PLC0415 - framework readers only

        if refusal is not None and name == OBJECT_GRAPH_KEY:
            return ("the TF2 object graph is a serialized proto, not a tensor (reader.object_graph() "
                    f"parses it): {refusal}")
        return refusal

    def get_tensors(self, names: Iterable[str]) -> dict[str, Any]:
        """{name: tensor} for `names` (in their order), all from one checkpoint: as
        `get_tensor` gives each (crc32c verified unless verify=False; a missing name is
        TensorNotFoundError, a damaged tensor DataLossError naming it), but read in few
        large reads.

        For numpy copies of a V2 checkpoint, each data shard is read in offset order,
        small tensors coalesced into runs of up to 8 MiB (one read each, then every
        tensor checked and copied out), the store's threads reading ahead while others
        check (see `BundleReader.read_many`): one read call per run instead of one per
        tensor, which a cold disk or a remote store feels most. If a writer replaces the
        checkpoint meanwhile, the new one is read from the start, as `get_tensor` does.
        """
        names = list(names)
        for name in names:
            if name not in self._name_set:
                raise TensorNotFoundError("tensor not found in checkpoint", path=self.prefix, key=name)
        copy = not self.mmap
        if not (copy and self._target is None and self._index is not None):
            return self._consistent(lambda: {name: self.get_tensor(name) for name in names})
        return self._reading_all(names, lambda b: self._bundle_data().read_many(names, self.verify))

    def _consistent(self, read: Callable[[], _T]) -> _T:
        """`read()` (which reads through get_tensor), again if a reopen happened meanwhile:
        the result then comes from one checkpoint."""
        for _ in range(_REOPENS):
            generation = self.generation
            found = read()
            if self.generation == generation:
                return found
        raise bundle_index.IndexReplacedError("the checkpoint was replaced again and again while it was "
                                              "being read", path=self.prefix)

    def get_slice(self, name: str) -> PartialTensor:
        """`name` to be read in part: `reader.get_slice(name)[a:b, :, 3]` reads only those
        elements (`.get_shape()`, `.get_dtype()` read nothing); see ckptkit.slicing."""
        return self._partial(name, self._target)

    def _sharded(self, name: str, sharding: Any) -> Any:
        target = self._target
        if target is None or target.framework != "jax":
            raise InvalidArgumentError(f"sharding= builds jax arrays: open the reader with framework='jax' "
                                       f"(it has framework={self.framework!r})", path=self.prefix, key=name)
        partial = self._partial(name, None)  # numpy windows, which jax places on each device
        return target.sharded(partial.shape, partial.dtype, sharding, partial.__getitem__, path=self.prefix,
                              key=name)

    def _partial(self, name: str, target: Target | None) -> PartialTensor:
        """get_slice's object, its windows in `target`'s framework (None: numpy)."""
        from .slicing import PartialTensor, read_window  # noqa: PLC0415 - only partial reads need it

        if name not in self._name_set:
            raise TensorNotFoundError("tensor not found in checkpoint", path=self.prefix, key=name)
        dtype = _dtypes.from_enum(self._metas()[name][0], path=self.prefix, key=name)

        def read(axes: tuple[Axis, ...]) -> Any:
            arr = self._reading(name, lambda backend: read_window(backend, name, axes, self.verify))
            return arr if target is None else target.convert(arr, dtype, path=self.prefix, key=name)

        return PartialTensor(name, dtype, self._metas()[name][1], read, path=self.prefix)

    def _reading_all(self, names: Sequence[str], read: Callable[[Any], _T]) -> _T:
        """`read(backend)` for tensors `names`, reopening a checkpoint replaced under the reader."""
        for attempt in range(_REOPENS + 1):
            for name in names:
                if name not in self._name_set:
                    raise TensorNotFoundError("tensor not found in checkpoint", path=self.prefix, key=name)
            try:
                return read(self._backend)
            except (bundle_index.IndexReplacedError, CheckpointChangedError):  # (storage: a file read was replaced)
                if attempt == _REOPENS:
                    raise
                self._reopen()
                gone = [name for name in names if name not in self._name_set]
                if gone:  # listed by the checkpoint opened, absent from the one that replaced it
                    raise CheckpointChangedError(
                        "the checkpoint was replaced while it was being read, and the new one has no "
                        "tensor of this name (an edit renamed or removed it); open it again", path=self.prefix,
                        key=gone[0]) from None
        raise AssertionError("unreachable")

    def _reopen(self) -> None:
        """A writer replaced the checkpoint (a re-save of this prefix) after this reader
        read its index: read the new one, as a fresh reader would."""
        self._backend.close()
        self._open()
        self.generation += 1

    def _reading(self, name: str, read: Callable[[Any], _T]) -> _T:
        """`read(backend)` for tensor `name`, reopening a checkpoint replaced under the reader."""
        return self._reading_all((name,), read)

    def iter_chunks(self, name: str, chunk_bytes: int = CHUNK_BYTES, *, part: TensorSlice | None = None,
                    in_order: bool = False) -> Iterator[np.ndarray]:
        """The tensor `name` as flat arrays of at most `chunk_bytes` each: statistics,
        averages and diffs over tensors of any size in bounded memory.

        V2 data is read range by range, its crc32c summed across the whole entry and
        checked after the last chunk (DataLossError then: use what the chunks gave only
        once the iteration has completed). A partitioned V2 tensor yields its slices one
        after the other, so the elements come in storage order, not the tensor's C
        order, unless `in_order` (then it is read whole, reassembled, and cut); `part`
        (one of `slices(name)`) reads that slice alone. Other formats (V1, .npz,
        .safetensors) and strings are read whole, then cut. Two tensors of one dtype
        and shape read `in_order` come in chunks of the same elements.
        """
        if name not in self._name_set:
            raise TensorNotFoundError("tensor not found in checkpoint", path=self.prefix, key=name)
        index = self._index
        if index is not None and (part is not None or not in_order or not self._entry(name).slices):
            key = name
            if part is not None:
                from .formats.slices import encode_tensor_name_slice  # noqa: PLC0415 - rarely needed

                key = bundle_index.decode_key(encode_tensor_name_slice(name, part))
                if key not in index:
                    raise TensorNotFoundError(f"no slice {part.spec()} stored", path=self.prefix, key=name)
            return self._bundle_data().read_chunks(key, chunk_bytes, verify=self.verify)
        if part is not None:
            raise UnsupportedError("slices are read one by one from V2 checkpoints only", path=self.prefix, key=name)
        return _cut(self.get_tensor(name).reshape(-1), chunk_bytes)

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
        return self._backend.format

    @property
    def num_shards(self) -> int:
        """Data shards of a V2 bundle; files of a V1 checkpoint; 1 for a .npz/.safetensors file."""
        return self._backend.num_shards

    @property
    def files(self) -> list[str]:
        """The files holding this checkpoint's tensors (V2: the index and the data shards
        its entries reference, every entry validated; a header's shard count alone
        names no file; a .npz/.safetensors file: itself)."""
        return self._backend.files()

    def entry(self, name: str) -> BundleEntryProto:
        """The raw BundleEntryProto for `name` (dtype, shape, shard, offset, size, crc); V2 only.

        A partitioned variable's entry lists its `slices` and holds no data itself.
        """
        if self._index is None:
            raise UnsupportedError(self._backend.no_entries, path=self.prefix, key=name)
        return self._entry(name)

    def slices(self, name: str) -> list[TensorSlice]:
        """The TensorSlices a partitioned tensor is stored as ([] for a tensor stored whole)."""
        if name not in self._name_set:
            raise TensorNotFoundError("tensor not found in checkpoint", path=self.prefix, key=name)
        return self._backend.slices(name)

    def metadata(self) -> dict[str, str] | None:
        """A `.safetensors` file's `__metadata__` (str -> str; `{}` if stored empty), or None
        when it holds none: what safetensors' `safe_open(path, ...).metadata()` returns for
        the same file. Other formats store no such dict: None (TF's own metadata, the
        object graph and the .meta graph, have `object_graph()` and ckptkit.tf1.metagraph)."""
        found = self._backend.metadata()
        return None if found is None else dict(found)

    def object_graph(self) -> ObjectGraph | None:
        """The TF2 object graph (`ckptkit.formats.objectgraph.ObjectGraph`), or None for TF1 checkpoints."""
        from .formats.objectgraph import ObjectGraph  # noqa: PLC0415 - only TF2 tools need it

        return ObjectGraph.from_reader(self)

    def _bundle_data(self) -> Any:
        """The V2 backend's data reader (format/bundle.BundleReader): callers check `_index` first."""
        return self._backend.data  # type: ignore[attr-defined]  # V2Backend only

    def _entry(self, name: str) -> BundleEntryProto:
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

    def __exit__(self, *exc: object) -> None:
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


def list_variables(path: str | os.PathLike, *,
                   storage_options: Mapping[str, Any] | None = None) -> list[tuple[str, list[int]]]:
    """[(name, shape)] sorted by name, like `tf.train.list_variables`."""
    with CheckpointReader(path, storage_options=storage_options) as reader:
        return sorted(reader.get_variable_to_shape_map().items())


def load_variable(path: str | os.PathLike, name: str, *,
                  storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """One tensor of a checkpoint, like `tf.train.load_variable`: a trailing `:0` (a
    graph tensor's name, `v:0`) is dropped first, as TF drops it; `v:1` is left alone."""
    if isinstance(name, str) and name.endswith(":0"):
        name = name[:-2]
    with CheckpointReader(path, storage_options=storage_options) as reader:
        return reader.get_tensor(name)


def load(path: str | os.PathLike, *, framework: str = "numpy", device: Any = None,
         include: str | Iterable[str] | None = None, exclude: str | Iterable[str] | None = None,
         storage_options: Mapping[str, Any] | None = None, sharding: Any = None) -> dict[str, Any]:
    """Every tensor of a checkpoint (or those chosen), as {name: array}: all from one
    checkpoint, even when a writer replaces it meanwhile (then the new one is read whole).

    `framework="torch"` or `"jax"` (or safetensors' "pt", "flax"; with `device=`, e.g.
    "cuda") gives that framework's tensors instead. What it cannot hold (strings such as
    the TF2 object graph, dtypes it lacks: see `CheckpointReader.unsupported_names`) is
    left out, with one note on the "ckptkit" logger naming them (INFO when it is only the
    object graph, which every TF2 checkpoint has; WARNING otherwise), so a whole TF2
    checkpoint loads; numpy holds everything.

    `include`/`exclude`: a glob or a list of globs on tensor names, with the CLI's rules
    (`ckptkit.selection.select`: fnmatch, `*` crosses `/`; a glob matching nothing, or
    filters leaving nothing, is an InvalidArgumentError naming it and the checkpoint). A
    tensor included by its own name (no wildcard) that the framework cannot hold is an
    UnsupportedError naming it, as `get_tensor` raises; globs leave such tensors out. `path` may be a URL
    (`storage_options`: the fsspec store's options, e.g. credentials).

    `sharding` (framework="jax"): sharded jax.Arrays, each device reading only its
    window (`get_tensor(name, sharding=...)`): one jax Sharding for every tensor,
    {name: Sharding} (the others unsharded), or a function (name, shape) -> Sharding or
    None (see ckptkit.integrations.frameworks.sharding_for)."""
    from .selection import as_patterns  # noqa: PLC0415 - only selections need it

    where = storage.fspath(path)
    includes, excludes = as_patterns(include, "include", where), as_patterns(exclude, "exclude", where)
    with CheckpointReader(path, framework=framework, device=device, storage_options=storage_options) as reader:
        for _ in range(_REOPENS):
            generation = reader.generation
            names, left_out = _chosen(reader, includes, excludes)
            try:
                values = reader.get_tensors(names) if sharding is None else _sharded(reader, names, sharding)
            except CheckpointChangedError:  # a name of the checkpoint that was replaced: list again
                continue
            # get_tensors reads all of `names` from one checkpoint: whole if it has no others
            if reader.generation == generation or _chosen(reader, includes, excludes)[0] == names:
                _note_left_out(reader, left_out)
                return values
        raise bundle_index.IndexReplacedError("the checkpoint was replaced again and again while it was "
                                              "being read", path=reader.prefix)


def _sharded(reader: CheckpointReader, names: list[str], sharding: Any) -> dict[str, Any]:
    """load's tensors with `sharding=`: each laid out as `sharding_for` says, all from one checkpoint."""
    from .integrations.frameworks import sharding_for  # noqa: PLC0415 - framework readers only

    metas = reader._metas()
    return reader._consistent(lambda: {
        name: reader.get_tensor(name, sharding=sharding_for(sharding, name, metas[name][1])) for name in names})


def _chosen(reader: CheckpointReader, includes: list[str], excludes: list[str]) -> tuple[list[str], list[str]]:
    """(names load reads, names it leaves out because the framework cannot hold them).
    A tensor asked for by its own name (an include without wildcards) is never left out
    quietly: if the framework cannot hold it, that is an UnsupportedError naming it."""
    from .selection import select  # noqa: PLC0415 - only selections need it

    names = select(reader, includes, excludes, path=reader.prefix)
    refused = reader.unsupported_names(names)
    for pattern in includes:
        if pattern in refused and not any(c in pattern for c in "*?["):
            raise UnsupportedError(refused[pattern], path=reader.prefix, key=pattern)
    return [n for n in names if n not in refused], [n for n in names if n in refused]


_log = logging.getLogger("ckptkit")
_NOTE_NAMES = 8  # names a left-out note shows before "and N more"


def _note_left_out(reader: CheckpointReader, names: list[str]) -> None:
    """One log record for what `load` left out: how many, which (the first few), each with its dtype."""
    if not names:
        return
    from .formats.objectgraph import OBJECT_GRAPH_KEY  # noqa: PLC0415 - framework readers only

    metas = reader._metas()
    shown = ", ".join(f"{n} ({_dtype_name(metas[n][0])})" for n in names[:_NOTE_NAMES])
    more = f" and {len(names) - _NOTE_NAMES} more" if len(names) > _NOTE_NAMES else ""
    level = logging.INFO if names == [OBJECT_GRAPH_KEY] else logging.WARNING
    _log.log(level, "%s: load(framework=%r) left out %d %s it cannot hold: %s%s "
             "(reader.unsupported_names() says why; framework='numpy' reads everything)",
             reader.prefix, reader.framework, len(names), "entry" if len(names) == 1 else "entries",
             shown, more)


def _dtype_name(enum: int) -> str:
    return _dtypes.from_enum(enum).name if _dtypes.known_enum(enum) else f"DataType {enum}"
