"""CheckpointReader: what TF's `tf.train.load_checkpoint` gives, without TensorFlow.

Resolves whatever path a user has (a prefix, any file of a checkpoint, or a
directory holding a `checkpoint` state file) to a checkpoint prefix, then reads the
V2 index eagerly (it is small) and tensor data lazily, one tensor at a time.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping

import numpy as np

from . import dtypes as _dtypes
from .errors import NotFoundError, TensorNotFoundError
from .format import bundle
from .state import latest_checkpoint

__all__ = ["CheckpointReader", "NewCheckpointReader", "load_checkpoint", "resolve_prefix",
           "list_variables", "load_variable", "load"]

_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


def resolve_prefix(path: str | os.PathLike) -> str:
    """The checkpoint prefix a user's path names.

    Accepts a prefix, a `.index`, `.data-*` or `.meta` file, or a directory (its latest
    checkpoint, per the `checkpoint` state file).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        prefix = latest_checkpoint(path)
        if prefix is None:
            raise NotFoundError("no checkpoint found in directory (no usable 'checkpoint' state file)",
                                path=path)
        return prefix
    for suffix in (".index", ".meta"):
        if path.endswith(suffix) and os.path.isfile(bundle.index_filename(path[: -len(suffix)])):
            return path[: -len(suffix)]
    stripped = _DATA_SUFFIX.sub("", path)
    if stripped != path and os.path.isfile(bundle.index_filename(stripped)):
        return stripped
    if os.path.isfile(bundle.index_filename(path)):
        return path
    if os.path.exists(path):
        raise NotFoundError("not a TensorFlow V2 checkpoint (no matching .index file)", path=path)
    raise NotFoundError("no checkpoint at this path", path=path)


class CheckpointReader(Mapping):
    """Read-only access to one checkpoint, keyed by tensor name.

    A Mapping (`keys()`, `reader[name]`, `name in reader`, `len`, iteration) and a
    context manager (closes the data files). `get_tensor` verifies each tensor's
    crc32c, as TF does; pass `verify=False` to skip that.
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = True) -> None:
        self.prefix = resolve_prefix(path)
        self.verify = verify
        self._index = bundle.BundleIndex(self.prefix)
        self._data = bundle.BundleData(self._index)

    # ---- TF's CheckpointReader API
    def get_variable_to_shape_map(self) -> dict[str, list[int]]:
        return {k: list(bundle.shape_of(self._entry(k), self._index.path, k)) for k in self._index.keys()}

    def get_variable_to_dtype_map(self) -> dict[str, _dtypes.DType]:
        return {k: _dtypes.from_enum(self._entry(k).dtype, path=self._index.path, key=k)
                for k in self._index.keys()}

    def has_tensor(self, name: str) -> bool:
        return name in self._index

    def get_tensor(self, name: str) -> np.ndarray:
        return self._data.read(name, self._entry(name), verify=self.verify)

    def debug_string(self) -> bytes:
        """TF's format: one `name (DT_FLOAT) [2,3]` line per tensor, as bytes."""
        lines = []
        for key in self._index.keys():
            entry = self._entry(key)
            dims = ",".join(str(d) for d in bundle.shape_of(entry, self._index.path, key))
            lines.append(f"{key} ({_enum_name(entry.dtype)}) [{dims}]\n")
        return "".join(lines).encode("utf-8", "surrogateescape")

    # ---- extras
    @property
    def num_shards(self) -> int:
        return self._index.num_shards

    def entry(self, name: str):
        """The raw BundleEntryProto for `name` (dtype, shape, shard, offset, size, crc)."""
        return self._entry(name)

    def _entry(self, name: str):
        try:
            return self._index.entry(name)
        except KeyError:
            raise TensorNotFoundError("tensor not found in checkpoint", path=self.prefix, key=name) from None

    # ---- Mapping protocol
    def __getitem__(self, name: str) -> np.ndarray:
        return self.get_tensor(name)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index.keys())

    def __len__(self) -> int:
        return len(self._index)

    def close(self) -> None:
        self._data.close()

    def __enter__(self) -> "CheckpointReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<CheckpointReader {self.prefix!r}: {len(self)} tensors>"


def _enum_name(enum: int) -> str:
    from .proto import types_pb2  # noqa: PLC0415 - only debug_string needs names

    try:
        return types_pb2.DataType.Name(enum)
    except ValueError:
        return str(enum)


def NewCheckpointReader(path: str | os.PathLike) -> CheckpointReader:  # noqa: N802 - TF's name
    return CheckpointReader(path)


load_checkpoint = NewCheckpointReader


def list_variables(path: str | os.PathLike) -> list[tuple[str, list[int]]]:
    """[(name, shape)] sorted by name, like `tf.train.list_variables`."""
    with CheckpointReader(path) as reader:
        return sorted(reader.get_variable_to_shape_map().items())


def load_variable(path: str | os.PathLike, name: str) -> np.ndarray:
    with CheckpointReader(path) as reader:
        return reader.get_tensor(name)


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint, as {name: array}."""
    with CheckpointReader(path) as reader:
        return {name: reader.get_tensor(name) for name in reader}
