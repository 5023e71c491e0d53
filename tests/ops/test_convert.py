"""ckptkit.ops.convert: .npz and .safetensors, checked against TF and the `safetensors` package."""
from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import dtype_tensors, make_dtypes, make_v1, same, tf_values

import ckptkit
from ckptkit.cli import cli
from ckptkit.errors import AlreadyExistsError, DataLossError, InvalidArgumentError, UnsupportedError
from ckptkit.formats import bundle
from ckptkit.ops import convert, edit

st_numpy = pytest.importorskip("safetensors.numpy")
safe_open = pytest.importorskip("safetensors").safe_open

NUMPY_SAFETENSORS = {"dense/kernel", "dense/bias", "ints/i32", "ints/i64", "ints/u8", "ints/i8",
                     "flags", "half", "cplx", "empty"}  # dtypes safetensors.numpy can load


@pytest.fixture
def numeric_ckpt(tf, tmp_path) -> str:
    """A TF-written checkpoint of every dtype safetensors can hold (no strings)."""
    directory = tmp_path / "numeric"
    directory.mkdir()
    return make_dtypes(tf, os.fspath(directory), with_strings=False)


def test_checkpoint_to_safetensors_read_by_the_package(tf, numeric_ckpt, tmp_path):
    expected = tf_values(tf, numeric_ckpt)
    dst = os.fspath(tmp_path / "m.safetensors")
    summary = convert.convert(numeric_ckpt, dst)
    assert summary["tensors"] == len(expected)
    with safe_open(dst, framework="numpy") as f:  # get_tensor: bf16 has no numpy type there
        keys = set(f.keys())
        assert keys == set(expected)
        for key in NUMPY_SAFETENSORS:
            assert same(f.get_tensor(key), expected[key]), key
    with open(dst, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        assert (8 + n) % 8 == 0
    assert header["bf16"]["dtype"] == "BF16" and header["cplx"]["dtype"] == "C64"
    ours, _ = convert.read_safetensors(dst)
    assert same(ours["bf16"], expected["bf16"])  # BF16 bytes round-trip exactly


def test_safetensors_from_the_package_to_tf(tf, tmp_path):
    tensors = {"a/w": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32),
               "a/b": np.arange(3, dtype=np.int64), "mask": np.array([True, False]),
               "h": np.array([1.5], np.float16), "z": np.zeros((0,), np.uint32)}
    src = os.fspath(tmp_path / "pkg.safetensors")
    st_numpy.save_file(tensors, src, metadata={"format": "np"})
    got, metadata = convert.read_safetensors(src)
    assert metadata == {"format": "np"}
    prefix = os.fspath(tmp_path / "out" / "model.ckpt")
    convert.convert(src, prefix)
    loaded = tf_values(tf, prefix)
    assert sorted(loaded) == sorted(tensors)
    for key, value in tensors.items():
        assert same(loaded[key], value), key


def test_write_safetensors_metadata_and_refusals(tmp_path):
    dst = os.fspath(tmp_path / "x.safetensors")
    convert.write_safetensors(dst, {"x": np.ones(3, np.float32)}, metadata={"k": "v"})
    with safe_open(dst, framework="numpy") as f:
        assert f.metadata() == {"k": "v"}
    with pytest.raises(UnsupportedError, match="'s'"):
        convert.write_safetensors(os.fspath(tmp_path / "s.safetensors"), {"s": np.array([b"a"], object)})
    with pytest.raises(UnsupportedError, match="complex128"):
        convert.write_safetensors(os.fspath(tmp_path / "c.safetensors"), {"c": np.ones(1, np.complex128)})
    assert not [n for n in os.listdir(tmp_path) if n != "x.safetensors"]


def test_damaged_safetensors(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(DataLossError, match="header length"):
        convert.read_safetensors(path)
    header = json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(DataLossError, match="'x'"):
        convert.read_safetensors(path)
    header = json.dumps({"x": {"dtype": "F4", "shape": [1], "data_offsets": [0, 1]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0")
    with pytest.raises(UnsupportedError, match="F4"):
        convert.read_safetensors(path)


def test_checkpoint_to_npz_and_back(tf, dtypes_ckpt, tmp_path):
    edit.remove_keys(dtypes_ckpt, ["bf16"])  # npz cannot hold bfloat16 (tested below)
    expected = tf_values(tf, dtypes_ckpt)
    npz = os.fspath(tmp_path / "m.npz")
    convert.convert(dtypes_ckpt, npz)
    with np.load(npz, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(expected)
        assert data["names"].dtype.kind == "S"
        assert list(data["names"]) == [b"alpha", b"", "é".encode()]
        for key in expected:
            if key != "names":
                assert same(data[key], expected[key]), key
    prefix = os.fspath(tmp_path / "back.ckpt")
    convert.convert(npz, prefix)
    back = tf_values(tf, prefix)
    for key, value in expected.items():
        assert same(back[key], value), key


def test_npz_text_strings_and_odd_names(tf, tmp_path):
    npz = os.fspath(tmp_path / "u.npz")
    np.savez(npz, text=np.array(["héllo", "x"]), other=np.arange(2))
    prefix = os.fspath(tmp_path / "u.ckpt")
    convert.convert(npz, prefix)
    got = tf_values(tf, prefix)
    assert list(got["text"]) == ["héllo".encode(), b"x"] and same(got["other"], np.arange(2))
    # np.savez(file, **arrays) cannot take an array named "file"; write_npz can
    out = os.fspath(tmp_path / "again.npz")
    convert.write_npz(out, {"file": np.arange(2), "allow_pickle": np.ones(1)})
    with np.load(out) as data:
        assert sorted(data.files) == ["allow_pickle", "file"]


def test_npz_refusals(tmp_path):
    npz = os.fspath(tmp_path / "obj.npz")
    np.savez(npz, ok=np.ones(2), bad=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UnsupportedError, match="'bad'.*object array"):
        convert.read_npz(npz)
    with pytest.raises(UnsupportedError, match="bfloat16"):
        convert.write_npz(os.fspath(tmp_path / "b.npz"), {"b": np.ones(2, ml_dtypes.bfloat16)})
    with pytest.raises(UnsupportedError, match="NUL"):
        convert.write_npz(os.fspath(tmp_path / "n.npz"), {"n": np.array([b"a\0"], object)})
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataLossError):
        convert.read_npz(tmp_path / "junk.npz")
    assert sorted(os.listdir(tmp_path)) == ["junk.npz", "obj.npz"]


def test_cli_refuses_object_npz_in_one_line(tmp_path):
    npz = os.fspath(tmp_path / "obj.npz")
    np.savez(npz, bad=np.array([None], dtype=object))
    result = CliRunner().invoke(cli, ["convert", npz, os.fspath(tmp_path / "x.ckpt")])
    assert result.exit_code == 1
    assert result.stderr.startswith("ckptkit: error: ") and "'bad'" in result.stderr
    assert "Traceback" not in result.output


def test_same_source_and_destination(tmp_path):
    path = os.fspath(tmp_path / "a.npz")
    np.savez(path, x=np.ones(1))
    with pytest.raises(Exception, match="same"):
        convert.convert(path, path)


def test_dtype_tensors_cover_every_safetensors_numpy_type(tf):
    assert NUMPY_SAFETENSORS | {"bf16"} == set(dtype_tensors(tf, with_strings=False))


# --------------------------------------------------------------------------- __metadata__

def test_convert_to_safetensors_writes_metadata_the_package_reads(numeric_ckpt, tmp_path):
    """`format` "pt" (what HF transformers requires to load a file as it is), the source as
    given and ckptkit's version; the caller's pairs added, and winning."""
    dst = os.fspath(tmp_path / "m.safetensors")
    convert.convert(numeric_ckpt, dst)
    want = {"format": "pt", "source": numeric_ckpt, "ckptkit_version": ckptkit.__version__}
    with safe_open(dst, framework="numpy") as f:
        assert f.metadata() == want
    with ckptkit.CheckpointReader(dst) as reader:
        assert reader.metadata() == want
    extra = os.fspath(tmp_path / "extra.safetensors")
    convert.convert(numeric_ckpt, extra, metadata={"format": "tf", "license": "apache-2.0", "empty": ""})
    with safe_open(extra, framework="numpy") as f:
        assert f.metadata() == {**want, "format": "tf", "license": "apache-2.0", "empty": ""}
    with pytest.raises(InvalidArgumentError, match="metadata is written to .safetensors files only") as info:
        convert.convert(numeric_ckpt, os.fspath(tmp_path / "m.npz"), metadata={"a": "b"})
    assert info.value.path == os.fspath(tmp_path / "m.npz") and not (tmp_path / "m.npz").exists()
    with pytest.raises(InvalidArgumentError, match="str keys and str values"):
        convert.convert(numeric_ckpt, os.fspath(tmp_path / "n.safetensors"), metadata={"a": 1})


def test_metadata_source_of_a_url_keeps_no_credentials():
    got = convert.safetensors_metadata("https://user:secret@host:8443/run/model.ckpt?X-Amz-Signature=abc#x",
                                       None, "out.safetensors")
    assert got["source"] == "https://host:8443/run/model.ckpt"
    assert convert.safetensors_metadata("s3://bucket/run/model.ckpt", None, "o")["source"] == "s3://bucket/run/model.ckpt"


def test_reader_metadata_is_what_safe_open_gives(tmp_path, numeric_ckpt):
    """A dict when the file has __metadata__ ({} when stored empty), None when it has none,
    as safe_open(...).metadata(); formats without such a dict give None."""
    tensors = {"w": np.arange(4, dtype=np.float32)}
    cases = {"some": {"format": "np", "note": "x=y"}, "empty": {}, "none": None}
    for name, metadata in cases.items():
        path = os.fspath(tmp_path / f"{name}.safetensors")
        st_numpy.save_file(tensors, path, metadata=metadata)
        with safe_open(path, framework="numpy") as f:
            theirs = f.metadata()
        with ckptkit.CheckpointReader(path) as reader:
            assert reader.metadata() == theirs == metadata, name
    ours = os.fspath(tmp_path / "ours_empty.safetensors")
    convert.write_safetensors(ours, tensors, metadata={})
    with safe_open(ours, framework="numpy") as f:
        assert f.metadata() == {}
    npz = os.fspath(tmp_path / "w.npz")
    np.savez(npz, **tensors)
    for path in (npz, numeric_ckpt):
        with ckptkit.CheckpointReader(path) as reader:
            assert reader.metadata() is None


def test_cli_convert_metadata_option(numeric_ckpt, tmp_path):
    dst = os.fspath(tmp_path / "m.safetensors")
    result = CliRunner().invoke(cli, ["convert", numeric_ckpt, dst, "--metadata", "license=mit",
                                      "--metadata", "expr=a=b"])
    assert result.exit_code == 0, result.output
    with safe_open(dst, framework="numpy") as f:
        metadata = f.metadata()
    assert metadata["license"] == "mit" and metadata["expr"] == "a=b" and metadata["source"] == numeric_ckpt
    bad = CliRunner().invoke(cli, ["convert", numeric_ckpt, os.fspath(tmp_path / "b.safetensors"),
                                   "--metadata", "no-equals-sign"])
    assert bad.exit_code == 2 and "'no-equals-sign' is not KEY=VALUE" in bad.output
    assert not (tmp_path / "b.safetensors").exists()
    npz = CliRunner().invoke(cli, ["convert", numeric_ckpt, os.fspath(tmp_path / "m.npz"), "--metadata", "a=b"])
    assert npz.exit_code == 1
    [line] = npz.stderr.strip().splitlines()
    assert line == f"ckptkit: error: {tmp_path / 'm.npz'}: metadata is written to .safetensors files only"


# --------------------------------------------------------------------------- existing destinations

def _tf1_run(tf, tf1, directory: str) -> list[str]:
    """A TF1 Saver run: 2 steps of `w` and global_step, each with its .meta."""
    with tf.Graph().as_default():
        w = tf1.get_variable("w", initializer=np.zeros((2, 3), np.float32))
        step = tf1.train.get_or_create_global_step()
        saver = tf1.train.Saver()
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            saved = []
            for i in (1, 2):
                sess.run([w.assign(tf.fill([2, 3], float(i))), step.assign(i)])
                saved.append(saver.save(sess, os.path.join(directory, "model.ckpt"), global_step=step))
    return saved


def _files(directory) -> dict[str, bytes]:
    return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))}


def test_convert_refuses_a_run_s_checkpoint_until_overwrite_then_tf_reads_it(tf, tf1, tmp_path):
    run_dir = os.fspath(tmp_path / "run")
    first, latest = _tf1_run(tf, tf1, run_dir)
    src = os.fspath(tmp_path / "x.safetensors")
    new = {"w": np.full((2, 3), 7.0, np.float32), "global_step": np.array(9, np.int64)}
    convert.write_safetensors(src, new)
    before = _files(run_dir)

    result = CliRunner().invoke(cli, ["convert", src, latest])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"ckptkit: error: {latest}: ") and "--overwrite" in lines[0]
    assert "model.ckpt-2.index" in lines[0]
    with pytest.raises(AlreadyExistsError, match="overwrite"):
        convert.convert(src, latest)
    lone = os.path.join(run_dir, "lone")
    with open(lone + ".meta", "wb") as f:
        f.write(b"a graph")
    with pytest.raises(AlreadyExistsError, match="lone.meta"):  # a .meta alone is there too
        convert.convert(src, lone)
    os.unlink(lone + ".meta")
    assert _files(run_dir) == before  # nothing written, byte for byte

    # --overwrite, into two shards: the old .meta (a graph of the old tensors) goes in the same commit
    result = CliRunner().invoke(cli, ["convert", src, latest, "--overwrite", "--num-shards", "2"])
    assert result.exit_code == 0, result.output
    assert not os.path.exists(latest + ".meta")
    assert bundle.existing_data_files(latest) == [bundle.data_filename(latest, s, 2) for s in range(2)]
    reader = tf.train.load_checkpoint(latest)
    assert same(reader.get_tensor("w"), new["w"]) and reader.get_tensor("global_step") == 9
    assert tf.train.latest_checkpoint(run_dir) == latest  # the state file is still true

    # again, into one shard: the two old shards do not survive
    convert.convert(src, latest, overwrite=True)
    assert sorted(f for f in os.listdir(run_dir) if f.startswith("model.ckpt-2")) == [
        "model.ckpt-2.data-00000-of-00001", "model.ckpt-2.index"]
    assert same(tf_values(tf, latest)["w"], new["w"])
    assert {k: v for k, v in _files(run_dir).items() if k.startswith("model.ckpt-1")} == \
        {k: v for k, v in before.items() if k.startswith("model.ckpt-1")}  # the other step untouched
    # The run's graph (step 1's .meta) restores the replaced checkpoint in TF1.
    with tf.Graph().as_default(), tf1.Session() as sess:
        tf1.train.import_meta_graph(first + ".meta").restore(sess, tf.train.latest_checkpoint(run_dir))
        got = {v.op.name: sess.run(v) for v in tf1.global_variables()}
    assert same(got["w"], new["w"]) and got["global_step"] == 9


def test_convert_refuses_an_existing_tensor_file_until_overwrite(tf, tf1, tmp_path):
    ckpt = ckptkit.save(os.fspath(tmp_path / "m"), {"x": np.arange(3, dtype=np.float32)})
    for name in ("a.safetensors", "a.npz"):
        dst = os.fspath(tmp_path / name)
        with open(dst, "wb") as f:
            f.write(b"precious")
        with pytest.raises(AlreadyExistsError, match=f"{name}: already exists; --overwrite"):
            convert.convert(ckpt, dst)
        assert open(dst, "rb").read() == b"precious"
        convert.convert(ckpt, dst, overwrite=True)
        assert same(convert.read_any(dst)["x"], np.arange(3, dtype=np.float32))
    # A V1 checkpoint at the prefix counts too, and a V2 one replacing it leaves no V1 file
    old = make_v1(tf1, os.fspath(tmp_path))
    with pytest.raises(AlreadyExistsError):
        convert.convert(ckpt, old)
    convert.convert(ckpt, old, overwrite=True)
    assert not os.path.exists(old) and not os.path.exists(old + ".meta")
    assert same(tf_values(tf, old)["x"], np.arange(3, dtype=np.float32))
