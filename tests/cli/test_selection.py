"""`rm`/`rename` selections: --glob, --regex, --optimizer, --dry-run, partitioned and V1 sources."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import SEED_EMA, make_v1, same, tf_values

from ckptkit.cli import cli
from ckptkit.errors import InvalidArgumentError
from ckptkit.selection import optimizer_keys, select

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
    listed = json.loads(run("ls", partitioned, "--json").stdout)["tensors"]
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

    keys = ["bert/encoder/layer_0/output/dense/kernel", "bert/encoder/layer_0/output/dense/kernel/adam_m",
            "bert/encoder/layer_0/output/dense/kernel/adam_v", "global_step", "w/Adam_2", "w/Adam_3",
            "beta1_power_1", "w/Momentum", "dense/momentum", "Adam/w", "adam_m_scale"]
    assert optimizer_keys(keys) == ["bert/encoder/layer_0/output/dense/kernel/adam_m",
                                    "bert/encoder/layer_0/output/dense/kernel/adam_v", "w/Adam_2", "w/Adam_3",
                                    "beta1_power_1", "w/Momentum"]


# --------------------------------------------------------------------------- one filter vocabulary

def test_select_is_the_one_rule():
    names = ["enc/a", "enc/b/Adam", "dec/a", "dec/a/Adam", "step"]
    assert select(names) == names and select([]) == []
    assert select(names, ["dec/*", "enc/*"]) == ["enc/a", "enc/b/Adam", "dec/a", "dec/a/Adam"]  # key order
    assert select(names, ["*"], ["*/Adam"]) == ["enc/a", "dec/a", "step"]  # * crosses /
    assert select(names, exclude=["enc/*"]) == ["dec/a", "dec/a/Adam", "step"]
    assert select(names, ["step"], ["*/Adam"], base=["dec/a/Adam", "enc/a"]) == ["enc/a", "step"]
    assert select(names, base=["x"]) == ["x"]  # no globs: the base as it is
    with pytest.raises(InvalidArgumentError, match="no tensor name matches the include glob 'encoder/\\*'"):
        select(names, ["encoder/*"], path="ck")
    with pytest.raises(InvalidArgumentError, match="ck: no tensor name matches the exclude glob 'x'"):
        select(names, ["enc/*"], ["x"], path="ck")
    with pytest.raises(InvalidArgumentError, match="the filters leave no tensor"):
        select(names, ["enc/*"], ["enc/*"])


def test_rm_include_exclude_with_optimizer(tf, tf1, many_optimizers):
    """--include adds to what --optimizer selects, --exclude keeps what it matches; TF reads
    exactly the keys that should be left."""
    prefix = many_optimizers
    before = tf_values(tf, prefix)
    slots = set(before) - MODEL
    adam = {k for k in slots if k.split("/")[-1].startswith("Adam") or k.startswith("beta")}
    result = run("rm", "-c", prefix, "--optimizer", "--exclude", "*Adam*", "--exclude", "beta*", "--json")
    assert result.exit_code == 0, result.stderr
    assert set(json.loads(result.stdout)) == slots - adam and adam
    assert set(tf_values(tf, prefix)) == MODEL | adam
    result = run("rm", "-c", prefix, "--include", "w/*", "--exclude", "w/Adam", "--json")
    assert set(json.loads(result.stdout)) == {k for k in adam if k.startswith("w/")} - {"w/Adam"}
    after = tf_values(tf, prefix)
    assert all(same(after[k], before[k]) for k in after)
    assert run("rm", "-c", prefix, "--exclude", "w").exit_code == 2  # --exclude alone selects nothing
    assert "the exclude glob 'q*'" in error_line(run("rm", "-c", prefix, "--optimizer", "--exclude", "q*"))
    assert "nothing left to remove" in error_line(run("rm", "-c", prefix, "b", "--exclude", "b"))


def test_rm_run_optimizer(tf, many_optimizers, monkeypatch):
    """The newcomer's `ckptkit rm run --optimizer`: RUN, a directory holding a checkpoint,
    is the checkpoint (no tensor of `.` is named so: `.` holds none)."""
    run_dir = os.path.dirname(many_optimizers)
    monkeypatch.chdir(os.path.dirname(run_dir))
    result = run("rm", os.path.basename(run_dir), "--optimizer")
    assert result.exit_code == 0, result.stderr
    assert set(tf_values(tf, many_optimizers)) == MODEL


def test_rm_old_glob_spelling_still_works_with_a_note(tf, seed):
    result = run("rm", "-c", seed, "--glob", "*/Exp*")
    assert result.exit_code == 0 and result.stdout.splitlines() == ["v/ExponentialMovingAverage"]
    assert result.stderr.splitlines()[0] == "note: rm --glob PATTERN is deprecated; use --include PATTERN " \
                                            "(same meaning)"
    assert sorted(tf_values(tf, seed)) == ["v"]


def test_rename_filters_restrict_the_pattern(tf, dtypes_ckpt):
    result = run("rename", "-c", dtypes_ckpt, "--regex", "(ints|dense)/(.*)", r"\1_\2",
                 "--include", "ints/*", "--exclude", "*/i8", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"ints/i32": "ints_i32", "ints/i64": "ints_i64", "ints/u8": "ints_u8"}
    names = set(tf_values(tf, dtypes_ckpt))
    assert {"ints_i32", "ints/i8", "dense/kernel", "dense/bias"} <= names and "ints/i32" not in names
    line = error_line(run("rename", "-c", dtypes_ckpt, "--glob", "dense/*", "d/*", "--exclude", "dense/*"))
    assert "no tensor name among the names --include/--exclude pick matches 'dense/*' (glob)" in line
    line = error_line(run("rename", "-c", dtypes_ckpt, "--glob", "dense/*", "d/*", "--include", "dense/*",
                          "--exclude", "dense/*"))
    assert "the filters leave no tensor" in line
    line = error_line(run("rename", "-c", dtypes_ckpt, "--glob", "ints/*", "i/*", "--include", "dense/*"))
    assert "no tensor name among the names --include/--exclude pick matches 'ints/*' (glob)" in line
    assert run("rename", "-c", dtypes_ckpt, "half", "h", "--include", "half").exit_code == 2  # plain: no filters


def test_edits_take_the_checkpoint_like_read_commands(tf, seed, tmp_path, monkeypatch):
    """`rm run --optimizer`, `rename run OLD NEW` and `ema run` name the checkpoint as `ls run`
    does; in the checkpoint's own directory `rename v w` and `rm v` still mean tensors."""
    run_dir = os.path.dirname(seed)
    monkeypatch.chdir(tmp_path)  # `.` holds no checkpoint
    result = run("rm", "seed", "--dry-run", "--json", "v/ExponentialMovingAverage")
    assert result.exit_code == 0 and json.loads(result.stdout) == ["v/ExponentialMovingAverage"]
    result = run("rm", "seed", "--optimizer")  # on seed's checkpoint (`.` has none): nothing to remove
    assert result.exit_code == 0 and result.stderr == "nothing to remove: no optimizer state found\n"
    result = run("rename", "seed", "v", "w", "--dry-run", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == {"v": "w"}
    assert run("rename", "-c", "seed", "seed", "v", "w").exit_code == 2  # two checkpoints
    assert run("rename", "seed", "v", "w", "x").exit_code == 2
    line = error_line(run("rename", "seed", "v"))  # OLD NEW with OLD a checkpoint: the hint
    assert line.endswith("seed is a checkpoint: did you mean -c seed?")
    line = error_line(run("rm", "-c", seed, "seed", "v"))
    assert "key 'seed': tensor not found" in line and line.endswith("did you mean -c seed?")
    result = run("ema", "seed")
    assert result.exit_code == 0 and sorted(tf_values(tf, seed)) == ["v"]
    # In the checkpoint's directory, beside a directory `v` holding a checkpoint: names win.
    copy_of = os.path.join(run_dir, "v")
    os.makedirs(copy_of)
    for name in os.listdir(run_dir):
        if name.startswith("model.ckpt"):
            with open(os.path.join(run_dir, name), "rb") as src, open(os.path.join(copy_of, name), "wb") as dst:
                dst.write(src.read())
    monkeypatch.chdir(run_dir)
    result = run("rm", "v", "--dry-run", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == ["v"]  # the tensor v of `.`
    result = run("rename", "v", "v/ExponentialMovingAverage")
    assert result.exit_code == 0, result.stderr
    assert sorted(tf_values(tf, seed)) == ["v/ExponentialMovingAverage"]
    assert sorted(tf_values(tf, os.path.join(copy_of, "model.ckpt"))) == ["v"]  # the directory v: untouched


def test_rm_exclude_cannot_keep_what_a_removed_object_takes(tf, tmp_path):
    """TF2: --optimizer removes the optimizer object; a key it takes along cannot be kept by
    --exclude (the object graph would name a key that is gone), and the error says so."""
    model, optimizer = tf.Module(), tf.Module()
    model.w = tf.Variable([1.0, 2.0])
    optimizer.step = tf.Variable(3, dtype=tf.int64)
    prefix = tf.train.Checkpoint(model=model, optimizer=optimizer).write(os.fspath(tmp_path / "ck"))
    index = open(prefix + ".index", "rb").read()
    step_key = "optimizer/step/.ATTRIBUTES/VARIABLE_VALUE"
    line = error_line(run("rm", "-c", prefix, "--optimizer", "--exclude", "optimizer/*"))
    assert f"key {step_key!r}: cannot keep it" in line
    assert open(prefix + ".index", "rb").read() == index
    result = run("rm", "-c", prefix, "--optimizer", "--exclude", "model/*", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == [step_key]
    assert sorted(tf_values(tf, prefix)) == ["_CHECKPOINTABLE_OBJECT_GRAPH", "model/w/.ATTRIBUTES/VARIABLE_VALUE"]
