"""Checkpoints to and from `.npz` and `.safetensors`, chosen by file extension.

safetensors is read and written here directly (it is a small format, and ckptkit does
not depend on the `safetensors` package): an 8-byte little-endian header length, a
JSON header `{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]},
"__metadata__": {str: str}}` padded with spaces to a multiple of 8 bytes, then the
tensors' little-endian bytes, offsets counted from the end of the header.

npz files are read with `allow_pickle=False`: they hold numbers, bools and
fixed-width strings ('S' bytes or 'U' text, which become DT_STRING); object arrays
would need unpickling, which would let a file run code, so they are refused.
"""
from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import math
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from . import dtypes as _dtypes
from .errors import CheckpointError, DataLossError, InvalidArgumentError, NotFoundError, UnsupportedError
from .format import bundle
from .format.commit import Commit
from .format.files import open_regular
from .reader import CheckpointReader

__all__ = ["OBJECT_GRAPH_KEY", "check_destination", "convert", "friendly_name", "open_source", "read_any",
           "read_npz", "read_safetensors", "source_bytes", "write_npz", "write_safetensors"]

Progress = Callable[[int], None]

# TF dtype name <-> safetensors dtype code
_ST_CODES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8",
    "bool": "BOOL", "complex64": "C64",
    "float8_e5m2": "F8_E5M2", "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2fnuz": "F8_E5M2FNUZ", "float8_e4m3fnuz": "F8_E4M3FNUZ",
}
_ST_DTYPES = {code: name for name, code in _ST_CODES.items()}
_HEADER_LEN = struct.Struct("<Q")
_MAX_HEADER = 100 << 20  # the safetensors package's own limit


def _kind(path: str) -> str:
    lower = path.lower()
    if lower.endswith(".npz"):
        return "npz"
    if lower.endswith(".safetensors"):
        return "safetensors"
    return "checkpoint"


# --------------------------------------------------------------------------- safetensors

def read_safetensors(path: str | os.PathLike, progress: Progress | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """({name: array}, metadata) from a .safetensors file, every offset checked."""
    with _SafetensorsSource(os.fspath(path)) as source:
        return _read_all(source, progress), source.metadata


class _SafetensorsSource:
    """A .safetensors file: the header parsed and every offset checked on open; each
    tensor's bytes read when asked for."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file = open_regular(path, ".safetensors file")
        try:
            self._parse()
        except BaseException:
            self.file.close()
            raise

    def _parse(self) -> None:
        path, f = self.path, self.file
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise DataLossError("not a safetensors file: shorter than its 8-byte header length", path=path)
        (n,) = _HEADER_LEN.unpack(head)
        if n > min(_MAX_HEADER, size - 8):
            raise DataLossError(f"not a safetensors file: header length {n} exceeds the file", path=path)
        try:
            header = json.loads(_read_exactly(f, n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise DataLossError(f"safetensors header is not valid JSON: {exc}", path=path) from None
        if not isinstance(header, dict):
            raise DataLossError("safetensors header is not a JSON object", path=path)
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise DataLossError("safetensors __metadata__ is not an object", path=path)
        self.metadata = {str(k): str(v) for k, v in metadata.items()}
        self.data_start, data_size = 8 + n, size - 8 - n
        specs = {name: _parse_spec(spec, path, name) for name, spec in header.items()}
        for name, (dtype, shape, (begin, end)) in specs.items():
            if not (0 <= begin <= end <= data_size) or end - begin != math.prod(shape) * dtype.itemsize:
                raise DataLossError(f"data_offsets [{begin}, {end}] do not fit {dtype.name}{shape} "
                                    f"in {data_size} data bytes", path=path, key=name)
        self.specs = specs
        self.names = sorted(specs, key=lambda k: specs[k][2][0])  # file order: sequential reads

    def meta(self, name: str) -> tuple[_dtypes.DType, tuple[int, ...]]:
        dtype, shape, _ = self.specs[name]
        return dtype, tuple(shape)

    def read(self, name: str) -> np.ndarray:
        dtype, shape, (begin, end) = self.specs[name]
        buf = np.empty(end - begin, dtype=np.uint8)
        view, got = buf.data, 0  # a memoryview of buf
        while got < len(buf):  # an unbuffered file may return less than asked
            n_read = os.preadv(self.file.fileno(), [view[got:]], self.data_start + begin + got)
            if not n_read:
                raise DataLossError("file ended early", path=self.path, key=name)
            got += n_read
        return buf.view(dtype.numpy).reshape(shape)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> _SafetensorsSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_exactly(f, n: int) -> bytes:
    """n bytes from an unbuffered file (which may return fewer per read), or fewer at EOF."""
    chunks, got = [], 0
    while got < n:
        chunk = f.read(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


_MAX_RANK = 64  # numpy's limit (TF's is 254, but such a tensor could not be an array here)


def _parse_spec(spec, path, name):
    if not _is_key_text(name):
        raise DataLossError(f"tensor name {name!r} holds a lone surrogate, which no tensor name can",
                            path=path)
    if not isinstance(spec, dict):
        raise DataLossError("tensor entry is not an object", path=path, key=name)
    code, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(code, str) or code not in _ST_DTYPES:
        raise UnsupportedError(f"unsupported safetensors dtype {code!r}", path=path, key=name)
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise DataLossError(f"invalid shape {shape!r}", path=path, key=name)
    if len(shape) > _MAX_RANK:
        raise UnsupportedError(f"rank {len(shape)} is above numpy's limit of {_MAX_RANK} dimensions",
                               path=path, key=name)
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise DataLossError(f"invalid data_offsets {offsets!r}", path=path, key=name)
    return _dtypes.as_dtype(_ST_DTYPES[code]), shape, offsets


def _is_key_text(name: str) -> bool:
    """True if `name` can be a tensor key: encodable (undecodable bytes as surrogateescape)."""
    try:
        name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def _check_member_names(path: str, names, fmt: str, limit: int | None = None) -> None:
    """Refuse names `fmt` can't store, before anything is written: not valid UTF-8 (keys
    are bytes; undecodable ones come as surrogate escapes), with NUL bytes, or over `limit`
    UTF-8 bytes."""
    for name in names:
        try:
            raw = name.encode("utf-8")
        except UnicodeEncodeError:
            raise UnsupportedError(f"tensor name is not valid UTF-8, which {fmt} names must be; "
                                   "rename it first (ckptkit rename)", path=path, key=name) from None
        if "\0" in name:
            raise UnsupportedError(f"tensor name holds a NUL byte, which {fmt} names cannot",
                                   path=path, key=name)
        if limit is not None and len(raw) > limit:
            raise UnsupportedError(f"tensor name is {len(raw)} bytes long; {fmt} names are at most "
                                   f"{limit} bytes", path=path, key=name)


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any],
                      metadata: Mapping[str, str] | None = None,
                      progress: Progress | None = None) -> None:
    """Write tensors as .safetensors, atomically (strings and complex128 are refused)."""
    path = os.fspath(path)
    _check_member_names(path, tensors, "safetensors")
    if "__metadata__" in tensors:
        raise UnsupportedError("a tensor named '__metadata__' would collide with the safetensors "
                               "metadata; rename it first", path=path, key="__metadata__")
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name in sorted(tensors):
        dtype, shape = bundle.meta_of(tensors[name], name)
        code = _ST_CODES.get(dtype.name)
        if code is None:
            raise UnsupportedError(f"safetensors has no {dtype.name} type", path=path, key=name)
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    if len(blob) > _MAX_HEADER:
        raise UnsupportedError(f"the safetensors header would be {len(blob)} bytes, over the "
                               f"format's limit of {_MAX_HEADER} (names too long or too many)", path=path)
    with Commit(os.path.dirname(path)) as tx:
        out = tx.shard(path)  # streamed like a data shard: O_DIRECT where it can, bounded buffers
        out.write(_HEADER_LEN.pack(len(blob)))
        out.write(blob)
        for name in sorted(tensors):  # one tensor in memory at a time (a Deferred loads here)
            arr, _ = bundle.loaded(tensors[name], name)
            out.write(arr.reshape(-1).view(np.uint8))
            if progress is not None:
                progress(arr.nbytes)
            del arr
        out.close()
        tx.publish()


# --------------------------------------------------------------------------- npz

def read_npz(path: str | os.PathLike, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """{name: array} from an .npz; 'S'/'U' arrays become DT_STRING object arrays of bytes."""
    with _NpzSource(os.fspath(path)) as source:
        return _read_all(source, progress)


# What a damaged zip archive or .npy member raises from zipfile, zlib and numpy (an
# unknown compression method is NotImplementedError, an encrypted member RuntimeError).
_ZIP_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile,
               NotImplementedError, RuntimeError, zlib.error, struct.error)
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive's end record


class _NpzSource:
    """An .npz archive: every member's .npy header checked on open (no object arrays, no
    claim beyond what the archive holds); each member read when asked for."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file = open_regular(path, ".npz file")
        try:
            self._open()
        except BaseException:
            self.file.close()
            raise

    def _open(self) -> None:
        path, f = self.path, self.file
        magic = _read_exactly(f, 6)
        if not magic:
            raise DataLossError("empty file, not an .npz archive", path=path)
        if magic == np.lib.format.MAGIC_PREFIX:
            raise DataLossError("a single .npy array, not an .npz archive", path=path)
        if magic[:4] not in _ZIP_MAGICS:
            raise DataLossError("not an .npz file (not a zip archive)", path=path)
        f.seek(0)
        try:
            npz = np.load(f, allow_pickle=False)
        except _ZIP_ERRORS as exc:
            raise DataLossError(f"not a readable .npz file: {exc}", path=path) from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise DataLossError("not an .npz archive", path=path)
        self.npz = npz
        self.names = list(npz.files)
        self.metas = {name: _check_npy_header(npz, name, path) for name in self.names}

    def meta(self, name: str) -> tuple[_dtypes.DType, tuple[int, ...]]:
        return self.metas[name]

    def read(self, name: str) -> np.ndarray:
        try:
            arr = self.npz[name]
        except _ZIP_ERRORS as exc:
            raise DataLossError(f"array is unreadable: {exc}", path=self.path, key=name) from None
        return _from_npz_array(arr, self.path, name)

    def close(self) -> None:
        self.npz.close() if hasattr(self, "npz") else None
        self.file.close()

    def __enter__(self) -> _NpzSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_DEFLATE_MAX_RATIO = 1032  # zlib's best case: a deflated member can't be larger than this


def _check_npy_header(npz, name: str, path: str) -> tuple[_dtypes.DType, tuple[int, ...]]:
    """(TF dtype, shape) a member's .npy header declares. A member whose header claims more
    data than the archive can hold, or an object dtype, is refused before numpy allocates
    (or unpickles) anything for it."""
    member = name if name in npz.zip.namelist() else f"{name}.npy"
    try:
        info = npz.zip.getinfo(member)
        with npz.zip.open(member) as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            header_len = f.tell()
    except (KeyError, *_ZIP_ERRORS) as exc:
        raise DataLossError(f"array header is unreadable: {exc}", path=path, key=name) from None
    if dtype.hasobject:
        raise UnsupportedError("holds an object array, which would need unpickling; only numeric, "
                               "bool and fixed-width string ('S'/'U') arrays are read", path=path, key=name)
    stored = min(info.file_size, info.compress_size * _DEFLATE_MAX_RATIO) - header_len
    if math.prod(shape) * dtype.itemsize > stored:
        raise DataLossError(f"array header claims shape {list(shape)} of {dtype}, more than the "
                            f"archive holds", path=path, key=name)
    if dtype.kind in "SU":
        return _dtypes.STRING, tuple(shape)
    try:
        return _dtypes.as_dtype(dtype), tuple(shape)
    except UnsupportedError:
        raise UnsupportedError(f"numpy dtype {dtype} has no TensorFlow equivalent", path=path, key=name) from None


def _from_npz_array(arr: np.ndarray, path: str, name: str) -> np.ndarray:
    if arr.dtype.kind == "S":
        return _object_array([bytes(v) for v in arr.reshape(-1)], arr.shape)
    if arr.dtype.kind == "U":
        return _object_array([str(v).encode("utf-8") for v in arr.reshape(-1)], arr.shape)
    try:
        _dtypes.as_dtype(arr.dtype)
    except UnsupportedError:
        raise UnsupportedError(f"numpy dtype {arr.dtype} has no TensorFlow equivalent",
                               path=path, key=name) from None
    return arr


def _object_array(items: list, shape) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out.reshape(shape)


def write_npz(path: str | os.PathLike, tensors: Mapping[str, Any],
              progress: Progress | None = None) -> None:
    """Write tensors as an uncompressed .npz, atomically. Strings become 'S' arrays.

    Types numpy's .npy format cannot describe (bfloat16, float8, int4) are refused:
    they would come back as raw void bytes. Use .safetensors for those.
    """
    path = os.fspath(path)
    _check_member_names(path, tensors, ".npz member", limit=_MAX_ZIP_NAME - len(".npy"))
    for name, value in tensors.items():  # refuse what npz can't hold before writing anything
        _npz_can_hold(*bundle.meta_of(value, name), path, name)
    with Commit(os.path.dirname(path)) as tx:
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


def _npz_can_hold(dtype: _dtypes.DType, shape, path: str, name: str) -> None:
    if not dtype.is_string and dtype.numpy.kind == "V":
        raise UnsupportedError(f"npz cannot hold {dtype.name} (it would read back as raw bytes); "
                               "use .safetensors", path=path, key=name)


def _to_npz_array(value, path: str, name: str) -> np.ndarray:
    arr, dtype = bundle.loaded(value, name)
    if dtype.is_string:
        items = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in arr.reshape(-1)]
        if any(item.endswith(b"\0") for item in items):
            raise UnsupportedError("string ends in NUL bytes, which a fixed-width 'S' array drops",
                                   path=path, key=name)
        return np.array(items, dtype=f"S{max((len(i) for i in items), default=0) or 1}").reshape(arr.shape)
    _npz_can_hold(dtype, arr.shape, path, name)
    return arr


# --------------------------------------------------------------------------- sources

class _CheckpointSource:
    """A checkpoint's tensors as TF lists them (partitioned variables whole; V1 or V2)."""

    def __init__(self, path: str) -> None:
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

    def __exit__(self, *exc) -> None:
        self.close()


Source = _CheckpointSource | _SafetensorsSource | _NpzSource


def open_source(path: str | os.PathLike) -> Source:
    """The tensors of a checkpoint, .npz or .safetensors file (by extension): `names`,
    `meta(name)` (dtype, shape) without reading data, `read(name)`; a context manager."""
    path = os.fspath(path)
    kind = _kind(path)
    if kind == "npz":
        return _NpzSource(path)
    if kind == "safetensors":
        return _SafetensorsSource(path)
    return _CheckpointSource(path)


def _read_all(source: Source, progress: Progress | None) -> dict[str, np.ndarray]:
    out = {}
    for name in source.names:
        out[name] = source.read(name)
        if progress is not None:
            progress(out[name].nbytes)
    return out


def read_any(path: str | os.PathLike, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint, .npz or .safetensors file, by extension (all in memory:
    `convert` streams instead)."""
    with open_source(path) as source:
        return _read_all(source, progress)


def source_bytes(path: str | os.PathLike) -> int:
    """Roughly the bytes `read_any` will read (for progress bars)."""
    path = os.fspath(path)
    if _kind(path) == "checkpoint":
        with CheckpointReader(path) as reader:
            shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
            return sum(math.prod(shapes[k]) * (0 if dtypes[k].is_string else dtypes[k].itemsize)
                       for k in reader)
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


@contextlib.contextmanager
def _naming(path: str):
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


def check_destination(path: str | os.PathLike, *, make_parents: bool = False) -> None:
    """Raise a CheckpointError naming `path` if a file could not be written there.

    Checked before anything is read or written: `path` must not be a directory, and
    its directory must exist (or, with `make_parents` - a checkpoint prefix, whose
    missing directories are created as TF does - be creatable: no ancestor may be a
    file). Permissions and free space are left to the write itself.
    """
    path = os.fspath(path)
    if "\0" in path:
        raise InvalidArgumentError("path contains a NUL byte", path=repr(path))
    if os.path.isdir(path) and _kind(path) != "checkpoint":
        raise InvalidArgumentError("destination is a directory", path=path)
    parent = os.path.dirname(path)
    while parent and not os.path.isdir(parent):
        if os.path.lexists(parent):
            raise InvalidArgumentError(f"cannot write here: {parent} is not a directory", path=path)
        if not make_parents:
            raise NotFoundError(f"directory {parent} does not exist", path=path)
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up


OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_VARIABLE_VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"


def friendly_name(key: str) -> str:
    """A TF2 key as the object path it stores (`model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE`
    -> `model/dense/kernel`); other keys unchanged."""
    return key[: -len(_VARIABLE_VALUE)] if key.endswith(_VARIABLE_VALUE) else key


def _holds(kind: str, dtype: _dtypes.DType) -> str | None:
    """Why a `kind` destination can't hold `dtype` (None if it can)."""
    if kind == "safetensors" and dtype.name not in _ST_CODES:
        return "strings" if dtype.is_string else dtype.name
    if kind == "npz" and not dtype.is_string and dtype.numpy.kind == "V":
        return dtype.name
    return None


def _parse_casts(cast: Mapping[str, str] | None) -> dict[int, _dtypes.DType]:
    out: dict[int, _dtypes.DType] = {}
    for a, b in (cast or {}).items():
        src, dst = _dtypes.as_dtype(a), _dtypes.as_dtype(b)
        if src.is_string or dst.is_string:
            raise InvalidArgumentError(f"cannot cast {src.name} to {dst.name}: strings have no numeric value")
        out[src.enum] = dst
    return out


def _plan(source: Source, kind: str, dst: str, include, exclude, casts: dict, rename, friendly: bool,
          strict: bool) -> tuple[dict[str, bundle.Deferred], list[dict]]:
    """{output name: Deferred} of what to write, and [{name, reason}] of what is left out."""
    plan: dict[str, bundle.Deferred] = {}
    sources: dict[str, str] = {}
    left_out = []
    pattern = None if rename is None else re.compile(rename[0])
    for name in source.names:
        if include and not any(fnmatch.fnmatchcase(name, g) for g in include):
            continue
        if any(fnmatch.fnmatchcase(name, g) for g in exclude):
            continue
        dtype, shape = source.meta(name)
        target = casts.get(dtype.enum, dtype)
        reason = "the object graph (names changed)" if friendly and name == OBJECT_GRAPH_KEY else None
        reason = reason or (None if _holds(kind, target) is None else f"{kind} has no {_holds(kind, target)}")
        if reason is not None:
            if strict:
                raise UnsupportedError(f"cannot write it: {reason} (drop --strict to leave it out)",
                                       path=dst, key=name)
            left_out.append({"name": name, "reason": reason})
            continue
        out = friendly_name(name) if friendly else name
        if pattern is not None and (m := pattern.fullmatch(out)) is not None:
            try:
                out = m.expand(rename[1])
            except (re.error, IndexError) as exc:
                raise InvalidArgumentError(f"bad rename template {rename[1]!r}: {exc}", key=name) from None
        if out in sources:
            raise InvalidArgumentError(f"both {sources[out]!r} and {name!r} would be written as {out!r}",
                                       path=dst, key=out)
        sources[out] = name
        load = functools.partial(_load_cast, source, name, None if target is dtype else target)
        plan[out] = bundle.Deferred(target, shape, load)
    return plan, left_out


def _load_cast(source: Source, name: str, target: _dtypes.DType | None) -> np.ndarray:
    arr = source.read(name)
    return arr if target is None else arr.astype(target.numpy)


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, num_shards: int = 1,
            include: Iterable[str] = (), exclude: Iterable[str] = (),
            cast: Mapping[str, str] | None = None, rename: tuple[str, str] | None = None,
            friendly_names: bool = False, strict: bool = False,
            progress: Progress | None = None) -> dict:
    """Copy tensors from `src` to `dst`, formats chosen by extension, one tensor in memory
    at a time (peak memory: the largest tensor, plus buffers).

    `.npz` and `.safetensors` name those formats; any other path is a checkpoint (a
    source resolves like every ckptkit path; a destination is the prefix to write).
    `include`/`exclude`: fnmatch globs on source names (`*` crosses `/`). `cast`:
    {"bfloat16": "float32", ...} by TF dtype name. `friendly_names`: TF2 keys as object
    paths (`/.ATTRIBUTES/VARIABLE_VALUE` dropped; the object graph, whose names no longer
    match, left out). `rename`: (REGEX, TEMPLATE): a name the regex fully matches becomes
    the expanded template (`\\1`, `\\g<name>`). Tensors the destination cannot hold
    (strings and complex128 in .safetensors, bfloat16/float8/int4 in .npz) are left out,
    or with `strict` refused before anything is written.
    Returns {"src", "dst", "tensors", "bytes", "left_out": [{"name", "reason"}]}.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if os.path.abspath(src) == os.path.abspath(dst):
        raise InvalidArgumentError("source and destination are the same file", path=dst)
    kind = _kind(dst)
    check_destination(dst, make_parents=kind == "checkpoint")
    casts = _parse_casts(cast)
    with _naming(src), open_source(src) as source:
        plan, left_out = _plan(source, kind, dst, list(include), list(exclude), casts, rename,
                               friendly_names, strict)
        with _naming(dst):
            if kind == "npz":
                write_npz(dst, plan, progress)
            elif kind == "safetensors":
                write_safetensors(dst, plan, progress=progress)
            else:
                bundle.write_bundle(dst, plan, num_shards=num_shards, progress=progress)
    nbytes = sum(d.nbytes for d in plan.values())
    return {"src": src, "dst": dst, "tensors": len(plan), "bytes": nbytes, "left_out": left_out}
