"""`ckptkit average / merge / stats / show / diff` from the command line, checked by TF."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import CKPTKIT, SEED_EMA, same, subprocess_env, tf_values

import ckptkit
from ckptkit.cli import cli
from ckptkit.cli import render as cli_render
from ckptkit.cli.inspect import histogram_lines
from ckptkit.formats import bundle


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ckptkit: error: ")
    return lines[0]


@pytest.fixture
def values_ckpt(tmp_path) -> str:
    return ckptkit.save(os.fspath(tmp_path / "h"), {
        "v": np.array([0, 1, 1, 2, 2, 2, 3, 3, 3, 3], np.float32),
        "dense/kernel": np.ones((2, 2), np.int32), "dense/bias": np.zeros(2, np.float32), "s": b"x"})


# --------------------------------------------------------------------------- show

def test_show_hist_draws_bins_and_counts(values_ckpt):
    result = run("show", values_ckpt, "v", "--hist", "--bins", "4", "--json")
    hist = json.loads(result.stdout)["hist"]
    assert hist == {"edges": [0.0, 0.75, 1.5, 2.25, 3.0], "counts": [1, 2, 3, 4]}  # np.histogram's bins
    text = run("show", values_ckpt, "v", "--hist", "--bins", "4").stdout.splitlines()
    bars = text[2:]
    assert [line.split()[-1] for line in bars] == ["1", "2", "3", "4"]
    assert bars[0].startswith("[0, 0.75)") and bars[-1].startswith("[2.25, 3]")  # the last bin is closed
    assert [line.count("█") for line in bars] == [10, 20, 30, 40]  # 4 fills 40 cells
    # eighths of a cell resolve small counts; a non-empty bin always shows
    assert histogram_lines({"edges": [0, 1, 2], "counts": [1, 79]})[0].split()[2] == "▌"
    assert histogram_lines({"edges": [0, 1, 2], "counts": [1, 1000]})[0].split()[2] == "▏"
    assert histogram_lines(None) == ["histogram: no finite real values"]


def test_show_several_names_globs_and_all(values_ckpt):
    listed = json.loads(run("show", values_ckpt, "dense/*", "s", "--json").stdout)
    assert [t["name"] for t in listed] == ["dense/bias", "dense/kernel", "s"]
    assert listed[1]["values"] == [[1, 1], [1, 1]] and listed[2]["values"] == "x"
    everything = json.loads(run("show", values_ckpt, "--all", "--stats", "--json").stdout)
    assert [t["name"] for t in everything] == ["dense/bias", "dense/kernel", "s", "v"]
    assert everything[3]["stats"] == {"elements": 10, "nan": 0, "inf": 0, "zeros": 1, "min": 0.0, "max": 3.0,
                                      "mean": 2.0, "std": 1.0}  # mean 20/10; variance (4+2+0+4)/10
    assert isinstance(json.loads(run("show", values_ckpt, "v", "--json").stdout), dict)  # one name: an object
    text = run("show", values_ckpt, "s", "v").stdout
    assert text.startswith("s: string[]\nb'x'\n\nv: float32[10]\n")
    result = run("show", values_ckpt, "nothing/*")
    assert result.exit_code == 1 and "no tensor matches" in one_error_line(result.stderr)
    assert run("show", values_ckpt).exit_code == 2  # neither NAME nor --all: usage


# --------------------------------------------------------------------------- stats

def test_stats_exit_1_on_nan_or_inf_of_a_tf_checkpoint(tf, dtypes_ckpt):
    expected = tf_values(tf, dtypes_ckpt)
    result = run("stats", dtypes_ckpt, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    by = {t["name"]: t for t in report["tensors"]}
    assert report["nonfinite"] == ["dense/bias"]  # bf16 holds 1e30: large, finite
    assert by["dense/bias"]["stats"]["nan"] == 1 and by["dense/bias"]["stats"]["inf"] == 1
    assert by["dense/bias"]["stats"]["min"] == by["dense/bias"]["stats"]["max"] == -1.5
    assert by["dense/kernel"]["stats"]["max"] == pytest.approx(float(expected["dense/kernel"].max()))
    assert by["names"]["stats"] is None  # strings: listed, no numbers
    clean = run("stats", dtypes_ckpt, "--filter", "ints/*")
    assert clean.exit_code == 0
    lines = clean.stdout.splitlines()
    assert lines[1].split() == ["name", "dtype", "shape", "min", "max", "mean", "std", "nan", "inf", "zeros"]
    assert lines[2].split()[:5] == ["ints/i32", "int32", "[2,2]", "-2", "2147483647"]
    # a real process: the exit status and the note on stderr
    proc = subprocess.run([*CKPTKIT, "stats", dtypes_ckpt], capture_output=True, text=True,
                          env=subprocess_env(), timeout=120)
    assert proc.returncode == 1 and "NaN or Inf found: 1 NaN, 1 Inf" in proc.stderr
    assert "dense/bias" in proc.stdout and "names" in proc.stdout


def test_stats_of_a_missing_checkpoint_is_one_line(tmp_path):
    result = run("stats", tmp_path / "nope")
    assert result.exit_code == 1 and "nope" in one_error_line(result.stderr)


# --------------------------------------------------------------------------- average / merge

def test_average_last_n_of_a_tf_saver_directory(tf, tf1, tmp_path):
    directory = os.fspath(tmp_path / "run")
    with tf.Graph().as_default():
        w = tf1.Variable(tf.zeros([2, 3]), name="w")
        step = tf1.train.get_or_create_global_step()
        saver = tf1.train.Saver(max_to_keep=3)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            for i in range(4):  # w = i + 1 everywhere; the last 3 average to 3
                sess.run([w.assign(tf.fill([2, 3], float(i + 1))), step.assign(i)])
                saver.save(sess, os.path.join(directory, "model.ckpt"), global_step=step)
    out = tmp_path / "avg" / "model.ckpt"
    result = run("average", "--last", "3", directory, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [os.path.basename(p) for p in summary["inputs"]] == ["model.ckpt-1", "model.ckpt-2", "model.ckpt-3"]
    got = tf_values(tf, os.fspath(out))
    assert same(got["w"], np.full((2, 3), 3.0, np.float32)) and got["global_step"] == 3
    assert os.path.isfile(f"{out}.meta")
    text = run("average", *summary["inputs"][:2], "-o", tmp_path / "two")
    assert text.exit_code == 0 and "2 checkpoints" in text.stderr and "1 tensors averaged" in text.stderr
    assert same(tf_values(tf, os.fspath(tmp_path / "two"))["w"], np.full((2, 3), 2.5, np.float32))
    assert run("average", summary["inputs"][0], "--last", "2", directory, "-o", out).exit_code == 2
    assert run("average", directory).exit_code == 2  # -o is required
    result = run("average", "--last", "9", directory, "-o", out)
    assert result.exit_code == 1 and "lists 3" in one_error_line(result.stderr)


def test_merge_parts_written_by_tf(tf, tmp_path):
    a, b = os.fspath(tmp_path / "a"), os.fspath(tmp_path / "b")
    tf.raw_ops.SaveV2(prefix=a, tensor_names=["x"], shape_and_slices=[""], tensors=[tf.constant([1.0, 2.0])])
    tf.raw_ops.SaveV2(prefix=b, tensor_names=["y"], shape_and_slices=[""], tensors=[tf.constant(7, tf.int64)])
    out = os.fspath(tmp_path / "m" / "model.ckpt")
    result = run("merge", a, b, "-o", out)
    assert result.exit_code == 0 and "2 tensors in 2 data shards" in result.stderr
    got = tf_values(tf, out)
    assert same(got["x"], np.array([1.0, 2.0], np.float32)) and got["y"] == 7
    result = run("merge", a, a + "x", "-o", out)
    assert result.exit_code == 1 and "ax" in one_error_line(result.stderr)
    result = run("merge", a, out, "-o", tmp_path / "again")
    assert result.exit_code == 1 and "'x' is in both" in one_error_line(result.stderr)


def test_average_of_one_checkpoint_is_a_usage_error(tmp_path):
    one = ckptkit.save(os.fspath(tmp_path / "one"), {"w": np.ones(2, np.float32)})
    for args in ([one], ["--last", "1", tmp_path]):
        result = run("average", *args, "-o", tmp_path / "out")
        assert result.exit_code == 2, result.output  # click's usage error
        assert "Traceback" not in result.output
    assert "two or more" in run("average", one, "-o", tmp_path / "out").stderr
    assert not os.path.exists(tmp_path / "out.index")


def test_average_and_merge_refuse_an_existing_output_until_overwrite(tf, tmp_path):
    a = ckptkit.save(os.fspath(tmp_path / "a"), {"w": np.array([1.0, 3.0], np.float32)})
    b = ckptkit.save(os.fspath(tmp_path / "b"), {"w": np.array([3.0, 5.0], np.float32)})
    c = ckptkit.save(os.fspath(tmp_path / "c"), {"v": np.int64(4)})
    out = os.fspath(tmp_path / "out")
    assert run("average", a, b, "-o", out).exit_code == 0
    index = open(out + ".index", "rb").read()
    for args in (["average", a, b], ["merge", a, c]):
        result = run(*args, "-o", out)
        assert result.exit_code == 1
        assert one_error_line(result.stderr).startswith(f"ckptkit: error: {out}: a checkpoint already exists")
        assert "--overwrite" in result.stderr and open(out + ".index", "rb").read() == index
    assert run("merge", a, c, "-o", out, "--overwrite").exit_code == 0
    assert sorted(tf_values(tf, out)) == ["v", "w"]
    assert run("average", a, b, "-o", out, "--overwrite").exit_code == 0
    assert tf_values(tf, out) == {"w": pytest.approx(np.array([2.0, 4.0], np.float32))}
    assert bundle.existing_data_files(out) == [out + ".data-00000-of-00001"]  # merge's two shards are gone


def _snapshot(directory: str) -> dict[str, bytes]:
    return {n: open(os.path.join(directory, n), "rb").read() for n in sorted(os.listdir(directory))}


def test_edits_with_o_refuse_an_existing_checkpoint_until_overwrite(tf, tf1, seed, tmp_path):
    """rename / ema / rm -o onto a TF1 Saver checkpoint of another graph (with its .meta)."""
    out_dir = os.fspath(tmp_path / "run")
    with tf.Graph().as_default():
        tf1.Variable(tf.zeros([3]), name="other")
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            out = tf1.train.Saver().save(sess, os.path.join(out_dir, "model.ckpt"))
    plain = ckptkit.save(os.fspath(tmp_path / "plain"), {"x": np.float32(1), "y": np.float32(2)})  # no .meta
    before = _snapshot(out_dir)
    for args in (["rename", "-c", seed, "v", "w"], ["ema", "-c", seed], ["rm", "-c", seed, "v"],
                 ["rm", "-c", seed, "v", "--compact"], ["rename", "-c", plain, "x", "y", "--dry-run"]):
        result = run(*args, "-o", out)
        assert result.exit_code == 1, (args, result.output)
        line = one_error_line(result.stderr)
        assert line.startswith(f"ckptkit: error: {out}: a checkpoint already exists") and "--overwrite" in line
        assert _snapshot(out_dir) == before, args

    # From a checkpoint without .meta: the old one's .meta (another graph) does not survive.
    result = run("rm", "-c", plain, "y", "-o", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not os.path.exists(out + ".meta") and tf_values(tf, out) == {"x": 1.0}
    # rename's --overwrite is one word for both: onto an existing name, and onto an existing -o
    result = run("rename", "-c", plain, "x", "y", "-o", out, "--overwrite", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == {"x": "y"}
    assert tf_values(tf, out) == {"y": 1.0}
    # ema: the seed's .meta, its Saver rewritten, replaces the output's; TF1 imports and restores it
    assert run("ema", "-c", seed, "-o", out, "--overwrite").exit_code == 0
    with tf.Graph().as_default(), tf1.Session() as sess:
        tf1.train.import_meta_graph(out + ".meta").restore(sess, out)
        v = next(v for v in tf1.global_variables() if v.op.name == "v")
        assert same(sess.run(v), SEED_EMA)
    assert tf.train.latest_checkpoint(out_dir) == out  # the Saver's state file still names it
    assert ckptkit.load(seed)["v"] == 10.0  # the source never changes


def test_example_leaves_an_existing_checkpoint_alone_unless_overwrite(tmp_path):
    directory = tmp_path / "demo"
    assert run("example", directory).exit_code == 0
    ckptkit.rename_keys(os.fspath(directory / "model.ckpt"), {"v": "mine"})
    before = _snapshot(os.fspath(directory))
    result = run("example", directory)
    assert result.exit_code == 1 and "--overwrite" in one_error_line(result.stderr)
    assert _snapshot(os.fspath(directory)) == before
    assert run("example", directory, "--overwrite").exit_code == 0
    assert "v" in ckptkit.load(directory)


# --------------------------------------------------------------------------- diff

def test_diff_exit_codes_and_relative_difference(tmp_path):
    a = ckptkit.save(os.fspath(tmp_path / "a"), {"x": np.array([1.0, 2.0], np.float32), "n": np.int64(2**60)})
    b = ckptkit.save(os.fspath(tmp_path / "b"), {"x": np.array([1.0, 2.5], np.float32), "n": np.int64(2**60 + 1)})
    assert run("diff", a, a).exit_code == 0
    result = run("diff", a, b, "--json")
    assert result.exit_code == 1
    by = {v["name"]: v for v in json.loads(result.stdout)["values"]}
    assert by["x"]["max_abs_diff"] == 0.5 and by["x"]["max_rel_diff"] == pytest.approx(0.2)  # 0.5 / 2.5
    assert by["n"]["mismatched"] == 1  # past 2^53, still exact
    assert "values:    x: 1 of 2 differ, max |a-b| 0.5, max rel 0.2" in run("diff", a, b).stdout
    c = ckptkit.save(os.fspath(tmp_path / "c"), {"x": np.array([1.0, 2.5], np.float32), "n": np.int64(2**60)})
    assert run("diff", a, c, "--rtol", "0.2").exit_code == 0
    assert run("diff", a, c, "--rtol", "0.1").exit_code == 1
    assert run("diff", a, c, "--atol", "0.5").exit_code == 0
    # trouble is 2: missing, damaged, bad usage
    result = run("diff", a, tmp_path / "missing")
    assert result.exit_code == 2 and "missing" in one_error_line(result.stderr)
    entry = ckptkit.CheckpointReader(c).entry("x")
    with open(bundle.data_filename(c, 0, 1), "r+b") as f:
        f.seek(entry.offset)
        f.write(b"\xff")
    result = run("diff", a, c)
    assert result.exit_code == 2 and "checksum" in one_error_line(result.stderr)
    assert run("diff", a, b, "--rtol", "-1").exit_code == 2


def test_progress_on_a_terminal_counts_every_byte(tmp_path, monkeypatch):
    bars: list[tuple[int, list[int]]] = []

    @contextlib.contextmanager
    def recording(total, description):
        done: list[int] = []
        bars.append((total, done))
        yield done.append

    monkeypatch.setattr(cli_render, "stderr_is_tty", lambda: True)
    monkeypatch.setattr(cli_render, "progress", recording)
    rng = np.random.default_rng(5)
    paths = [ckptkit.save(os.fspath(tmp_path / f"m{i}"), {"w": rng.standard_normal((300, 1000), np.float32),
                                                           "b": rng.standard_normal(7)}) for i in range(3)]
    for args in (["stats", paths[0]], ["average", *paths, "-o", tmp_path / "avg"],
                 ["merge", paths[0], ckptkit.save(os.fspath(tmp_path / "other"), {"z": np.ones(5)}),
                  "-o", tmp_path / "merged"]):
        bars.clear()
        assert run(*args).exit_code == 0, args
        (total, done), = bars
        assert total > 1_200_000 and sum(done) == total, args  # the bar ends full
        assert len(done) > 1 or args[0] == "merge", args  # a chunk at a time (merge: a shard at a time)
