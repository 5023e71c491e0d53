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
from ckptkit.formats import registry
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


def write(path: str, tensors, progress=None) -> None:
    """The sink: convert's plan ({name: Deferred}) as a `.toy` file (a plain write: a toy)."""
    arrays = {name: np.asarray(value.load() if hasattr(value, "load") else value) for name, value in tensors.items()}
    with open(path, "w", encoding="utf-8") as f:
        json.dump({name: array.tolist() for name, array in arrays.items()}, f)


TOY = registry.Format("toy", 0, __name__, (".toy",))  # the one registry line
WRITABLE_TOY = registry.Format("toy", 0, __name__, (".toy",), writes=())  # ... and for writing too


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
    by_suffix = {s: f.name for f in registry.file_formats() for s in f.suffixes}
    assert by_suffix == {".safetensors": "safetensors", ".npz": "npz", ".weights.h5": "keras",
                         ".keras": "keras", ".h5": "keras", ".hdf5": "keras"}
    assert [f.name for f in registry.FORMATS if f.writes is not None] == ["v2", "safetensors", "npz"]
    assert registry.destination("x/model.ckpt") is registry.V2 and registry.destination("a.NPZ").name == "npz"
    assert registry.get("v1").format_version == 1
    with pytest.raises(KeyError):
        registry.get("h5")


def test_a_registered_format_is_located_read_sliced_and_converted(toy, tmp_path):
    assert registry.by_extension(toy.upper()) is TOY
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


def test_a_format_registered_for_writing_is_a_destination_of_convert(tmp_path, monkeypatch):
    """`writes=` in the line and a `write` function in the module: convert writes it,
    leaving out what its `holds` refuses, and refuses options its writer does not take."""
    monkeypatch.setattr(registry, "FORMATS", (*registry.FORMATS, WRITABLE_TOY))
    src = os.fspath(tmp_path / "src.npz")
    np.savez(src, w=np.arange(4, dtype=np.float32), i=np.arange(2, dtype=np.int64))
    out = os.fspath(tmp_path / "out.toy")
    result = convert.convert(src, out)
    assert result["tensors"] == 1 and result["left_out"] == [{"name": "i", "reason": "toy has no int64"}]
    assert same(ckptkit.load(out)["w"], np.arange(4, dtype=np.float32))
    with pytest.raises(ckptkit.errors.InvalidArgumentError, match="metadata is written to .safetensors files only"):
        convert.convert(src, os.fspath(tmp_path / "m.toy"), metadata={"k": "v"})
    with pytest.raises(ckptkit.errors.InvalidArgumentError, match="toy files take no num_shards"):
        WRITABLE_TOY.write(os.fspath(tmp_path / "n.toy"), {}, num_shards=2)


def test_an_unregistered_extension_is_no_file_format(tmp_path):
    path = tmp_path / "weights.toy"
    path.write_text("{}", encoding="utf-8")
    assert registry.by_extension(os.fspath(path)) is None
    with pytest.raises(ckptkit.errors.NotFoundError, match="not a TensorFlow checkpoint"):
        ckptkit.CheckpointReader(os.fspath(path))
