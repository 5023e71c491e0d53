"""Any format in: `.npz` and `.safetensors` files (written by numpy and the `safetensors`
package, not only by ckptkit) through CheckpointReader, load and the CLI."""
from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import same

import ckptkit
from ckptkit.cli import cli
from ckptkit.errors import DataLossError, UnsupportedError
from ckptkit.formats import npz, registry, safetensors
from ckptkit.ops import convert

st_numpy = pytest.importorskip("safetensors.numpy")

VALUES = {
    "dense/kernel": np.arange(12, dtype=np.float32).reshape(3, 4),
    "dense/bias": np.array([0.5, -1.5, 2.0, 0.0], dtype=np.float32),
    "step": np.array(7, dtype=np.int64),
    "ints/u8": np.array([[1, 2], [3, 255]], dtype=np.uint8),
    "half": np.array([1.5, -2.0], dtype=np.float16),
    "flags": np.array([True, False, True]),
    "empty": np.zeros((0, 3), dtype=np.float64),
}
TF_NAMES = {"dense/kernel": "float32", "dense/bias": "float32", "step": "int64", "ints/u8": "uint8",
            "half": "float16", "flags": "bool", "empty": "float64"}


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def st_file(tmp_path) -> str:
    path = os.fspath(tmp_path / "model.safetensors")
    st_numpy.save_file(VALUES, path)  # written by the safetensors package
    return path


@pytest.fixture
def npz_file(tmp_path) -> str:
    path = os.fspath(tmp_path / "model.npz")
    # written by numpy; npz member names cannot hold '/' portably, so keys are as given
    np.savez(path, **VALUES, text=np.array(["a", "bé"]), raw=np.array([b"xy", b"z"]))
    return path


@pytest.mark.parametrize("kind", ["safetensors", "npz"])
def test_reader_names_dtypes_shapes_values(kind, st_file, npz_file):
    path = st_file if kind == "safetensors" else npz_file
    with ckptkit.CheckpointReader(path) as reader:
        assert reader.prefix == path
        assert reader.format == kind and reader.format_version == 0
        assert reader.files == [path] and reader.num_shards == 1
        names = set(VALUES) | ({"text", "raw"} if kind == "npz" else set())
        assert list(reader) == sorted(names)
        dtypes = {k: v.name for k, v in reader.get_variable_to_dtype_map().items()}
        shapes = reader.get_variable_to_shape_map()
        for name, value in VALUES.items():
            assert dtypes[name] == TF_NAMES[name]
            assert shapes[name] == list(value.shape)
            assert same(reader.get_tensor(name), value), name
            assert reader.slices(name) == []
        assert reader.object_graph() is None
        with pytest.raises(UnsupportedError, match="no bundle entries"):
            reader.entry("step")
        assert b"dense/kernel (DT_FLOAT) [3,4]\n" in reader.debug_string()
        if kind == "npz":
            assert dtypes["text"] == dtypes["raw"] == "string"
            assert reader.get_tensor("text").tolist() == [b"a", "bé".encode()]
            assert reader.get_tensor("raw").tolist() == [b"xy", b"z"]
    loaded = ckptkit.load(path)
    assert set(loaded) == names
    assert all(same(loaded[k], v) for k, v in VALUES.items())
    assert ckptkit.list_variables(path)[0] == ("dense/bias", [4])
    assert same(ckptkit.load_variable(path, "step:0"), VALUES["step"])


def test_safetensors_bfloat16_from_ckptkit(tmp_path):
    path = os.fspath(tmp_path / "bf.safetensors")
    value = np.array([1.0, -2.5], dtype=ml_dtypes.bfloat16)
    convert.write_safetensors(path, {"w": value})
    reader = ckptkit.CheckpointReader(path)
    assert reader.get_variable_to_dtype_map()["w"].name == "bfloat16"
    assert same(reader["w"], value)


def test_format_modules_hold_the_codecs():
    assert convert.read_safetensors is safetensors.read_safetensors
    assert convert.write_npz is npz.write_npz
    assert registry.get("npz").code().write is npz.write_npz  # the registry's sink


def test_cli_ls_show_verify(st_file, npz_file):
    for path in (st_file, npz_file):
        result = run("ls", "--json", path)
        assert result.exit_code == 0, result.output
        listed = {i["name"]: i for i in json.loads(result.output)["tensors"]}
        assert listed["dense/kernel"]["dtype"] == "float32" and listed["dense/kernel"]["shape"] == [3, 4]
        assert listed["dense/kernel"]["bytes"] == 48 and listed["dense/kernel"]["shard"] is None
        result = run("show", "--json", path, "dense/bias")
        assert result.exit_code == 0
        assert json.loads(result.output)["values"] == [0.5, -1.5, 2.0, 0.0]
        result = run("verify", path)
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"OK: {len(listed)} tensors") and "no checksums" in result.output
        report = json.loads(run("verify", "--json", path).output)
        assert report["ok"] and report["format"] in ("safetensors", "npz") and report["errors"] == []


def test_cli_diff_checkpoint_and_its_safetensors(tmp_path):
    prefix = ckptkit.save(os.fspath(tmp_path / "ckpt" / "model"), VALUES)
    dst = os.fspath(tmp_path / "model.safetensors")
    convert.convert(prefix, dst)
    result = run("diff", prefix, dst)
    assert result.exit_code == 0, result.output
    changed = dict(VALUES, **{"dense/bias": VALUES["dense/bias"] + 1})
    st_numpy.save_file(changed, dst)
    result = run("diff", prefix, dst)
    assert result.exit_code == 1
    assert "values:    dense/bias: 4 of 4 differ" in result.output
    npz = os.fspath(tmp_path / "model.npz")
    convert.convert(prefix, npz)
    assert run("diff", npz, prefix).exit_code == 0


def one_line_error(result, *needles, code=1):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_npz_object_array_is_refused_without_unpickling(tmp_path):
    path = os.fspath(tmp_path / "evil.npz")
    np.savez(path, ok=np.ones(2), obj=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(UnsupportedError, match="object array"):
        ckptkit.CheckpointReader(path)
    for args in (("ls", path), ("show", path, "ok"), ("verify", path)):
        one_line_error(run(*args), "evil.npz", "object array")
    one_line_error(run("diff", path, path), "evil.npz", "object array", code=2)  # diff(1): trouble is 2


def _bad_safetensors(path: str, begin: int, end: int) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [begin, end]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + b"\0" * 16)


@pytest.mark.parametrize("offsets", [(0, 64), (8, 24), (16, 0)])
def test_bad_safetensors_offsets(tmp_path, offsets):
    path = os.fspath(tmp_path / "bad.safetensors")
    _bad_safetensors(path, *offsets)
    with pytest.raises(DataLossError, match="data_offsets"):
        ckptkit.load(path)
    for args in (("ls", path), ("show", path, "w"), ("verify", path)):
        one_line_error(run(*args), "bad.safetensors", "data_offsets")


def test_not_really_a_safetensors_or_npz(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\xff" * 4)
    one_line_error(run("ls", path), "not a safetensors file")
    npz = tmp_path / "junk.npz"
    npz.write_bytes(b"hello world")
    one_line_error(run("verify", npz), "not an .npz file")
    one_line_error(run("ls", tmp_path / "missing.npz"), "missing.npz")


def test_edits_refuse_npz_and_safetensors_in_place(st_file, tmp_path):
    one_line_error(run("rm", "-c", st_file, "step"), "only V2 checkpoints", "-o OUT")
    out = tmp_path / "out" / "ckpt"
    result = run("rm", "-c", st_file, "step", "-o", out)  # into a new V2 checkpoint, without "step"
    assert result.exit_code == 0 and "removed 1 tensor" in result.stderr and "data shards" not in result.stderr
    with ckptkit.CheckpointReader(st_file) as source, ckptkit.CheckpointReader(out) as edited:
        assert edited.format == "v2" and sorted(edited) == sorted(set(source) - {"step"})
        for name in edited:
            np.testing.assert_array_equal(edited[name], source[name])
    assert sorted(os.listdir(out.parent)) == ["ckpt.data-00000-of-00001", "ckpt.index"]


def test_checkpoint_prefix_ending_in_npz_stays_a_checkpoint(tmp_path):
    prefix = ckptkit.save(os.fspath(tmp_path / "run.npz"), {"v": np.ones(2, np.float32)})
    with ckptkit.CheckpointReader(prefix) as reader:
        assert reader.format == "v2" and list(reader) == ["v"]
