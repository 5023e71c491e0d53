"""Writing a V2 tensor bundle: `BundleWriter`, the one place its bytes are laid out.

Every writer of a V2 checkpoint (`ckptkit.save`, the Saver, `Checkpoint`, the
CheckpointManager, convert, average, merge and the index-rewriting edits) opens a
`storage.Commit` and writes the bundle through one `BundleWriter` over it: data shards
(new ones streamed, existing ones linked or kept), entries (TF's BundleEntryProto per
tensor; strings in TF's layout, `string_parts`; partitioned variables as a full-shape
entry plus one entry per slice, as TF's `BundleWriter::AddSlice`), then `finish()`,
which writes the `.index` (an SSTable, sorted keys, the header under "") into the same
transaction after the shards and names it the commit's anchor (readers find a commit
in flight through it). What the caller adds after `finish` (a `.meta`, the `checkpoint`
state file, deletions of pruned checkpoints) is published after the index, in the same
commit. Facts from TF's `core/util/tensor_bundle/tensor_bundle.cc`: ckptkit's output
is byte-identical to TF's SaveV2.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import dtypes as _dtypes
from .. import storage
from ..errors import DataLossError, InvalidArgumentError
from ..storage.base import ReadHandle, copy_range
from ..storage.files import AtomicFile
from ..storage.lock import EDIT_WAIT_SECONDS
from .bundle_index import (
    BUNDLE_VERSION,
    HEADER_KEY,
    LITTLE,
    BundleEntryProto,
    BundleHeaderProto,
    decode_key,
    encode_key,
    shape_of,
)
from .coding import FIXED32, crc32c, encode_varints, mask_crc, string_length_bytes
from .naming import data_filename, existing_data_files, index_filename, meta_graph_filename
from .slices import SlicedTensor, TensorSlice, encode_tensor_name_slice
from .table import TableWriter
from .values import Deferred, as_array, contiguous, loaded

if TYPE_CHECKING:
    from ..storage.base import NewFile, Progress, ShardFile, Transaction

__all__ = ["BundleWriter", "drop_stale", "make_entry", "make_header", "string_parts", "write_bundle",
           "write_index", "write_tensors"]


# --------------------------------------------------------------------------- the byte layout

def _string_element(value: object, key: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview, np.bytes_)):
        return bytes(value)
    raise InvalidArgumentError(f"string tensor holds a {type(value).__name__}, not str/bytes", key=key)


def string_parts(arr: np.ndarray, key: str) -> tuple[bytes, bytes, int, bytes]:
    """A DT_STRING tensor's on-disk parts: (varint lengths, their 4-byte masked crc32c,
    crc32c of the lengths as TF sums them (unmasked), the strings' bytes joined).

    Stored in that order; the entry's crc is crc32c(bytes, crc32c(checksum, lengths crc))
    (TF's WriteStringTensor): see `BundleWriter.add`.
    """
    items = arr.reshape(-1).tolist()
    if not all(type(b) is bytes for b in items):
        items = [_string_element(v, key) for v in items]
    lengths = np.fromiter(map(len, items), dtype=np.uint64, count=len(items))
    lengths_crc = crc32c(string_length_bytes(lengths))
    return encode_varints(lengths), FIXED32.pack(mask_crc(lengths_crc)), lengths_crc, b"".join(items)


def make_entry(dtype_enum: _dtypes.DataType, shape: tuple[int, ...], shard: int, offset: int, size: int,
               crc_masked: int) -> BundleEntryProto:
    entry = BundleEntryProto(dtype=dtype_enum, shard_id=shard, offset=offset, size=size, crc32c=crc_masked)
    entry.shape.SetInParent()  # TF always writes the shape, even a scalar's empty one
    for d in shape:
        entry.shape.dim.add(size=d)
    return entry


def make_header(num_shards: int, endianness: BundleHeaderProto.Endianness = LITTLE) -> BundleHeaderProto:
    header = BundleHeaderProto(num_shards=num_shards, endianness=endianness)
    header.version.producer = BUNDLE_VERSION
    return header


def write_index(prefix: str, header: BundleHeaderProto,
                entries: Iterable[tuple[str | bytes, bytes]], out: NewFile | None = None) -> NewFile:
    """Write an index (entries: key, serialized entry; sorted here) to a temp file, flushed
    and fsynced: `out` (a transaction's file, which publishes it: what `BundleWriter.finish`
    passes) or a new AtomicFile, which the caller commits (tests plant hand-made indexes so)."""
    out = AtomicFile(index_filename(prefix)) if out is None else out
    try:
        table = TableWriter(out)
        table.add(b"", header.SerializeToString())
        for key, value in sorted((encode_key(k), v) for k, v in entries):
            table.add(key, value)
        table.finish()
        out.close()
    except BaseException:
        out.discard()
        raise
    return out


# --------------------------------------------------------------------------- the writer

class BundleWriter:
    """One V2 bundle at `prefix`, written into the open transaction `tx`.

    With `new_shards` (the default) every one of the `num_shards` data shards is a new
    file, created now (so published before the index) and filled by `add`/`add_slice`.
    Edits and merges (`new_shards=False`) say per shard what it is: `new_shard` (rewritten:
    `copy_entry`, `add`), `link_shard` (an existing file's bytes published under the new
    name) or `keep_shard` (the file already at its name stays); their entries, already
    pointing at their bytes, come through `add_entry`. `header` gives the header's
    version and byte order (`num_shards` is set here); default: TF's.
    """

    def __init__(self, tx: Transaction, prefix: str, num_shards: int = 1, *,
                 header: BundleHeaderProto | None = None, new_shards: bool = True,
                 progress: Progress | None = None) -> None:
        if num_shards < 1:
            raise InvalidArgumentError(f"num_shards must be >= 1, got {num_shards}", path=prefix)
        self.tx = tx
        self.prefix = prefix
        self.num_shards = num_shards
        self.header = make_header(num_shards)
        if header is not None:
            self.header.CopyFrom(header)
            self.header.num_shards = num_shards
        self.progress = progress
        self._files: dict[int, ShardFile] = {}
        self._published: set[str] = set()  # data files of the new bundle (new, linked, kept)
        self._entries: dict[str, bytes] = {}
        self._sliced: dict[str, BundleEntryProto] = {}  # partitioned variables' full-shape entries
        self._finished = False
        if new_shards:
            for shard in range(num_shards):
                self.new_shard(shard)

    # ---- the data shards

    def shard_path(self, shard: int) -> str:
        return data_filename(self.prefix, shard, self.num_shards)

    def _claim(self, shard: int) -> str:
        if not 0 <= shard < self.num_shards:
            raise InvalidArgumentError(f"shard {shard} of {self.num_shards}", path=self.prefix)
        path = self.shard_path(shard)
        if path in self._published:
            raise InvalidArgumentError(f"data shard {shard} given twice", path=path)
        self._published.add(path)
        return path

    def new_shard(self, shard: int) -> ShardFile:
        """Shard `shard` as a new file, streamed (entries go in by `add`, `copy_entry`)."""
        out = self._files[shard] = self.tx.shard(self._claim(shard))
        return out

    def link_shard(self, shard: int, source: str) -> None:
        """Shard `shard` is the existing file `source`, published under its new name."""
        self.tx.link(source, self._claim(shard), progress=self.progress)

    def keep_shard(self, shard: int) -> None:
        """Shard `shard` is the file already at its name (an edit in place), unchanged."""
        self._claim(shard)

    def _out(self, shard: int, key: str | None) -> ShardFile:
        out = self._files.get(shard)
        if out is None:
            raise InvalidArgumentError(f"shard {shard} is not a new shard of this bundle", path=self.prefix,
                                       key=key)
        return out

    # ---- entries

    def _check_new(self, key: str) -> None:
        """`key` may still be added: a name, not taken, the index not yet written."""
        if self._finished:
            raise InvalidArgumentError("the bundle is finished already", path=self.prefix, key=key)
        if not isinstance(key, str) or key == HEADER_KEY:
            raise InvalidArgumentError(f"tensor names must be non-empty strings, got {key!r}", path=self.prefix)
        if key in self._entries or key in self._sliced:
            raise InvalidArgumentError("two tensors would be stored under the same key", path=self.prefix,
                                       key=key)

    def _put(self, key: str, entry: BundleEntryProto | bytes) -> None:
        self._check_new(key)
        self._entries[key] = entry if isinstance(entry, bytes) else entry.SerializeToString()

    def add(self, key: str, value: Any, *, shard: int = 0) -> None:
        """Write tensor `value` (array-like, str/bytes, or a `Deferred`) under `key`, at the
        end of new shard `shard`. Strings are stored in TF's layout (`string_parts`);
        a Deferred with `chunks` streams them (numeric dtypes), else it is loaded now."""
        self._add(key, *_typed(value, key), shard)

    def _add(self, key: str, value: np.ndarray | Deferred, dtype: _dtypes.DType, shard: int) -> None:
        """`add` of a value `_typed` has made an array of `dtype` (or that is a Deferred)."""
        self._check_new(key)  # before a byte is written
        out = self._out(shard, key)
        start = out.offset
        if isinstance(value, Deferred):
            shape = tuple(value.shape)
            if value.chunks is not None and not dtype.is_string:
                crc = _write_chunks(out, value, key, self.prefix)
            else:
                crc = self._write_array(out, loaded(value, key)[0], dtype, key)
        else:
            shape = value.shape
            crc = self._write_array(out, value, dtype, key)
        self._put(key, make_entry(dtype.enum, shape, shard, start, out.offset - start, mask_crc(crc)))
        if self.progress is not None:
            self.progress(out.offset - start)

    @staticmethod
    def _write_array(out: ShardFile, arr: np.ndarray, dtype: _dtypes.DType, key: str) -> int:
        """Append one array's bytes to `out`; return the entry's crc32c (unmasked)."""
        if dtype.is_string:
            varints, checksum, lengths_crc, data = string_parts(arr, key)
            out.write(varints)
            return out.write(data, out.write(checksum, lengths_crc))
        return out.write(contiguous(arr, dtype).reshape(-1).view(np.uint8))  # a copy only if it must

    def add_slice(self, key: str, full_shape: tuple[int, ...], tslice: TensorSlice, value: Any, *,
                  shard: int = 0) -> None:
        """Write one slice of partitioned variable `key` (of shape `full_shape`): its data
        under the slice key (formats/slices.py), and the slice in the variable's own
        entry (dtype, full shape, the slices; no data), as TF's AddSlice."""
        self._add_slice(key, tuple(full_shape), tslice, *_typed(value, key), shard)

    def _add_slice(self, key: str, full_shape: tuple[int, ...], tslice: TensorSlice, value: np.ndarray | Deferred,
                   dtype: _dtypes.DType, shard: int) -> None:
        full = self._full_entry(key, full_shape, dtype)
        _check_slice(_dtypes.from_enum(full.dtype), dtype, full_shape, tslice, tuple(value.shape), self.prefix, key)
        self._add(decode_key(encode_tensor_name_slice(key, tslice)), value, dtype, shard)
        full.slices.append(tslice.to_proto())

    def _full_entry(self, key: str, full_shape: tuple[int, ...], dtype: _dtypes.DType) -> BundleEntryProto:
        """Partitioned variable `key`'s own entry (dtype, full shape, its slices so far)."""
        full = self._sliced.get(key)
        if full is None:
            self._check_new(key)
            full = self._sliced[key] = BundleEntryProto(dtype=dtype.enum)  # no data: no shard, offset, crc
            full.shape.SetInParent()
            for d in full_shape:
                full.shape.dim.add(size=d)
        return full

    def add_slice_entry(self, key: str, full_shape: tuple[int, ...], tslice: TensorSlice,
                        entry: BundleEntryProto) -> None:
        """`add_slice` of a slice whose bytes a linked shard holds already (`entry` says
        where: a DCP rank's shard): its entry under the slice key, the slice listed in
        the variable's own entry."""
        full_shape = tuple(full_shape)
        dtype = _dtypes.from_enum(entry.dtype, path=self.prefix, key=key)
        full = self._full_entry(key, full_shape, dtype)
        _check_slice(_dtypes.from_enum(full.dtype), dtype, full_shape, tslice, shape_of(entry, self.prefix, key),
                     self.prefix, key)
        self._put(decode_key(encode_tensor_name_slice(key, tslice)), entry)
        full.slices.append(tslice.to_proto())

    def add_entry(self, key: str, entry: BundleEntryProto | bytes) -> None:
        """An entry whose bytes a linked or kept shard holds (or a partitioned variable's
        own entry), carried over byte for byte: edits and merges."""
        self._put(key, entry)

    def copy_entry(self, key: str, entry: BundleEntryProto, source: ReadHandle, source_path: str, *,
                   shard: int) -> None:
        """Copy `entry`'s bytes from the open shard `source` to the end of new shard
        `shard`, and add it under `key` there (checksum carried over: same bytes)."""
        self._check_new(key)
        out = self._out(shard, key)
        moved = BundleEntryProto()
        moved.CopyFrom(entry)  # the reader's cached entry stays as read
        moved.shard_id = shard
        moved.offset = out.offset
        copy_range(source, entry.offset, entry.size, out, path=source_path, key=key, progress=self.progress)
        self._put(key, moved)

    def offset(self, shard: int) -> int:
        """Bytes written so far to new shard `shard`."""
        return self._out(shard, None).offset

    # ---- the index

    def finish(self, *, drop_stale_shards: bool = True) -> list[str]:
        """Close the new shards and write the index into the transaction (after them),
        naming it the commit's anchor; with `drop_stale_shards`, data files of the prefix
        that are not shards of this bundle (an older save's, of another shard count) are
        deleted once it is published. Returns those stale paths. The caller publishes."""
        if self._finished:
            raise InvalidArgumentError("the bundle is finished already", path=self.prefix)
        self._finished = True
        for out in self._files.values():
            out.close()
        entries = [*self._entries.items(), *((k, e.SerializeToString()) for k, e in self._sliced.items())]
        index = index_filename(self.prefix)
        self.tx.anchor(index)
        write_index(self.prefix, self.header, entries, out=self.tx.file(index))
        stale = []
        if drop_stale_shards:
            stale = [old for old in existing_data_files(self.prefix) if old not in self._published]
            for old in stale:
                self.tx.delete_after(old)
        return stale


def _typed(value: Any, key: str) -> tuple[np.ndarray | Deferred, _dtypes.DType]:
    """(`value` as an array, or the Deferred it is; its TF dtype)."""
    if isinstance(value, Deferred):
        return value, value.dtype
    return as_array(value, key)


def _check_slice(first: _dtypes.DType, dtype: _dtypes.DType, full_shape: tuple[int, ...], tslice: TensorSlice,
                 shape: tuple[int, ...], prefix: str, key: str) -> None:
    """A slice of variable `key` (whose first slice is of dtype `first`) fits it."""
    if dtype.enum != first.enum:
        raise InvalidArgumentError(f"slices of one tensor must share a dtype: {first.name} and {dtype.name}",
                                   path=prefix, key=key)
    if shape != tslice.shape_in(full_shape):
        raise InvalidArgumentError(f"slice {tslice.spec()} of shape {list(full_shape)} needs "
                                   f"an array of shape {list(tslice.shape_in(full_shape))}, "
                                   f"got {list(shape)}", path=prefix, key=key)


def _write_chunks(out: ShardFile, value: Deferred, key: str, prefix: str) -> int:
    """Stream a Deferred's chunks into `out`; return their crc32c (unmasked). Each chunk
    must be of the declared dtype, and together they must fill the declared shape."""
    crc, written = 0, 0
    for piece in value.chunks():  # type: ignore[misc]  # the caller checked it is not None
        piece = np.asarray(piece)
        if piece.dtype != value.dtype.numpy:
            raise DataLossError(f"a chunk of {piece.dtype} where {value.dtype.name} was declared",
                                path=prefix, key=key)
        flat = np.ascontiguousarray(piece).reshape(-1).view(np.uint8)
        crc = out.write(flat, crc)
        written += flat.size
    if written != value.nbytes:
        raise DataLossError(f"chunks of {written} bytes where {value.dtype.name}{list(value.shape)} "
                            f"needs {value.nbytes}", path=prefix, key=key)
    return crc


# --------------------------------------------------------------------------- a mapping of tensors

# One tensor (or slice) to write: (name, its slice and the variable's shape or None, value
# (an array or a Deferred), its dtype, its bytes for shard assignment).
_Planned = tuple[str, "tuple[TensorSlice, tuple[int, ...]] | None", "np.ndarray | Deferred", _dtypes.DType, int]


def _planned(tensors: Mapping[str, Any], prefix: str, keep_order: bool) -> list[_Planned]:
    """What `write_tensors` writes, in data order: sorted by stored key (`keep_order`: in
    the mapping's order instead), every name and value checked. A `SlicedTensor` value
    becomes its slices; one piece covering the whole tensor is written plainly, as TF
    writes it."""
    stored: list[tuple[bytes, _Planned]] = []
    for name, value in tensors.items():
        if not isinstance(name, str) or name == HEADER_KEY:
            raise InvalidArgumentError(f"tensor names must be non-empty strings, got {name!r}", path=prefix)
        if isinstance(value, SlicedTensor) and len(value.pieces) == 1:
            shape = value.shape
            value = value.pieces[0][1]
            got = tuple(value.shape) if isinstance(value, Deferred) else np.shape(value)
            if got != shape:
                raise InvalidArgumentError(f"the one slice of shape {list(shape)} has shape "
                                           f"{list(got)}", path=prefix, key=name)
        if not isinstance(value, SlicedTensor):
            typed, dtype = _typed(value, name)
            stored.append((encode_key(name), (name, None, typed, dtype, typed.nbytes)))
            continue
        first = None
        full_shape = tuple(value.shape)
        for tslice, piece in value.pieces:  # checked as add_slice checks them, before any write
            typed, dtype = _typed(piece, name)
            first = first or dtype
            _check_slice(first, dtype, full_shape, tslice, tuple(typed.shape), prefix, name)
            stored.append((encode_tensor_name_slice(name, tslice),
                           (name, (tslice, full_shape), typed, dtype, typed.nbytes)))
    keys = sorted(k for k, _ in stored)
    if not keep_order:
        stored.sort(key=lambda item: item[0])
    for a, b in itertools.pairwise(keys):
        if a == b:
            raise InvalidArgumentError("two tensors would be stored under the same key",
                                       path=prefix, key=decode_key(a))
    return [item for _, item in stored]


def _assign_shards(sizes: list[int], num_shards: int) -> list[int]:
    """Contiguous runs of keys per shard with roughly equal bytes (`sizes`: each key's
    `nbytes`; a string array counts its object pointers, a string Deferred nothing)."""
    total = sum(sizes) or 1
    shards, run = [], 0
    for size in sizes:
        shard = min(run * num_shards // total, num_shards - 1)
        shards.append(shard)
        run += size
    return shards


def write_tensors(writer: BundleWriter, tensors: Mapping[str, Any], *, keep_order: bool = False) -> None:
    """Add `tensors` ({name: array-like, Deferred or SlicedTensor}) to `writer`'s new shards.

    Data lie in the shards sorted by key, as TF's Saver writes them; `keep_order`: in the
    mapping's order instead, as TF's object-based saves write them (the index is sorted
    either way). Shards get contiguous runs of keys with roughly equal bytes.
    """
    _write_planned(writer, _planned(tensors, writer.prefix, keep_order))


def _write_planned(writer: BundleWriter, plan: list[_Planned]) -> None:
    shards = _assign_shards([size for *_, size in plan], writer.num_shards)
    for (name, part, value, dtype, _), shard in zip(plan, shards, strict=True):
        if part is None:
            writer._add(name, value, dtype, shard)  # (values typed by _planned: not again)
        else:
            writer._add_slice(name, part[1], part[0], value, dtype, shard)


def write_bundle(prefix: str, tensors: Mapping[str, object], num_shards: int = 1,
                 progress: Progress | None = None, *, lock_timeout: float | None = EDIT_WAIT_SECONDS,
                 keep_order: bool = False, replace_checkpoint: bool = False) -> None:
    """Write `tensors` as a V2 bundle at `prefix`, atomically, in a commit of its own
    (`write_tensors` into a `BundleWriter` over `storage.Commit`).

    Data shards and then the index are published together under the directory lock:
    at every moment, even across a crash, the prefix names the old checkpoint or the
    new one, whole. Data shards of an older checkpoint at this prefix with another
    shard count are deleted after the new index is in place; with `replace_checkpoint`
    its `.meta` and a V1 file at the prefix too (`drop_stale`: convert's destination).
    """
    if num_shards < 1:
        raise InvalidArgumentError(f"num_shards must be >= 1, got {num_shards}", path=prefix)
    plan = _planned(tensors, prefix, keep_order)  # every name and value checked before a file is made
    directory = os.path.dirname(prefix)
    storage.of(prefix).makedirs(directory)
    with storage.Commit(directory, lock_timeout=lock_timeout) as tx:
        writer = BundleWriter(tx, prefix, num_shards, progress=progress)
        _write_planned(writer, plan)
        writer.finish()
        if replace_checkpoint:
            drop_stale(tx, prefix)
        tx.publish()


def drop_stale(tx: Transaction, prefix: str) -> None:
    """Delete, in commit `tx`, the files of an old checkpoint at `prefix` that a new one
    written there (its own index and data shards) does not replace: the `.meta`, whose
    graph and Saver describe the old tensors, and a V1 table file at the prefix itself
    (which a V2 index would shadow). Data shards are `BundleWriter.finish`'s business."""
    for path in (meta_graph_filename(prefix), prefix):
        if storage.isfile(path):
            tx.delete_after(path)
