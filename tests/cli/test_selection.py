"""`rm`/`rename` selections: --glob, --regex, --optimizer, --dry-run, partitioned and V1 sources."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import SEED_EMA, make_v1, same, tf_values

from ckptkit.cli import cli

MODEL = {"w", "b", "global_step"}


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def many_optimizers(tf, tf1, tmp_path) -> str:
    """One model trained by each usual TF1 optimizer in turn: TF names every slot."""
    with tf.Graph().as_default():
        w = tf1.get_variable("w", initializer=np.arange(6, dtype=np.float32).reshape(2, 3))
        b = tf1.get_variable("b", initializer=np.zeros(3, np.float32))
        step = tf1.train.get_or_create_global_step()
        loss = tf1.reduce_sum((tf1.ones([1, 2]) @ w + b) ** 2)
        optimizers = [tf1.train.AdamOptimizer(0.1), tf1.train.MomentumOptimizer(0.1, 0.9),
                      tf1.train.RMSPropOptimizer(0.1), tf1.train.AdagradOptimizer(0.1),
                      tf1.train.AdadeltaOptimizer(0.1), tf1.train.FtrlOptimizer(0.1),
                      tf1.train.AdamOptimizer(0.01)]  # a second Adam: TF suffixes its names
        train = [opt.minimize(loss, global_step=step) for opt in optimizers]
        saver = tf1.train.Saver()
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(train)
            return saver.save(sess, os.fspath(tmp_path / "opt" / "model.ckpt"))


def test_rm_optimizer_selects_every_tf1_slot(tf, tf1, many_optimizers):
    prefix = many_optimizers
    before = tf_values(tf, prefix)
    index = open(prefix + ".index", "rb").read()
    result = run("rm", "-c", prefix, "--optimizer", "--dry-run", "--json")
    assert result.exit_code == 0 and "dry run" in result.stderr
    assert set(json.loads(result.stdout)) == set(before) - MODEL  # every key TF's optimizers made
    assert open(prefix + ".index", "rb").read() == index
    result = run("rm", "-c", prefix, "--optimizer", "--compact")
    assert result.exit_code == 0 and "reclaimed" in result.stderr
    after = tf_values(tf, prefix)
    assert set(after) == MODEL and all(same(after[k], before[k]) for k in MODEL)
    # The .meta's Saver was rewritten to the model variables: TF imports and restores it.
    with tf.Graph().as_default(), tf1.Session() as sess:
        tf1.train.import_meta_graph(prefix + ".meta").restore(sess, prefix)
        got = {v.op.name: v for v in tf1.global_variables()}
        for key in MODEL:
            assert same(sess.run(got[key]), before[key]), key
    assert run("verify", prefix).exit_code == 0
    # Again: nothing left to remove is no error (idempotent), and nothing is written.
    files = {n: open(os.path.join(os.path.dirname(prefix), n), "rb").read()
             for n in os.listdir(os.path.dirname(prefix))}
    result = run("rm", "-c", prefix, "--optimizer")
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr.strip() == "nothing to remove: no optimizer state found"
    result = run("rm", "-c", prefix, "--optimizer", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert {n: open(os.path.join(os.path.dirname(prefix), n), "rb").read()
            for n in os.listdir(os.path.dirname(prefix))} == files
    # With -o the output is written all the same (unchanged), and TF reads it.
    out = os.path.join(os.path.dirname(prefix), "copy", "model.ckpt")
    result = run("rm", "-c", prefix, "--optimizer", "-o", out)
    assert result.exit_code == 0 and "nothing to remove" in result.stderr
    assert set(tf_values(tf, out)) == MODEL


def test_rm_glob_and_regex_dry_run_then_for_real(tf, tf1, seed):
    index = open(seed + ".index", "rb").read()
    result = run("rm", "-c", seed, "--glob", "*/Exp*", "--dry-run")
    assert result.exit_code == 0 and result.stdout.splitlines() == ["v/ExponentialMovingAverage"]
    assert "dry run: would remove 1 tensor; nothing changed" in result.stderr
    assert open(seed + ".index", "rb").read() == index
    assert "no tensor name matches the regex 'Exp.*'" in error_line(run("rm", "-c", seed, "--regex", "Exp.*"))
    result = run("rm", "-c", seed, "--regex", r".*/Exp\w+")
    assert result.exit_code == 0 and result.stdout.splitlines() == ["v/ExponentialMovingAverage"]
    assert sorted(tf_values(tf, seed)) == ["v"]
    with tf.Graph().as_default(), tf1.Session() as sess:  # the .meta still restores
        tf1.train.import_meta_graph(seed + ".meta").restore(sess, seed)
        v = next(x for x in tf1.global_variables() if x.op.name == "v")
        assert same(sess.run(v), np.float32(10.0))


def test_usage_errors(seed):
    assert run("rm", "-c", seed, "--glob").exit_code == 2
    assert run("rm", "-c", seed, "--glob", "--regex", "v").exit_code == 2
    assert run("rename", "-c", seed, "--glob", "--regex", "v", "w").exit_code == 2
    assert "no tensor name matches 'x*' (glob)" in error_line(run("rename", "-c", seed, "--glob", "x*", "y*"))


def test_partitioned_by_glob_and_regex(tf, tf1, partitioned):
    """Partitioned variables are selected by name and take all their slices along; TF reads
    the renamed variable whole and its .meta restores every partition."""
    result = run("rename", "-c", partitioned, "--glob", "p?*", "model/p?*")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["part -> model/part", "plain -> model/plain"]
    got = tf_values(tf, partitioned)
    assert sorted(got) == ["model/part", "model/plain"]
    assert same(got["model/part"], np.ones((4, 2), np.float32)) and same(got["model/plain"], np.float32(3))
    with tf.Graph().as_default(), tf1.Session() as sess:
        tf1.train.import_meta_graph(partitioned + ".meta").restore(sess, partitioned)
        variables = {v.op.name: v for v in tf1.global_variables()}
        parts = [sess.run(variables[f"part/part_{i}"]) for i in range(2)]
        assert same(np.concatenate(parts), np.ones((4, 2), np.float32))
    result = run("rm", "-c", partitioned, "--regex", "model/pa.t", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == ["model/part"]
    assert sorted(tf_values(tf, partitioned)) == ["model/plain"]
    listed = json.loads(run("ls", partitioned, "--json").stdout)
    assert [t["name"] for t in listed] == ["model/plain"]  # no slice key left behind


def test_v1_checkpoint_edits_into_v2_output(tf, tf1, tmp_path):
    prefix = make_v1(tf1, os.fspath(tmp_path))
    before = tf_values(tf, prefix)
    names = sorted(before)
    assert "-o OUT" in error_line(run("rename", "-c", prefix, names[0], "renamed"))
    out = tmp_path / "v2" / "model.ckpt"  # a V1 source is read whole into a V2 bundle there
    result = run("rename", "-c", prefix, names[0], "renamed", "-o", out)
    assert result.exit_code == 0, result.stderr
    after = tf_values(tf, os.fspath(out))
    assert sorted(after) == sorted(["renamed", *names[1:]])
    assert same(after["renamed"], before[names[0]])
    assert all(same(after[k], before[k]) for k in names[1:])
    assert os.path.isfile(os.fspath(out) + ".index") and sorted(tf_values(tf, prefix)) == names
    assert not [n for n in os.listdir(out.parent) if "tmp" in n or "ckptkit" in n]


def test_ema_cli_keeps_meta(tf, tf1, seed):
    assert run("ema", "-c", seed).exit_code == 0
    with tf.Graph().as_default(), tf1.Session() as sess:
        tf1.train.import_meta_graph(seed + ".meta").restore(sess, seed)
        v = next(x for x in tf1.global_variables() if x.op.name == "v")
        assert same(sess.run(v), SEED_EMA)


def test_optimizer_names_beyond_tf_core():
    """BERT's AdamWeightDecayOptimizer (google-research/bert optimization.py) keeps
    `<param>/adam_m` and `<param>/adam_v`; TF's own slots get `_N` suffixes per optimizer."""
    from ckptkit.selection import optimizer_keys

    keys = ["bert/encoder/layer_0/output/dense/kernel", "bert/encoder/layer_0/output/dense/kernel/adam_m",
            "bert/encoder/layer_0/output/dense/kernel/adam_v", "global_step", "w/Adam_2", "w/Adam_3",
            "beta1_power_1", "w/Momentum", "dense/momentum", "Adam/w", "adam_m_scale"]
    assert optimizer_keys(keys) == ["bert/encoder/layer_0/output/dense/kernel/adam_m",
                                    "bert/encoder/layer_0/output/dense/kernel/adam_v", "w/Adam_2", "w/Adam_3",
                                    "beta1_power_1", "w/Momentum"]
