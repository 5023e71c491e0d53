"""V2 bundles against TensorFlow, both ways: TF writes and ckptkit reads, and the reverse."""
from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import STRINGS, assert_same_tensor, variety

import ckptkit
from ckptkit.formats.table import TableReader


def tf_save_v2(tf, prefix: str, tensors: dict[str, np.ndarray]) -> None:
    """Write with TF's own SaveV2 kernel, keys in sorted order (as TF's Saver passes them)."""
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])


def assert_reader_matches_tf(tf, prefix: str) -> int:
    """Every key: same dtype name, shape and bytes in ckptkit as in TF's own reader."""
    tf_reader = tf.train.load_checkpoint(prefix)
    tf_shapes = tf_reader.get_variable_to_shape_map()
    tf_dtypes = tf_reader.get_variable_to_dtype_map()
    with ckptkit.NewCheckpointReader(prefix) as reader:
        assert reader.get_variable_to_shape_map() == tf_shapes
        assert {k: d.name for k, d in reader.get_variable_to_dtype_map().items()} == \
               {k: d.name for k, d in tf_dtypes.items()}
        assert reader.debug_string() == tf_reader.debug_string()
        assert {k: reader.tensor_dtype(k).name for k in tf_shapes} == {k: d.name for k, d in tf_dtypes.items()}
        for key in tf_shapes:
            expected = np.asarray(tf_reader.get_tensor(key))
            assert_same_tensor(reader.get_tensor(key), expected, key)
    return len(tf_shapes)


def assert_tf_reads(tf, prefix: str, tensors: dict[str, np.ndarray]) -> None:
    """TF's reader sees exactly `tensors`: keys, dtypes, shapes, bytes."""
    tf_reader = tf.train.load_checkpoint(prefix)
    assert set(tf_reader.get_variable_to_shape_map()) == set(tensors)
    for key, value in tensors.items():
        got = np.asarray(tf_reader.get_tensor(key))
        assert_same_tensor(got, np.asarray(value), key)


@pytest.fixture(scope="module")
def values():
    return variety(np.random.default_rng(20261122))


def test_tf_savev2_every_dtype_reads_back(tf, tmp_path, values):
    prefix = str(tmp_path / "tf")
    tf_save_v2(tf, prefix, values)
    assert assert_reader_matches_tf(tf, prefix) == len(values)
    loaded = ckptkit.load(prefix)
    assert set(loaded) == set(values)
    for key, value in values.items():
        assert_same_tensor(loaded[key], value, key)


def test_ckptkit_files_are_byte_identical_to_tf(tf, tmp_path, values):
    tf_prefix, our_prefix = str(tmp_path / "tf"), str(tmp_path / "ours")
    tf_save_v2(tf, tf_prefix, values)
    ckptkit.save(our_prefix, values)
    for suffix in (".index", ".data-00000-of-00001"):
        with open(tf_prefix + suffix, "rb") as a, open(our_prefix + suffix, "rb") as b:
            assert a.read() == b.read(), suffix


def test_tf_reads_ckptkit_every_dtype(tf, tmp_path, values):
    prefix = ckptkit.save(str(tmp_path / "ours"), values)
    assert_tf_reads(tf, prefix, values)


@pytest.mark.parametrize("num_shards", [2, 3, 7])
def test_tf_reads_ckptkit_multi_shard(tf, tmp_path, values, num_shards):
    prefix = ckptkit.save(str(tmp_path / "sharded"), values, num_shards=num_shards)
    shards = sorted(p for p in os.listdir(tmp_path) if ".data-" in p)
    assert shards == [f"sharded.data-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]
    with ckptkit.CheckpointReader(prefix) as reader:
        assert reader.num_shards == num_shards
        assert len({reader.entry(k).shard_id for k in reader}) > 1
    assert_tf_reads(tf, prefix, values)


def test_tf_merged_two_shard_checkpoint(tf, tmp_path, values):
    """TF's sharded layout: two SaveV2 bundles merged by MergeV2Checkpoints."""
    keys = sorted(values)
    parts = [str(tmp_path / "part0"), str(tmp_path / "part1")]
    tf_save_v2(tf, parts[0], {k: values[k] for k in keys[::2]})
    tf_save_v2(tf, parts[1], {k: values[k] for k in keys[1::2]})
    prefix = str(tmp_path / "merged")
    tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=parts, destination_prefix=prefix)
    assert os.path.exists(prefix + ".data-00001-of-00002")
    assert assert_reader_matches_tf(tf, prefix) == len(values)


def test_tf1_saver_checkpoint(tf1, tmp_path):
    """The seed documents' flow: variables and their moving average, saved by tf.train.Saver."""
    with tf1.Graph().as_default():
        v = tf1.Variable(0.0, name="v")
        w = tf1.Variable(np.arange(12, dtype=np.float64).reshape(3, 4), name="layer/w")
        step = tf1.train.get_or_create_global_step()
        ema = tf1.train.ExponentialMovingAverage(0.99)
        apply = ema.apply([v, w])
        saver = tf1.train.Saver()
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(tf1.assign(v, 10.0))
            sess.run(apply)
            prefix = saver.save(sess, str(tmp_path / "model.ckpt"), global_step=step)
            shadow = sess.run(ema.average(v))
    assert prefix.endswith("model.ckpt-0")
    tf = __import__("tensorflow")
    assert_reader_matches_tf(tf, prefix)
    reader = ckptkit.load_checkpoint(str(tmp_path))  # the directory: its latest checkpoint
    assert reader.prefix == prefix
    assert reader.get_tensor("v/ExponentialMovingAverage").tobytes() == np.float32(shadow).tobytes()
    assert np.float32(shadow) == np.float32(0.099999905)
    assert reader.get_tensor("global_step").dtype == np.int64
    # Any file of the checkpoint names it too.
    for name in ("model.ckpt-0.index", "model.ckpt-0.data-00000-of-00001", "model.ckpt-0.meta"):
        assert ckptkit.CheckpointReader(str(tmp_path / name)).prefix == prefix


def test_tf2_object_checkpoint(tf, tmp_path):
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    ckpt = tf.train.Checkpoint(model=model, step=tf.Variable(7, dtype=tf.int64))
    prefix = ckpt.write(str(tmp_path / "tf2"))
    assert assert_reader_matches_tf(tf, prefix) >= 4
    reader = ckptkit.CheckpointReader(prefix)
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in reader
    assert reader.get_variable_to_dtype_map()["_CHECKPOINTABLE_OBJECT_GRAPH"].name == "string"
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 7


def test_strings_every_kind(tf, tmp_path):
    strings = {"s": np.array(STRINGS, dtype=object), "one": np.array(b"", dtype=object)}
    tf_prefix = str(tmp_path / "tf")
    tf_save_v2(tf, tf_prefix, strings)
    assert_reader_matches_tf(tf, tf_prefix)
    # str elements are written as UTF-8, like TF does for Python str.
    prefix = ckptkit.save(str(tmp_path / "ours"), {"u": ["ünïcödé", "", "✓"], "b": b"raw"})
    assert_tf_reads(tf, prefix, {"u": np.array(["ünïcödé".encode(), b"", "✓".encode()], dtype=object),
                                 "b": np.array(b"raw", dtype=object)})


def test_many_keys_multi_block_index_both_ways(tf, tmp_path):
    """20k keys: the index spans many 256 KiB blocks; TF and ckptkit agree to the byte."""
    tensors = {f"layer_{i:05d}/some/long/scope/name/kernel": np.array([i, -i], dtype=np.int32)
               for i in range(20000)}
    tf_prefix, our_prefix = str(tmp_path / "tf"), str(tmp_path / "ours")
    tf_save_v2(tf, tf_prefix, tensors)
    ckptkit.save(our_prefix, tensors)
    with open(tf_prefix + ".index", "rb") as a, open(our_prefix + ".index", "rb") as b:
        tf_index = a.read()
        assert tf_index == b.read()
    assert TableReader(tf_index).num_blocks > 3
    reader = ckptkit.CheckpointReader(tf_prefix)
    assert len(reader) == 20000
    assert reader.get_tensor("layer_12345/some/long/scope/name/kernel").tolist() == [12345, -12345]
    tf_reader = tf.train.load_checkpoint(our_prefix)
    assert tf_reader.get_tensor("layer_19999/some/long/scope/name/kernel").tolist() == [19999, -19999]


def test_big_tensor_crosses_block_size(tf, tmp_path):
    """A tensor much larger than TF's I/O buffers reads back exactly both ways."""
    big = np.random.default_rng(1).standard_normal((1024, 1100)).astype(np.float32)
    prefix = ckptkit.save(str(tmp_path / "ours"), {"big": big, "small": np.ones(3)})
    assert_tf_reads(tf, prefix, {"big": big, "small": np.ones(3)})
