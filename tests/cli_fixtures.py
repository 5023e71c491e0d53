"""TF-written checkpoints for the cli/edit/convert tests (made by TF in the test session).

Each builder writes into a fresh directory; tests copy the pristine result before
editing it, so TF runs once per session per kind of checkpoint.
"""
from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_EMA = np.float32(0.099999905)  # the seed documents' figure, as TF computes it


def make_seed(tf1, directory: str) -> str:
    """The seed example with TF1: v=0, EMA(0.99), v:=10, apply, Saver().save."""
    import tensorflow as tf  # noqa: PLC0415

    graph = tf.Graph()
    with graph.as_default():
        v = tf1.Variable(0.0, name="v")
        ema = tf1.train.ExponentialMovingAverage(0.99)
        update = ema.apply([v])
        saver = tf1.train.Saver(save_relative_paths=True)  # copies of the dir stay self-contained
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(v.assign(10.0))
            sess.run(update)
            return saver.save(sess, os.path.join(directory, "model.ckpt"))


def dtype_tensors(tf, with_strings: bool = True) -> dict:
    """Tensors of many dtypes, as TF tensors (values chosen to exercise each type)."""
    tensors = {
        "dense/kernel": tf.constant(np.arange(6, dtype=np.float32).reshape(2, 3) / 7),
        "dense/bias": tf.constant([np.nan, np.inf, -1.5], dtype=tf.float64),
        "ints/i32": tf.constant([[1, -2], [3, 2**31 - 1]], dtype=tf.int32),
        "ints/i64": tf.constant([2**40, -5], dtype=tf.int64),
        "ints/u8": tf.constant([0, 255], dtype=tf.uint8),
        "ints/i8": tf.constant(-7, dtype=tf.int8),
        "flags": tf.constant([True, False, True]),
        "half": tf.constant([0.5, -2.0], dtype=tf.float16),
        "bf16": tf.constant([1.5, -3.25, 1e30], dtype=tf.bfloat16),
        "cplx": tf.constant([1 + 2j, -0.5j], dtype=tf.complex64),
        "empty": tf.zeros([0, 4], dtype=tf.float32),
    }
    if with_strings:
        tensors["names"] = tf.constant([b"alpha", b"", "é".encode()])
    return tensors


def make_dtypes(tf, directory: str, with_strings: bool = True) -> str:
    """A checkpoint written by tf.raw_ops.SaveV2 with every tensor of dtype_tensors."""
    tensors = dtype_tensors(tf, with_strings)
    prefix = os.path.join(directory, "dtypes.ckpt")
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tensors[n] for n in names])
    return prefix


def make_partitioned(tf1, directory: str) -> str:
    """A TF1 checkpoint with a partitioned variable (slice entries) and a plain one."""
    import tensorflow as tf  # noqa: PLC0415

    with tf.Graph().as_default():
        tf1.get_variable("part", shape=[4, 2], initializer=tf1.ones_initializer(),
                         partitioner=tf1.fixed_size_partitioner(2))
        tf1.Variable(3.0, name="plain")
        saver = tf1.train.Saver(save_relative_paths=True)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            return saver.save(sess, os.path.join(directory, "part.ckpt"))


def make_v1(tf1, directory: str) -> str:
    """A legacy V1 checkpoint (one SSTable file) written by TF1's Saver."""
    import tensorflow as tf  # noqa: PLC0415

    with tf.Graph().as_default():
        tf1.Variable([[1.0, 2.0], [3.0, 4.0]], name="w")
        tf1.Variable(b"text", name="s")
        saver = tf1.train.Saver(write_version=tf1.train.SaverDef.V1, save_relative_paths=True)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            return saver.save(sess, os.path.join(directory, "old.ckpt"))


def tf_contents(tf, prefix: str) -> dict:
    """{key: numpy value} as TF's own reader sees the checkpoint."""
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


def same(a, b) -> bool:
    """Bitwise equality of two arrays (NaN-safe), or element equality for strings."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "O" or b.dtype.kind == "O":
        return a.shape == b.shape and list(a.reshape(-1)) == list(b.reshape(-1))
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def copy_dir(src: str, dst) -> str:
    shutil.copytree(src, dst)
    return os.fspath(dst)


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CKPTKIT_DEBUG", None)
    return env


CKPTKIT = [sys.executable, "-m", "ckptkit"]


@pytest.fixture(scope="session")
def seed_dir(tf, tf1, tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("seed")
    make_seed(tf1, os.fspath(directory))
    return os.fspath(directory)


@pytest.fixture(scope="session")
def dtypes_dir(tf, tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("dtypes")
    make_dtypes(tf, os.fspath(directory))
    return os.fspath(directory)


@pytest.fixture(scope="session")
def partitioned_dir(tf, tf1, tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("part")
    make_partitioned(tf1, os.fspath(directory))
    return os.fspath(directory)


@pytest.fixture
def seed(seed_dir, tmp_path) -> str:
    """A private copy of the seed example; returns its prefix."""
    return os.path.join(copy_dir(seed_dir, tmp_path / "seed"), "model.ckpt")


@pytest.fixture
def dtypes_ckpt(dtypes_dir, tmp_path) -> str:
    return os.path.join(copy_dir(dtypes_dir, tmp_path / "dtypes"), "dtypes.ckpt")


@pytest.fixture
def partitioned(partitioned_dir, tmp_path) -> str:
    return os.path.join(copy_dir(partitioned_dir, tmp_path / "part"), "part.ckpt")
