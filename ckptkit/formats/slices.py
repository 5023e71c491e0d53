"""Partitioned (sliced) tensors: TF's slice keys, slice extents, and reassembly.

A partitioned variable is stored as pieces ("slices"), each a box of the full tensor
given by a (start, length) pair per dimension; a dimension the slice takes whole has
no length (TF: start 0, length -1, the "full extent"). Each piece is stored under a
binary key built from (name, slice) with TF's OrderedCode
(`core/util/saved_tensor_slice_util.cc` EncodeTensorNameSlice), so that all pieces
of one tensor sort together. V2 bundles and V1 files use the same keys.

OrderedCode facts (`core/lib/strings/ordered_code.cc`), restated:
- unsigned number: one length byte, then the value big-endian without leading zeros;
- string: bytes with 0x00 -> 00 ff and 0xff -> ff 00, then the separator 00 01;
- signed number: n bytes (n = bit length of (v or ~v) // 7 + 1) holding v in two's
  complement, with its top n bits flipped (a run of n ones for v >= 0, zeros for v < 0).

This module also holds `SlicedTensor`, the value a caller hands to `ckptkit.save` to
write a partitioned variable.
"""
from __future__ import annotations

import heapq
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from ..errors import CheckpointError, DataLossError, InvalidArgumentError
from ..proto import tensor_slice_pb2

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, DTypeLike

    # Python slices into a tensor: one, or one per leading dimension
    Index = slice | tuple[slice, ...]

__all__ = ["FULL", "TensorSlice", "SlicedTensor", "encode_tensor_name_slice",
           "decode_tensor_name_slice", "is_slice_key", "assemble", "check_tiling", "partition_sizes",
           "write_num_increasing", "read_num_increasing", "write_signed_num_increasing",
           "read_signed_num_increasing", "write_string", "read_string"]

FULL = -1  # TF's kFullExtent: the length of a dimension the slice takes whole


# --------------------------------------------------------------------------- OrderedCode

class OrderedCodeError(ValueError):
    """A malformed OrderedCode item (callers turn it into a DataLossError with the file)."""


def write_num_increasing(value: int) -> bytes:
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"unsigned 64-bit number out of range: {value}")
    body = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes([len(body)]) + body


def read_num_increasing(buf: bytes, pos: int = 0) -> tuple[int, int]:
    if pos >= len(buf):
        raise OrderedCodeError("truncated number")
    n = buf[pos]
    if n > 8 or pos + 1 + n > len(buf):
        raise OrderedCodeError("malformed number")
    return int.from_bytes(buf[pos + 1:pos + 1 + n], "big"), pos + 1 + n


def write_string(value: bytes) -> bytes:
    return _escape(value) + b"\x00\x01"


def _escape(value: bytes) -> bytes:
    out = bytearray()
    for byte in value:
        if byte == 0x00:
            out += b"\x00\xff"
        elif byte == 0xFF:
            out += b"\xff\x00"
        else:
            out.append(byte)
    return bytes(out)


def read_string(buf: bytes, pos: int = 0) -> tuple[bytes, int]:
    out = bytearray()
    n = len(buf)
    while True:
        # find the next escape byte (0x00 or 0xff)
        nxt = n
        for special in (b"\x00", b"\xff"):
            i = buf.find(special, pos)
            if i != -1 and i < nxt:
                nxt = i
        if nxt + 1 >= n:
            raise OrderedCodeError("unterminated string")
        out += buf[pos:nxt]
        pair = buf[nxt:nxt + 2]
        pos = nxt + 2
        if pair == b"\x00\x01":
            return bytes(out), pos
        if pair == b"\x00\xff":
            out.append(0x00)
        elif pair == b"\xff\x00":
            out.append(0xFF)
        else:
            raise OrderedCodeError("bad escape in string")


def _signed_length(value: int) -> int:
    x = ~value if value < 0 else value
    return x.bit_length() // 7 + 1


def write_signed_num_increasing(value: int) -> bytes:
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError(f"signed 64-bit number out of range: {value}")
    n = _signed_length(value)
    bits = 8 * n
    header = ((1 << n) - 1) << (bits - n)
    return ((value & ((1 << bits) - 1)) ^ header).to_bytes(n, "big")


def read_signed_num_increasing(buf: bytes, pos: int = 0) -> tuple[int, int]:
    if pos >= len(buf):
        raise OrderedCodeError("truncated signed number")
    negative = not buf[pos] & 0x80
    flip = 0xFF if negative else 0x00
    # The length is the run of leading bits equal to the sign bit (up to 10 bytes).
    n = 0
    i = pos
    while True:
        if i >= len(buf):
            raise OrderedCodeError("truncated signed number")
        byte = buf[i] ^ flip
        ones = 8 - (byte ^ 0xFF).bit_length()  # leading one bits of this byte
        n += ones
        if ones < 8:
            break
        i += 1
    if n > 10 or pos + n > len(buf):
        raise OrderedCodeError("malformed signed number")
    bits = 8 * n
    raw = int.from_bytes(buf[pos:pos + n], "big") ^ (((1 << n) - 1) << (bits - n))
    value = raw - (1 << bits) if negative else raw
    if not -(1 << 63) <= value < 1 << 63 or _signed_length(value) != n:
        raise OrderedCodeError("malformed signed number")
    return value, pos + n


# --------------------------------------------------------------------------- slices

_SPEC_ITEM = re.compile(r"^(-|(\d+),(\d+))$")


class TensorSlice:
    """A box of a tensor: per dimension (start, length), length FULL (-1) for "all of it"."""

    __slots__ = ("extents",)

    def __init__(self, extents: Iterable[tuple[int, int]], *, path: str | None = None, key: str | None = None,
                 error: type[CheckpointError] = InvalidArgumentError) -> None:
        """Extents (start, length) per dimension; anything but start >= 0 and length > 0 (or
        the full extent (0, FULL)) raises `error` naming `path` and `key` where given."""
        ext = []
        for start, length in extents:
            start, length = int(start), int(length)
            if length == FULL:
                if start != 0:
                    raise error(f"a full extent must start at 0, got start {start}", path=path, key=key)
            elif start < 0 or length <= 0:
                raise error(f"slice extents need start >= 0 and length > 0, got ({start}, {length})",
                            path=path, key=key)
            elif start + length >= 1 << 63:
                raise error(f"slice extent ({start}, {length}) ends past 2^63", path=path, key=key)
            ext.append((start, length))
        self.extents: tuple[tuple[int, int], ...] = tuple(ext)

    @classmethod
    def full(cls, rank: int) -> TensorSlice:
        return cls([(0, FULL)] * rank)

    @classmethod
    def from_proto(cls, proto: tensor_slice_pb2.TensorSliceProto, *, path: str | None = None,
                   key: str | None = None) -> TensorSlice:
        """From a TensorSliceProto: an extent without a length is the whole dimension.

        The proto comes from a file, so a bad extent (a negative start, a zero or
        negative length other than the full extent's -1) is a DataLossError naming
        `path` and `key` (the tensor) where the caller gives them.
        """
        return cls(((e.start, e.length if e.HasField("length") else FULL) for e in proto.extent),
                   path=path, key=key, error=DataLossError)

    @classmethod
    def parse(cls, spec: str, *, path: str | None = None, key: str | None = None) -> TensorSlice:
        """TF's slice string: `0,3:-` (start,length per dim, `-` for a whole dim).

        A malformed spec (a negative start among them) is an InvalidArgumentError naming
        `path` and `key` where given.
        """
        extents = []
        for item in (s for s in spec.split(":") if s):
            m = _SPEC_ITEM.match(item)
            if not m:
                raise InvalidArgumentError(f"bad slice spec {spec!r}: expected 'start,length' or '-' "
                                           "with start >= 0 and length > 0", path=path, key=key)
            extents.append((0, FULL) if item == "-" else (int(m.group(2)), int(m.group(3))))
        return cls(extents, path=path, key=key)

    @classmethod
    def from_index(cls, index: Index, shape: Sequence[int]) -> TensorSlice:
        """From a tuple of Python slices (step 1) into a tensor of `shape`."""
        if not isinstance(index, tuple):
            index = (index,)
        if len(index) > len(shape):
            raise InvalidArgumentError(f"slice {index!r} has more dimensions than shape {list(shape)}")
        index = index + (slice(None),) * (len(shape) - len(index))
        extents = []
        for s, dim in zip(index, shape, strict=True):
            if not isinstance(s, slice):
                raise InvalidArgumentError(f"slice {index!r}: use slices (a:b), not integers")
            start, stop, step = s.indices(dim)
            if step != 1:
                raise InvalidArgumentError(f"slice {index!r}: steps are not supported")
            if start == 0 and stop == dim:
                extents.append((0, FULL))
            else:
                extents.append((start, stop - start))
        return cls(extents)

    def to_proto(self) -> tensor_slice_pb2.TensorSliceProto:
        """As TF writes it: full dimensions get an empty Extent (no start, no length)."""
        proto = tensor_slice_pb2.TensorSliceProto()
        for start, length in self.extents:
            e = proto.extent.add()
            if length != FULL:
                e.start = start
                e.length = length
        return proto

    @property
    def rank(self) -> int:
        return len(self.extents)

    def is_full(self) -> bool:
        return all(length == FULL for _, length in self.extents)

    def spec(self) -> str:
        """TF's DebugString: `0,3:-`."""
        return ":".join("-" if length == FULL else f"{start},{length}" for start, length in self.extents)

    def bounds(self, shape: Sequence[int]) -> list[tuple[int, int]]:
        """(start, stop) per dimension within a tensor of `shape`."""
        # not strict: a V1 scalar is read through its one slice without a rank check
        return [(0, dim) if length == FULL else (start, start + length)
                for (start, length), dim in zip(self.extents, shape, strict=False)]

    def fits(self, shape: Sequence[int]) -> bool:
        return len(shape) == self.rank and all(
            stop <= dim for (_, stop), dim in zip(self.bounds(shape), shape, strict=True))

    def shape_in(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(stop - start for start, stop in self.bounds(shape))

    def index_in(self, shape: Sequence[int]) -> tuple[slice, ...]:
        return tuple(slice(start, stop) for start, stop in self.bounds(shape))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorSlice) and self.extents == other.extents

    def __hash__(self) -> int:
        return hash(self.extents)

    def __repr__(self) -> str:
        return f"TensorSlice({self.spec()!r})"


def as_slice(value: TensorSlice | str | Index | Iterable[tuple[int, int]],
             shape: Sequence[int] | None = None) -> TensorSlice:
    """A TensorSlice from a TensorSlice, a TF spec string, [(start, length)...] or Python slices."""
    if isinstance(value, TensorSlice):
        return value
    if isinstance(value, str):
        return TensorSlice.parse(value)
    if isinstance(value, slice) or (isinstance(value, tuple) and value and isinstance(value[0], slice)):
        if shape is None:
            raise InvalidArgumentError("Python slices need the full shape")
        return TensorSlice.from_index(cast("Index", value), shape)
    return TensorSlice(cast("Iterable[tuple[int, int]]", value))  # what is left: (start, length) pairs


def encode_tensor_name_slice(name: str | bytes, tslice: TensorSlice) -> bytes:
    """TF's EncodeTensorNameSlice: the key a slice of `name` is stored under."""
    raw = name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")
    parts = [write_num_increasing(0), write_string(raw), write_num_increasing(tslice.rank)]
    for start, length in tslice.extents:
        parts.append(write_signed_num_increasing(start))
        parts.append(write_signed_num_increasing(length))
    return b"".join(parts)


def decode_tensor_name_slice(key: bytes, *, path: str | None = None) -> tuple[str, TensorSlice]:
    """TF's DecodeTensorNameSlice: (name, slice) from a slice key; DataLossError if malformed."""
    try:
        zero, pos = read_num_increasing(key, 0)
        if zero != 0:
            raise OrderedCodeError("slice keys start with the number 0")
        name, pos = read_string(key, pos)
        rank, pos = read_num_increasing(key, pos)
        if rank == 0 or rank >= 2 ** 31 - 1:
            raise OrderedCodeError(f"bad rank {rank}")
        extents = []
        for _ in range(rank):
            start, pos = read_signed_num_increasing(key, pos)
            length, pos = read_signed_num_increasing(key, pos)
            extents.append((start, length) if length >= 0 else (0, FULL))
        return name.decode("utf-8", "surrogateescape"), TensorSlice(extents)
    except (OrderedCodeError, InvalidArgumentError) as exc:
        raise DataLossError(f"malformed tensor slice key ({exc})", path=path,
                            key=key.decode("utf-8", "surrogateescape")) from None


def is_slice_key(key: str | bytes) -> bool:
    """True for the binary keys under which partitioned variables keep their slices.

    TF encodes them with OrderedCode, which starts every such key with the number 0,
    written as a single 0x00 byte; no tensor name starts with NUL.
    """
    return key[:1] in ("\x00", b"\x00")


# --------------------------------------------------------------------------- reassembly

# Above this many cells in the compressed grid, overlaps are found by a sweep instead.
_GRID_CELLS = 1 << 22


def check_tiling(shape: Sequence[int], tslices: Sequence[TensorSlice], *, path: str | None = None,
                 key: str | None = None,
                 error: type[CheckpointError] = DataLossError) -> list[list[tuple[int, int]]]:
    """Check that `tslices` tile `shape` exactly; return each one's (start, stop) bounds.

    Each slice must fit the shape and no two may overlap; then the slices cover the
    tensor exactly when their volumes add up to its size. Anything else raises `error`.
    Slice lists come from files and may be hostile (10^5 slices in a 2 MB index), so
    overlaps are not checked pair by pair: see `_find_overlap`.
    """
    shape = tuple(shape)
    boxes = []
    for tslice in tslices:
        if not tslice.fits(shape):
            raise error(f"slice {tslice.spec()} does not fit shape {list(shape)}", path=path, key=key)
        boxes.append(tslice.bounds(shape))
    nonempty = [i for i, box in enumerate(boxes) if all(b > a for a, b in box)]
    pair = _find_overlap([boxes[i] for i in nonempty], len(shape))
    if pair is not None:
        i, j = sorted(nonempty[k] for k in pair)
        raise error(f"slices {tslices[i].spec()} and {tslices[j].spec()} overlap", path=path, key=key)
    covered = sum(math.prod(b - a for a, b in box) for box in boxes)
    total = math.prod(shape)
    if covered != total:
        raise error(f"slices cover {covered} of the {total} elements of shape {list(shape)}: "
                    f"{total - covered} missing", path=path, key=key)
    return boxes


def _find_overlap(boxes: list[list[tuple[int, int]]], rank: int) -> tuple[int, int] | None:
    """Indices of two overlapping non-empty boxes, or None.

    Usually on the compressed grid (each dimension cut only where some box starts or
    stops): each box marks its cells, and a box finding a cell already marked
    overlaps an earlier one; work is O(cells + boxes). When that grid would be too
    big (irregular hostile slices), a sweep along the dimension with the most
    distinct starts compares only boxes whose extents along it intersect.
    """
    import numpy as np  # noqa: PLC0415 - listing a checkpoint imports no numpy

    if len(boxes) < 2:
        return None
    if rank == 0:
        return (0, 1)  # two scalars' "slices" are the same element
    cuts = [sorted({x for box in boxes for x in box[d]}) for d in range(rank)]
    if math.prod(len(c) - 1 for c in cuts) <= _GRID_CELLS:
        where = [{x: i for i, x in enumerate(c)} for c in cuts]
        owner = np.full(tuple(len(c) - 1 for c in cuts), -1, dtype=np.int64)
        for n, box in enumerate(boxes):
            cells = owner[tuple(slice(where[d][a], where[d][b]) for d, (a, b) in enumerate(box))]
            taken = cells[cells >= 0]
            if taken.size:
                return int(taken[0]), n
            cells[...] = n
        return None
    d = max(range(rank), key=lambda k: len({box[k][0] for box in boxes}))
    order = sorted(range(len(boxes)), key=lambda n: boxes[n][d][0])
    active: list[tuple[int, int]] = []  # heap of (stop along d, box)
    for n in order:
        start = boxes[n][d][0]
        while active and active[0][0] <= start:
            heapq.heappop(active)
        for _, m in active:
            if all(a0 < b1 and b0 < a1 for (a0, a1), (b0, b1) in zip(boxes[n], boxes[m], strict=True)):
                return m, n
        heapq.heappush(active, (boxes[n][d][1], n))
    return None


def _loader(arr: np.ndarray) -> Callable[[], np.ndarray]:
    """A loader (as `assemble` takes) of an array already in memory."""
    return lambda: arr


def assemble(shape: Sequence[int], numpy_dtype: DTypeLike,
             pieces: Sequence[tuple[TensorSlice, Callable[[], np.ndarray]]],
             *, path: str | None = None, key: str | None = None) -> np.ndarray:
    """The full tensor of `shape` from its slices; each piece is (slice, loader of its data).

    The slices must tile the tensor exactly: a slice outside the shape, two slices that
    overlap, or a gap in coverage is a DataLossError naming `key` (TF refuses the same).
    Loaders run one at a time, so only one slice's temporary is alive at once.
    """
    import numpy as np  # noqa: PLC0415 - listing a checkpoint imports no numpy

    shape = tuple(shape)
    boxes = check_tiling(shape, [s for s, _ in pieces], path=path, key=key)
    out = np.empty(shape, dtype=numpy_dtype)
    for (tslice, load), box in zip(pieces, boxes, strict=True):
        want = tuple(b - a for a, b in box)
        data = load()
        if tuple(data.shape) != want:
            raise DataLossError(f"slice {tslice.spec()} holds shape {list(data.shape)}, expected {list(want)}",
                                path=path, key=key)
        out[tslice.index_in(shape)] = data
    return out


# --------------------------------------------------------------------------- writing

def partition_sizes(dim: int, num_partitions: int) -> list[int]:
    """How TF's fixed_size_partitioner splits `dim`: the first `dim % n` parts get one more."""
    if num_partitions < 1:
        raise InvalidArgumentError(f"num_partitions must be >= 1, got {num_partitions}")
    num_partitions = min(num_partitions, max(dim, 1))
    base, extra = divmod(dim, num_partitions)
    return [base + (1 if i < extra else 0) for i in range(num_partitions)]


class SlicedTensor:
    """A partitioned variable to write: its full shape and its pieces.

    Pass one as a value to `ckptkit.save(prefix, {"name": sliced})`; the checkpoint then
    holds what TF's Saver writes for a partitioned variable: an entry for `name` listing
    the slices, and each piece under its slice key. TF reads it back whole
    (`tf.train.load_checkpoint(p).get_tensor("name")`) and a TF1 Saver restores it into
    a partitioned variable, with the same or a different partitioning.

        SlicedTensor.split(array, 3)                 # like fixed_size_partitioner(3)
        SlicedTensor.split(array, 2, axis=1)
        SlicedTensor((7, 4), [("0,3:-", a), ("3,4:-", b)])   # explicit pieces
        SlicedTensor((7, 4), [((slice(0, 3),), a), ...])     # or Python slices
    """

    def __init__(self, shape: Sequence[int], pieces: Iterable[tuple[Any, Any]]) -> None:
        self.shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in self.shape):
            raise InvalidArgumentError(f"bad shape {list(self.shape)}")
        self.pieces: list[tuple[TensorSlice, Any]] = []  # (slice, array-like)
        for spec, value in pieces:
            tslice = as_slice(spec, self.shape)
            if not tslice.fits(self.shape):
                raise InvalidArgumentError(f"slice {tslice.spec()} does not fit shape {list(self.shape)}")
            self.pieces.append((tslice, value))
        if not self.pieces:
            raise InvalidArgumentError("a SlicedTensor needs at least one piece")
        check_tiling(self.shape, [s for s, _ in self.pieces], error=InvalidArgumentError)

    @classmethod
    def split(cls, value: ArrayLike, num_partitions: int, axis: int = 0) -> SlicedTensor:
        """Cut `value` along `axis` into `num_partitions` pieces, as fixed_size_partitioner does."""
        import numpy as np  # noqa: PLC0415 - listing a checkpoint imports no numpy

        arr = np.asarray(value)
        if arr.ndim == 0:
            raise InvalidArgumentError("cannot partition a scalar")
        axis = axis % arr.ndim
        pieces, start = [], 0
        for size in partition_sizes(arr.shape[axis], num_partitions):
            index = [slice(None)] * arr.ndim
            index[axis] = slice(start, start + size)
            extents = [(0, FULL)] * arr.ndim
            extents[axis] = (start, size)
            pieces.append((TensorSlice(extents), arr[tuple(index)]))
            start += size
        return cls(arr.shape, pieces)

    def to_numpy(self) -> np.ndarray:
        """The full tensor (for checks; the writer never builds it)."""
        import numpy as np  # noqa: PLC0415 - listing a checkpoint imports no numpy

        arrays = [(s, np.asarray(v)) for s, v in self.pieces]
        return assemble(self.shape, arrays[0][1].dtype, [(s, _loader(a)) for s, a in arrays])

    def __repr__(self) -> str:
        return f"SlicedTensor(shape={list(self.shape)}, slices={[s.spec() for s, _ in self.pieces]})"
