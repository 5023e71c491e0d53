"""The `.index` file of a V2 tensor bundle: header and entries, decoded without numpy.

The index is an SSTable (see table.py) mapping each tensor key to a serialized
BundleEntryProto (dtype, shape, shard, offset, size, masked crc32c); key "" holds the
BundleHeaderProto. Listing a checkpoint needs only this module: it imports no numpy, so
`ckptkit ls` starts fast. bundle.py reads and writes the data shards.
Facts from TF's `core/util/tensor_bundle/tensor_bundle.cc`.
"""
from __future__ import annotations

import gc
import re
import threading
from collections.abc import Iterable, Iterator

from .. import storage
from ..errors import DataLossError, UnsupportedError
from ..proto import tensor_bundle_pb2
from .naming import index_filename
from .slices import TensorSlice, encode_tensor_name_slice, is_slice_key
from .table import TableReader

HEADER_KEY = ""
BUNDLE_VERSION = 1  # kTensorBundleVersion: the producer version TF writes and accepts
MAX_DIMS = 254      # TensorShape::MaxDimensions()

BundleEntryProto = tensor_bundle_pb2.BundleEntryProto
BundleHeaderProto = tensor_bundle_pb2.BundleHeaderProto
LITTLE, BIG = BundleHeaderProto.LITTLE, BundleHeaderProto.BIG
INT64_MAX = (1 << 63) - 1


def decode_key(raw: bytes) -> str:
    """Keys are bytes on disk; names are UTF-8, slice keys are binary: keep both lossless."""
    return raw.decode("utf-8", "surrogateescape")


def encode_key(key: str | bytes) -> bytes:
    return key if isinstance(key, bytes) else key.encode("utf-8", "surrogateescape")


def shape_of(entry: BundleEntryProto, path: str | None = None, key: str | None = None) -> tuple[int, ...]:
    """The entry's dims, if TF's TensorShape::IsValid accepts them: rank <= 254, every
    dim >= 0, and the element count, multiplied out in dimension order, never past
    2^63 - 1 (so `[0, 2**62]` is valid, `[2**62, 4, 0]` is not). Else DataLossError."""
    shape = entry.shape
    if shape.unknown_rank or len(shape.dim) > MAX_DIMS:
        raise DataLossError("invalid tensor shape in index", path=path, key=key)
    dims = tuple(d.size for d in shape.dim)
    count = 1
    for d in dims:
        if d < 0:
            raise DataLossError(f"invalid tensor shape {list(dims)} in index", path=path, key=key)
        count *= d
        if count > INT64_MAX:
            raise DataLossError(f"invalid tensor shape {list(dims)} in index: more than 2^63 elements",
                                path=path, key=key)
    return dims


# An entry as TF serializes it, fields in number order: dtype (1, one-byte varint), shape
# (2, length < 128), then only shard_id (3, one byte), offset (4), size (5), crc32c (6).
# For such an entry, dtype and shape are exactly the bytes before the rest, and no later
# field can change them (a repeated dtype or shape field would, protobuf merges those).
_DTYPE_THEN_SHAPE_TAG = rb"\x08[\x01-\x7f]\x12"  # dtype field and value, the shape's tag
ENTRY_HEAD = re.compile(_DTYPE_THEN_SHAPE_TAG + rb"[\x00-\x7f]")
_AFTER_SHARD = rb"(?:\x20[\x80-\xff]{0,8}[\x00-\x7f])?(?:\x28[\x80-\xff]{0,8}[\x00-\x7f])?(?:\x35.{4})?"
ENTRY_REST = re.compile(rb"(?:\x18[\x00-\x7f])?" + _AFTER_SHARD, re.S)
# The same, for reads: groups shard_id, offset and size (varints of at most 63 bits:
# never negative), crc32c.
ENTRY_FIELDS = re.compile(rb"(?:\x18([\x00-\x7f]))?(?:\x20([\x80-\xff]{0,8}[\x00-\x7f]))?"
                           rb"(?:\x28([\x80-\xff]{0,8}[\x00-\x7f]))?(?:\x35(.{4}))?", re.S)


def plain_entry(shape_length: bytes, num_shards: int) -> re.Pattern | None:
    """A pattern whose fullmatch says an entry is ENTRY_HEAD + ENTRY_REST with a shape of
    `shape_length` (the entry's length byte) and a stored shard, if any, below
    `num_shards`: the listing's whole check in one call. None where no entry with that
    length byte is in the plain layout."""
    if len(shape_length) != 1 or shape_length[0] >= 0x80 or num_shards < 1:
        return None
    last_shard = re.escape(bytes([min(num_shards, 0x80) - 1]))
    return re.compile(_DTYPE_THEN_SHAPE_TAG + re.escape(shape_length) + rb".{%d}" % shape_length[0]
                      + rb"(?:\x18[\x00-" + last_shard + rb"])?" + _AFTER_SHARD, re.S)


def uvarint(raw: bytes | None) -> int:
    """The value of one varint matched by ENTRY_REST (None: the field was absent, 0)."""
    if raw is None:
        return 0
    value = raw[-1]
    for byte in raw[-2::-1]:  # most significant group first
        value = (value << 7) | (byte & 0x7F)
    return value


class gc_paused:  # noqa: N801 - used like a function: `with gc_paused():`
    """Pause the cyclic GC while building many small acyclic objects (keys, entries).

    Each of them would count toward a collection, and in a process that already holds
    many objects (TF, a model) every full collection walks all of them: a 100k-entry
    index then spends more time in the collector than decoding. Nothing built here
    forms cycles, so nothing is lost by collecting later.
    """

    def __enter__(self) -> None:
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was_enabled:
            gc.enable()


class IndexReplacedError(DataLossError):
    """A commit replaced the checkpoint after its index was read (CheckpointReader reopens)."""


class _Decoded:
    """What one version of an index file decodes to, shared by the BundleIndexes that
    read it (see _remember); never changed once built, only completed: the keys
    listed, their (dtype, shape), dtype+shape bytes decoded."""

    __slots__ = ("raw", "header_bytes", "meta_cache", "visible", "metas")

    def __init__(self, raw: dict[str, bytes], header_bytes: bytes) -> None:
        self.raw = raw
        self.header_bytes = header_bytes
        self.meta_cache: dict[bytes, tuple[int, tuple[int, ...]]] = {}
        self.visible: list[str] | None = None
        self.metas: dict[str, tuple[int, tuple[int, ...]]] | None = None


# The local indexes this process decoded last, by (path, identity of the file version
# read, journal renames pending): a second reader of an unchanged checkpoint (listing it
# again, `load_variable` in a loop) skips reading and decoding its index. A file is
# replaced by rename (new identity) whenever ckptkit or TF writes it, so a stale entry
# is never hit; only the last _DECODED_KEEP are kept (a 100k-entry index holds ~25 MB).
_DECODED: dict[tuple, _Decoded] = {}
_DECODED_KEEP = 2


_DECODED_LOCK = threading.Lock()


def _remember(key: tuple, decoded: _Decoded) -> None:
    with _DECODED_LOCK:
        _DECODED.pop(key, None)
        _DECODED[key] = decoded  # most recent last
        while len(_DECODED) > _DECODED_KEEP:
            del _DECODED[next(iter(_DECODED))]


class BundleIndex:
    """The parsed `.index` file: header plus every entry, decoded on first use."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.path = index_filename(prefix)
        self.store = storage.of(prefix)
        # A commit whose writer died after its commit point is read through its journal.
        self.pending = self.store.pending(self.path)
        with self.store.open(self.path, "checkpoint index", self.pending) as f:
            self.read_as = f.identity  # which index this is (see BundleData._file)
            # the same version of the same file, decoded already in this process?
            # Local files only: their identity (device, inode, size, mtime) changes with every
            # replacement; a remote store's may not (an HTTP server without ETag or Last-Modified).
            local = f.identity is not None and f.fileno() is not None
            cache_key = (self.path, f.identity, tuple(sorted(self.pending.items()))) if local else None
            decoded = _DECODED.get(cache_key) if cache_key is not None else None
            if decoded is None:
                decoded = self._decode(f.read_all())
        raw, header_bytes = decoded.raw, decoded.header_bytes
        self.header = BundleHeaderProto()
        try:
            self.header.ParseFromString(header_bytes)
        except Exception:  # noqa: BLE001 - protobuf raises DecodeError (or others on the C backend)
            raise DataLossError("index header is not parseable", path=self.path) from None
        if self.header.version.producer < 1 or BUNDLE_VERSION in self.header.version.bad_consumers \
                or self.header.version.min_consumer > BUNDLE_VERSION:
            raise UnsupportedError(f"unsupported bundle version ({self.header.version})".replace("\n", " "),
                                   path=self.path)
        if self.header.num_shards < 1 and raw:
            raise DataLossError(f"index header says {self.header.num_shards} shards", path=self.path)
        if self.header.endianness not in (LITTLE, BIG):
            raise DataLossError(f"index header has unknown endianness {self.header.endianness}",
                                path=self.path)
        self._raw = raw
        self._entries: dict[str, BundleEntryProto] = {}
        self._decoded = decoded
        self._meta_cache = decoded.meta_cache
        if cache_key is not None:
            _remember(cache_key, decoded)

    def _decode(self, data: bytes) -> _Decoded:
        with gc_paused():
            table = TableReader(data, self.path)
            # Keys are bytes on disk (decode_key, inlined: 100k keys are a hot loop).
            raw: dict[str, bytes] = {k.decode("utf-8", "surrogateescape"): v for k, v in table}
        header_bytes = raw.pop(HEADER_KEY, None)
        if header_bytes is None:
            raise DataLossError("index has no header entry", path=self.path)
        return _Decoded(raw, header_bytes)

    @property
    def num_shards(self) -> int:
        return self.header.num_shards

    def keys(self) -> list[str]:
        return list(self._raw)

    def __contains__(self, key: str) -> bool:
        return key in self._raw

    def __len__(self) -> int:
        return len(self._raw)

    def visible_keys(self) -> list[str]:
        """The keys TF's CheckpointReader lists: every key but the slices of partitioned tensors.

        A partitioned variable shows under its own name with its full shape; the keys
        its slices are stored under (the encodings of the slices its entry lists) are
        hidden (TF's `CheckpointReader::BuildV2VarMaps`). Slice keys start with NUL, so
        an index without such keys needs no parsing at all.
        """
        decoded = self._decoded
        if decoded.visible is None:
            # Keys come in table order and slice keys (leading NUL) sort first.
            if not is_slice_key(next(iter(self._raw), "")):
                decoded.visible = list(self._raw)
            else:
                hidden = {decode_key(encode_tensor_name_slice(k, TensorSlice.from_proto(p)))
                          for k in self._raw for p in self.entry(k).slices}
                decoded.visible = [k for k in self._raw if k not in hidden]
        return decoded.visible

    def raw_items(self) -> Iterator[tuple[str, bytes]]:
        """(key, serialized BundleEntryProto) in key order: for index rewrites."""
        return iter(self._raw.items())

    def meta(self, key: str) -> tuple[int, tuple[int, ...]]:
        """(dtype enum, shape) of `key`, as `entry(key)` gives them and checked alike."""
        return self.metas((key,))[key]  # KeyError for the caller to translate

    def metas(self, keys: Iterable[str] | None = None) -> dict[str, tuple[int, tuple[int, ...]]]:
        """{key: (dtype enum, shape)} for `keys` (default: all), as `entry` would give them.

        Listing a checkpoint needs only these, and entries written by TF start with the
        same dtype+shape bytes for every tensor of a shape: those bytes are decoded once
        and looked up after that, so 100k entries cost a regex match and a dict lookup
        each. An entry not in TF's plain layout goes through the full protobuf parse.
        """
        decoded = self._decoded
        if keys is not None and keys is decoded.visible and decoded.metas is not None:
            return decoded.metas  # every listed key, decoded by an earlier reader of this file
        with gc_paused():
            found = self._metas(self._raw if keys is None else keys)
        if keys is not None and keys is decoded.visible:
            decoded.metas = found
        return found

    def _metas(self, keys: Iterable[str]) -> dict[str, tuple[int, tuple[int, ...]]]:
        raw = self._raw
        cache = self._meta_cache
        num_shards = self.num_shards
        patterns: dict[bytes, re.Pattern | None] = {}  # by the shape's length byte
        out = {}
        every = keys is raw or (isinstance(keys, list) and keys is self._decoded.visible and len(keys) == len(raw))
        for key, value in (raw.items() if every else ((k, raw[k]) for k in keys)):
            length = value[3:4]
            pattern = patterns[length] if length in patterns else \
                patterns.setdefault(length, plain_entry(length, num_shards))
            if pattern is not None and pattern.fullmatch(value):
                head = value[:4 + length[0]]
                found = cache.get(head)
                if found is None:
                    found = cache[head] = self._parse_meta(key, head)
                out[key] = found
                continue
            entry = self.entry(key)
            if not entry.slices and not 0 <= entry.shard_id < max(num_shards, 1):
                # listing refuses what every read would (BundleData.checked checks the rest)
                raise DataLossError(f"entry names shard {entry.shard_id} of {num_shards}",
                                    path=self.path, key=key)
            out[key] = (entry.dtype, shape_of(entry, self.path, key))
        return out

    def head_meta(self, key: str, head: bytes) -> tuple[int, tuple[int, ...]]:
        """(dtype enum, shape) of an entry in TF's plain layout whose dtype+shape bytes are
        `head`: decoded once per distinct `head` (DataLossError naming `key` if bad)."""
        found = self._meta_cache.get(head)
        if found is None:
            found = self._meta_cache[head] = self._parse_meta(key, head)
        return found

    def _parse_meta(self, key: str, head: bytes) -> tuple[int, tuple[int, ...]]:
        entry = BundleEntryProto()
        try:
            entry.ParseFromString(head)
        except Exception:  # noqa: BLE001 - DecodeError, or others from the C backend
            raise DataLossError("index entry is not parseable", path=self.path, key=key) from None
        return entry.dtype, shape_of(entry, self.path, key)

    def entry(self, key: str) -> BundleEntryProto:
        """The parsed entry under `key` (KeyError if absent), as stored: only parsing is
        checked here; `BundleData.checked` validates it against its shards."""
        entry = self._entries.get(key)
        if entry is None:
            raw = self._raw[key]  # KeyError for the caller to translate
            entry = BundleEntryProto()
            try:
                entry.ParseFromString(raw)
            except Exception:  # noqa: BLE001 - DecodeError, or others from the C backend
                raise DataLossError("index entry is not parseable", path=self.path, key=key) from None
            self._entries[key] = entry
        return entry
