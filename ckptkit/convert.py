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
import json
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping

import numpy as np

from . import dtypes as _dtypes
from .errors import CheckpointError, DataLossError, InvalidArgumentError, NotFoundError, UnsupportedError
from .format import bundle
from .format.commit import Commit
from .format.files import open_regular
from .reader import CheckpointReader

__all__ = ["check_destination", "convert", "read_safetensors", "write_safetensors", "read_npz", "write_npz",
           "read_any", "source_bytes"]

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
    path = os.fspath(path)
    with open_regular(path, ".safetensors file") as f:
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
        data_start, data_size = 8 + n, size - 8 - n
        tensors: dict[str, np.ndarray] = {}
        specs = {name: _parse_spec(spec, path, name) for name, spec in header.items()}
        for name, (dtype, shape, (begin, end)) in sorted(specs.items(), key=lambda kv: kv[1][2][0]):
            nbytes = math.prod(shape) * dtype.itemsize
            if not (0 <= begin <= end <= data_size) or end - begin != nbytes:
                raise DataLossError(f"data_offsets [{begin}, {end}] do not fit {dtype.name}{shape} "
                                    f"in {data_size} data bytes", path=path, key=name)
            buf = np.empty(nbytes, dtype=np.uint8)
            f.seek(data_start + begin)
            view, got = buf.data, 0  # a memoryview of buf
            while got < nbytes:  # an unbuffered file may return less than asked
                n_read = f.readinto(view[got:])
                if not n_read:
                    raise DataLossError("file ended early", path=path, key=name)
                got += n_read
            tensors[name] = buf.view(dtype.numpy).reshape(shape)
            if progress is not None:
                progress(nbytes)
    return tensors, {str(k): str(v) for k, v in metadata.items()}


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


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
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
    arrays = []
    offset = 0
    for name in sorted(tensors):
        arr, dtype = bundle.to_array(tensors[name], name)
        code = _ST_CODES.get(dtype.name)
        if code is None:
            raise UnsupportedError(f"safetensors has no {dtype.name} type", path=path, key=name)
        header[name] = {"dtype": code, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays.append(arr)
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    if len(blob) > _MAX_HEADER:
        raise UnsupportedError(f"the safetensors header would be {len(blob)} bytes, over the "
                               f"format's limit of {_MAX_HEADER} (names too long or too many)", path=path)
    with Commit(os.path.dirname(path)) as tx:
        out = tx.file(path)
        out.write(_HEADER_LEN.pack(len(blob)))
        out.write(blob)
        for arr in arrays:
            out.write(arr.reshape(-1).view(np.uint8))
            if progress is not None:
                progress(arr.nbytes)
        tx.publish()


# --------------------------------------------------------------------------- npz

def read_npz(path: str | os.PathLike, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """{name: array} from an .npz; 'S'/'U' arrays become DT_STRING object arrays of bytes."""
    path = os.fspath(path)
    with open_regular(path, ".npz file") as f:
        return _read_npz_file(f, path, progress)


# What a damaged zip archive or .npy member raises from zipfile, zlib and numpy (an
# unknown compression method is NotImplementedError, an encrypted member RuntimeError).
_ZIP_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile,
               NotImplementedError, RuntimeError, zlib.error, struct.error)
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive's end record


def _read_npz_file(f, path: str, progress: Progress | None) -> dict[str, np.ndarray]:
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
    out: dict[str, np.ndarray] = {}
    with npz:
        for name in npz.files:
            _check_npy_header(npz, name, path)
            try:
                arr = npz[name]
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    raise UnsupportedError("holds an object array, which would need unpickling; only "
                                           "numeric, bool and fixed-width string ('S'/'U') arrays "
                                           "are read", path=path, key=name) from None
                raise DataLossError(f"array is unreadable: {exc}", path=path, key=name) from None
            except _ZIP_ERRORS as exc:
                raise DataLossError(f"array is unreadable: {exc}", path=path, key=name) from None
            out[name] = _from_npz_array(arr, path, name)
            if progress is not None:
                progress(arr.nbytes)
    return out


_DEFLATE_MAX_RATIO = 1032  # zlib's best case: a deflated member can't be larger than this


def _check_npy_header(npz, name: str, path: str) -> None:
    """Refuse a member whose header claims more data than the archive can hold, or an
    object dtype, before numpy allocates (or unpickles) anything for it."""
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


def write_npz(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
              progress: Progress | None = None) -> None:
    """Write tensors as an uncompressed .npz, atomically. Strings become 'S' arrays.

    Types numpy's .npy format cannot describe (bfloat16, float8, int4) are refused:
    they would come back as raw void bytes. Use .safetensors for those.
    """
    path = os.fspath(path)
    _check_member_names(path, tensors, ".npz member", limit=_MAX_ZIP_NAME - len(".npy"))
    arrays = {name: _to_npz_array(value, path, name) for name, value in tensors.items()}
    with Commit(os.path.dirname(path)) as tx:
        out = tx.file(path)
        with zipfile.ZipFile(out.file, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)
                if progress is not None:
                    progress(arr.nbytes)
        tx.publish()


_MAX_ZIP_NAME = 0xFFFF  # a zip member name's length is a 16-bit field


def _to_npz_array(value, path: str, name: str) -> np.ndarray:
    arr, dtype = bundle.to_array(value, name)
    if dtype.is_string:
        items = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in arr.reshape(-1)]
        if any(item.endswith(b"\0") for item in items):
            raise UnsupportedError("string ends in NUL bytes, which a fixed-width 'S' array drops",
                                   path=path, key=name)
        return np.array(items, dtype=f"S{max((len(i) for i in items), default=0) or 1}").reshape(arr.shape)
    if arr.dtype.kind == "V":
        raise UnsupportedError(f"npz cannot hold {dtype.name} (it would read back as raw bytes); "
                               "use .safetensors", path=path, key=name)
    return arr


# --------------------------------------------------------------------------- checkpoints

def _read_checkpoint(path: str, progress: Progress | None) -> dict[str, np.ndarray]:
    """Every tensor as TF lists them (partitioned variables whole; V1 or V2)."""
    with CheckpointReader(path) as reader:
        tensors = {}
        for key in reader:
            tensors[key] = reader.get_tensor(key)
            if progress is not None:
                progress(tensors[key].nbytes)
        return tensors


def read_any(path: str | os.PathLike, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint, .npz or .safetensors file, by extension."""
    path = os.fspath(path)
    kind = _kind(path)
    if kind == "npz":
        return read_npz(path, progress)
    if kind == "safetensors":
        return read_safetensors(path, progress)[0]
    return _read_checkpoint(path, progress)


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


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, num_shards: int = 1,
            progress: Progress | None = None) -> dict:
    """Copy every tensor from `src` to `dst`, formats chosen by extension.

    `.npz` and `.safetensors` name those formats; any other path is a checkpoint (a
    source resolves like every ckptkit path; a destination is the prefix to write).
    Returns {"src", "dst", "tensors", "bytes"}.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if os.path.abspath(src) == os.path.abspath(dst):
        raise InvalidArgumentError("source and destination are the same file", path=dst)
    kind = _kind(dst)
    check_destination(dst, make_parents=kind == "checkpoint")
    with _naming(src):
        tensors = read_any(src, progress)
    with _naming(dst):
        if kind == "npz":
            write_npz(dst, tensors, progress)
        elif kind == "safetensors":
            write_safetensors(dst, tensors, progress=progress)
        else:
            bundle.write_bundle(dst, tensors, num_shards=num_shards, progress=progress)
    nbytes = sum(np.asarray(v).nbytes for v in tensors.values() if np.asarray(v).dtype.kind != "O")
    return {"src": src, "dst": dst, "tensors": len(tensors), "bytes": nbytes}
