"""The V2 tensor bundle as a format of the registry (formats/registry.py): where a path
names one, and its reader backend. The bytes are bundle_index.py's (the index, without
numpy) and bundle.py's (the data, with numpy, imported on the first tensor read), so
that listing a V2 checkpoint imports no numpy.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .. import dtypes as _dtypes
from .. import storage
from . import bundle_index, naming

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

    from ..storage.base import Progress
    from .bundle import BundleReader
    from .slices import TensorSlice
    from .window import Axis

__all__ = ["V2Backend", "find", "holds", "checkpoints_in", "open_backend"]


class V2Backend:
    """A V2 bundle behind CheckpointReader's API."""

    format = "v2"
    format_version = 2
    no_entries = ""  # it has them

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.index: bundle_index.BundleIndex = bundle_index.BundleIndex(prefix)
        self._data: BundleReader | None = None
        self._data_lock = threading.Lock()

    @property
    def data(self) -> BundleReader:
        """The data shards' reader, made on first use: listing needs only the index
        (and no numpy, which bundle.py imports). One per reader, whichever thread asks first."""
        if self._data is None:
            with self._data_lock:
                if self._data is None:
                    from .bundle import BundleReader  # noqa: PLC0415 - bundle.py imports numpy

                    self._data = BundleReader(self.index)
        return self._data

    def names(self) -> list[str]:
        return self.index.visible_keys()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.index.meta(name)[1]

    def dtype_enum(self, name: str) -> int:
        return self.index.meta(name)[0]

    def metas(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        return self.index.metas(self.names())

    def read(self, name: str, verify: bool, copy: bool = True) -> np.ndarray:
        return self.data.read_full(name, verify=verify, copy=copy)

    def read_window(self, name: str, axes: tuple[Axis, ...], verify: bool) -> np.ndarray:
        """The ascending window `axes` of entry `name` (formats/bundle_window.py)."""
        from .bundle_window import read_window  # noqa: PLC0415 - it imports numpy

        return read_window(self.data, name, axes, verify)

    @property
    def num_shards(self) -> int:
        return self.index.num_shards

    def files(self) -> list[str]:
        """The index and the data shards its entries reference (every entry validated)."""
        n = self.index.num_shards
        return [self.index.path] + [naming.data_filename(self.prefix, s, n) for s in self.data.referenced_shards()]

    def slices(self, name: str) -> list[TensorSlice]:
        from .slices import TensorSlice  # noqa: PLC0415 - rarely needed

        return [TensorSlice.from_proto(p) for p in self.index.entry(name).slices]

    def metadata(self) -> dict[str, str] | None:
        return None

    def debug_string(self) -> bytes:
        """TF's BundleReader::DebugString: every entry without slices, slice keys included."""
        lines = []
        for key in self.index.keys():
            entry = self.index.entry(key)
            if entry.slices:
                continue
            dims = ",".join(str(d) for d in bundle_index.shape_of(entry, self.index.path, key))
            lines.append(f"{key} ({_dtypes.enum_name(entry.dtype)}) [{dims}]\n")
        return "".join(lines).encode("utf-8", "surrogateescape")

    def close(self) -> None:
        if self._data is not None:
            self._data.close()


def find(path: str) -> str | None:
    """The prefix of the V2 checkpoint `path` names, or None: a `.index`, `.meta` or
    `.data-*` file of one, or its prefix (one store request per check, in this order)."""
    for suffix in (naming.INDEX_SUFFIX, "." + naming.META_SUFFIX):
        if path.endswith(suffix) and storage.isfile(naming.index_filename(path[: -len(suffix)])):
            return path[: -len(suffix)]
    stripped = naming.DATA_SUFFIX.sub("", path)
    if stripped != path and storage.isfile(naming.index_filename(stripped)):
        return stripped
    if storage.isfile(naming.index_filename(path)):
        return path
    return None


def holds(prefix: str) -> bool:
    """Whether `prefix` is a V2 checkpoint's: its `.index` exists (one request)."""
    return storage.isfile(naming.index_filename(prefix))


def checkpoints_in(directory: str, listing: list[str]) -> list[str]:
    """The V2 checkpoints of a directory listing: one per `.index` file, sorted."""
    suffix = naming.INDEX_SUFFIX
    return [storage.join(directory, name)
            for name in sorted(n[: -len(suffix)] for n in listing if n.endswith(suffix))]


def open_backend(prefix: str) -> V2Backend:
    return V2Backend(prefix)


def write(prefix: str, tensors: Mapping[str, object], progress: Progress | None = None, *,
          num_shards: int = 1) -> None:
    """`tensors` as a V2 checkpoint at `prefix` (the registry's sink: convert's destination),
    in one commit: the bundle (data shards, then the index), and an older checkpoint's
    `.meta` and V1 file there deleted (they would describe other tensors)."""
    from .bundle_writer import write_bundle  # noqa: PLC0415 - numpy: writing only

    write_bundle(prefix, tensors, num_shards, progress, replace_checkpoint=True)
