"""Partitioned (sliced) variables in V2 checkpoints, against TensorFlow both ways."""
from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import save_partitioned_tf1
from hypothesis import given, settings
from hypothesis import strategies as st

import ckptkit
from ckptkit.errors import DataLossError, InvalidArgumentError
from ckptkit.formats import bundle
from ckptkit.formats.slices import (
    FULL,
    SlicedTensor,
    TensorSlice,
    decode_tensor_name_slice,
    encode_tensor_name_slice,
    read_num_increasing,
    read_signed_num_increasing,
    read_string,
    write_num_increasing,
    write_signed_num_increasing,
    write_string,
)
from ckptkit.formats.table import TableReader

# --------------------------------------------------------------------------- OrderedCode

@settings(max_examples=300, deadline=None)
@given(st.integers(-(1 << 63), (1 << 63) - 1), st.integers(-(1 << 63), (1 << 63) - 1))
def test_signed_numbers_round_trip_and_keep_order(a, b):
    ea, eb = write_signed_num_increasing(a), write_signed_num_increasing(b)
    assert read_signed_num_increasing(ea + b"tail") == (a, len(ea))
    assert (ea < eb) == (a < b)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, (1 << 64) - 1), st.binary(max_size=40), st.binary(max_size=40))
def test_unsigned_numbers_and_strings_round_trip(n, s, t):
    en = write_num_increasing(n)
    assert read_num_increasing(en + b"\x07") == (n, len(en))
    es, et = write_string(s), write_string(t)
    assert read_string(es + b"\x01") == (s, len(es))
    assert (es < et) == (s < t)


def test_signed_encoding_lengths():
    # OrderedCode's documented ranges: n bytes hold [-2^(7n-1), 2^(7n-1)).
    for n in range(1, 10):
        lo, hi = -(1 << (7 * n - 1)), (1 << (7 * n - 1)) - 1
        assert len(write_signed_num_increasing(lo)) == n
        assert len(write_signed_num_increasing(hi)) == n
        assert len(write_signed_num_increasing(hi + 1)) == n + 1
    assert len(write_signed_num_increasing((1 << 63) - 1)) == 10
    assert write_signed_num_increasing(0) == b"\x80" and write_signed_num_increasing(-1) == b"\x7f"


def test_slice_keys_written_by_tf_decode_and_reencode(tf, tmp_path):
    """SaveV2 with explicit slices, including starts that need multi-byte encodings."""
    prefix = str(tmp_path / "keys")
    specs = {"w": ("7 4", "0,3:0,4", (3, 4)),
             "big": ("100000000000 2", "99999999990,3:-", (3, 2)),
             "wide": ("3 70000", "-:65536,4", (3, 4)),
             "odd\x00name\xff".encode("latin-1").decode("latin-1"): ("5", "2,3", (3,))}
    names = list(specs)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                      shape_and_slices=[specs[n][0] + " " + specs[n][1] for n in names],
                      tensors=[tf.ones(specs[n][2]) for n in names])
    index = bundle.BundleIndex(prefix)
    slice_keys = [k for k in index.keys() if k.startswith("\x00")]
    assert len(slice_keys) == len(specs)
    for raw in slice_keys:
        key = bundle.encode_key(raw)
        name, tslice = decode_tensor_name_slice(key)
        assert tslice.spec() == specs[name][1]
        assert encode_tensor_name_slice(name, tslice) == key
        assert [s.spec() for s in map(TensorSlice.from_proto, index.entry(name).slices)] == [specs[name][1]]


def test_tensor_slice_forms():
    s = TensorSlice.parse("0,3:-")
    assert s.extents == ((0, 3), (0, FULL))
    assert TensorSlice.from_index((slice(0, 3),), (7, 4)) == s
    assert TensorSlice.from_proto(s.to_proto()) == s
    assert s.shape_in((7, 4)) == (3, 4)
    with pytest.raises(InvalidArgumentError):
        TensorSlice.parse("0,0")
    with pytest.raises(DataLossError):
        decode_tensor_name_slice(b"\x00abc")


# --------------------------------------------------------------------------- TF1 partitioned variables

@pytest.fixture(scope="module")
def tf1_v2_partitioned(tf, tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("partitioned_v2"))
    return save_partitioned_tf1(tf, tf.compat.v1, directory, "V2", extra_dtypes=True)


def test_tf1_partitioned_variables_read_whole(tf, tf1_v2_partitioned):
    path, values = tf1_v2_partitioned
    tf_reader = tf.train.load_checkpoint(path)
    with ckptkit.CheckpointReader(path) as reader:
        shapes = reader.get_variable_to_shape_map()
        assert shapes == tf_reader.get_variable_to_shape_map()
        assert {k: d.name for k, d in reader.get_variable_to_dtype_map().items()} == \
            {k: d.name for k, d in tf_reader.get_variable_to_dtype_map().items()}
        assert reader.debug_string() == tf_reader.debug_string()  # TF lists slice keys there
        assert sorted(reader) == sorted(shapes) and len(reader) == len(shapes)
        assert not any(k.startswith("\x00") for k in reader)
        for name, value in values.items():
            got = reader.get_tensor(name)
            assert got.dtype == value.dtype and got.shape == value.shape
            np.testing.assert_array_equal(got, value, err_msg=name)
            np.testing.assert_array_equal(got, tf_reader.get_tensor(name), err_msg=name)
        assert len(reader.slices("fixed3_axis0")) == 3 and reader.slices("plain") == []
    loaded = ckptkit.load(path)
    assert set(loaded) == set(values)


def test_missing_slice_is_data_loss_naming_the_key(tf1_v2_partitioned, tmp_path):
    path, _ = tf1_v2_partitioned
    index = bundle.BundleIndex(path)
    victim = next(k for k in index.keys() if k.startswith("\x00fixed3_axis0"))
    prefix = str(tmp_path / "holey")
    for name in os.listdir(os.path.dirname(path)):
        if name.startswith("model.ckpt.data"):
            os.link(os.path.join(os.path.dirname(path), name), prefix + name[len("model.ckpt"):])
    bundle.write_index(prefix, index.header, [(k, v) for k, v in index.raw_items() if k != victim]).commit()
    with ckptkit.CheckpointReader(prefix) as reader:
        assert "fixed3_axis0" in reader
        np.testing.assert_array_equal(reader["plain"], np.ones(3, np.float32))
        with pytest.raises(DataLossError, match="fixed3_axis0") as info:
            reader.get_tensor("fixed3_axis0")
        assert "missing" in str(info.value) and prefix in str(info.value)


def test_corrupt_slice_data_fails_its_checksum(tmp_path):
    prefix = str(tmp_path / "ck")
    value = np.arange(60, dtype=np.float32).reshape(10, 6)
    ckptkit.save(prefix, {"v": SlicedTensor.split(value, 3)})
    data = prefix + ".data-00000-of-00001"
    raw = bytearray(open(data, "rb").read())
    raw[len(raw) // 2] ^= 0x40
    open(data, "wb").write(bytes(raw))
    with pytest.raises(DataLossError, match=r"'v'.*slice .*checksum"):
        ckptkit.load_variable(prefix, "v")
    with ckptkit.CheckpointReader(prefix, verify=False) as reader:
        assert reader.get_tensor("v").shape == (10, 6)


# --------------------------------------------------------------------------- ckptkit writes, TF reads

def test_tf_reads_ckptkit_sliced_variables_whole(tf, tmp_path):
    rng = np.random.default_rng(5)
    full = rng.standard_normal((7, 4)).astype(np.float32)
    cols = rng.integers(-100, 100, size=(3, 9)).astype(np.int32)
    grid = rng.standard_normal((4, 6)).astype(np.float64)
    tensors = {
        "rows": SlicedTensor.split(full, 3),
        "cols": SlicedTensor.split(cols, 2, axis=1),
        "grid": SlicedTensor((4, 6), [("0,2:0,3", grid[:2, :3]), ("0,2:3,3", grid[:2, 3:]),
                                      ((slice(2, 4), slice(0, 6)), grid[2:])]),
        "one": SlicedTensor.split(np.arange(3, dtype=np.int64), 1),
        "plain": np.arange(5, dtype=np.int16),
    }
    prefix = ckptkit.save(str(tmp_path / "mine"), tensors)
    tf_reader = tf.train.load_checkpoint(prefix)
    expected = {"rows": full, "cols": cols, "grid": grid, "one": np.arange(3), "plain": np.arange(5, dtype=np.int16)}
    assert tf_reader.get_variable_to_shape_map() == {k: list(v.shape) for k, v in expected.items()}
    for name, value in expected.items():
        np.testing.assert_array_equal(tf_reader.get_tensor(name), value, err_msg=name)
    with ckptkit.CheckpointReader(prefix) as reader:
        assert reader.debug_string() == tf_reader.debug_string()
        assert reader.slices("one") == []  # one full piece is written plainly, as TF does
        for name, value in expected.items():
            np.testing.assert_array_equal(reader[name], value)


def test_ckptkit_sliced_index_is_byte_identical_to_tf(tf, tmp_path):
    value = np.arange(28, dtype=np.float32).reshape(7, 4)
    sliced = SlicedTensor.split(value, 3)
    ckptkit.save(str(tmp_path / "mine"), {"v": sliced, "w": np.ones(2, np.float32)})
    # TF writes data in call order; ckptkit in key order (slice keys sort first).
    tf.raw_ops.SaveV2(prefix=str(tmp_path / "tf"), tensor_names=["v"] * 3 + ["w"],
                      shape_and_slices=[f"7 4 {s.spec()}" for s, _ in sliced.pieces] + [""],
                      tensors=[tf.constant(a) for _, a in sliced.pieces] + [tf.ones(2)])
    for suffix in (".index", ".data-00000-of-00001"):
        with open(str(tmp_path / "mine") + suffix, "rb") as a, open(str(tmp_path / "tf") + suffix, "rb") as b:
            assert a.read() == b.read(), suffix


def test_tf1_saver_restores_ckptkit_slices_into_partitioned_variables(tf, tf1, tmp_path):
    rng = np.random.default_rng(11)
    value = rng.standard_normal((7, 4)).astype(np.float32)
    other = rng.standard_normal((5, 6)).astype(np.float32)
    # Written in 2 pieces; restored into 3 partitions (and 2 along axis 1): TF re-slices.
    prefix = ckptkit.save(str(tmp_path / "ck"), {"part": SlicedTensor.split(value, 2),
                                                  "ax1": SlicedTensor.split(other, 3, axis=1)})
    graph = tf.Graph()
    with graph.as_default():
        part = tf1.get_variable("part", shape=[7, 4], partitioner=tf1.fixed_size_partitioner(3))
        ax1 = tf1.get_variable("ax1", shape=[5, 6], partitioner=tf1.fixed_size_partitioner(2, axis=1))
        saver = tf1.train.Saver()
        with tf1.Session(graph=graph) as sess:
            saver.restore(sess, prefix)
            np.testing.assert_array_equal(sess.run(part.as_tensor()), value)
            np.testing.assert_array_equal(sess.run(ax1.as_tensor()), other)


def test_sliced_tensor_rejects_bad_tilings(tmp_path):
    with pytest.raises(InvalidArgumentError, match="overlap"):
        SlicedTensor((4,), [("0,3", np.zeros(3)), ("2,2", np.zeros(2))])
    with pytest.raises(InvalidArgumentError, match="missing"):
        SlicedTensor((4,), [("0,3", np.zeros(3))])
    with pytest.raises(InvalidArgumentError, match="does not fit"):
        SlicedTensor((4,), [("0,5", np.zeros(5))])
    bad = SlicedTensor((4,), [("0,2", np.zeros(2)), ("2,2", np.zeros(3))])
    with pytest.raises(InvalidArgumentError, match="needs an array of shape"):
        ckptkit.save(str(tmp_path / "bad"), {"x": bad})
    assert not os.listdir(tmp_path)
    np.testing.assert_array_equal(SlicedTensor.split(np.arange(7), 3).to_numpy(), np.arange(7))


def test_sliced_string_tensor_round_trips(tmp_path):
    value = np.array([b"a", b"", "ü".encode(), b"x" * 300, b"q"], dtype=object)
    prefix = ckptkit.save(str(tmp_path / "s"), {"s": SlicedTensor.split(value, 2)})
    got = ckptkit.load_variable(prefix, "s")
    assert got.tolist() == value.tolist()
    assert TableReader.open(prefix + ".index").num_blocks == 1


def test_sliced_variables_across_data_shards(tf, tmp_path):
    value = np.arange(400, dtype=np.float32).reshape(40, 10)
    prefix = ckptkit.save(str(tmp_path / "x"), {"v": SlicedTensor.split(value, 4), "w": np.ones(100)},
                          num_shards=3)
    index = bundle.BundleIndex(prefix)
    assert len({index.entry(k).shard_id for k in index.keys() if k.startswith("\x00")}) > 1
    np.testing.assert_array_equal(tf.train.load_checkpoint(prefix).get_tensor("v"), value)
    np.testing.assert_array_equal(ckptkit.load_variable(prefix, "v"), value)
