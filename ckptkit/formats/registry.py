"""Every format ckptkit reads, in one table: `FORMATS`.

A format is a name ("v2", "v1", "safetensors", "npz": `Location.format`,
`CheckpointReader.format`), the `format_version` its reader reports, the file
extensions that name it (a single file of tensors, read as it is) or none (a
checkpoint prefix, found by its files), and the module under `ckptkit/formats/` that
reads it (its dotted name). That module is imported only when a path gets that far (v1, npz and
safetensors import numpy; v2.py does not, so listing a V2 checkpoint imports none) and
provides:

- `open_backend(prefix) -> Backend`: the object CheckpointReader reads through (below);
- a prefix format: `find(path) -> prefix | None` (the checkpoint `path` names in this
  format), `holds(prefix) -> bool` (a prefix named by a `checkpoint` state file is
  this format's) and `checkpoints_in(directory, listing) -> [prefix]` (a directory
  without a state file). Each store check they make is a request on a remote store,
  so each makes only the ones it needs, in a fixed order (location.py's doc);
- a file format: `open_file(path)` (its tensors in stored order, `names`, `meta(name)`,
  `read(name)`, a context manager: convert's source; `TensorFileBackend` puts it
  behind the backend API, its `read_window(name, axes)` included) and
  `holds(dtype) -> bool` (whether it can store that dtype); `find` and `holds` are
  the extension and one `isfile` request;
- a format convert writes (`writes=` in its line, naming the options its writer takes):
  `write(path, tensors, progress=None, **options)` (progress by keyword), `tensors` {name: array or
  `values.Deferred`} written in one commit, one tensor in memory at a time.

`location` tries the file formats (by extension) before anything else, then, after
directories and SavedModels, the prefix formats in the table's order.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from .. import storage
from ..errors import InvalidArgumentError, UnsupportedError

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

    from ..dtypes import DType
    from ..storage.base import Progress
    from .bundle_index import BundleIndex
    from .slices import TensorSlice
    from .window import Axis

__all__ = ["Backend", "Format", "FORMATS", "V2", "get", "by_extension", "destination", "file_formats", "prefix_formats"]


class Backend(Protocol):
    """One open checkpoint behind CheckpointReader's API."""

    format: str
    format_version: int
    index: BundleIndex | None  # a V2 bundle's index (index-level tools), None for other formats
    no_entries: str            # why `entry()` is refused ("" where it has bundle entries)

    def names(self) -> list[str]: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def dtype_enum(self, name: str) -> int: ...

    def metas(self) -> dict[str, tuple[int, tuple[int, ...]]]: ...

    def read(self, name: str, verify: bool, copy: bool = True) -> np.ndarray: ...

    def read_window(self, name: str, axes: tuple[Axis, ...], verify: bool) -> np.ndarray:
        """The window `axes` (formats/window.py), ascending, every dimension kept: only
        the bytes it needs where the format allows (ckptkit.slicing's module doc)."""

    @property
    def num_shards(self) -> int: ...

    def files(self) -> list[str]: ...

    def slices(self, name: str) -> list[TensorSlice]: ...

    def metadata(self) -> dict[str, str] | None: ...

    def debug_string(self) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Format:
    """One line of the table: see the module doc."""

    name: str
    format_version: int
    module: str                                 # dotted name: ckptkit.formats.NAME
    suffixes: tuple[str, ...] = field(default=())  # lower case; () for a checkpoint prefix
    verified: str = "every crc32c"  # what `ckptkit verify` checks (info.VerifyReport.checked)
    checksums: bool = True          # whether it stores checksums to verify
    # whether its reader names tensors otherwise than stored (Keras 3's LAYER/VAR): its
    # open_backend and open_file then take `raw_names=True`, for the names as stored
    renames: bool = False
    # None: read only. Else the options its module's `write` takes beyond the tensors
    # (convert's `num_shards`, `metadata`): a destination of convert.
    writes: tuple[str, ...] | None = None

    def code(self) -> ModuleType:
        """The module that reads it, imported now (it may import numpy)."""
        return importlib.import_module(self.module)

    def names_file(self, path: str) -> bool:
        """Whether `path`'s extension (any case) names this file format (no request)."""
        return bool(self.suffixes) and path.lower().endswith(self.suffixes)

    def find(self, path: str) -> str | None:
        """The checkpoint prefix (or file) of this format that `path` names, else None."""
        if self.suffixes:
            return path if self.names_file(path) and storage.isfile(path) else None
        found: str | None = self.code().find(path)
        return found

    def holds(self, prefix: str) -> bool:
        """Whether a prefix named by a `checkpoint` state file is of this format."""
        if self.suffixes:
            return self.names_file(prefix) and storage.isfile(prefix)
        return bool(self.code().holds(prefix))

    def checkpoints_in(self, directory: str, listing: list[str]) -> list[str]:
        """The checkpoints of this format a directory listing shows (file formats: none)."""
        if self.suffixes:
            return []
        found: list[str] = self.code().checkpoints_in(directory, listing)
        return found

    def stores(self, dtype: DType) -> bool:
        """Whether a file this format writes can hold `dtype` (a checkpoint holds every one)."""
        return not self.suffixes or bool(self.code().holds(dtype))

    def write(self, path: str, tensors: Mapping[str, object], progress: Progress | None = None,
              **options: object) -> None:
        """Write `tensors` at `path` in this format (UnsupportedError for a format read only,
        InvalidArgumentError for an option its writer does not take)."""
        if self.writes is None:
            raise UnsupportedError(f"ckptkit reads {self.name} files but does not write them", path=path)
        for option, value in options.items():
            if value is not None and option not in self.writes:
                raise InvalidArgumentError(f"{self.name} files take no {option}", path=path)
        self.code().write(path, tensors, progress=progress, **{k: v for k, v in options.items() if k in self.writes})

    def open_backend(self, prefix: str, raw_names: bool = False) -> Backend:
        """The reader backend of `prefix`; `raw_names` (formats that rename only): its
        tensors by their names as stored (other formats have no other names)."""
        code = self.code()
        backend: Backend = (code.open_backend(prefix, raw_names=True) if raw_names and self.renames
                            else code.open_backend(prefix))
        return backend


FORMATS: tuple[Format, ...] = (
    Format("v2", 2, "ckptkit.formats.v2", writes=("num_shards",)),
    Format("safetensors", 0, "ckptkit.formats.safetensors", (".safetensors",), checksums=False,
           verified="header offsets consistent, every tensor readable; safetensors has no checksums",
           writes=("metadata",)),
    Format("npz", 0, "ckptkit.formats.npz", (".npz",), checksums=False,
           verified="every .npy header valid, every tensor readable; npz has no checksums", writes=()),
    Format("keras", 0, "ckptkit.formats.keras", (".weights.h5", ".keras", ".h5", ".hdf5"), checksums=False,
           verified="HDF5 structure and every dataset's size checked, every tensor readable; "
                    "Keras files have no checksums", renames=True),
    Format("v1", 1, "ckptkit.formats.v1"),
)
V2 = FORMATS[0]  # what SavedModels and Savers write


def get(name: str) -> Format:
    """The format called `name` (a KeyError for no such format)."""
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise KeyError(name)


def by_extension(path: str) -> Format | None:
    """The file format `path`'s extension names (no request), else None: a prefix."""
    return next((f for f in FORMATS if f.names_file(path)), None)


def destination(path: str) -> Format:
    """The format convert writes `path` in: the file format its extension names, else a
    V2 checkpoint at that prefix."""
    return by_extension(path) or V2


def file_formats() -> list[Format]:
    return [f for f in FORMATS if f.suffixes]


def prefix_formats() -> list[Format]:
    return [f for f in FORMATS if not f.suffixes]
