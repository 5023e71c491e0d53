"""Legacy V1 checkpoints: one SSTable of `SavedTensorSlices` per file.

TF1's Saver with `write_version=V1` (and every TF before 0.12) wrote a checkpoint as
one table file `PREFIX` (or shards `PREFIX-00000-of-00002`, ...). Key "" holds the
metadata (`SavedTensorSlices.meta`: every tensor's name, shape, dtype and the slices
this file holds); each slice is stored under its slice key (see slices.py) as
`SavedTensorSlices.data`, a `SavedSlice` whose `TensorProto` holds the values in the
typed repeated field for the dtype (float_val, int_val, half_val, ...). TF's V1
reader reads only those typed fields and never `tensor_content`
(`saved_tensor_slice_util.h` TensorProtoData; `tensor_slice_reader.h` CopySliceData),
so ckptkit ignores `tensor_content` too: a record holding both gives the typed
values, as in TF, and one holding only `tensor_content` is an error (TF 2.21: "not
found in checkpoint file").
Facts from TF's `core/util/tensor_slice_reader.cc`, `tensor_slice_writer.cc` and
`saved_tensor_slice_util.h`. The files carry no checksum of their own besides the
table blocks' crc32c, which TableReader verifies on every block read.

Unlike TF 2.x (which lists sliced V1 checkpoints but cannot read their tensors),
this reader reassembles partitioned tensors from their slices.
"""
from __future__ import annotations

import bisect
import math
import mmap
import os

import numpy as np

from .. import dtypes as _dtypes
from .. import storage
from ..errors import CheckpointError, DataLossError, InvalidArgumentError, NotFoundError, UnsupportedError
from ..proto import saved_tensor_slice_pb2, tensor_pb2
from . import naming
from .slices import TensorSlice, assemble, encode_tensor_name_slice
from .table import FOOTER_SIZE, MAGIC, TableReader, iter_block
from .window import Axis, select

__all__ = ["V1Checkpoint", "V1Backend", "find_v1_files", "is_table_file", "tensor_from_proto", "SHARD_PATTERN",
           "SHARD_GLOB", "find", "holds", "checkpoints_in", "open_backend"]

SavedTensorSlices = saved_tensor_slice_pb2.SavedTensorSlices
CHECKPOINT_VERSION = 1          # TF_CHECKPOINT_VERSION
CHECKPOINT_MIN_PRODUCER = 0     # TF_CHECKPOINT_VERSION_MIN_PRODUCER
SHARD_PATTERN = naming.V1_SHARD_PATTERN  # the names' rules live in naming.py
SHARD_GLOB = naming.V1_SHARD_GLOB


# --------------------------------------------------------------------------- locating files

def is_table_file(path: str) -> bool:
    """True for a regular file that ends with the SSTable footer magic.

    Opened non-blocking and checked to be a regular file before reading, so that a
    FIFO or device where a checkpoint is expected is "not a table", never a hang.
    """
    try:
        with storage.of(path).open(path, "checkpoint file") as f:
            return f.size >= FOOTER_SIZE and int.from_bytes(f.read(8, f.size - 8), "little") == MAGIC
    except CheckpointError:
        return False


def find_v1_files(path: str) -> tuple[str, list[str]] | None:
    """(name, files) of the V1 checkpoint `path` names, or None if it names none.

    `path` may be a V1 file, a glob pattern as TF's Saver records for sharded V1
    checkpoints (`model.ckpt-?????-of-00002`), one shard of such a set (the whole set
    is read), or the prefix of sharded files (`model.ckpt` for `model.ckpt-0000N-of-0000M`).
    `name` is how the checkpoint is called: the file itself, or the shard pattern.
    A shard set with a file missing is a NotFoundError naming the missing file.
    """
    directory, base = os.path.split(path)
    if SHARD_GLOB.search(base):
        files = [f for f in storage.match(directory, base) if storage.of(f).isfile(f)]
        if not files or not all(is_table_file(f) for f in files):
            return None
        counts = sorted({m["count"] for m in map(SHARD_PATTERN.match, files) if m})
        if len(counts) > 1:  # `-?????-of-?????` over two sets: which one is meant?
            raise InvalidArgumentError(f"the pattern matches shards of {len(counts)} V1 checkpoints "
                                       f"(-of-{', -of-'.join(counts)}); name the shard count", path=path)
        m = SHARD_PATTERN.match(files[0])
        return (path, _complete_set(m["base"], m["count"])) if m else (path, files)
    m = SHARD_PATTERN.match(path)
    if m and is_table_file(path):
        return naming.v1_shard_set_pattern(m["base"], m["count"]), _complete_set(m["base"], m["count"])
    if storage.of(path).isfile(path):
        return (path, [path]) if is_table_file(path) else None
    files = [f for f in naming.existing_v1_shards(directory, base) if SHARD_PATTERN.match(f)]
    if files and is_table_file(files[0]):
        last = SHARD_PATTERN.match(files[-1])
        assert last is not None  # files were filtered by this pattern
        count = last["count"]
        return naming.v1_shard_set_pattern(path, count), _complete_set(path, count)
    return None


def _complete_set(base: str, count: str) -> list[str]:
    files = [naming.v1_shard_filename(base, i, count) for i in range(int(count))]
    for f in files:
        if not storage.of(f).isfile(f):
            raise NotFoundError(f"shard {os.path.basename(f)} of this V1 checkpoint is missing", path=f)
    return files


# --------------------------------------------------------------------------- TensorProto values


def tensor_from_proto(proto: tensor_pb2.TensorProto, dtype: _dtypes.DType, shape: tuple[int, ...], *,
                      path: str | None = None, key: str | None = None) -> np.ndarray:
    """The values of a TensorProto as an array of `dtype` and `shape`.

    Values come from the typed field only, as TF's V1 reader takes them: int_val for
    the small integer types, half_val holding float16/bfloat16 bit patterns, (re, im)
    pairs for complex. `tensor_content` is never read (TF ignores it in V1 records;
    a record with both gives the typed values). A field with a different number of
    values than the shape needs is an error (TF refuses it as well).
    """
    count = math.prod(shape)
    if dtype.is_string:
        values = list(proto.string_val)
        if len(values) != count:
            raise DataLossError(f"slice holds {len(values)} strings, shape {list(shape)} needs {count}",
                                path=path, key=key)
        out = np.empty(count, dtype=object)
        out[:] = values
        return out.reshape(shape)
    field = _dtypes.TENSOR_PROTO_FIELD.get(dtype.name)
    if field is None:
        raise UnsupportedError(f"cannot decode {dtype.name} values from a V1 checkpoint", path=path, key=key)
    values = getattr(proto, field)
    per = 2 if field in ("scomplex_val", "dcomplex_val") else 1
    if field == "float8_val":
        got = np.frombuffer(values, dtype=np.uint8)
    elif field == "half_val":
        got = np.asarray(values, dtype=np.int64).astype(np.uint16)
    elif field == "string_val":  # unreachable: strings handled above
        raise AssertionError
    else:
        got = np.asarray(values)
    if got.size != count * per:
        raise DataLossError(f"slice holds {got.size // per} values, shape {list(shape)} needs {count}",
                            path=path, key=key)
    if field in ("half_val", "float8_val"):
        return got.view(dtype.numpy).reshape(shape)
    if per == 2:
        real = np.float32 if field == "scomplex_val" else np.float64
        pairs = got.astype(real).reshape(-1, 2)
        return (pairs[:, 0] + 1j * pairs[:, 1]).astype(dtype.numpy).reshape(shape)
    return got.astype(dtype.numpy).reshape(shape)


# --------------------------------------------------------------------------- reading

class _Tensor:
    __slots__ = ("name", "shape", "dtype_enum", "slices")

    def __init__(self, name: str, shape: tuple[int, ...], dtype_enum: int) -> None:
        self.name = name
        self.shape = shape
        self.dtype_enum = dtype_enum
        self.slices: list[tuple[TensorSlice, int]] = []  # (slice, index of the file holding it)


def _open_table(path: str) -> TableReader:
    with storage.of(path).open(path, "checkpoint file") as f:
        data = f.mmap() or f.read_all()  # a map where the store has one: tables can be big
    return TableReader(data, path)


def _parse(raw: bytes, path: str, key: str | None = None) -> SavedTensorSlices:
    msg = SavedTensorSlices()
    try:
        msg.ParseFromString(bytes(raw))
    except Exception:  # noqa: BLE001 - DecodeError, or others from the C backend
        raise DataLossError("SavedTensorSlices record is not parseable", path=path, key=key) from None
    return msg


class V1Checkpoint:
    """The tensors of a V1 checkpoint (one or more files), read lazily slice by slice."""

    def __init__(self, name: str, files: list[str]) -> None:
        self.name = name
        self.files = list(files)
        self._tables: list[TableReader] = []
        self._tensors: dict[str, _Tensor] = {}
        self._block_cache: dict[int, tuple[int, dict[bytes, bytes]]] = {}
        self._total_bytes = 0
        for i, path in enumerate(self.files):
            table = _open_table(path)
            self._tables.append(table)
            self._total_bytes += len(table.data)
            meta_raw = table.get(b"")
            if meta_raw is None:
                raise DataLossError("no SavedTensorSlices metadata (key '') at the start of the file", path=path)
            meta = _parse(meta_raw, path).meta
            versions = meta.versions
            if versions.producer < CHECKPOINT_MIN_PRODUCER or versions.min_consumer > CHECKPOINT_VERSION \
                    or CHECKPOINT_VERSION in versions.bad_consumers:
                raise UnsupportedError(f"unsupported V1 checkpoint version (producer {versions.producer}, "
                                       f"min_consumer {versions.min_consumer})", path=path)
            for ssm in meta.tensor:
                self._register(ssm, i, path)

    def _register(self, ssm: saved_tensor_slice_pb2.SavedSliceMeta, file_index: int, path: str) -> None:
        name = ssm.name
        if ssm.shape.unknown_rank or any(d.size < 0 for d in ssm.shape.dim):
            raise DataLossError("invalid tensor shape in V1 metadata", path=path, key=name)
        shape = tuple(d.size for d in ssm.shape.dim)
        tensor = self._tensors.get(name)
        if tensor is None:
            tensor = self._tensors[name] = _Tensor(name, shape, ssm.type)
        elif tensor.shape != shape or tensor.dtype_enum != ssm.type:
            raise DataLossError("files of this checkpoint disagree on the tensor's shape or dtype",
                                path=path, key=name)
        for proto in ssm.slice:
            tslice = TensorSlice.from_proto(proto)
            if tslice.rank != len(shape) and not (tslice.rank == 0 and not shape):
                raise DataLossError(f"slice {tslice.spec()} has rank {tslice.rank}, tensor has "
                                    f"shape {list(shape)}", path=path, key=name)
            tensor.slices.append((tslice, file_index))

    # ---- queries
    def names(self) -> list[str]:
        return sorted(self._tensors)

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def __len__(self) -> int:
        return len(self._tensors)

    def _tensor(self, name: str) -> _Tensor:
        return self._tensors[name]  # KeyError for the caller to translate

    def shape(self, name: str) -> tuple[int, ...]:
        return self._tensor(name).shape

    def dtype_enum(self, name: str) -> int:
        return self._tensor(name).dtype_enum

    def num_slices(self, name: str) -> int:
        return len(self._tensor(name).slices)

    def slices(self, name: str) -> list[TensorSlice]:
        return [s for s, _ in self._tensor(name).slices]

    def read(self, name: str) -> np.ndarray:
        """The whole tensor, reassembled from its slices across all files."""
        tensor = self._tensor(name)
        dtype = _dtypes.from_enum(tensor.dtype_enum, path=self.name, key=name)
        count = math.prod(tensor.shape)
        if count > self._total_bytes:
            # Every stored value takes at least one byte of a file (packed varints, raw
            # bytes, length-prefixed strings), so this shape is a lie; refuse it before
            # allocating the output (2^62 elements would be a MemoryError, or worse).
            raise DataLossError(f"metadata claims {count} elements, more than the checkpoint's "
                                f"{self._total_bytes} bytes could hold", path=self.name, key=name)
        _dtypes.check_numpy_shape(tensor.shape, dtype, self.name, name)  # `[0, 2**62]`: 0 elements
        pieces = [(tslice, (lambda s=tslice, f=fi: self._read_slice(tensor, dtype, s, f)))
                  for tslice, fi in tensor.slices]
        if not pieces:
            raise DataLossError("tensor has no slices", path=self.name, key=name)
        if not tensor.shape:  # a scalar: one slice of rank 0 holds it
            return pieces[0][1]()
        return assemble(tensor.shape, dtype.numpy, pieces, path=self.name, key=name)

    def _read_slice(self, tensor: _Tensor, dtype: _dtypes.DType, tslice: TensorSlice, file_index: int) -> np.ndarray:
        path = self.files[file_index]
        key = encode_tensor_name_slice(tensor.name, tslice)
        raw = self._get(file_index, key)
        if raw is None:
            raise DataLossError(f"slice {tslice.spec()} is listed but not stored", path=path, key=tensor.name)
        saved = _parse(raw, path, tensor.name).data
        if saved.name != tensor.name or TensorSlice.from_proto(saved.slice) != tslice:
            raise DataLossError(f"record for slice {tslice.spec()} holds {saved.name!r} "
                                f"{TensorSlice.from_proto(saved.slice).spec()}", path=path, key=tensor.name)
        return tensor_from_proto(saved.data, dtype, tslice.shape_in(tensor.shape), path=path, key=tensor.name)

    def _get(self, file_index: int, key: bytes) -> bytes | None:
        """table.get with the last decoded block of each file kept: reading every tensor in
        name order then decodes each block once instead of once per tensor."""
        table = self._tables[file_index]
        block = bisect.bisect_left(table._index_keys, key)
        if block == table.num_blocks:
            return None
        cached = self._block_cache.get(file_index)
        if cached is None or cached[0] != block:
            entries = {bytes(k): v for k, v in iter_block(table.read_block(*table._handles[block]), table.path)}
            cached = self._block_cache[file_index] = (block, entries)
        value = cached[1].get(key)
        return None if value is None else bytes(value)

    def debug_string(self) -> bytes:
        """TF's TensorSliceReader::DebugString lines (`, N slices` for partitioned ones), by name."""
        lines = []
        for name in self.names():
            t = self._tensors[name]
            line = f"{name} ({_dtypes.enum_name(t.dtype_enum)}) [{','.join(str(d) for d in t.shape)}]"
            if len(t.slices) > 1:
                line += f", {len(t.slices)} slices"
            lines.append(line + "\n")
        return "".join(lines).encode("utf-8", "surrogateescape")

    def close(self) -> None:
        for table in self._tables:
            data = table.data
            if isinstance(data, mmap.mmap):
                try:
                    data.close()
                except BufferError:  # a caller still holds a view: leave it to the GC
                    pass
        self._tables = []
        self._block_cache.clear()


# --------------------------------------------------------------------------- the format's registry hooks

class V1Backend:
    """A legacy V1 checkpoint (one or more table files) behind CheckpointReader's API."""

    format = "v1"
    format_version = 1
    index = None  # no bundle index: the reader's index-level tools refuse V1
    no_entries = "V1 checkpoints have no bundle entries"

    def __init__(self, name: str) -> None:
        found = find_v1_files(name)
        if found is None:
            raise NotFoundError("no V1 checkpoint file at this path", path=name)
        self.checkpoint = V1Checkpoint(*found)

    def names(self) -> list[str]:
        return self.checkpoint.names()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.checkpoint.shape(name)

    def dtype_enum(self, name: str) -> int:
        return self.checkpoint.dtype_enum(name)

    def metas(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        return {k: (self.dtype_enum(k), self.shape(k)) for k in self.names()}

    def read(self, name: str, verify: bool, copy: bool = True) -> np.ndarray:
        return self.checkpoint.read(name)  # block crcs are always verified; V1 has no others

    def read_window(self, name: str, axes: tuple[Axis, ...], verify: bool) -> np.ndarray:
        """The whole tensor, then the window (V1 tables store values as protos)."""
        return select(self.read(name, verify), axes)

    @property
    def num_shards(self) -> int:
        return len(self.checkpoint.files)

    def files(self) -> list[str]:
        return list(self.checkpoint.files)

    def slices(self, name: str) -> list[TensorSlice]:
        found = self.checkpoint.slices(name)
        return found if len(found) > 1 else []

    def metadata(self) -> dict[str, str] | None:
        return None

    def debug_string(self) -> bytes:
        return self.checkpoint.debug_string()

    def close(self) -> None:
        self.checkpoint.close()


def find(path: str) -> str | None:
    """The V1 checkpoint `path` names (its file, or TF's shard pattern), else None."""
    found = find_v1_files(path)
    return None if found is None else found[0]


def holds(prefix: str) -> bool:
    """A prefix a state file names and no other format claims is read as V1: opening it
    says whether it is one (no request made here)."""
    return True


def checkpoints_in(directory: str, listing: list[str]) -> list[str]:
    """The V1 checkpoints of a directory, as `find_v1_files` names them: each set of shards
    `NAME-SSSSS-of-NNNNN` (as the pattern `NAME-?????-of-NNNNN`) and each single V1 file
    `NAME` with a `NAME.meta` beside it. That is what a TF Serving session_bundle export
    holds (`export-00000-of-00001` + `export.meta`), often with a `checkpoint` state file
    naming the directory it was exported to, not this one. Other files are not opened:
    each would be a read on a remote store."""
    present = set(listing)
    meta_tail = "." + naming.META_SUFFIX
    candidates = set()
    for name in listing:
        m = naming.V1_SHARD_PATTERN.match(name)
        if m:
            candidates.add(m["base"])
        elif name.endswith(meta_tail) and name[: -len(meta_tail)] in present:
            candidates.add(name[: -len(meta_tail)])
    found = []
    for base in sorted(candidates):
        hit = find_v1_files(storage.join(directory, base))
        if hit is not None:
            found.append(hit[0])
    return found


def open_backend(name: str) -> V1Backend:
    return V1Backend(name)
