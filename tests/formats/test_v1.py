"""Legacy V1 checkpoints (one SSTable of SavedTensorSlices per file), written by TF."""
from __future__ import annotations

import os

import cramjam
import numpy as np
import pytest
from helpers import (
    PARTITIONERS,
    alternate_cpus,
    assert_same_tensor,
    random_array,
    save_partitioned_tf1,
    snappy_compress,
    write_snappy_table,
)

import ckptkit
from ckptkit.errors import DataLossError, NotFoundError
from ckptkit.formats.table import TableReader

V1_DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
             "bool", "complex64", "complex128"]


def debug_lines(blob: bytes) -> list[bytes]:
    """TF's V1 debug_string follows a hash map's order: compare the lines as a sorted list."""
    return sorted(blob.splitlines())


def assert_matches_tf_listing(tf, path: str, reader) -> None:
    tf_reader = tf.train.load_checkpoint(path)
    assert reader.get_variable_to_shape_map() == tf_reader.get_variable_to_shape_map()
    assert {k: d.name for k, d in reader.get_variable_to_dtype_map().items()} == \
        {k: d.name for k, d in tf_reader.get_variable_to_dtype_map().items()}
    assert debug_lines(reader.debug_string()) == debug_lines(tf_reader.debug_string())
    assert sorted(reader) == sorted(tf_reader.get_variable_to_shape_map())


def test_v1_every_dtype_written_by_tf_save(tf, tmp_path):
    rng = np.random.default_rng(3)
    values = {}
    for dtype in V1_DTYPES:
        values[f"{dtype}/matrix"] = random_array(dtype, (3, 5), rng)
        values[f"{dtype}/scalar"] = random_array(dtype, (), rng)
    values["string/vector"] = np.array([b"", "ünï".encode(), bytes(range(256)), b"x" * 5000], dtype=object)
    values["string/scalar"] = np.array(b"hello", dtype=object)
    values["empty"] = np.zeros((0, 4), np.float32)
    path = str(tmp_path / "every.ckpt")
    names = sorted(values)
    tf.raw_ops.Save(filename=path, tensor_names=names, data=[tf.constant(values[n]) for n in names])
    tf_reader = tf.train.load_checkpoint(path)
    with ckptkit.CheckpointReader(path) as reader:
        assert reader.format_version == 1 and reader.prefix == path
        assert_matches_tf_listing(tf, path, reader)
        for name, value in values.items():
            assert_same_tensor(reader.get_tensor(name), value, name)
            if value.dtype.kind in "fiub" and value.dtype.name != "uint16" and value.dtype.name != "float16" \
                    and value.dtype.name != "bool":
                # what TF 2.x's V1 reader itself can read (float/double/int32/uint8/int16/int8/int64)
                assert_same_tensor(tf_reader.get_tensor(name), reader.get_tensor(name), name)


def test_v1_sliced_tensors_of_every_dtype(tf, tmp_path):
    """SaveSlices writes pieces; TF 2.x cannot read them back ("Sliced checkpoints"), ckptkit can."""
    rng = np.random.default_rng(4)
    path = str(tmp_path / "sliced.ckpt")
    names, specs, pieces, values = [], [], [], {}
    for dtype in V1_DTYPES + ["string"]:
        if dtype == "string":
            value = np.array([[f"{i},{j}".encode() * i for j in range(3)] for i in range(5)], dtype=object)
        else:
            value = random_array(dtype, (5, 3), rng)
        values[dtype] = value
        for spec, part in (("0,2:-", value[:2]), ("2,3:0,1", value[2:, :1]), ("2,3:1,2", value[2:, 1:])):
            names.append(dtype)
            specs.append(f"5 3 {spec}")
            pieces.append(tf.constant(part))
    tf.raw_ops.SaveSlices(filename=path, tensor_names=names, shapes_and_slices=specs, data=pieces)
    tf_reader = tf.train.load_checkpoint(path)
    with pytest.raises(Exception, match="Sliced checkpoints are not supported"):
        tf_reader.get_tensor("float32")
    with ckptkit.CheckpointReader(path) as reader:
        assert_matches_tf_listing(tf, path, reader)
        assert b"float32 (DT_FLOAT) [5,3], 3 slices" in reader.debug_string()
        for name, value in values.items():
            assert_same_tensor(reader[name], value, name)
            assert len(reader.slices(name)) == 3


def test_v1_saver_plain_and_partitioned(tf, tf1, tmp_path):
    path, values = save_partitioned_tf1(tf, tf1, str(tmp_path), "V1", extra_dtypes=True)
    assert os.path.isfile(path) and not os.path.exists(path + ".index")
    tf_reader = tf.train.load_checkpoint(path)
    for where in (path, str(tmp_path)):  # the file, or its directory via the state file
        with ckptkit.CheckpointReader(where) as reader:
            assert reader.prefix == path
            assert_matches_tf_listing(tf, path, reader)
            assert reader.object_graph() is None
            for name, value in values.items():
                np.testing.assert_array_equal(reader.get_tensor(name), value, err_msg=name)
                assert reader[name].dtype == value.dtype
            np.testing.assert_array_equal(reader["plain"], tf_reader.get_tensor("plain"))
            for name in PARTITIONERS:
                assert len(reader.slices(name)) > 1
    assert set(ckptkit.load(path)) == set(values)


def test_v1_multi_block_table(tf, tf1, tmp_path):
    """Enough data that TF's table writer cuts several 256 KiB blocks."""
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(1)
        variables = {f"layer{i}/kernel": tf1.get_variable(f"layer{i}/kernel", shape=[200, 200]) for i in range(6)}
        variables.update({f"many/v{i:03d}": tf1.get_variable(f"many/v{i:03d}", shape=[3]) for i in range(300)})
        variables["big_part"] = tf1.get_variable("big_part", shape=[300, 200],
                                                 partitioner=tf1.fixed_size_partitioner(4))
        saver = tf1.train.Saver(write_version=tf1.train.SaverDef.V1)
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            path = saver.save(sess, str(tmp_path / "big.ckpt"))
            values = sess.run({k: (v.as_tensor() if hasattr(v, "as_tensor") else v) for k, v in variables.items()})
    assert TableReader.open(path).num_blocks > 3
    with ckptkit.CheckpointReader(path) as reader:
        assert len(reader) == len(values)
        for name, value in values.items():
            np.testing.assert_array_equal(reader[name], value, err_msg=name)


def test_sharded_v1_saver_on_two_devices(tf, tf1, tmp_path):
    alternate = alternate_cpus()
    graph = tf.Graph()
    with graph.as_default():
        with graph.device(alternate):
            plain = tf1.get_variable("plain", shape=[4, 3])
            other = tf1.get_variable("other", shape=[5], dtype=tf.int32, initializer=tf1.ones_initializer())
            part = tf1.get_variable("part", shape=[6, 2], partitioner=tf1.fixed_size_partitioner(3))
        assert {v.device.lower()[-5:] for v in part} == {"cpu:0", "cpu:1"}
        saver = tf1.train.Saver(sharded=True, write_version=tf1.train.SaverDef.V1)
        config = tf1.ConfigProto(device_count={"CPU": 2})
        with tf1.Session(graph=graph, config=config) as sess:
            sess.run(tf1.global_variables_initializer())
            saved = saver.save(sess, str(tmp_path / "model.ckpt"))
            values = sess.run({"plain": plain, "other": other, "part": part.as_tensor()})
    prefix = str(tmp_path / "model.ckpt")
    assert saved == prefix + "-?????-of-00002"
    shards = [prefix + "-00000-of-00002", prefix + "-00001-of-00002"]
    assert all(os.path.isfile(s) for s in shards)
    for where in (saved, prefix, shards[1], str(tmp_path)):  # the directory: via its state file
        with ckptkit.CheckpointReader(where) as reader:
            assert reader.prefix == saved and reader.files == shards and reader.num_shards == 2
            assert_matches_tf_listing(tf, saved, reader)
            for name, value in values.items():
                np.testing.assert_array_equal(reader[name], value, err_msg=name)
    # the slices of "part" really live in both files
    owners = {fi for _, fi in ckptkit.CheckpointReader(saved)._backend.checkpoint._tensors["part"].slices}
    assert owners == {0, 1}
    os.remove(shards[1])
    with pytest.raises(NotFoundError):
        ckptkit.CheckpointReader(shards[0])


# --------------------------------------------------------------------------- damage

def test_damaged_v1_block_names_the_file(tf, tmp_path):
    path = str(tmp_path / "d.ckpt")
    tf.raw_ops.Save(filename=path, tensor_names=["a", "b"], data=[tf.ones([100]), tf.zeros([3])])
    raw = bytearray(open(path, "rb").read())
    raw[len(raw) // 3] ^= 0x10
    open(path, "wb").write(bytes(raw))
    with pytest.raises(DataLossError, match="d.ckpt"):
        ckptkit.load(path)


def test_random_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(NotFoundError, match="not a TensorFlow checkpoint"):
        ckptkit.CheckpointReader(str(path))


# --------------------------------------------------------------------------- snappy blocks

@pytest.fixture
def tf_v1_entries(tf, tmp_path):
    path = str(tmp_path / "plain.ckpt")
    values = {"a": np.arange(50, dtype=np.float32), "b": np.array([b"x", b"yz"], dtype=object),
              "c": np.arange(12, dtype=np.int64).reshape(3, 4)}
    tf.raw_ops.Save(filename=path, tensor_names=sorted(values), data=[tf.constant(values[k]) for k in sorted(values)])
    return [(k, bytes(v)) for k, v in TableReader.open(path)], values


def test_snappy_compressed_v1_table_reads(tmp_path, tf_v1_entries):
    entries, values = tf_v1_entries
    for name, codec in (("cramjam", lambda data: bytes(cramjam.snappy.compress_raw(data))),
                        ("ours", snappy_compress)):
        path = str(tmp_path / f"snappy_{name}.ckpt")
        write_snappy_table(path, entries, codec)
        with ckptkit.CheckpointReader(path) as reader:
            assert sorted(reader) == sorted(values)
            for key, value in values.items():
                assert_same_tensor(reader[key], value, key)
