""".npz archives (numpy's zip of .npy members), read and written without unpickling.

Read with `zipfile` and numpy's .npy header parser (not np.load), `allow_pickle=False`:
they hold numbers, bools and fixed-width strings ('S' bytes or 'U' text, which become
DT_STRING); object arrays would need unpickling, which would let a file run code, so they
are refused from the member's .npy header. Every member's headers are checked on open, so
that a hostile archive is refused before anything is allocated for it: one member per
array name, no two members sharing bytes, no array larger than its member holds (a
compressed member: than the size its directory entry declares, which inflating is held
to). Written: only types numpy alone reads back (`holds`). Bytes only: policy is the caller's.
"""
from __future__ import annotations

import io
import math
import os
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Mapping
from typing import IO, Any, NamedTuple

import numpy as np

from .. import dtypes as _dtypes
from .. import storage
from ..errors import CheckpointError, DataLossError, UnsupportedError
from ..storage.base import Progress
from . import values
from .tensor_file import TensorFileBackend, check_member_names, read_all
from .window import Axis, file_source, is_whole, read_box, select

__all__ = ["NpzFile", "holds", "open_file", "open_backend", "read_npz", "write_npz"]



def read_npz(path: str | os.PathLike, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """{name: array} from an .npz; 'S'/'U' arrays become DT_STRING object arrays of bytes."""
    with NpzFile(os.fspath(path)) as source:
        return read_all(source, progress)


# What a damaged zip archive or .npy member raises from zipfile, zlib and numpy (an
# unknown compression method is NotImplementedError, an encrypted member RuntimeError).
_ZIP_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile,
               NotImplementedError, RuntimeError, zlib.error, struct.error)
# ... and what numpy's .npy header parser (tokenize, ast) raises on a garbled header.
_HEADER_ERRORS = (*_ZIP_ERRORS, SyntaxError, tokenize.TokenError, TypeError, KeyError)
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive's end record


class _Member(NamedTuple):
    """Where a member's array is, as its zip and .npy headers say (checked on open)."""

    info: zipfile.ZipInfo
    data_start: int  # file offset of the member's bytes, after its local zip header
    header_len: int  # bytes of the .npy header at the start of the member's (inflated) bytes
    dtype: np.dtype  # the stored numpy dtype (byte order, 'S'/'U' width)
    shape: tuple[int, ...]
    fortran: bool


class NpzFile:
    """An .npz archive: every member's zip and .npy headers checked on open (one name per
    array, no member overlapping another, no object arrays, no claim beyond what the
    archive holds); each member read when asked for.

    The archive is read with `zipfile`, not `np.load`, which keeps the last of two
    same-named members and allocates whatever a header claims. Members are found by name
    in a dict (a list scanned per member made listing 20,000 members take 37 s)."""

    metadata: dict[str, str] | None = None  # npz stores none (a .safetensors file's __metadata__)

    def __init__(self, path: str) -> None:
        self.path = path
        self.handle = storage.of(path).open(path, ".npz file")
        self.file = self.handle.as_file()
        try:
            self._open()
        except BaseException:
            self.handle.close()
            raise

    def _open(self) -> None:
        path = self.path
        magic = self.handle.read(6, 0)
        if not magic:
            raise DataLossError("empty file, not an .npz archive", path=path)
        if magic == np.lib.format.MAGIC_PREFIX:
            raise DataLossError("a single .npy array, not an .npz archive", path=path)
        if magic[:4] not in _ZIP_MAGICS:
            raise DataLossError("not an .npz file (not a zip archive)", path=path)
        try:
            self.zip = zipfile.ZipFile(self.file)
        except _ZIP_ERRORS as exc:
            raise DataLossError(f"not a readable .npz file: {exc}", path=path) from None
        infos = _by_key(self.zip.infolist(), path)
        self.members = {key: self._member(key, info) for key, info in infos.items()}
        _check_no_overlap(self.members, path)
        self.names = list(self.members)
        self.metas = {key: _meta_of(member, path, key) for key, member in self.members.items()}

    def _member(self, key: str, info: zipfile.ZipInfo) -> _Member:
        """A member's local zip header and .npy header, read and checked: one read for a
        stored member (np.savez's), whose .npy header follows its local header."""
        path = self.path
        head = self.handle.read(_PEEK, info.header_offset)
        if len(head) < _ZIP_LOCAL.size or head[:4] != b"PK\x03\x04":
            raise DataLossError("zip member has no local header where the directory says", path=path, key=key)
        _, name_len, extra_len = _ZIP_LOCAL.unpack(head[:_ZIP_LOCAL.size])
        data_start = info.header_offset + _ZIP_LOCAL.size + name_len + extra_len
        if data_start + info.compress_size > self.handle.size:
            raise DataLossError("zip member runs past the end of the archive", path=path, key=key)
        try:
            if _is_stored(info):
                skip = data_start - info.header_offset
                shape, fortran, dtype, header_len = self._stored_header(info, data_start, head[skip:])
            else:
                with self.zip.open(info) as f:
                    shape, fortran, dtype = _npy_header(f)
                    header_len = f.tell()
        except CheckpointError:
            raise
        except _HEADER_ERRORS as exc:
            raise DataLossError(f"array header is unreadable: {exc}", path=path, key=key) from None
        if header_len > _capacity(info):
            raise DataLossError("the .npy header runs past the end of its zip member", path=path, key=key)
        if dtype.hasobject:
            raise UnsupportedError("holds an object array, which would need unpickling; only numeric, "
                                   "bool and fixed-width string ('S'/'U') arrays are read", path=path, key=key)
        if any(d < 0 for d in shape):
            raise DataLossError(f"array header has a negative dimension: {list(shape)}", path=path, key=key)
        # Zero-width items ('S0', 'U0', 'V0') count a byte each, header included: numpy would
        # read 2**40 of them from no data, and each becomes an 8-byte pointer here.
        room = _capacity(info) - (0 if dtype.itemsize == 0 else header_len)
        if math.prod(shape) * max(dtype.itemsize, 1) > room:
            zero = " (zero-width items count a byte each)" if not dtype.itemsize else ""
            raise DataLossError(f"array header claims shape {list(shape)} of {dtype}{zero}, more than "
                                f"the archive holds", path=path, key=key)
        return _Member(info, data_start, header_len, dtype, tuple(shape), bool(fortran))

    def _stored_header(self, info: zipfile.ZipInfo, data_start: int,
                       peeked: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
        """(shape, fortran, dtype, header length) of a stored member's .npy header, from
        the bytes read with its local header, or read again when it is longer than those."""
        size = min(info.compress_size, _NPY_HEADER_MAX)
        try:
            f = io.BytesIO(peeked[:size])
            return (*_npy_header(f), f.tell())
        except ValueError:
            if len(peeked) >= size:
                raise
        f = io.BytesIO(self.handle.read(size, data_start))
        return (*_npy_header(f), f.tell())

    def meta(self, name: str) -> tuple[_dtypes.DType, tuple[int, ...]]:
        return self.metas[name]

    def stored_data(self, name: str) -> tuple[int, np.dtype] | None:
        """(file offset, stored numpy dtype) of the array bytes of a member kept as they
        are (stored, not compressed or encrypted) in C order with a numeric dtype, for
        reads of a window; None for any other member (read whole)."""
        m = self.members[name]
        if not _is_stored(m.info) or m.fortran or m.dtype.kind not in "biufc":
            return None
        return m.data_start + m.header_len, m.dtype

    def read(self, name: str) -> np.ndarray:
        m, path = self.members[name], self.path
        _dtypes.check_numpy_shape(m.shape, self.metas[name][0], path, name)
        count = math.prod(m.shape)
        buf = np.empty(count * m.dtype.itemsize, dtype=np.uint8)
        try:
            with self.zip.open(m.info) as f:
                f.read(m.header_len)
                _fill(f, buf.data, path, name)
        except CheckpointError:
            raise
        except _ZIP_ERRORS as exc:
            raise DataLossError(f"array is unreadable: {exc}", path=path, key=name) from None
        arr = buf.view(m.dtype) if m.dtype.itemsize else np.zeros(count, m.dtype)
        arr = arr.reshape(m.shape[::-1]).T if m.fortran else arr.reshape(m.shape)
        return _from_npz_array(arr, path, name)

    def read_window(self, name: str, axes: tuple[Axis, ...]) -> np.ndarray:
        """The ascending window `axes` of member `name`: only its bytes where it is stored
        uncompressed in C order (formats/window.py), else read whole and cut."""
        tf_dtype, shape = self.meta(name)
        counts = tuple(a.count for a in axes)
        _dtypes.check_numpy_shape(counts, tf_dtype, self.path, name)  # `[0, 2**70]`: no bytes, no numpy shape
        if not all(counts):
            return np.empty(counts, dtype=tf_dtype.numpy)
        found = None if is_whole(axes, shape) or tf_dtype.is_string else self.stored_data(name)
        if found is None:
            arr = select(self.read(name), axes)
        else:
            offset, stored = found
            out = np.empty(math.prod(counts) * stored.itemsize, dtype=np.uint8)
            read_box(file_source(self), offset, shape, stored.itemsize, axes, out, key=name)
            arr = out.view(stored).reshape(counts)
        return arr if tf_dtype.is_string else arr.astype(tf_dtype.numpy, copy=False)  # big-endian: to native

    def close(self) -> None:
        self.zip.close() if hasattr(self, "zip") else None
        self.handle.close()

    def __enter__(self) -> NpzFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ZIP_LOCAL = struct.Struct("<4s22xHH")  # a zip local file header: signature ... name length, extra length
_DEFLATE_MAX_RATIO = 1032  # zlib's best case: a deflated member can't be larger than this
_CHUNK = 1 << 20  # bytes inflated at a time
_PEEK = 1024  # bytes read at a local header: the header, a name, an extra field and a .npy header, usually
_NPY_HEADER_MAX = 12 + 10000  # numpy's: magic, version, length, and a header dict up to max_header_size


def _is_stored(info: zipfile.ZipInfo) -> bool:
    """Whether a member's bytes are the array's as they are (not compressed, not encrypted)."""
    return info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1


def _npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the .npy header `f` is at (numpy's own parser)."""
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0), (3, 0)):  # as np.load: 3.0 is 2.0 with a UTF-8 header
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not 1.0, 2.0 or 3.0")
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(f)


def _by_key(infos: list[zipfile.ZipInfo], path: str) -> dict[str, zipfile.ZipInfo]:
    """{array name: zip entry}, as np.load names them (`a.npy` is 'a'). Two entries of one
    name (a name twice in the central directory, or both `a` and `a.npy`) are refused:
    zipfile and np.load would each silently pick one."""
    out: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if key in out:
            first = out[key].filename
            what = f"member {first!r} twice" if first == info.filename else f"both {first!r} and {info.filename!r}"
            raise DataLossError(f"the archive holds {what}: which one is the array is ambiguous",
                                path=path, key=key)
        out[key] = info
    return out


def _check_no_overlap(members: Mapping[str, _Member], path: str) -> None:
    """Refuse members sharing bytes: a zip may point many entries at one member's data,
    and reading each would multiply memory with no bound. Each member's extent is its
    local header to the end of its (compressed) data."""
    extents = sorted((m.info.header_offset, m.data_start + m.info.compress_size, key)
                     for key, m in members.items())
    for (_, end, first), (begin, _, key) in zip(extents, extents[1:], strict=False):
        if begin < end:
            raise DataLossError(f"zip member overlaps the bytes of {first!r}", path=path, key=key)


def _capacity(info: zipfile.ZipInfo) -> int:
    """The most bytes a member can inflate to: what the central directory declares, and
    no more than its compressed bytes allow (zipfile stops inflating at the declared size,
    and a member that inflates to less is an error)."""
    if info.compress_type == zipfile.ZIP_STORED:
        return min(info.file_size, info.compress_size)
    if info.compress_type == zipfile.ZIP_DEFLATED:
        return min(info.file_size, info.compress_size * _DEFLATE_MAX_RATIO)
    return info.file_size


def _fill(f: IO[bytes], view: memoryview, path: str, name: str) -> None:
    """Fill `view` from a zip member, a chunk at a time (one copy of the array in memory)."""
    got = 0
    while got < len(view):
        chunk = f.read(min(_CHUNK, len(view) - got))
        if not chunk:
            raise DataLossError("array data ends early", path=path, key=name)
        view[got:got + len(chunk)] = chunk
        got += len(chunk)


def _meta_of(member: _Member, path: str, key: str) -> tuple[_dtypes.DType, tuple[int, ...]]:
    """(TF dtype, shape) of a checked member."""
    if member.dtype.kind in "SU":
        return _dtypes.STRING, member.shape
    try:
        return _dtypes.as_dtype(member.dtype), member.shape
    except UnsupportedError:
        raise UnsupportedError(f"numpy dtype {member.dtype} has no TensorFlow equivalent",
                               path=path, key=key) from None


def _from_npz_array(arr: np.ndarray, path: str, name: str) -> np.ndarray:
    if arr.dtype.kind == "S":
        return _object_array([bytes(v) for v in arr.reshape(-1)], arr.shape)
    if arr.dtype.kind == "U":
        return _object_array([str(v).encode("utf-8") for v in arr.reshape(-1)], arr.shape)
    return arr


def _object_array(items: list, shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out.reshape(shape)


def write_npz(path: str | os.PathLike, tensors: Mapping[str, Any],
              progress: Progress | None = None) -> None:
    """Write tensors as an uncompressed .npz, atomically. Strings become 'S' arrays.

    Types numpy alone cannot read back (bfloat16, float8, int4: see `holds`) are refused;
    use .safetensors for those.
    """
    path = os.fspath(path)
    check_member_names(path, tensors, ".npz member", limit=_MAX_ZIP_NAME - len(".npy"))
    for name, value in tensors.items():  # refuse what npz can't hold before writing anything
        _npz_can_hold(values.meta_of(value, name)[0], path, name)
        if name.endswith(".npy") and name[:-4] in tensors:  # np.load's f["a.npy"] is member "a.npy"
            raise UnsupportedError(f"np.load would read {name!r} as {name[:-4]!r} (members "
                                   f"{name!r}.npy and {name[:-4]!r}.npy); rename one first", path=path, key=name)
    with storage.Commit(os.path.dirname(path)) as tx:
        out = tx.file(path)
        with zipfile.ZipFile(out.file, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, value in tensors.items():  # one tensor in memory at a time
                arr = _to_npz_array(value, path, name)
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)
                if progress is not None:
                    progress(arr.nbytes)
                del arr
        tx.publish()


_MAX_ZIP_NAME = 0xFFFF  # a zip member name's length is a 16-bit field


def holds(dtype: _dtypes.DType) -> bool:
    """Whether an .npz member can hold `dtype`: whether numpy alone (without ml_dtypes)
    reads the .npy header's type back as this dtype. bfloat16, int4 and most float8 types
    are written as raw void ('V'), which reads back as bytes; float8_e5m2 as '<f1', which
    numpy cannot read at all."""
    if dtype.is_string:
        return True  # written as 'S' arrays
    fmt = np.lib.format
    try:
        return bool(fmt.descr_to_dtype(fmt.dtype_to_descr(dtype.numpy)) == dtype.numpy)
    except (TypeError, ValueError):
        return False


def _npz_can_hold(dtype: _dtypes.DType, path: str, name: str) -> None:
    if not holds(dtype):
        raise UnsupportedError(f"npz cannot hold {dtype.name} (numpy could not read it back); "
                               "use .safetensors", path=path, key=name)


def _to_npz_array(value: Any, path: str, name: str) -> np.ndarray:
    arr, dtype = values.loaded(value, name)
    if dtype.is_string:
        items = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in arr.reshape(-1)]
        if any(item.endswith(b"\0") for item in items):
            raise UnsupportedError("string ends in NUL bytes, which a fixed-width 'S' array drops",
                                   path=path, key=name)
        return np.array(items, dtype=f"S{max((len(i) for i in items), default=0) or 1}").reshape(arr.shape)
    _npz_can_hold(dtype, path, name)
    return arr


def open_file(path: str) -> NpzFile:
    """The archive's tensors in stored order (convert's source; see formats/registry.py)."""
    return NpzFile(path)


def open_backend(path: str) -> TensorFileBackend:
    """The archive behind CheckpointReader's API (see formats/registry.py)."""
    return TensorFileBackend(NpzFile(path), "npz")


write = write_npz  # the registry's sink (convert's destination): see formats/registry.py
