"""safetensors, read and written directly (ckptkit does not depend on the `safetensors` package).

The format: an 8-byte little-endian header length, a JSON header `{name: {"dtype": "F32",
"shape": [...], "data_offsets": [begin, end]}, "__metadata__": {str: str}}` padded with
spaces to a multiple of 8 bytes, then the tensors' little-endian bytes, offsets counted from
the end of the header. Bytes only: which tensors to write, and what to leave out, is the
caller's policy (ckptkit.ops.convert, ckptkit.reader).
"""
from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import dtypes as _dtypes
from .. import storage
from ..errors import DataLossError, UnsupportedError
from ..storage.base import Progress
from . import values
from .tensor_file import TensorFileBackend, check_member_names, read_all
from .window import Axis, file_source, is_whole, read_box, select

__all__ = ["SafetensorsFile", "ST_CODES", "holds", "open_file", "open_backend", "read_safetensors",
           "write_safetensors"]


# TF dtype name <-> safetensors dtype code
ST_CODES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8",
    "bool": "BOOL", "complex64": "C64",
    "float8_e5m2": "F8_E5M2", "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2fnuz": "F8_E5M2FNUZ", "float8_e4m3fnuz": "F8_E4M3FNUZ",
}
_ST_DTYPES = {code: name for name, code in ST_CODES.items()}
_HEADER_LEN = struct.Struct("<Q")
_MAX_HEADER = 100 << 20  # the safetensors package's own limit


def read_safetensors(path: str | os.PathLike, progress: Progress | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """({name: array}, metadata) from a .safetensors file, every offset checked."""
    with SafetensorsFile(os.fspath(path)) as source:
        return read_all(source, progress), source.metadata or {}


class SafetensorsFile:
    """A .safetensors file: the header parsed and every offset checked on open; each
    tensor's bytes read when asked for."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.handle = storage.of(path).open(path, ".safetensors file")
        try:
            self._parse()
        except BaseException:
            self.handle.close()
            raise

    def _parse(self) -> None:
        path, f = self.path, self.handle
        size = f.size
        head = f.read(8, 0)
        if len(head) < 8:
            raise DataLossError("not a safetensors file: shorter than its 8-byte header length", path=path)
        (n,) = _HEADER_LEN.unpack(head)
        if n > min(_MAX_HEADER, size - 8):
            raise DataLossError(f"not a safetensors file: header length {n} exceeds the file", path=path)
        try:
            header = json.loads(f.read(n, 8).decode("utf-8"), object_pairs_hook=_Object.of)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise DataLossError(f"safetensors header is not valid JSON: {exc}", path=path) from None
        if not isinstance(header, dict):
            raise DataLossError("safetensors header is not a JSON object", path=path)
        _refuse_twice(header, "safetensors header names tensor", path, None)
        metadata = header.pop("__metadata__", None)
        if not isinstance(metadata, dict | None):
            raise DataLossError("safetensors __metadata__ is not an object", path=path)
        _refuse_twice(metadata, "safetensors __metadata__ has key", path, "__metadata__")
        # None when absent, as safe_open(...).metadata() returns it
        self.metadata = None if metadata is None else {str(k): str(v) for k, v in metadata.items()}
        self.data_start, data_size = 8 + n, size - 8 - n
        specs = {name: _parse_spec(spec, path, name) for name, spec in header.items()}
        for name, (dtype, shape, (begin, end)) in specs.items():
            if not (0 <= begin <= end <= data_size) or end - begin != math.prod(shape) * dtype.itemsize:
                raise DataLossError(f"data_offsets [{begin}, {end}] do not fit {dtype.name}{shape} "
                                    f"in {data_size} data bytes", path=path, key=name)
        self.specs = specs
        self.names = sorted(specs, key=lambda k: specs[k][2])  # file order: sequential reads
        _check_no_overlap(self.names, specs, path)

    def meta(self, name: str) -> tuple[_dtypes.DType, tuple[int, ...]]:
        dtype, shape, _ = self.specs[name]
        return dtype, tuple(shape)

    def read(self, name: str) -> np.ndarray:
        dtype, shape, (begin, end) = self.specs[name]
        _dtypes.check_numpy_shape(tuple(shape), dtype, self.path, name)  # `[0, 2**70]`: 0 bytes, no numpy shape
        buf = np.empty(end - begin, dtype=np.uint8)
        self.handle.read_exactly(buf.data, self.data_start + begin, name)
        return buf.view(dtype.numpy).reshape(shape)

    def read_window(self, name: str, axes: tuple[Axis, ...]) -> np.ndarray:
        """The ascending window `axes` of tensor `name`: only its bytes (formats/window.py)."""
        dtype, listed, (begin, _) = self.specs[name]
        shape = tuple(listed)
        counts = tuple(a.count for a in axes)
        _dtypes.check_numpy_shape(counts, dtype, self.path, name)  # `[0, 2**70]`: no bytes, no numpy shape
        if is_whole(axes, shape) or not all(counts):
            return select(self.read(name), axes) if all(counts) else np.empty(counts, dtype=dtype.numpy)
        out = np.empty(math.prod(counts) * dtype.itemsize, dtype=np.uint8)
        read_box(file_source(self), self.data_start + begin, shape, dtype.itemsize, axes, out, key=name)
        return out.view(dtype.numpy).reshape(counts)

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Object(dict):
    """A JSON object that named a key twice (json.loads keeps the last silently)."""

    twice: str

    @staticmethod
    def of(pairs: list[tuple[str, Any]]) -> dict:
        out = dict(pairs)
        if len(out) == len(pairs):
            return out
        marked, seen = _Object(out), set()
        for k, _ in pairs:
            if k in seen:
                marked.twice = k
                break
            seen.add(k)
        return marked


def _refuse_twice(obj: object, what: str, path: str, key: str | None) -> None:
    """A header object naming a key twice is a DataLossError naming it (`key`, or the
    twice-named tensor): which of the two is meant is ambiguous."""
    if isinstance(obj, _Object):
        raise DataLossError(f"{what} {obj.twice!r} twice", path=path, key=obj.twice if key is None else key)


def _check_no_overlap(names: list[str], specs: dict, path: str) -> None:
    """Refuse tensors sharing bytes (`names` in file order): reading each would multiply
    memory past the file's size (the safetensors package refuses them too)."""
    ranges = [name for name in names if specs[name][2][0] < specs[name][2][1]]  # empty ones hold nothing
    for first, name in zip(ranges, ranges[1:], strict=False):
        if specs[name][2][0] < specs[first][2][1]:
            raise DataLossError(f"data_offsets {specs[name][2]} overlap those of {first!r}", path=path, key=name)


_MAX_RANK = 64  # numpy's limit (TF's is 254, but such a tensor could not be an array here)


def _parse_spec(spec: object, path: str, name: str) -> tuple[_dtypes.DType, list[int], list[int]]:
    if not _is_key_text(name):
        raise DataLossError(f"tensor name {name!r} holds a lone surrogate, which no tensor name can",
                            path=path)
    if not isinstance(spec, dict):
        raise DataLossError("tensor entry is not an object", path=path, key=name)
    _refuse_twice(spec, "tensor entry has field", path, name)
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


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any],
                      metadata: Mapping[str, str] | None = None,
                      progress: Progress | None = None) -> None:
    """Write tensors as .safetensors, atomically (strings and complex128 are refused)."""
    path = os.fspath(path)
    check_member_names(path, tensors, "safetensors")
    if "__metadata__" in tensors:
        raise UnsupportedError("a tensor named '__metadata__' would collide with the safetensors "
                               "metadata; rename it first", path=path, key="__metadata__")
    header: dict = {}
    if metadata is not None:  # {} is written as {}: safe_open(...).metadata() then gives {}, not None
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name in sorted(tensors):
        dtype, shape = values.meta_of(tensors[name], name)
        code = ST_CODES.get(dtype.name)
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
    with storage.Commit(os.path.dirname(path)) as tx:
        out = tx.shard(path)  # streamed like a data shard: O_DIRECT where it can, bounded buffers
        out.write(_HEADER_LEN.pack(len(blob)))
        out.write(blob)
        for name in sorted(tensors):  # one tensor in memory at a time (a Deferred loads here)
            arr, _ = values.loaded(tensors[name], name)
            out.write(arr.reshape(-1).view(np.uint8))
            if progress is not None:
                progress(arr.nbytes)
            del arr
        out.close()
        tx.publish()


def holds(dtype: _dtypes.DType) -> bool:
    """Whether a .safetensors file can store `dtype` (no strings, no complex128)."""
    return dtype.name in ST_CODES


def open_file(path: str) -> SafetensorsFile:
    """The file's tensors in stored order (convert's source; see formats/registry.py)."""
    return SafetensorsFile(path)


def open_backend(path: str) -> TensorFileBackend:
    """The file behind CheckpointReader's API (see formats/registry.py)."""
    return TensorFileBackend(SafetensorsFile(path), "safetensors")


write = write_safetensors  # the registry's sink (convert's destination): see formats/registry.py
