"""Reading a TensorFlow V2 tensor bundle's data: `BundleReader`.

A bundle is `PREFIX.index` (an SSTable of BundleEntryProtos: bundle_index.py, read
without numpy) and the data shards `PREFIX.data-SSSSS-of-NNNNN`: the tensors' raw
bytes, concatenated; DT_STRING tensors are `[varint64 len]*N, masked crc32c of the
lengths, bytes`. bundle_writer.py writes them (the one place that layout is made);
this module checks every entry before a byte is read and reads tensors, singly or in
batches, verifying each one's crc32c. Facts from TF's
`core/util/tensor_bundle/tensor_bundle.cc`.
"""
from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .. import dtypes as _dtypes
from ..errors import CheckpointError, DataLossError, TensorNotFoundError
from ..storage.base import COPY_CHUNK, ReadHandle
from . import bundle_batch
from .bundle_index import (
    BIG,
    ENTRY_FIELDS,
    ENTRY_HEAD,
    HEADER_KEY,
    LITTLE,
    BundleEntryProto,
    BundleHeaderProto,
    BundleIndex,
    IndexReplacedError,
    decode_key,
    encode_key,
    gc_paused,
    shape_of,
    uvarint,
)
from .coding import (
    FIXED32,
    MASK_DELTA,
    VarintError,
    byte_view,
    crc32c,
    crc32c_combine,
    decode_varints,
    encode_varint,
    mask_crc,
    string_length_bytes,
    unmask_crc,
)
from .naming import data_filename, existing_data_files, index_filename
from .slices import TensorSlice, assemble, check_tiling, encode_tensor_name_slice

if TYPE_CHECKING:
    from .coding import AnyBuffer

__all__ = ["BIG", "HEADER_KEY", "LITTLE", "BundleEntryProto", "BundleHeaderProto", "BundleIndex", "BundleReader",
           "CheckedEntry", "Plan", "IndexReplacedError", "data_filename", "decode_key", "encode_key",
           "existing_data_files", "index_filename", "shape_of"]  # index and file names re-exported

# --------------------------------------------------------------------------- reading


class BundleReader:
    """Reads tensor bytes from the data shards of one bundle, verifying checksums.

    Copies are read straight into the new array in pieces (`ReadHandle.piece_bytes`), each
    piece's crc32c taken right after it lands (still in cache): one pass over memory,
    no intermediate buffer. Views (`copy=False`) come from a read-only mmap of the shard.
    """

    def __init__(self, index: BundleIndex) -> None:
        self.index = index
        self._files: dict[int, ReadHandle] = {}
        self._sizes: dict[int, int] = {}
        self._maps: dict[int, mmap.mmap | None] = {}
        self._checked: dict[tuple[str, bool], CheckedEntry] = {}
        self._plans: dict[str, Plan | None] = {}  # see plan(): None, go through checked()
        self._kinds: dict[bytes, tuple[np.dtype, tuple[int, ...], int, bytes] | None] = {}
        self._direct: dict[int, bool] = {}  # shards on a local disk (one read call per small tensor)

    def shard_path(self, shard: int) -> str:
        return data_filename(self.index.prefix, shard, self.index.num_shards)

    def shard_handle(self, shard: int) -> ReadHandle:
        """The open data shard `shard`, checked as `shard_size` checks it (for edits that
        copy byte ranges of entries `checked` has validated)."""
        self.shard_size(shard)
        return self._files[shard]

    def _file(self, shard: int) -> ReadHandle:
        f = self._files.get(shard)
        if f is None:
            f = self.index.store.open(self.shard_path(shard), "data shard", self.index.pending)
            # A shard opened after a commit replaced the checkpoint may hold the new
            # checkpoint's bytes, which the index read before does not describe.
            if self.index.store.published_identity(self.index.path) != self.index.read_as:
                f.close()
                raise IndexReplacedError("the checkpoint was replaced while it was being read",
                                         path=self.index.path)
            self._files[shard] = f
            self._sizes[shard] = f.size
            self._direct[shard] = f.fileno() is not None
        return f

    def _map(self, shard: int) -> mmap.mmap | None:
        """A read-only map of the shard; None where its store has no maps (remote)."""
        if shard not in self._maps:
            self._maps[shard] = self._file(shard).mmap()
        return self._maps[shard]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        for mapped in self._maps.values():
            try:
                if mapped is not None:
                    mapped.close()
            except BufferError:
                pass  # arrays still view it: the mapping goes when the last of them does
        self._maps.clear()

    # ---- the validated view of an entry: every read (and every edit) goes through it

    def shard_size(self, shard: int, key: str | None = None) -> int:
        """The real size in bytes of data shard `shard`, opening it on first use.

        `shard` must be one of the header's `num_shards`; the file must exist and be a
        regular file (opened non-blocking, so a FIFO fails at once instead of hanging).
        Anything else is a CheckpointError naming the shard file (and `key` if given).
        Only shards asked for are ever opened: a header's `num_shards` drives no loop.
        """
        num_shards = self.index.num_shards
        if not 0 <= shard < num_shards:
            raise DataLossError(f"entry names shard {shard} of {num_shards}", path=self.index.path, key=key)
        if shard not in self._sizes:
            try:
                self._file(shard)
            except CheckpointError as exc:  # name the tensor that needs this shard
                raise type(exc)(exc.message, path=exc.path, key=key) from None
        return self._sizes[shard]

    def checked(self, key: str, *, known_dtype: bool = True) -> CheckedEntry:
        """The entry under `key` with its dtype, shape and element count, validated.

        The one validated view of an index entry, for readers and index rewrites alike.
        On return it is guaranteed that:
        - the entry parses; with `known_dtype` (the default) its dtype is one ckptkit
          reads (else UnsupportedError), without it `dtype` may be None (edits can copy
          bytes of dtypes they cannot decode, e.g. DT_VARIANT);
        - its shape is one TF accepts (rank <= 254, dims >= 0, element count computed
          with overflow-checked arithmetic in dimension order, as TF's
          TensorShape::IsValid: else DataLossError) and one numpy can build (rank <= 64
          in numpy 2, `itemsize * product of non-zero dims` < 2^63: else
          UnsupportedError, a valid TF tensor that cannot be a numpy array);
        - a plain entry has 0 <= shard_id < num_shards, `offset >= 0`, `size >= 0`, its
          shard file exists and is a regular file, `offset + size` is within the
          shard's real length, and `size` fits the shape (exactly `count * itemsize`;
          strings: at least one byte per element plus the 4-byte checksum);
        - a partitioned entry (`entry.slices`): every slice is well formed, of the
          tensor's rank and inside its shape, the slices tile the shape exactly, and
          every slice's own entry exists and passes these checks with the tensor's
          dtype and the slice's shape.
        Every failure is a CheckpointError subclass naming the file and `key` (a
        missing key: TensorNotFoundError). Results are cached per key.
        """
        cache_key = (key, known_dtype)
        found = self._checked.get(cache_key)
        if found is not None:
            return found
        path = self.index.path
        try:
            entry = self.index.entry(key)
        except KeyError:
            raise TensorNotFoundError("tensor not found in checkpoint", path=self.index.prefix, key=key) from None
        if known_dtype or _dtypes.known_enum(entry.dtype):
            dtype = _dtypes.from_enum(entry.dtype, path=path, key=key)
        else:
            dtype = None
        shape = shape_of(entry, path, key)
        count = math.prod(shape)  # shape_of checked it in dimension order, as TF does
        if len(shape) > _dtypes.numpy_max_dims():
            _dtypes.check_numpy_shape(shape, dtype, path, key)  # says how many dims numpy allows
        if entry.slices:
            self._check_slices(key, entry, dtype, shape, known_dtype)
        else:
            self._check_plain(key, entry, dtype, shape, count)
        # Data that passed those checks fits in its files; only an empty tensor can still
        # have a shape too large for numpy (`[0, 2**62]` of float32: valid in TF).
        _dtypes.check_numpy_shape(shape, dtype, path, key)
        found = self._checked[cache_key] = CheckedEntry(entry, dtype, shape, count)
        return found

    def checked_entry(self, key: str, *, known_dtype: bool = True) -> BundleEntryProto:
        """The BundleEntryProto under `key`, validated as `checked` describes."""
        return self.checked(key, known_dtype=known_dtype).entry

    def referenced_shards(self, *, known_dtype: bool = False) -> list[int]:
        """Sorted ids of the data shards that entries reference, each entry validated.

        Every entry of the index goes through `checked` (so every referenced shard is
        opened and its size known, see `shard_size`); partitioned entries reference
        shards through their slices' entries. Shards no entry names are not opened
        and not listed, however many the header claims.
        """
        shards = set()
        for key in self.index.keys():
            entry = self.checked(key, known_dtype=known_dtype).entry
            if not entry.slices:
                shards.add(entry.shard_id)
        return sorted(shards)

    def _check_plain(self, key: str, entry: BundleEntryProto, dtype: _dtypes.DType | None, shape: tuple[int, ...],
                     count: int) -> None:
        """An entry holding data: its size fits its shape, its bytes lie inside its shard."""
        path = self.index.path
        offset, size = entry.offset, entry.size
        if offset < 0 or size < 0:
            raise DataLossError(f"entry has offset {offset} and size {size}: bytes outside the shard "
                                "(before its start or past the end)", path=path, key=key)
        if dtype is None:
            pass
        elif dtype.is_string:
            # at least one varint byte per element, plus the checksum; TF also reads an
            # empty string tensor stored as no bytes at all
            if size < count + 4 and not (count == 0 and size == 0):
                raise DataLossError(f"entry size {size} too small for {count} strings", path=path, key=key)
        elif size != count * dtype.itemsize:
            raise DataLossError(f"entry size {size} does not match shape {list(shape)} "
                                f"of {dtype.name} ({count * dtype.itemsize} bytes)", path=path, key=key)
        shard_size = self.shard_size(entry.shard_id, key)
        if offset + size > shard_size:
            raise DataLossError(f"entry claims bytes {offset}..{offset + size} "
                                f"past the end of the shard ({shard_size} bytes)",
                                path=self.shard_path(entry.shard_id), key=key)

    def _check_slices(self, key: str, entry: BundleEntryProto, dtype: _dtypes.DType | None, shape: tuple[int, ...],
                      known_dtype: bool) -> None:
        """A partitioned entry: slices well formed and tiling the shape, each slice's
        entry present, plain, of the same dtype and of the slice's shape."""
        path = self.index.path
        tslices = []
        for proto in entry.slices:
            try:
                tslice = TensorSlice.from_proto(proto)
            except CheckpointError as exc:
                raise DataLossError(f"bad slice in index: {exc.message}", path=path, key=key) from None
            if tslice.rank != len(shape):
                raise DataLossError(f"slice {tslice.spec()} has rank {tslice.rank}, tensor has shape "
                                    f"{list(shape)}", path=path, key=key)
            tslices.append(tslice)
        check_tiling(shape, tslices, path=path, key=key)
        for tslice in tslices:
            slice_key = decode_key(encode_tensor_name_slice(key, tslice))
            try:
                part = self.checked(slice_key, known_dtype=known_dtype)
            except TensorNotFoundError:
                raise DataLossError(f"slice {tslice.spec()} is listed but missing from the index",
                                    path=path, key=key) from None
            except CheckpointError as exc:  # name the variable, not its binary slice key
                raise type(exc)(f"slice {tslice.spec()}: {exc.message}", path=exc.path, key=key) from None
            if part.entry.slices or part.entry.dtype != entry.dtype or part.shape != tslice.shape_in(shape):
                raise DataLossError(f"entry of slice {tslice.spec()} does not match the tensor's dtype or shape",
                                    path=path, key=key)

    # ---- the fast path: plain numeric entries as TF writes them

    def plan(self, key: str) -> Plan | None:
        """How to read `key` without protobuf, or None (then read through `checked`).

        A plan exists for a plain, little-endian (or one-byte), non-empty numeric entry
        in TF's field layout (`ENTRY_HEAD`/`ENTRY_REST`) that passes every check
        `checked` makes: known dtype, valid shape of at most numpy's rank, size equal to
        the shape's bytes, shard in range and open, bytes inside it. Anything else or
        anything doubtful gets None, and `checked` then accepts it or raises the proper
        error. The dtype and shape bytes are decoded once per distinct value (as the
        listing does), so the first read of a tiny tensor costs about what a repeat
        does: no BundleEntryProto is built. Results are cached per key.
        """
        plans = self._plans
        if key in plans:
            return plans[key]
        value = self.index._raw.get(key)
        found = None
        if value is not None and ENTRY_HEAD.match(value):
            end = 4 + value[3]
            rest = ENTRY_FIELDS.fullmatch(value, end)
            if rest is not None:
                found = self._plan_of(key, value[:end], rest.groups())
        plans[key] = found
        return found

    def plans(self, keys: list[str]) -> list[Plan | None]:
        """`[plan(key) for key in keys]`, in one loop with every lookup hoisted out of it
        (a batch of 100k tiny tensors spends most of its time here otherwise)."""
        plans, raw, kinds = self._plans, self.index._raw, self._kinds
        head_match, rest_match = ENTRY_HEAD.match, ENTRY_FIELDS.fullmatch
        shards: dict[int, tuple] = {}  # shard -> (readinto, size, piece_bytes, direct, handle)
        out: list[Plan | None] = []
        append = out.append
        with gc_paused():
            for key in keys:
                if key in plans:
                    append(plans[key])
                    continue
                value = raw.get(key)
                found = None
                if value is not None and head_match(value):
                    end = 4 + value[3]
                    rest = rest_match(value, end)
                    if rest is not None:
                        head = value[:end]
                        kind = kinds[head] if head in kinds else kinds.setdefault(head, self._kind(key, head))
                        shard_b, offset_b, size_b, crc_b = rest.groups()
                        if kind is not None and size_b == kind[3]:
                            shard = shard_b[0] if shard_b is not None else 0
                            known = shards.get(shard)
                            if known is None:
                                known = shards[shard] = self._shard_facts(shard, key)
                            offset = uvarint(offset_b)
                            size = kind[2]
                            if offset + size <= known[1]:
                                masked = _FIXED32_UNPACK(crc_b)[0] if crc_b is not None else 0
                                rot = (masked - MASK_DELTA) & 0xFFFFFFFF  # unmask_crc, inlined
                                found = (known[0] if known[3] and size <= known[2] else None, offset, size,
                                         ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF, kind[0], kind[1], shard,
                                         known[4])
                plans[key] = found
                append(found)
        return out

    def _shard_facts(self, shard: int, key: str) -> tuple:
        """(readinto, size, piece_bytes, readinto takes any buffer, handle) of a shard,
        opened if need be (its errors are those `checked` would raise for `key`)."""
        size = self.shard_size(shard, key)
        handle = self._files[shard]
        return handle.readinto, size, handle.piece_bytes, self._direct[shard], handle

    def _plan_of(self, key: str, head: bytes, fields: tuple) -> Plan | None:
        kinds = self._kinds
        kind = kinds[head] if head in kinds else kinds.setdefault(head, self._kind(key, head))
        shard_b, offset_b, size_b, crc_b = fields
        if kind is None or size_b != kind[3]:  # the size varint, as it must read
            return None
        shard = shard_b[0] if shard_b is not None else 0
        offset = uvarint(offset_b)
        handle = self._files.get(shard)
        if handle is None:  # opens the shard; its errors are those `checked` would raise
            self.shard_size(shard, key)
            handle = self._files[shard]
        size = kind[2]
        if offset + size > self._sizes[shard]:
            return None
        masked = _FIXED32_UNPACK(crc_b)[0] if crc_b is not None else 0
        rot = (masked - MASK_DELTA) & 0xFFFFFFFF  # unmask_crc, inlined
        direct = size <= handle.piece_bytes and self._direct.get(shard, False)
        return (handle.readinto if direct else None, offset, size, ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF,
                kind[0], kind[1], shard, handle)

    def _kind(self, key: str, head: bytes) -> tuple[np.dtype, tuple[int, ...], int, bytes] | None:
        """(numpy dtype, shape, bytes, bytes as a size varint) for entries whose dtype+shape
        bytes are `head`, if a plan can read them; None sends them through `checked`."""
        try:
            enum, shape = self.index.head_meta(key, head)
        except CheckpointError:
            return None
        if not _dtypes.known_enum(enum) or len(shape) > _dtypes.numpy_max_dims():
            return None
        dtype = _dtypes.from_enum(enum)
        if dtype.is_string or (self.index.header.endianness == BIG and dtype.itemsize > 1):
            return None
        nbytes = math.prod(shape) * dtype.itemsize
        return (dtype.numpy, shape, nbytes, encode_varint(nbytes)) if nbytes else None

    def read_planned(self, key: str, plan: Plan, verify: bool = True) -> np.ndarray:
        """A new array with the tensor `plan` describes, crc32c checked unless not `verify`.

        A small tensor on a local disk is one `readinto` straight into the result's bytes
        (no intermediate buffer); anything bigger goes through `_read_range`'s pieces.
        """
        readinto, offset, size, crc, dtype, shape, shard, handle = plan
        flat = np.empty(size, np.uint8)
        if readinto is not None:
            try:
                got = readinto(flat.data, offset)
            except CheckpointError as exc:
                raise type(exc)(exc.message, path=exc.path, key=key) from None
            if got != size:  # a short read: finish it the careful way
                handle.read_exactly(flat.data[got:], offset + got, key)
            if verify and crc32c(flat) != crc:
                raise DataLossError("checksum mismatch in tensor data", path=self.shard_path(shard), key=key)
        elif self._read_range(key, shard, offset, size, flat, verify) != crc and verify:
            raise DataLossError("checksum mismatch in tensor data", path=self.shard_path(shard), key=key)
        return flat.view(dtype).reshape(shape)

    def read_copy(self, key: str, verify: bool = True) -> np.ndarray:
        """`read_full(key, verify=verify)`: a new array, by its plan where it has one."""
        plan = self._plans.get(key) or self.plan(key)
        if plan is None:
            return self.read_full(key, verify=verify)
        return self.read_planned(key, plan, verify)

    # ---- batches: many tensors in few large reads

    def read_many(self, keys: Iterable[str], verify: bool = True) -> dict[str, np.ndarray]:
        """{key: new array} for `keys` (in their order), each crc32c checked unless not
        `verify`: planned tensors in few large reads (bundle_batch.py), others one by one."""
        return bundle_batch.read_many(self, keys, verify)

    # ---- reading

    def _read_into(self, key: str, entry: BundleEntryProto, buf: AnyBuffer, verify: bool = False) -> int:
        """Fill `buf` with the entry's bytes; return their crc32c when `verify` (else 0)."""
        return self._read_range(key, entry.shard_id, entry.offset, entry.size, buf, verify)

    def _read_range(self, key: str, shard: int, offset: int, total: int, buf: AnyBuffer, verify: bool = False) -> int:
        """Fill `buf` with `total` bytes of shard `shard` at `offset`; return their crc32c
        when `verify` (else 0).

        Pieces of the shard's `piece_bytes` (8 MiB on a local disk); a range of several
        pieces is read by the store's `read_threads` threads (preadv, range requests and
        crc32c all release the GIL), each summing its pieces right after reading them, and
        the pieces' crcs are combined in order.
        """
        f = self._file(shard)
        view = byte_view(buf)
        size = f.piece_bytes

        def piece(start: int) -> int:
            part = view[start:start + size]
            f.read_exactly(part, offset + start, key)
            return crc32c(part) if verify else 0

        starts = range(0, total, size)
        if len(starts) < 2:
            return piece(0) if total else 0
        crcs = list(bundle_batch.reader_pool(f.read_threads).map(piece, starts))
        crc = crcs[0]
        for start, part_crc in zip(starts[1:], crcs[1:], strict=True):
            crc = crc32c_combine(crc, part_crc, min(size, total - start))
        return crc

    def read_chunks(self, key: str, chunk_bytes: int = COPY_CHUNK, *, verify: bool = True) -> Iterator[np.ndarray]:
        """The numeric tensor under `key` as flat arrays of at most `chunk_bytes` each, in
        storage order: what statistics and averages need, without the whole tensor in
        memory (a 4 GiB tensor costs one chunk). A partitioned tensor yields its slices'
        chunks one slice after the other (each slice in its own C order), so the chunks
        are the tensor's elements, but not in the tensor's order.

        The crc32c is summed over the whole entry as the chunks go by and compared after
        the last one: a damaged entry raises DataLossError at the end, so act on the
        chunks only once the iteration has completed. Strings come as one chunk (their
        layout has no fixed element size).
        """
        found = self.checked(key)
        if not found.entry.slices:
            yield from self._plain_chunks(key, chunk_bytes, verify)
            return
        for proto in found.entry.slices:
            tslice = TensorSlice.from_proto(proto)  # checked() parsed these already
            slice_key = decode_key(encode_tensor_name_slice(key, tslice))
            try:
                yield from self._plain_chunks(slice_key, chunk_bytes, verify)
            except CheckpointError as exc:  # name the variable, not its binary slice key
                raise type(exc)(f"slice {tslice.spec()}: {exc.message}", path=exc.path, key=key) from None

    def _plain_chunks(self, key: str, chunk_bytes: int, verify: bool) -> Iterator[np.ndarray]:
        entry, dtype, shape, count = self.checked(key)
        assert dtype is not None  # known_dtype=True: checked() raised for an unknown dtype
        if entry.slices:
            raise DataLossError("a partitioned entry holds no data of its own", path=self.index.path, key=key)
        if dtype.is_string:
            if count:
                yield self.read(key, verify=verify).reshape(-1)
            return
        step = max(1, chunk_bytes // dtype.itemsize) * dtype.itemsize
        big = self.index.header.endianness == BIG and dtype.itemsize > 1
        stored = dtype.numpy.newbyteorder(">") if big else dtype.numpy
        f = self._file(entry.shard_id)
        crc = 0
        for start in range(0, entry.size, step):
            buf = np.empty(min(step, entry.size - start), dtype=np.uint8)
            f.read_exactly(memoryview(buf.data), entry.offset + start, key)
            if verify:
                crc = crc32c(buf, crc)
            values = buf.view(stored)
            yield values.astype(dtype.numpy) if big else values
        if verify and crc != unmask_crc(entry.crc32c):
            raise DataLossError("checksum mismatch in tensor data", path=self.shard_path(entry.shard_id), key=key)

    def read(self, key: str, entry: BundleEntryProto | None = None, *, verify: bool = True,
             copy: bool = True) -> np.ndarray:
        """The tensor stored under `key` (a plain, non-sliced entry): a new array, or with
        `copy=False` a read-only view of the mapped shard (strings and big-endian
        bundles are always copied). The entry is validated first (`checked`); `entry`
        is accepted for compatibility and must be the index's entry for `key`."""
        entry, dtype, shape, count = self.checked(key)
        assert dtype is not None  # known_dtype=True: checked() raised for an unknown dtype
        if entry.slices:
            raise DataLossError("a partitioned entry holds no data of its own", path=self.index.path, key=key)
        if dtype.is_string:
            return self._read_strings(key, entry, shape, count, verify)
        nbytes = entry.size
        big = self.index.header.endianness == BIG and dtype.itemsize > 1
        if not copy and not big and nbytes:
            try:
                mapped = self._map(entry.shard_id)
            except CheckpointError as exc:
                raise type(exc)(exc.message, path=exc.path, key=key) from None
        else:
            mapped = None
        if mapped is not None:
            flat = np.frombuffer(mapped, dtype=np.uint8, count=nbytes, offset=entry.offset)
            crc = crc32c(flat) if verify else 0
        else:
            flat = np.empty(nbytes, dtype=np.uint8)
            crc = self._read_into(key, entry, flat, verify)
        if verify and crc != unmask_crc(entry.crc32c):
            raise DataLossError("checksum mismatch in tensor data",
                                path=self.shard_path(entry.shard_id), key=key)
        if big:
            return flat.view(dtype.numpy.newbyteorder(">")).astype(dtype.numpy).reshape(shape)
        return flat.view(dtype.numpy).reshape(shape)

    def read_full(self, key: str, entry: BundleEntryProto | None = None, *, verify: bool = True,
                  copy: bool = True) -> np.ndarray:
        """The whole tensor under `key`: read directly, or reassembled from its slices
        (a reassembled tensor is always a new array). Validated first (`checked`), so
        nothing is allocated for what the files do not hold."""
        found = self.checked(key)
        assert found.dtype is not None  # known_dtype=True: checked() raised for an unknown dtype
        entry = found.entry
        if not entry.slices:
            return self.read(key, verify=verify, copy=copy)
        pieces = []
        for proto in entry.slices:
            tslice = TensorSlice.from_proto(proto)  # checked() parsed these already
            slice_key = decode_key(encode_tensor_name_slice(key, tslice))
            pieces.append((tslice, lambda k=slice_key, t=tslice: self._read_slice(key, k, t, verify)))
        return assemble(found.shape, found.dtype.numpy, pieces, path=self.index.path, key=key)

    def _read_slice(self, key: str, slice_key: str, tslice: TensorSlice, verify: bool) -> np.ndarray:
        try:
            return self.read(slice_key, verify=verify)
        except CheckpointError as exc:  # name the variable, not its binary slice key
            raise type(exc)(f"slice {tslice.spec()}: {exc.message}", path=exc.path, key=key) from None

    def _read_strings(self, key: str, entry: BundleEntryProto, shape: tuple[int, ...], count: int,
                      verify: bool) -> np.ndarray:
        """A DT_STRING tensor: varint64 lengths, their masked crc32c, the bytes.

        As TF's ReadStringTensor: the varints are byte-order free; the lengths are
        checksummed as uint32 (uint64 when a length needs it) in the byte order of the
        bundle's header, and under a big-endian header the stored length checksum is a
        big-endian fixed32 (TF byte-swaps both on a little-endian host). The entry's
        crc then covers that lengths crc, the 4 checksum bytes as stored, the bytes.
        """
        path = self.shard_path(entry.shard_id)
        if entry.size == 0:  # count == 0 (checked): TF reads no bytes, and its crc is 0
            if verify and unmask_crc(entry.crc32c) != 0:
                raise DataLossError("checksum mismatch in string data", path=path, key=key)
            return np.empty(shape, dtype=object)
        big = self.index.header.endianness == BIG
        raw = bytearray(entry.size)
        self._read_into(key, entry, raw)
        buf = bytes(raw)
        try:
            lengths, pos = decode_varints(buf, count)
        except VarintError:
            raise DataLossError("string lengths are malformed", path=path, key=key) from None
        if pos + 4 > len(buf):
            raise DataLossError("string tensor is truncated", path=path, key=key)
        lengths_crc = crc32c(string_length_bytes(lengths, big))
        stored = (_BE32 if big else FIXED32).unpack_from(buf, pos)[0]
        if verify and stored != mask_crc(lengths_crc):
            raise DataLossError("checksum mismatch in string lengths", path=path, key=key)
        pos += 4
        # max() first: then the sum cannot wrap (count <= len(buf), so sum <= len(buf)**2)
        if count and (int(lengths.max()) > len(buf) or pos + int(lengths.sum()) != len(buf)):
            raise DataLossError("string lengths do not add up to the entry size", path=path, key=key)
        if not count and pos != len(buf):
            raise DataLossError("string lengths do not add up to the entry size", path=path, key=key)
        if verify:
            total = crc32c(memoryview(buf)[pos:], crc32c(buf[pos - 4:pos], lengths_crc))
            if total != unmask_crc(entry.crc32c):
                raise DataLossError("checksum mismatch in string data", path=path, key=key)
        ends = np.cumsum(lengths, dtype=np.int64) + pos
        out = np.empty(count, dtype=object)
        out[:] = [buf[start:end] for start, end in zip((ends - lengths.astype(np.int64)).tolist(), ends.tolist(),
                                                                  strict=True)]
        return out.reshape(shape)


# What `BundleReader.plan` found (a plain tuple: made once per key, unpacked per read):
# the handle's readinto where one call nearly always fills the tensor (a small tensor on a
# local disk) else None, offset, size, crc32c (unmasked),
# numpy dtype, shape, shard, the open handle.
Plan = tuple[Callable[[Any, int], int] | None, int, int, int, np.dtype, tuple[int, ...], int, ReadHandle]


class CheckedEntry(NamedTuple):
    """An index entry that passed `BundleReader.checked`: its proto, dtype (None only when
    asked for with known_dtype=False and unknown), shape and element count."""

    entry: BundleEntryProto
    dtype: _dtypes.DType | None
    shape: tuple[int, ...]
    count: int  # type: ignore[assignment]  # a field named count shadows tuple.count, on purpose


_BE32 = struct.Struct(">I")
_FIXED32_UNPACK = FIXED32.unpack
