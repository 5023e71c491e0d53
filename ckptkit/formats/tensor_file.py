"""What `.npz` and `.safetensors` share: a single file of tensors, read as it is.

`TensorFileBackend` puts either file behind CheckpointReader's API (the backend
protocol of formats/registry.py); `read_all` reads every tensor of an open file;
`check_member_names` refuses names a file cannot store before anything is written.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .. import dtypes as _dtypes
from ..errors import UnsupportedError
from ..storage.base import Progress

if TYPE_CHECKING:
    import numpy as np

    from .slices import TensorSlice
    from .window import Axis

__all__ = ["TensorSource", "TensorFile", "TensorFileBackend", "read_all", "check_member_names"]



class TensorSource(Protocol):
    """An open file of tensors: its names, each read whole."""

    names: list[str]

    def read(self, name: str) -> np.ndarray: ...


class TensorFile(TensorSource, Protocol):
    """An open file of tensors (formats/npz.NpzFile, formats/safetensors.SafetensorsFile, formats/keras.KerasFile)."""

    path: str
    metadata: dict[str, str] | None

    def meta(self, name: str) -> tuple[_dtypes.DType, tuple[int, ...]]: ...

    def read_window(self, name: str, axes: tuple[Axis, ...]) -> np.ndarray: ...

    def close(self) -> None: ...

    def __enter__(self) -> TensorFile: ...

    def __exit__(self, *exc: object) -> None: ...


def read_all(source: TensorSource, progress: Progress | None) -> dict[str, np.ndarray]:
    """Every tensor of an open source (`names`, `read`), in its order."""
    out = {}
    for name in source.names:
        out[name] = source.read(name)
        if progress is not None:
            progress(out[name].nbytes)
    return out


def check_member_names(path: str, names: Iterable[str], fmt: str, limit: int | None = None) -> None:
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


class TensorFileBackend:
    """A `.safetensors` or `.npz` file behind CheckpointReader's API (format_version 0).

    Every header is checked on open (safetensors: dtypes, shapes and data offsets inside
    the file; npz: each member's .npy header, object arrays refused before anything is
    unpickled); each tensor is read when asked for. Neither format stores checksums, so
    `verify` has nothing to check beyond that. Names are listed sorted, as TF lists keys.
    """

    format_version = 0
    index = None  # no bundle index: the reader's index-level tools refuse these files
    num_shards = 1

    def __init__(self, file: TensorFile, fmt: str) -> None:
        self.format = fmt
        self.file: Any = file  # NpzFile or SafetensorsFile (slicing reads their bytes)
        self.path = file.path
        self.no_entries = f"{fmt} files have no bundle entries"
        self._names = sorted(file.names)

    def names(self) -> list[str]:
        return list(self._names)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.file.meta(name)[1]

    def dtype_enum(self, name: str) -> int:
        return self.file.meta(name)[0].enum

    def metas(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        return {k: (self.dtype_enum(k), self.shape(k)) for k in self._names}

    def read(self, name: str, verify: bool, copy: bool = True) -> np.ndarray:
        return self.file.read(name)  # always a new array: no checksums to verify

    def read_window(self, name: str, axes: tuple[Axis, ...], verify: bool) -> np.ndarray:
        return self.file.read_window(name, axes)

    def files(self) -> list[str]:
        return [self.path]

    def slices(self, name: str) -> list[TensorSlice]:
        return []

    def metadata(self) -> dict[str, str] | None:
        return self.file.metadata

    def debug_string(self) -> bytes:
        lines = []
        for name in self._names:
            dtype, shape = self.file.meta(name)
            lines.append(f"{name} ({_dtypes.enum_name(dtype.enum)}) [{','.join(map(str, shape))}]\n")
        return "".join(lines).encode("utf-8", "surrogateescape")

    def close(self) -> None:
        self.file.close()
