"""TensorFlow V2 tensor bundles: `PREFIX.index` + `PREFIX.data-SSSSS-of-NNNNN`.

The index is an SSTable (see table.py) mapping each tensor key to a serialized
BundleEntryProto (dtype, shape, shard, offset, size, masked crc32c); key "" holds the
BundleHeaderProto. Data shards are the tensors' raw bytes, concatenated; DT_STRING
tensors are `[varint64 len]*N, masked crc32c of the lengths, bytes`.
Facts from TF's `core/util/tensor_bundle/tensor_bundle.cc`; this module keeps the
same byte layout so that TF and ckptkit produce identical index files.
"""
from __future__ import annotations

import functools
import itertools
import math
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .. import dtypes as _dtypes
from .. import storage
from ..errors import CheckpointError, DataLossError, InvalidArgumentError, TensorNotFoundError, UnsupportedError
from ..storage.base import COPY_CHUNK, ReadHandle, Transaction
from ..storage.files import AtomicFile
from ..storage.lock import EDIT_WAIT_SECONDS
from .bundle_index import (  # the index half of a bundle; re-exported, used as bundle.*
    BIG,
    BUNDLE_VERSION,
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
    encode_varints,
    mask_crc,
    unmask_crc,
)
from .naming import (  # re-exported: used as bundle.*
    data_filename,
    existing_data_files,
    index_filename,
    meta_graph_filename,
)
from .slices import SlicedTensor, TensorSlice, assemble, check_tiling, encode_tensor_name_slice
from .table import TableWriter

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from numpy.typing import ArrayLike

    from ..storage.base import NewFile, Progress, ShardFile
    from .coding import AnyBuffer

# --------------------------------------------------------------------------- reading


class BundleData:
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
        self._plans: dict[str, _Plan | None] = {}  # see plan(): None, go through checked()
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

    def plan(self, key: str) -> _Plan | None:
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

    def plans(self, keys: list[str]) -> list[_Plan | None]:
        """`[plan(key) for key in keys]`, in one loop with every lookup hoisted out of it
        (a batch of 100k tiny tensors spends most of its time here otherwise)."""
        plans, raw, kinds = self._plans, self.index._raw, self._kinds
        head_match, rest_match = ENTRY_HEAD.match, ENTRY_FIELDS.fullmatch
        shards: dict[int, tuple] = {}  # shard -> (readinto, size, piece_bytes, direct, handle)
        out: list[_Plan | None] = []
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

    def _plan_of(self, key: str, head: bytes, fields: tuple) -> _Plan | None:
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

    def read_planned(self, key: str, plan: _Plan, verify: bool = True) -> np.ndarray:
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
        """{key: new array} for `keys` (in their order), each crc32c checked unless not `verify`.

        Planned tensors are read shard by shard in offset order. Small ones in large
        sequential runs: byte ranges at most `_RUN_GAP` apart coalesced into one read of
        at most the store's `piece_bytes`, then each tensor's bytes checked and copied
        out into its own (aligned) array. Runs and tensors of up to one piece are tasks
        for the store's `read_threads` threads, so one thread's crc32c and copies overlap
        another's read, and only that many runs are in memory at once; bigger tensors are
        read one after the other, each in pieces by those threads (`_read_range`).
        Entries without a plan (partitioned, strings, big-endian, unusual layouts) go
        through `read_full`. A damaged tensor is a DataLossError naming it.
        """
        with gc_paused():  # 100k small results and their bookkeeping: see gc_paused
            return self._read_many(list(keys), verify)

    def _read_many(self, keys: list[str], verify: bool) -> dict[str, np.ndarray]:
        planned: list[tuple[int, int, str, _Plan]] = []
        others: list[str] = []
        unique = list(dict.fromkeys(keys))  # a name asked for twice is read once
        for key, plan in zip(unique, self.plans(unique), strict=True):
            if plan is None:
                others.append(key)
            else:
                planned.append((plan[6], plan[1], key, plan))
        planned.sort()  # by shard and offset (then key: unique), so plans are never compared
        for shard in {item[0] for item in planned}:
            _advise_sequential(self._files[shard])
        tasks, big = self._batch(planned)
        out: dict[str, np.ndarray] = {}
        if tasks:
            threads = max(run[0][1][7].read_threads for run in tasks)
            read = functools.partial(self._read_run, verify=verify)
            for done in (_reader_pool(threads).map(read, tasks) if len(tasks) > 1 else map(read, tasks)):
                out.update(done)
        for key, plan in big:
            out[key] = self.read_planned(key, plan, verify)
        for key in others:
            out[key] = self.read_full(key, verify=verify)
        return {key: out[key] for key in keys}

    @staticmethod
    def _batch(planned: list[tuple[int, int, str, _Plan]]) \
            -> tuple[list[list[tuple[str, _Plan]]], list[tuple[str, _Plan]]]:
        """(runs, big): runs are lists of (key, plan) read with one call each, big the
        (key, plan)s of tensors larger than one piece."""
        runs: list[list[tuple[str, _Plan]]] = []
        big: list[tuple[str, _Plan]] = []
        run: list[tuple[str, _Plan]] = []
        start = end = -1
        for shard, offset, key, plan in planned:
            size, limit = plan[2], plan[7].piece_bytes
            if size > limit:
                big.append((key, plan))
                continue
            if run and (shard != run[0][1][6] or not end <= offset <= end + _RUN_GAP
                        or offset + size - start > limit):
                runs.append(run)
                run = []
            if not run:
                start = offset
            run.append((key, plan))
            end = offset + size
        if run:
            runs.append(run)
        return runs, big

    def _read_run(self, run: list[tuple[str, _Plan]], verify: bool) -> list[tuple[str, np.ndarray]]:
        """The tensors of one run: one read of their byte range, then each checked and copied."""
        if len(run) == 1:
            key, plan = run[0]
            return [(key, self.read_planned(key, plan, verify))]
        first_key, first = run[0]
        _, start, _, _, _, _, shard, handle = first
        last = run[-1][1]
        buf = np.empty(last[1] + last[2] - start, np.uint8)
        handle.read_exactly(buf.data, start, first_key)
        out = []
        for key, (_, offset, size, crc, dtype, shape, _, _) in run:
            part = buf[offset - start:offset - start + size]
            if verify and crc32c(part) != crc:
                raise DataLossError("checksum mismatch in tensor data", path=self.shard_path(shard), key=key)
            out.append((key, part.view(dtype).reshape(shape).copy()))
        return out

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
        crcs = list(_reader_pool(f.read_threads).map(piece, starts))
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
        lengths_crc = crc32c(_length_bytes(lengths, big))
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


# What `BundleData.plan` found (a plain tuple: made once per key, unpacked per read):
# the handle's readinto where one call nearly always fills the tensor (a small tensor on a
# local disk) else None, offset, size, crc32c (unmasked),
# numpy dtype, shape, shard, the open handle.
_Plan = tuple[Callable[[Any, int], int] | None, int, int, int, np.dtype, tuple[int, ...], int, ReadHandle]


class CheckedEntry(NamedTuple):
    """An index entry that passed `BundleData.checked`: its proto, dtype (None only when
    asked for with known_dtype=False and unknown), shape and element count."""

    entry: BundleEntryProto
    dtype: _dtypes.DType | None
    shape: tuple[int, ...]
    count: int  # type: ignore[assignment]  # a field named count shadows tuple.count, on purpose


_BE32 = struct.Struct(">I")
_RUN_GAP = 64 << 10  # bytes between two tensors that a batched read reads through rather than seek
_FIXED32_UNPACK = FIXED32.unpack


def _length_bytes(lengths: np.ndarray, big: bool = False) -> bytes:
    """String lengths as TF checksums them: uint32 each, or uint64 when a length needs it,
    in the bundle's byte order (`big`: a big-endian header)."""
    lengths = np.asarray(lengths, dtype=np.uint64)
    order = "big" if big else "little"
    if not lengths.size or int(lengths.max()) <= 0xFFFFFFFF:
        return lengths.astype(">u4" if big else "<u4").tobytes()
    return b"".join(n.to_bytes(4 if n <= 0xFFFFFFFF else 8, order) for n in lengths.tolist())


# --------------------------------------------------------------------------- writing

class Deferred(NamedTuple):
    """A tensor to be written whose bytes are read only when its turn comes: dtype and
    shape are known up front (for shard assignment, headers), `load()` gives the array.

    Writers (write_bundle, convert's .npz and .safetensors writers) accept it wherever
    they accept an array, so a conversion holds one tensor in memory at a time.
    """

    dtype: _dtypes.DType
    shape: tuple[int, ...]
    load: Callable[[], Any]
    # Optional: the same values as flat arrays of `dtype`, a piece at a time, in C order.
    # write_bundle then streams them into the shard (numeric dtypes), so not even one
    # whole tensor need be in memory; other writers call `load`.
    chunks: Callable[[], Iterable[np.ndarray]] | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the data (0 for strings, whose size is known only once read)."""
        return 0 if self.dtype.is_string else math.prod(self.shape) * self.dtype.itemsize


def meta_of(value: ArrayLike | Deferred, key: str | None = None) -> tuple[_dtypes.DType, tuple[int, ...]]:
    """(TF dtype, shape) of an array-like or a Deferred, without loading a Deferred."""
    if isinstance(value, Deferred):
        return value.dtype, tuple(value.shape)
    arr, dtype = _as_array(value, key)
    return dtype, tuple(arr.shape)


def loaded(value: ArrayLike | Deferred, key: str | None = None) -> tuple[np.ndarray, _dtypes.DType]:
    """`to_array(value)`, loading a Deferred first and holding it to what it declared."""
    if not isinstance(value, Deferred):
        return to_array(value, key)
    arr, dtype = to_array(value.load(), key)
    if dtype.enum != value.dtype.enum or tuple(arr.shape) != tuple(value.shape):
        raise DataLossError(f"read {dtype.name}{list(arr.shape)} where {value.dtype.name}"
                            f"{list(value.shape)} was declared", key=key)
    return arr, dtype


def _as_array(value: ArrayLike, key: str | None = None) -> tuple[np.ndarray, _dtypes.DType]:
    """`value` as an array (no copy of an ndarray) and its TF dtype; see to_array."""
    if isinstance(value, (str, bytes)):
        value = np.array(value, dtype=object)
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":
        return arr.astype(object, copy=False) if arr.dtype.kind != "O" else arr, _dtypes.STRING
    try:
        return arr, _dtypes.as_dtype(arr.dtype)
    except UnsupportedError as exc:
        raise InvalidArgumentError(exc.message, key=key) from None


def _contiguous(arr: np.ndarray, dtype: _dtypes.DType) -> np.ndarray:
    if dtype.is_string or (arr.dtype == dtype.numpy and arr.flags.c_contiguous):
        return arr
    return np.ascontiguousarray(arr, dtype=dtype.numpy)


def to_array(value: ArrayLike, key: str | None = None) -> tuple[np.ndarray, _dtypes.DType]:
    """A C-contiguous little-endian array and its TF dtype, from anything array-like."""
    arr, dtype = _as_array(value, key)
    return _contiguous(arr, dtype), dtype


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

    The entry's crc is crc32c(bytes, crc32c(checksum, lengths crc)): see write_bundle.
    """
    items = arr.reshape(-1).tolist()
    if not all(type(b) is bytes for b in items):
        items = [_string_element(v, key) for v in items]
    lengths = np.fromiter(map(len, items), dtype=np.uint64, count=len(items))
    lengths_crc = crc32c(_length_bytes(lengths))
    return encode_varints(lengths), FIXED32.pack(mask_crc(lengths_crc)), lengths_crc, b"".join(items)


def _advise_sequential(handle: ReadHandle) -> None:
    """Tell the kernel a local shard is about to be read front to back (a batch reads it in
    offset order): it reads ahead further, so a cold read keeps the disk busy while the
    threads check and copy. A hint: refused or unsupported, nothing changes."""
    fd = handle.fileno()
    advise = getattr(os, "posix_fadvise", None)
    if fd is None or advise is None:
        return
    try:
        advise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except OSError:
        pass


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()


def _reader_pool(threads: int) -> ThreadPoolExecutor:
    """Threads shared by every reader of a kind of store (they idle between reads; created
    on first use): 2 for local disks, more for stores where each read waits on a network."""
    with _POOL_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 - only big reads need it

            pool = _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ckptkit-read")
        return pool


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
    """Write an index (entries: key, serialized entry) to a temp file, flushed and
    fsynced: `out` (a `Commit.file`, which publishes it) or a new AtomicFile, which the
    caller commits (tests use that to plant hand-made indexes)."""
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


def _assign_shards(sizes: list[int], num_shards: int) -> list[int]:
    """Contiguous runs of keys per shard with roughly equal bytes."""
    total = sum(sizes) or 1
    shards, run = [], 0
    for size in sizes:
        shard = min(run * num_shards // total, num_shards - 1)
        shards.append(shard)
        run += size
    return shards


def _stored_tensors(tensors: Mapping[str, Any], prefix: str, keep_order: bool = False) \
        -> tuple[list[str], list[tuple[np.ndarray | Deferred, _dtypes.DType]], list[tuple[str, bytes]]]:
    """What write_bundle stores: (keys, arrays with dtypes) sorted by key (`keep_order`:
    in the mapping's order), plus data-less entries.

    A `SlicedTensor` value becomes TF's layout for a partitioned variable
    (`BundleWriter::AddSlice`): an entry under its name with dtype, full shape and the
    list of slices but no data, and one ordinary entry per slice under its slice key.
    """
    stored: list[tuple[bytes, tuple[np.ndarray | Deferred, _dtypes.DType]]] = []
    sliced_entries: list[tuple[str, bytes]] = []
    for name, value in tensors.items():
        if isinstance(value, SlicedTensor) and len(value.pieces) == 1:
            shape = value.shape  # one piece covering it all: TF writes it plainly too
            value = value.pieces[0][1]
            got = tuple(value.shape) if isinstance(value, Deferred) else np.shape(value)
            if got != shape:
                raise InvalidArgumentError(f"the one slice of shape {list(shape)} has shape "
                                           f"{list(got)}", path=prefix, key=name)
        if isinstance(value, Deferred):
            stored.append((encode_key(name), (value, value.dtype)))
            continue
        if not isinstance(value, SlicedTensor):
            stored.append((encode_key(name), _as_array(value, name)))
            continue
        full = BundleEntryProto()
        full.shape.SetInParent()
        for d in value.shape:
            full.shape.dim.add(size=d)
        dtype = None
        for tslice, piece in value.pieces:
            arr: np.ndarray | Deferred
            arr, piece_dtype = (piece, piece.dtype) if isinstance(piece, Deferred) else _as_array(piece, name)
            if dtype is not None and piece_dtype.enum != dtype.enum:
                raise InvalidArgumentError(f"slices of one tensor must share a dtype: {dtype.name} "
                                           f"and {piece_dtype.name}", path=prefix, key=name)
            dtype = piece_dtype
            if arr.shape != tslice.shape_in(value.shape):
                raise InvalidArgumentError(f"slice {tslice.spec()} of shape {list(value.shape)} needs "
                                           f"an array of shape {list(tslice.shape_in(value.shape))}, "
                                           f"got {list(arr.shape)}", path=prefix, key=name)
            full.slices.append(tslice.to_proto())
            stored.append((encode_tensor_name_slice(name, tslice), (arr, piece_dtype)))
        assert dtype is not None  # a SlicedTensor has at least one piece
        full.dtype = dtype.enum
        sliced_entries.append((name, full.SerializeToString()))
    keys = sorted(k for k, _ in stored)
    if not keep_order:
        stored.sort(key=lambda item: item[0])
    for a, b in itertools.pairwise(keys):
        if a == b:
            raise InvalidArgumentError("two tensors would be stored under the same key",
                                       path=prefix, key=decode_key(a))
    return [decode_key(k) for k, _ in stored], [v for _, v in stored], sliced_entries


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


def write_bundle(prefix: str, tensors: Mapping[str, object], num_shards: int = 1,
                 progress: Progress | None = None, *, lock_timeout: float | None = EDIT_WAIT_SECONDS,
                 keep_order: bool = False,
                 also: Callable[[Transaction], None] | None = None) -> None:
    """Write `tensors` as a V2 bundle at `prefix`, atomically (storage.Commit).

    Data lie in the shards sorted by key, as TF's Saver writes them; `keep_order`: in
    the mapping's order instead, as TF's object-based saves write them (the index is
    sorted either way).

    Data shards and then the index are published together under the directory lock:
    at every moment, even across a crash, the prefix names the old checkpoint or the
    new one, whole. Data shards of an older checkpoint at this prefix with another
    shard count are deleted after the new index is in place.
    """
    if num_shards < 1:
        raise InvalidArgumentError(f"num_shards must be >= 1, got {num_shards}", path=prefix)
    for key in tensors:
        if not isinstance(key, str) or key == HEADER_KEY:
            raise InvalidArgumentError(f"tensor names must be non-empty strings, got {key!r}", path=prefix)
    keys, arrays, sliced_entries = _stored_tensors(tensors, prefix, keep_order)
    shard_of = _assign_shards([a.nbytes for a, _ in arrays], num_shards)
    directory = os.path.dirname(prefix)
    storage.of(prefix).makedirs(directory)
    with storage.Commit(directory, lock_timeout=lock_timeout) as tx:
        files = [tx.shard(data_filename(prefix, s, num_shards)) for s in range(num_shards)]
        entries = []
        for key, (value, dtype), shard in zip(keys, arrays, shard_of, strict=True):
            out = files[shard]
            start = out.offset
            if isinstance(value, Deferred) and value.chunks is not None and not dtype.is_string:
                crc = _write_chunks(out, value, key, prefix)
                entries.append((key, make_entry(dtype.enum, value.shape, shard, start, out.offset - start,
                                                mask_crc(crc)).SerializeToString()))
                if progress is not None:
                    progress(out.offset - start)
                continue
            arr = loaded(value, key)[0] if isinstance(value, Deferred) else value
            if dtype.is_string:
                varints, checksum, lengths_crc, data = string_parts(arr, key)
                out.write(varints)
                crc = out.write(data, out.write(checksum, lengths_crc))
                del data
            else:
                flat = _contiguous(arr, dtype).reshape(-1).view(np.uint8)  # a copy only if it must
                crc = out.write(flat)
                del flat
            entries.append((key, make_entry(dtype.enum, arr.shape, shard, start, out.offset - start,
                                            mask_crc(crc)).SerializeToString()))
            if progress is not None:
                progress(out.offset - start)
        for f in files:
            f.close()
        write_index(prefix, make_header(num_shards), entries + sliced_entries,
                    out=tx.file(index_filename(prefix)))
        new = {f.path for f in files}
        for old in existing_data_files(prefix):
            if old not in new:
                tx.delete_after(old)
        if also is not None:
            also(tx)
        tx.publish()


def drop_stale(tx: Transaction, prefix: str) -> None:
    """Delete, in commit `tx`, the files of an old checkpoint at `prefix` that a new one
    written there (its own index and data shards) does not replace: the `.meta`, whose
    graph and Saver describe the old tensors, and a V1 table file at the prefix itself
    (which a V2 index would shadow). Data shards are the writers' own business."""
    for path in (meta_graph_filename(prefix), prefix):
        if storage.isfile(path):
            tx.delete_after(path)
