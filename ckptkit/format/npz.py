""".npz archives (numpy's zip of .npy members), read and written without unpickling.

npz files are read with `allow_pickle=False`: they hold numbers, bools and fixed-width
strings ('S' bytes or 'U' text, which become DT_STRING); object arrays would need
unpickling, which would let a file run code, so they are refused (from the member's .npy
header, before numpy reads anything). Bytes only: policy is the caller's.
"""
from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import dtypes as _dtypes
from .. import storage
from ..errors import DataLossError, UnsupportedError
from . import bundle
from .safetensors import _check_member_names, _read_all

__all__ = ["NpzFile", "read_npz", "write_npz"]

Progress = Callable[[int], None]


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
        path, f = self.path, self.file
        magic = self.handle.read(6, 0)
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
        self.handle.close()

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


NpzFile = _NpzSource
