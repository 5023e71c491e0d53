"""Formats as plug-ins (formats/registry.py): every format ckptkit reads is a line of
`registry.FORMATS`, and locate, CheckpointReader, get_slice and convert find formats
there. A toy file format defined in this module, registered by one line, is read by all
of them."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import same

import ckptkit
from ckptkit import location as locate
from ckptkit.errors import UnsupportedError
from ckptkit.formats import naming, registry
from ckptkit.formats.tensor_file import TensorFileBackend
from ckptkit.formats.window import Axis, select
from ckptkit.ops import convert

# --------------------------------------------------------------------------- a toy format: JSON {name: nested list}


class ToyFile:
    """A `.toy` file: a JSON object of float32 tensors (what a format module provides)."""

    metadata = None

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, encoding="utf-8") as f:
            self.arrays = {k: np.asarray(v, dtype=np.float32) for k, v in json.load(f).items()}
        self.names = list(self.arrays)

    def meta(self, name: str) -> tuple[ckptkit.DType, tuple[int, ...]]:
        return ckptkit.as_dtype("float32"), self.arrays[name].shape

    def read(self, name: str) -> np.ndarray:
        return self.arrays[name].copy()

    def read_window(self, name: str, axes: tuple[Axis, ...]) -> np.ndarray:
        return select(self.read(name), axes)

    def close(self) -> None:
        pass

    def __enter__(self) -> ToyFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_backend(path: str) -> TensorFileBackend:
    return TensorFileBackend(ToyFile(path), "toy")


def open_file(path: str) -> ToyFile:
    return ToyFile(path)


def holds(dtype: ckptkit.DType) -> bool:
    return dtype.name == "float32"


TOY = registry.Format("toy", 0, __name__, (".toy",))  # the one registry line


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "FORMATS", (*registry.FORMATS, TOY))
    path = os.fspath(tmp_path / "weights.toy")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"b": [1.5, -2.0], "a": [[1, 2, 3], [4, 5, 6]]}, f)
    return path


def test_the_table_names_every_format_in_the_order_locate_tries_them():
    assert [f.name for f in registry.FORMATS] == ["v2", "safetensors", "npz", "keras", "v1"]
    assert [f.name for f in registry.file_formats()] == ["safetensors", "npz", "keras"]
    assert [f.name for f in registry.prefix_formats()] == ["v2", "v1"]
    assert naming.TENSOR_FILE_SUFFIXES == {".safetensors": "safetensors", ".npz": "npz", ".weights.h5": "keras",
                                           ".keras": "keras", ".h5": "keras", ".hdf5": "keras"}
    assert registry.get("v1").format_version == 1
    with pytest.raises(KeyError):
        registry.get("h5")


def test_a_registered_format_is_located_read_sliced_and_converted(toy, tmp_path):
    assert naming.tensor_file_format(toy.upper()) == "toy"
    assert locate.locate(toy).format == "toy"
    with ckptkit.CheckpointReader(toy) as reader:
        assert reader.format == "toy" and reader.format_version == 0 and list(reader) == ["a", "b"]
        assert reader.get_variable_to_shape_map() == {"a": [2, 3], "b": [2]}
        assert same(reader["a"], np.arange(1, 7, dtype=np.float32).reshape(2, 3))
        assert same(reader.get_slice("a")[1, ::-2], np.array([6, 4], dtype=np.float32))
        assert reader.files == [toy] and reader.num_shards == 1 and reader.slices("a") == []
        with pytest.raises(UnsupportedError, match="toy files have no bundle entries"):
            reader.entry("a")
    out = os.fspath(tmp_path / "out.npz")
    result = convert.convert(toy, out)
    assert result["tensors"] == 2
    assert same(ckptkit.load(out)["b"], np.array([1.5, -2.0], dtype=np.float32))
    with pytest.raises(UnsupportedError, match="reads toy files but does not write them"):
        convert.convert(out, os.fspath(tmp_path / "back.toy"))


def test_an_unregistered_extension_is_no_file_format(tmp_path):
    path = tmp_path / "weights.toy"
    path.write_text("{}", encoding="utf-8")
    assert naming.tensor_file_format(os.fspath(path)) is None
    with pytest.raises(ckptkit.errors.NotFoundError, match="not a TensorFlow checkpoint"):
        ckptkit.CheckpointReader(os.fspath(path))
