"""Edits of TF1 checkpoints keep their `.meta` consistent: import_meta_graph + restore works."""
from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import SEED_EMA, same, tf_values

import ckptkit
from ckptkit.cli import cli
from ckptkit.errors import UnsupportedError
from ckptkit.ops import edit
from ckptkit.proto import meta_graph_pb2

DATA = ".data-00000-of-00001"


def restore_meta(tf, tf1, prefix: str, *names: str) -> list:
    """import_meta_graph(PREFIX.meta) and its Saver's restore, then the named variables' values."""
    with tf.Graph().as_default(), tf1.Session() as sess:
        saver = tf1.train.import_meta_graph(prefix + ".meta")
        saver.restore(sess, prefix)
        variables = {v.op.name: v for v in tf1.global_variables()}
        return [sess.run(variables[name]) for name in names]


def test_ema_in_place_keeps_the_meta_restorable(tf, tf1, seed):
    edit.apply_ema(seed)
    assert sorted(tf_values(tf, seed)) == ["v"]
    (v,) = restore_meta(tf, tf1, seed, "v")
    assert same(v, SEED_EMA)
    # The shadow variable is still in the graph; the Saver no longer restores or saves it.
    with tf.Graph().as_default(), tf1.Session() as sess:
        tf1.train.import_meta_graph(seed + ".meta")
        for op in ("save/RestoreV2", "save/SaveV2"):
            assert list(sess.run(f"{op}/tensor_names:0")) == [b"v"]
        assert "v/ExponentialMovingAverage" in [v.op.name for v in tf1.global_variables()]


def test_rename_rewrites_the_savers_keys(tf, tf1, seed):
    edit.rename_keys(seed, {"v": "w"})
    v, shadow = restore_meta(tf, tf1, seed, "v", "v/ExponentialMovingAverage")
    assert same(v, np.float32(10.0)) and same(shadow, SEED_EMA)
    # Saving through the imported graph writes the new key: the Saver itself was rewritten.
    with tf.Graph().as_default(), tf1.Session() as sess:
        saver = tf1.train.import_meta_graph(seed + ".meta")
        saver.restore(sess, seed)
        again = saver.save(sess, seed + "-again", write_meta_graph=False)
    assert sorted(tf_values(tf, again)) == ["v/ExponentialMovingAverage", "w"]


def test_output_gets_the_rewritten_meta_and_source_keeps_its_own(tf, tf1, seed, tmp_path):
    meta_before = open(seed + ".meta", "rb").read()
    out = os.fspath(tmp_path / "out" / "inference")
    edit.apply_ema(seed, output=out)
    assert open(seed + ".meta", "rb").read() == meta_before
    assert same(restore_meta(tf, tf1, out, "v")[0], SEED_EMA)
    assert same(restore_meta(tf, tf1, seed, "v")[0], np.float32(10.0))


def test_partitioned_rename_restores_through_meta_and_reads_whole(tf, tf1, partitioned):
    edit.rename_keys(partitioned, {"part": "whole"})
    assert same(tf.train.load_checkpoint(partitioned).get_tensor("whole"), np.ones((4, 2), np.float32))
    part_0, part_1 = restore_meta(tf, tf1, partitioned, "part/part_0", "part/part_1")
    assert same(np.concatenate([part_0, part_1]), np.ones((4, 2), np.float32))


def dense_variables(tf1) -> list:
    return [tf1.get_variable("dense/kernel", shape=[3, 5], initializer=tf1.glorot_uniform_initializer(seed=3)),
            tf1.get_variable("dense/bias", shape=[5], initializer=tf1.zeros_initializer())]


def adam_checkpoint(tf, tf1, directory: str) -> tuple[str, dict]:
    """A TF1 dense layer trained one Adam step, saved with its .meta; the model's values."""
    with tf.Graph().as_default():
        x = tf1.constant(np.arange(12, dtype=np.float32).reshape(4, 3))
        weights = dense_variables(tf1)
        y = tf1.matmul(x, weights[0]) + weights[1]
        step = tf1.train.get_or_create_global_step()
        loss = tf1.reduce_mean((y - 1.0) ** 2)
        train = tf1.train.AdamOptimizer(0.01).minimize(loss, global_step=step)
        saver = tf1.train.Saver()
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(train)
            prefix = saver.save(sess, os.path.join(directory, "model.ckpt"))
            model = {v.op.name: sess.run(v) for v in [*weights, step]}
    return prefix, model


def test_rm_optimizer_compact_on_tf1_adam(tf, tf1, tmp_path):
    prefix, model = adam_checkpoint(tf, tf1, os.fspath(tmp_path))
    keys = set(tf_values(tf, prefix))
    slots = {"dense/kernel/Adam", "dense/kernel/Adam_1", "dense/bias/Adam", "dense/bias/Adam_1",
             "beta1_power", "beta2_power"}
    assert keys == set(model) | slots
    size_before = os.path.getsize(prefix + DATA)
    assert sorted(edit.remove_keys(prefix, optimizer=True, dry_run=True)) == sorted(slots)
    removed, freed = edit.remove_and_compact(prefix, optimizer=True)
    assert sorted(removed) == sorted(slots)
    assert set(tf_values(tf, prefix)) == set(model)
    assert os.path.getsize(prefix + DATA) == size_before - freed < size_before
    # A TF1 Saver of the model variables restores them exactly...
    with tf.Graph().as_default():
        weights = dense_variables(tf1)
        step = tf1.train.get_or_create_global_step()
        with tf1.Session() as sess:
            tf1.train.Saver([*weights, step]).restore(sess, prefix)
            for v in [*weights, step]:
                assert same(sess.run(v), model[v.op.name]), v.op.name
    # ...and so does the rewritten .meta's Saver, which no longer asks for the slots.
    got = restore_meta(tf, tf1, prefix, *model)
    for name, value in zip(model, got, strict=True):
        assert same(value, model[name]), name


def _meta_with_fed_names(path: str) -> None:
    """Make the Saver's RestoreV2 read its tensor names through an Identity: a graph shape
    ckptkit does not rewrite."""
    mg = meta_graph_pb2.MetaGraphDef()
    with open(path, "rb") as f:
        mg.ParseFromString(f.read())
    restore = next(n for n in mg.graph_def.node if n.op == "RestoreV2")
    fed = mg.graph_def.node.add(name="save/fed_names", op="Identity", input=[restore.input[1]])
    fed.attr["T"].type = 7  # DT_STRING
    restore.input[1] = fed.name
    with open(path, "wb") as f:
        f.write(mg.SerializeToString())


def test_unrewritable_meta_is_refused_or_dropped(tf, tf1, seed, tmp_path):
    _meta_with_fed_names(seed + ".meta")
    assert same(restore_meta(tf, tf1, seed, "v")[0], np.float32(10.0))  # TF itself is fine with it
    index_before = open(seed + ".index", "rb").read()
    with pytest.raises(UnsupportedError, match="drop-meta") as exc:
        edit.apply_ema(seed)
    assert exc.value.path == seed + ".meta"
    assert open(seed + ".index", "rb").read() == index_before
    # The CLI says the same in one line, naming the .meta and the option.
    result = CliRunner().invoke(cli, ["ema", "-c", seed])
    assert result.exit_code == 1
    assert f"{seed}.meta" in result.stderr and "--drop-meta" in result.stderr
    assert CliRunner().invoke(cli, ["ema", "-c", seed, "--drop-meta"]).exit_code == 0
    assert not os.path.exists(seed + ".meta")
    assert same(tf_values(tf, seed)["v"], SEED_EMA)
    assert ckptkit.CheckpointReader(seed).files == [seed + ".index", seed + DATA]
