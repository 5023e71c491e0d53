"""Fixtures of the integration tests: TF-written checkpoints for the sharded loads, and
the loopback S3 server (tests/storage/servers.py) for remote ones."""
from __future__ import annotations

import os

import numpy as np
import pytest
from sharded_cases import PART_SLICES, SHARDED
from storage.servers import s3_server


@pytest.fixture(scope="session")
def s3():
    """moto's S3 server on loopback with a bucket "bucket"; yields its storage_options."""
    with s3_server() as options:
        import boto3  # noqa: PLC0415 - comes with moto

        boto3.client("s3", aws_access_key_id="testing", aws_secret_access_key="testing",
                     **options["client_kwargs"]).create_bucket(Bucket="bucket")
        yield options


@pytest.fixture(scope="session")
def tf_sharded(tf, tf1, tmp_path_factory) -> str:
    """A checkpoint TF1's Saver writes (V2), with the tensors of SHARDED; returns its prefix."""
    directory = os.fspath(tmp_path_factory.mktemp("dcp_tf"))
    rng = np.random.default_rng(24)
    with tf.Graph().as_default():
        made = {}
        for name, (shape, dtype, _) in SHARDED.items():
            value = (rng.integers(-2**40, 2**40, shape) if dtype == "int64" else rng.standard_normal(shape))
            kwargs = {"partitioner": tf1.fixed_size_partitioner(PART_SLICES)} if name == "part" else {}
            var = tf1.get_variable(name, shape=shape, dtype=getattr(tf, dtype), initializer=tf1.zeros_initializer(),
                                   **kwargs)
            made[name] = (var, value)
        saver = tf1.train.Saver(save_relative_paths=True)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            for name, (var, value) in made.items():
                if name == "part":
                    rows = SHARDED[name][0][0] // PART_SLICES
                    for i, piece in enumerate(var):
                        sess.run(piece.assign(value[i * rows:(i + 1) * rows].astype(np.float32)))
                else:
                    sess.run(var.assign(tf.cast(value, var.dtype)))
            return saver.save(sess, os.path.join(directory, "model.ckpt"))
