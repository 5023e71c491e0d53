"""`ckptkit average / merge / stats / show / diff` from the command line, checked by TF."""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import CKPTKIT, same, subprocess_env, tf_values

import ckptkit
from ckptkit.cli import cli, histogram_lines
from ckptkit.format import bundle


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
    import contextlib  # noqa: PLC0415

    from ckptkit import cli as cli_module  # noqa: PLC0415

    bars: list[tuple[int, list[int]]] = []

    @contextlib.contextmanager
    def recording(total, description):
        done: list[int] = []
        bars.append((total, done))
        yield done.append

    monkeypatch.setattr(cli_module, "_stderr_is_tty", lambda: True)
    monkeypatch.setattr(cli_module, "_progress", recording)
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
