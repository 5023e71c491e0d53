"""Fixtures of the robustness tests: real TF-written checkpoints that the fuzzers damage."""
from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import alternate_cpus, tf_values

TF_V2_SEED = 1234  # the values of tf_v2's variables


@pytest.fixture(scope="module")
def tf_v2(tf, tf1, tmp_path_factory):
    """A sharded TF1 Saver's V2 checkpoint on two devices: two data shards, .meta, state file."""
    directory = str(tmp_path_factory.mktemp("tf_v2"))
    alternate = alternate_cpus()
    graph = tf.Graph()
    rng = np.random.default_rng(TF_V2_SEED)
    with graph.as_default(), graph.device(alternate):
        tf1.Variable(rng.standard_normal((64, 48)).astype(np.float32), name="dense/kernel")
        tf1.Variable(rng.standard_normal(48), name="dense/bias")  # float64
        tf1.Variable(np.arange(-50, 50, dtype=np.int32), name="ints/i32")
        tf1.Variable(np.array([2**40, -5], dtype=np.int64), name="ints/i64")
        tf1.Variable(np.array([True, False, True]), name="flags")
        tf1.Variable(np.array([0.5, -2.0, 65504], dtype=np.float16), name="half")
        tf1.Variable(np.array([b"alpha", b"", "é".encode(), b"x" * 300], dtype=object), name="names")
        tf1.get_variable("part", shape=[9, 4], initializer=tf1.random_normal_initializer(seed=TF_V2_SEED),
                         partitioner=tf1.fixed_size_partitioner(3))
        step = tf1.train.get_or_create_global_step()
        saver = tf1.train.Saver(sharded=True, save_relative_paths=True)
        config = tf1.ConfigProto(device_count={"CPU": 2})
        with tf1.Session(graph=graph, config=config) as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(step.assign(1234))
            prefix = saver.save(sess, os.path.join(directory, "model.ckpt"), global_step=step)
    assert prefix.endswith("model.ckpt-1234")
    names = sorted(os.listdir(directory))
    assert names == ["checkpoint", "model.ckpt-1234.data-00000-of-00002", "model.ckpt-1234.data-00001-of-00002",
                     "model.ckpt-1234.index", "model.ckpt-1234.meta"], names
    return directory, prefix, tf_values(tf, prefix)
