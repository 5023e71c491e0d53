"""The `ckptkit` command, through click's CliRunner and real subprocesses, checked by TF."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import CKPTKIT, REPO, SEED_EMA, make_v1, same, subprocess_env, tf_values

import ckptkit
from ckptkit.cli import cli
from ckptkit.cli import render as cli_render
from ckptkit.formats import bundle
from ckptkit.formats.coding import crc32c, mask_crc
from ckptkit.ops import edit, info
from ckptkit.ops.convert import read_safetensors
from ckptkit.storage.lock import DirectoryLock


def run(*args, **kwargs):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)
    assert "Traceback" not in result.output
    return result


def run_process(*args, cwd=None, env=None):
    return subprocess.run([*CKPTKIT, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env or subprocess_env(), timeout=120)


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ckptkit: error: ") and "Traceback" not in stderr
    return lines[0]


def index_bytes(prefix: str) -> bytes:
    with open(prefix + ".index", "rb") as f:
        return f.read()


def corrupt(prefix: str, key: str) -> None:
    """Flip one byte inside `key`'s data."""
    entry = bundle.BundleIndex(prefix).entry(key)
    path = bundle.data_filename(prefix, entry.shard_id, 1)
    with open(path, "r+b") as f:
        f.seek(entry.offset + entry.size - 1)
        byte = f.read(1)
        f.seek(entry.offset + entry.size - 1)
        f.write(bytes([byte[0] ^ 0x40]))


# --------------------------------------------------------------------------- ls / show

def test_ls_json_matches_tf(tf, dtypes_ckpt):
    result = run("ls", dtypes_ckpt, "--json")
    assert result.exit_code == 0
    listed = {t["name"]: t for t in json.loads(result.stdout)["tensors"]}
    reader = tf.train.load_checkpoint(dtypes_ckpt)
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    assert sorted(listed) == sorted(shapes)
    for name, t in listed.items():
        assert t["shape"] == shapes[name] and t["dtype"] == dtypes[name].name, name
        value = reader.get_tensor(name)
        if value.dtype.kind != "O":
            assert t["bytes"] == value.nbytes and t["elements"] == value.size, name
    assert listed["names"]["bytes"] == 3 + 4 + len(b"alpha") + len("é".encode())  # lengths, crc, bytes


def test_ls_table_filter_sort_tree(dtypes_ckpt):
    out = run("ls", dtypes_ckpt).stdout
    assert out.splitlines()[0] == dtypes_ckpt
    assert "dense/kernel" in out and "bfloat16" in out and "12 tensors" in out
    filtered = json.loads(run("ls", dtypes_ckpt, "--json", "--filter", "ints/*").stdout)["tensors"]
    assert [t["name"] for t in filtered] == ["ints/i32", "ints/i64", "ints/i8", "ints/u8"]
    by_size = json.loads(run("ls", dtypes_ckpt, "--json", "--sort", "size").stdout)["tensors"]
    sizes = [t["bytes"] for t in by_size]
    assert sizes == sorted(sizes, reverse=True)
    tree = run("ls", dtypes_ckpt, "--tree").stdout
    assert "\n  ints  (4 tensors" in tree and "\n    i32  int32[2,2]" in tree
    tree_json = json.loads(run("ls", dtypes_ckpt, "--tree", "--json").stdout)
    assert tree_json["children"]["ints"]["children"]["u8"]["tensor"]["dtype"] == "uint8"


def test_ls_rich_on_a_terminal(dtypes_ckpt, monkeypatch):
    monkeypatch.setattr(cli_render, "stdout_is_tty", lambda: True)
    out = run("ls", dtypes_ckpt).stdout
    assert "┃" in out or "│" in out
    assert "dense/kernel" in out and "12 tensors" in out
    assert "ints" in run("ls", dtypes_ckpt, "--tree").stdout


def test_ls_defaults_to_current_directory(seed):
    cwd = os.getcwd()
    try:
        os.chdir(os.path.dirname(seed))
        result = run("ls", "--json")
    finally:
        os.chdir(cwd)
    assert [t["name"] for t in json.loads(result.stdout)["tensors"]] == ["v", "v/ExponentialMovingAverage"]


def test_show_values_and_stats(tf, dtypes_ckpt):
    expected = tf_values(tf, dtypes_ckpt)
    result = run("show", dtypes_ckpt, "dense/bias", "--stats", "--json")
    out = json.loads(result.stdout)
    assert out["dtype"] == "float64" and out["shape"] == [3]
    assert out["stats"]["nan"] == 1 and out["stats"]["inf"] == 1
    assert out["stats"]["min"] == out["stats"]["max"] == -1.5
    kernel = expected["dense/kernel"].astype(np.float64)
    stats = json.loads(run("show", dtypes_ckpt, "dense/kernel", "--stats", "--json").stdout)["stats"]
    assert stats["mean"] == pytest.approx(kernel.mean()) and stats["std"] == pytest.approx(kernel.std())
    assert stats["max"] == pytest.approx(5 / 7)
    text = run("show", dtypes_ckpt, "dense/kernel", "--stats").stdout
    assert text.startswith("dense/kernel: float32[2,3]") and "0.714285" in text and "mean" in text
    assert "b'alpha'" in run("show", dtypes_ckpt, "names").stdout
    assert "1.5" in run("show", dtypes_ckpt, "bf16").stdout


def test_show_full_and_truncated(tmp_path):
    prefix = ckptkit.save(os.fspath(tmp_path / "big"), {"x": np.arange(5000, dtype=np.int32)})
    assert "..." in run("show", prefix, "x").stdout
    full = run("show", prefix, "x", "--full").stdout
    assert "..." not in full and "4999" in full and "2500" in full


def test_show_missing_tensor_is_one_line(seed):
    result = run("show", seed, "nope")
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert "'nope'" in line and seed in line


# --------------------------------------------------------------------------- edits

def test_rename_users_example(tf, seed):
    """`ckptkit rename v v/ExponentialMovingAverage`: refused (the key exists), then forced."""
    before = index_bytes(seed)
    result = run("rename", "-c", seed, "v", "v/ExponentialMovingAverage")
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert "v/ExponentialMovingAverage" in line and "already exists" in line and seed in line
    assert index_bytes(seed) == before
    result = run("rename", "-c", seed, "v", "v/ExponentialMovingAverage", "--overwrite")
    assert result.exit_code == 0 and "v -> v/ExponentialMovingAverage" in result.stdout
    after = tf_values(tf, seed)
    assert sorted(after) == ["v/ExponentialMovingAverage"]
    assert same(after["v/ExponentialMovingAverage"], np.float32(10.0))


def test_rename_plain_dry_run_and_output(tf, seed, tmp_path):
    before = index_bytes(seed)
    result = run("rename", "-c", seed, "v", "w", "--dry-run")
    assert result.exit_code == 0 and result.stdout.strip() == "v -> w" and "dry run" in result.stderr
    assert index_bytes(seed) == before
    out = tmp_path / "o" / "model.ckpt"
    assert run("rename", "-c", seed, "v", "w", "-o", out).exit_code == 0
    assert index_bytes(seed) == before
    got = tf_values(tf, os.fspath(out))
    assert sorted(got) == ["v/ExponentialMovingAverage", "w"] and same(got["w"], np.float32(10))
    assert run("rename", "-c", seed, "v", "w").exit_code == 0
    assert sorted(tf_values(tf, seed)) == ["v/ExponentialMovingAverage", "w"]


def test_rename_regex(tf, seed, dtypes_ckpt):
    result = run("rename", "-c", seed, "--regex", r"(.*)/ExponentialMovingAverage", r"\1", "--json")
    assert result.exit_code == 1 and "already exists" in result.stderr  # collision with v
    result = run("rename", "-c", seed, "--regex", r"(.*)/ExponentialMovingAverage", r"\1",
                 "--overwrite", "--json")
    assert json.loads(result.stdout) == {"v/ExponentialMovingAverage": "v"}
    assert tf_values(tf, seed) == {"v": SEED_EMA}
    before = tf_values(tf, dtypes_ckpt)
    result = run("rename", "-c", dtypes_ckpt, "--regex", r"ints/(?P<n>.*)", r"integers/\g<n>")
    assert result.exit_code == 0
    after = tf_values(tf, dtypes_ckpt)
    assert sorted(k for k in after if k.startswith("integers/")) == \
        ["integers/i32", "integers/i64", "integers/i8", "integers/u8"]
    assert same(after["integers/i64"], before["ints/i64"])
    # fullmatch: 'dense' alone matches no name
    result = run("rename", "-c", dtypes_ckpt, "--regex", "dense", "x")
    assert result.exit_code == 1 and "no tensor name matches" in one_error_line(result.stderr)
    assert run("rename", "-c", dtypes_ckpt, "--regex", "(", "x").exit_code == 2
    assert run("rename", "-c", dtypes_ckpt, "--regex", "flags", r"\2").exit_code == 2  # bad group
    result = run("rename", "-c", dtypes_ckpt, "--regex", "nothing", "x", "-o", dtypes_ckpt + "-copy")
    assert result.exit_code == 1 and not os.path.exists(dtypes_ckpt + "-copy.index")


def test_ema_command(tf, seed, tmp_path):
    out = tmp_path / "infer" / "model.ckpt"
    result = run("ema", "-c", seed, "-o", out)
    assert result.exit_code == 0 and "v/ExponentialMovingAverage -> v" in result.stdout
    assert tf_values(tf, os.fspath(out)) == {"v": SEED_EMA}
    assert same(tf_values(tf, os.fspath(out))["v"], SEED_EMA)
    assert sorted(tf_values(tf, seed)) == ["v", "v/ExponentialMovingAverage"]  # source untouched
    assert run("ema", "-c", seed).exit_code == 0
    assert same(tf_values(tf, seed)["v"], SEED_EMA)
    result = run("ema", "-c", seed)
    assert result.exit_code == 1 and "no moving averages" in one_error_line(result.stderr)


def test_rm_and_compact(tf, dtypes_ckpt):
    before = tf_values(tf, dtypes_ckpt)
    size = os.path.getsize(dtypes_ckpt + ".data-00000-of-00001")
    result = run("rm", "-c", dtypes_ckpt, "dense/kernel", "names")
    assert result.exit_code == 0 and "stay in the data shards" in result.stderr
    assert sorted(tf_values(tf, dtypes_ckpt)) == sorted(set(before) - {"dense/kernel", "names"})
    assert os.path.getsize(dtypes_ckpt + ".data-00000-of-00001") == size
    result = run("rm", "-c", dtypes_ckpt, "--compact")
    assert result.exit_code == 0 and "reclaimed" in result.stderr
    assert os.path.getsize(dtypes_ckpt + ".data-00000-of-00001") < size
    after = tf_values(tf, dtypes_ckpt)
    for key, value in after.items():
        assert same(value, before[key]), key
    result = run("rm", "-c", dtypes_ckpt, "ints/i8", "--compact")
    assert result.exit_code == 0 and "ints/i8" not in tf_values(tf, dtypes_ckpt)
    assert run("rm", "-c", dtypes_ckpt).exit_code == 2
    index = index_bytes(dtypes_ckpt)
    out = dtypes_ckpt + "-small"
    result = run("rm", "-c", dtypes_ckpt, "dense/bias", "--compact", "-o", out)
    assert result.exit_code == 0 and index_bytes(dtypes_ckpt) == index  # source untouched
    small = tf_values(tf, out)
    assert sorted(small) == sorted(set(tf_values(tf, dtypes_ckpt)) - {"dense/bias"})
    assert os.path.getsize(out + ".data-00000-of-00001") < \
        os.path.getsize(dtypes_ckpt + ".data-00000-of-00001")
    for key, value in small.items():
        assert same(value, before[key]), key
    result = run("rm", "-c", dtypes_ckpt, "gone")
    assert result.exit_code == 1 and "'gone'" in one_error_line(result.stderr)


def test_sliced_rename_dry_run_and_diff(partitioned):
    before = index_bytes(partitioned)
    result = run("rename", "-c", partitioned, "part", "whole", "--dry-run")
    assert result.exit_code == 0 and result.stdout.strip() == "part -> whole"  # the name, not its slice keys
    assert index_bytes(partitioned) == before
    listed = json.loads(run("ls", partitioned, "--json").stdout)["tensors"]
    assert [(t["name"], t["sliced"]) for t in listed] == [("part", True), ("plain", False)]
    assert run("verify", partitioned).exit_code == 0

    # Change one slice's value (bytes and crc), as a different training run would.
    index = bundle.BundleIndex(partitioned)
    key = next(k for k in index.keys() if edit.is_slice_key(k))
    entry = index.entry(key)
    other = partitioned + "-other"
    edit.rename_keys(partitioned, {}, output=other)  # a copy (linked shards: rewrite below)
    with open(other + ".data-00000-of-00001", "rb") as f:
        data = bytearray(f.read())
    os.unlink(other + ".data-00000-of-00001")
    data[entry.offset:entry.offset + 4] = np.float32(7).tobytes()
    with open(other + ".data-00000-of-00001", "wb") as f:
        f.write(data)
    raw = dict(index.raw_items())
    entry.crc32c = mask_crc(crc32c(bytes(data[entry.offset:entry.offset + entry.size])))
    raw[key] = entry.SerializeToString()
    bundle.write_index(other, index.header, raw.items()).commit()
    result = run("diff", partitioned, other, "--json")
    assert result.exit_code == 1
    assert [v["name"] for v in json.loads(result.stdout)["values"]] == ["part"]
    assert json.loads(result.stdout)["values"][0]["mismatched"] == 1


def test_partitioned_converts_whole(tf, partitioned, tmp_path):
    npz = tmp_path / "p.npz"
    assert run("convert", partitioned, npz).exit_code == 0
    expected = tf_values(tf, partitioned)
    with np.load(npz) as data:
        assert sorted(data.files) == sorted(expected)
        for key in expected:
            assert same(data[key], expected[key]), key


def test_v1_checkpoint(tf, tf1, tmp_path):
    prefix = make_v1(tf1, os.fspath(tmp_path))
    expected = tf_values(tf, prefix)
    listed = json.loads(run("ls", prefix, "--json").stdout)["tensors"]
    assert [(t["name"], t["dtype"], t["shape"]) for t in listed] == [("s", "string", []),
                                                                    ("w", "float32", [2, 2])]
    assert listed[1]["bytes"] == 16
    assert run("verify", prefix).exit_code == 0
    result = run("rename", "-c", prefix, "w", "x")
    assert result.exit_code == 1 and "V1" in one_error_line(result.stderr)
    new = tmp_path / "v2" / "new.ckpt"
    assert run("convert", prefix, new).exit_code == 0
    got = tf_values(tf, os.fspath(new))
    assert sorted(got) == sorted(expected) and same(got["w"], expected["w"]) and got["s"] == b"text"


# --------------------------------------------------------------------------- diff / verify

def test_diff(tf, seed, dtypes_ckpt, tmp_path):
    assert run("diff", seed, seed).exit_code == 0
    other = tmp_path / "infer.ckpt"
    run("ema", "-c", seed, "-o", other)
    result = run("diff", seed, other, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["only_a"] == ["v/ExponentialMovingAverage"] and report["only_b"] == []
    assert report["values"][0]["name"] == "v"
    assert report["values"][0]["max_abs_diff"] == pytest.approx(10 - float(SEED_EMA))
    text = run("diff", seed, other).stdout
    assert "only in A: v/ExponentialMovingAverage" in text and "values:    v: 1 of 1 differ" in text

    a = ckptkit.save(os.fspath(tmp_path / "a"), {"x": np.array([1.0, np.nan], np.float32), "s": b"t"})
    b = ckptkit.save(os.fspath(tmp_path / "b"), {"x": np.array([1.001, np.nan], np.float32), "s": b"t"})
    assert run("diff", a, b).exit_code == 1
    assert run("diff", a, b, "--atol", "0.01").exit_code == 0
    c = ckptkit.save(os.fspath(tmp_path / "c"), {"x": np.array([1, 2], np.int32), "s": b"u"})
    report = json.loads(run("diff", a, c, "--json").stdout)
    assert [ch["name"] for ch in report["changed"]] == ["x"] and report["values"][0]["name"] == "s"
    trouble = run("diff", a, tmp_path / "missing")  # diff(1): 2 for trouble, with one line saying which
    assert trouble.exit_code == 2 and "missing" in one_error_line(trouble.stderr)


def test_verify_names_the_damaged_tensor(tf, dtypes_ckpt):
    result = run("verify", dtypes_ckpt)
    assert result.exit_code == 0 and result.stdout.startswith("OK: 12 tensors")
    corrupt(dtypes_ckpt, "dense/kernel")
    with pytest.raises(Exception, match="(?i)checksum|crc|corrupt|data"):  # TF agrees it is damaged
        tf.train.load_checkpoint(dtypes_ckpt).get_tensor("dense/kernel")
    result = run("verify", dtypes_ckpt)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("ckptkit: error:")]
    assert len(errors) == 1 and "'dense/kernel'" in errors[0] and "checksum" in errors[0]
    assert "FAILED: 1 of 12" in result.stdout
    report = json.loads(run("verify", dtypes_ckpt, "--json").stdout)
    assert [e["name"] for e in report["errors"]] == ["dense/kernel"] and not report["ok"]


def test_verify_progress_on_a_terminal(dtypes_ckpt, monkeypatch):
    monkeypatch.setattr(cli_render, "stderr_is_tty", lambda: True)
    assert run("verify", dtypes_ckpt).exit_code == 0


# --------------------------------------------------------------------------- meta / state / example / convert

def test_meta_of_tf_written_file(seed):
    result = run("meta", seed + ".meta", "--json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert sorted(v["name"] for v in summary["variables"]) == ["v", "v/ExponentialMovingAverage"]
    text = run("meta", seed + ".meta").stdout
    assert "variables: (2)" in text and "VarHandleOp" in text and "  - name: v\n" in text
    assert run("meta", seed + ".index").stdout == text  # a checkpoint's file or prefix: its .meta
    state_file = os.path.join(os.path.dirname(seed), "checkpoint")
    result = run("meta", state_file)
    assert result.exit_code == 1 and state_file in one_error_line(result.stderr)


def test_state(seed, monkeypatch):
    directory = os.path.dirname(seed)
    state = json.loads(run("state", directory, "--json").stdout)
    assert state["latest"] == seed and state["latest_exists"]
    names = {f["name"] for f in state["checkpoints"][0]["files"]}
    assert names == {"model.ckpt.index", "model.ckpt.data-00000-of-00001", "model.ckpt.meta"}
    assert "latest: " + seed in run("state", directory).stdout
    monkeypatch.setattr(cli_render, "stdout_is_tty", lambda: True)
    assert "model.ckpt.index" in run("state", directory).stdout
    result = run("state", os.path.join(directory, "nothing-here"))
    assert result.exit_code == 1 and "checkpoint" in one_error_line(result.stderr)


def test_example_loads_in_tf_like_tfs_own(tf, tf1, seed, tmp_path):
    directory = tmp_path / "play"
    result = run("example", directory)
    assert result.exit_code == 0, result.output
    assert "0.099999905" in result.stdout
    prefix = os.fspath(directory / "model.ckpt")
    ours, theirs = tf_values(tf, prefix), tf_values(tf, seed)
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert same(ours[key], theirs[key]), key
    assert tf.train.latest_checkpoint(os.fspath(directory)) == prefix
    with tf.Graph().as_default(), tf1.Session() as sess:
        saver = tf1.train.import_meta_graph(prefix + ".meta")
        saver.restore(sess, prefix)
        assert same(sess.run("v/ExponentialMovingAverage:0"), SEED_EMA)


def test_convert_roundtrip_through_cli(tf, dtypes_ckpt, tmp_path, monkeypatch):
    before = tf_values(tf, dtypes_ckpt)
    result = run("convert", dtypes_ckpt, tmp_path / "x.safetensors", "--strict")
    assert result.exit_code == 1 and "'names'" in one_error_line(result.stderr)  # no strings there
    assert not (tmp_path / "x.safetensors").exists()
    result = run("convert", dtypes_ckpt, tmp_path / "x.safetensors")  # left out, with a note
    assert result.exit_code == 0
    assert "left out 1 tensor: names (safetensors has no strings)" in result.stderr
    (tmp_path / "x.safetensors").unlink()
    monkeypatch.setattr(cli_render, "stderr_is_tty", lambda: True)  # progress bar path
    run("rm", "-c", dtypes_ckpt, "names", "bf16")
    assert run("convert", dtypes_ckpt, tmp_path / "x.safetensors").exit_code == 0
    assert run("convert", tmp_path / "x.safetensors", tmp_path / "back" / "m.ckpt",
               "--num-shards", "2").exit_code == 0
    after = tf_values(tf, os.fspath(tmp_path / "back" / "m.ckpt"))
    assert sorted(after) == sorted(set(before) - {"names", "bf16"})
    for key, value in after.items():
        assert same(value, before[key]), key


# --------------------------------------------------------------------------- errors

def test_missing_path_is_one_line(tmp_path):
    missing = os.fspath(tmp_path / "no" / "such.ckpt")
    for args in (["ls", missing], ["verify", missing], ["rename", "-c", missing, "a", "b"],
                 ["show", missing, "v"], ["convert", missing, tmp_path / "x.npz"]):
        result = run(*args)
        assert result.exit_code == 1, args
        assert missing in one_error_line(result.stderr), args


def test_os_errors_are_one_line(seed, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run("rename", "-c", seed, "v", "w", "-o", blocker / "sub" / "m.ckpt")
    assert result.exit_code == 1
    assert str(blocker) in one_error_line(result.stderr)


def test_usage_errors_exit_2(seed):
    assert run("ls", seed, "--sort", "weight").exit_code == 2
    assert run("rename", "-c", seed, "v").exit_code == 2
    assert run("bogus").exit_code == 2


def test_ctrl_c_prints_interrupted_and_exits_130(seed):
    """A real SIGINT while `rm` waits for the directory lock that this test holds."""

    with DirectoryLock(os.path.dirname(seed)):
        proc = subprocess.Popen([*CKPTKIT, "rm", "-c", seed, "v"], env=subprocess_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)  # past start-up: waiting for the lock (it waits up to 60 s)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    waiting, interrupted = err.splitlines()
    assert waiting.startswith(f"{os.path.dirname(seed)}: waiting for another ckptkit writer to finish (pid ")
    assert interrupted == "ckptkit: interrupted" and out == ""
    assert "v" in dict(ckptkit.list_variables(seed))  # nothing was removed


def test_internal_errors_have_no_traceback(seed, monkeypatch):
    def broken(path):
        raise TypeError("oops")

    monkeypatch.setattr(info, "list_tensors", broken)
    monkeypatch.delenv("CKPTKIT_DEBUG", raising=False)
    result = run("ls", seed)
    assert result.exit_code == 1 and "internal error: TypeError: oops" in one_error_line(result.stderr)


# --------------------------------------------------------------------------- real processes

def test_subprocess_ls_rename_verify(tf, seed, dtypes_ckpt):
    result = run_process("ls", "--json", cwd=os.path.dirname(seed))
    assert result.returncode == 0, result.stderr
    assert [t["name"] for t in json.loads(result.stdout)["tensors"]] == ["v", "v/ExponentialMovingAverage"]
    before = index_bytes(seed)
    result = run_process("rename", "v", "v/ExponentialMovingAverage", cwd=os.path.dirname(seed))
    assert result.returncode == 1 and "already exists" in one_error_line(result.stderr)
    assert index_bytes(seed) == before
    result = run_process("rename", "-c", seed, "v", "weights/v")
    assert result.returncode == 0 and result.stdout.strip() == "v -> weights/v"
    after = tf_values(tf, seed)
    assert sorted(after) == ["v/ExponentialMovingAverage", "weights/v"]
    assert same(after["weights/v"], np.float32(10))
    assert run_process("verify", dtypes_ckpt).returncode == 0
    corrupt(dtypes_ckpt, "ints/i64")
    result = run_process("verify", dtypes_ckpt)
    assert result.returncode == 1 and "'ints/i64'" in result.stderr and "Traceback" not in result.stderr
    result = run_process("ls", seed + "-missing")
    assert result.returncode == 1 and seed in one_error_line(result.stderr)


def test_launcher_from_a_checkout(seed, tmp_path):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), "ls", seed, "--json"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["tensors"]) == 2


def modules_imported_by(argv: list[str], modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh process has imported after running `ckptkit ARGV`."""
    code = ("import json, sys\nfrom ckptkit.cli import main\n"
            "try:\n"
            f"    main({argv!r})\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            f"print(json.dumps([m for m in {modules!r} if m in sys.modules]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=subprocess_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_help_imports_no_heavy_modules():
    for argv in (["--help"], ["--version"], ["ls", "--help"]):
        assert modules_imported_by(argv, ("numpy", "rich", "google.protobuf", "tensorflow")) == []


@pytest.mark.parametrize("extra", [[], ["--json"], ["--tree"]])
def test_ls_imports_no_numpy(seed, dtypes_ckpt, extra):
    """Listing needs names, dtypes and shapes only: `ckptkit ls` starts without numpy and
    ml_dtypes (half a second to import in ml_dtypes 0.7), the bulk of its start-up time,
    also for a checkpoint of every dtype TF saves (bfloat16 included)."""
    for path in (seed, dtypes_ckpt):
        assert modules_imported_by(["ls", path, *extra], ("numpy", "ml_dtypes", "tensorflow")) == []


def test_no_tensorflow_after_real_work(seed):
    code = ("import sys\nfrom ckptkit.cli import main\n"
            f"try:\n    main(['ls', {seed!r}])\nexcept SystemExit:\n    pass\n"
            "print('tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=subprocess_env(), timeout=60)
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_shell_completion(seed):
    env = subprocess_env()
    env["_CKPTKIT_COMPLETE"] = "bash_source"
    result = subprocess.run(CKPTKIT, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0 and "_ckptkit_completion" in result.stdout
    env.update(_CKPTKIT_COMPLETE="bash_complete", COMP_WORDS=f"ckptkit show {seed} v/E", COMP_CWORD="3")
    result = subprocess.run(CKPTKIT, capture_output=True, text=True, env=env, timeout=60)
    assert "v/ExponentialMovingAverage" in result.stdout


def test_ls_tree_follows_the_tf2_object_graph(tf, tmp_path):
    """TF2 checkpoints group by object path, attributes as leaves (no `.ATTRIBUTES` level)."""
    inner = tf.Module()
    inner.kernel = tf.Variable(tf.ones([2, 3]))
    root = tf.Module()
    root.dense = inner
    root.step = tf.Variable(3, dtype=tf.int64)
    prefix = tf.train.Checkpoint(net=root).write(str(tmp_path / "tf2"))
    result = run("ls", prefix, "--tree", "--json")
    assert result.exit_code == 0, result.output
    tree = json.loads(result.output)

    def child(node: dict, name: str) -> dict:
        return next(c for c in node["children"] if c["name"] == name)

    kernel = child(child(child(tree, "net"), "dense"), "kernel")
    assert kernel["path"] == "net/dense/kernel"
    assert kernel["attributes"] == [{"name": "VARIABLE_VALUE", "full_name": kernel["attributes"][0]["full_name"],
                                     "checkpoint_key": "net/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE",
                                     "dtype": "float32", "shape": [2, 3]}]
    assert child(child(tree, "net"), "step")["attributes"][0]["dtype"] == "int64"
    text = run("ls", prefix, "--tree").stdout.splitlines()
    assert text[1:] == ["  net/", "    dense/", "      kernel/",
                        "        .VARIABLE_VALUE float32[2,3]  net/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE",
                        "    step/", "      .VARIABLE_VALUE int64[]  net/step/.ATTRIBUTES/VARIABLE_VALUE"]


def test_keras_files_are_listed_not_refused(tf, tmp_path):
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2, name="head")])
    paths = [str(tmp_path / "m.weights.h5"), str(tmp_path / "m.keras"), str(tmp_path / "m.h5")]
    model.save_weights(paths[0])
    model.save(paths[1])
    model.save(paths[2])  # Keras 3's legacy HDF5 model file
    legacy = sorted(w.path for w in model.weights)  # the legacy file's weight_names: the variables' paths
    for path, names in zip(paths, [["head/bias", "head/kernel"]] * 2 + [legacy], strict=True):
        result = run("ls", "--json", path)
        assert result.exit_code == 0, result.stderr
        assert sorted(t["name"] for t in json.loads(result.stdout)["tensors"]) == names


def test_readme_command_list_matches_help():
    """Every command `ckptkit --help` lists has its bullet in the README's "Command line"
    section, and every `ckptkit CMD` the section's bullets name is a command."""

    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme[readme.index("## Command line"):readme.index("\n## ", readme.index("## Command line") + 1)]
    documented = set(re.findall(r"^- `ckptkit (\w+)", section, re.MULTILINE))
    documented |= set(re.findall(r"`ckptkit (\w+) [^`]*`\s*(?:\(|$)", section, re.MULTILINE))
    assert documented == set(cli.commands), (documented ^ set(cli.commands))


# --------------------------------------------------------------------------- one filter vocabulary

FILTERED_COMMANDS = ("ls", "show", "stats", "diff", "verify", "convert", "rm", "rename")


def option_entry(help_text: str, option: str) -> str | None:
    """The help of `option` in a command's --help, whitespace normalized (None if absent)."""
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith(option + " "):
            entry = [line.strip()]
            for more in lines[i + 1:]:
                if not more.strip() or more.strip().startswith("-"):
                    break
                entry.append(more.strip())
            return " ".join(" ".join(entry).split())
    return None


def test_help_of_every_command_shows_the_same_filter_options():
    entries = {}
    for command in FILTERED_COMMANDS:
        result = run(command, "--help")
        assert result.exit_code == 0, command
        entries[command] = (option_entry(result.stdout, "--include"), option_entry(result.stdout, "--exclude"))
        assert "--filter" not in result.stdout and "--glob GLOB" not in result.stdout, command
    include, exclude = entries["ls"]
    assert include.startswith("--include GLOB only tensors whose name matches GLOB")
    assert exclude.startswith("--exclude GLOB not the tensors whose name matches GLOB")
    assert all(entry == (include, exclude) for entry in entries.values()), entries


def test_a_glob_matching_nothing_is_an_error_in_every_command(dtypes_ckpt, tmp_path):
    out = tmp_path / "out.safetensors"
    for option in ("--include", "--exclude"):
        for args in (["ls", dtypes_ckpt], ["show", dtypes_ckpt, "--all"], ["stats", dtypes_ckpt],
                     ["verify", dtypes_ckpt], ["convert", dtypes_ckpt, out], ["diff", dtypes_ckpt, dtypes_ckpt],
                     ["rm", "-c", dtypes_ckpt, "--include", "ints/*"],
                     ["rename", "-c", dtypes_ckpt, "--glob", "ints/*", "i/*"]):
            before = index_bytes(dtypes_ckpt)
            result = run(*args, option, "encoder/*")
            line = one_error_line(result.stderr)
            # diff keeps diff(1)'s statuses: 1 means "different", so trouble is 2
            assert result.exit_code == (2 if args[0] == "diff" else 1), (args, option)
            assert f"the {option[2:]} glob 'encoder/*'" in line and dtypes_ckpt in line, line
            assert index_bytes(dtypes_ckpt) == before and not out.exists()
    result = run("convert", dtypes_ckpt, out, "--include", "ints/*", "--exclude", "ints/*")  # nothing left
    assert result.exit_code == 1 and "leave no tensor" in one_error_line(result.stderr) and not out.exists()
    result = run("convert", dtypes_ckpt, out, "--include", "names")  # all that is left can't be written
    assert result.exit_code == 1 and "nothing to write" in one_error_line(result.stderr) and not out.exists()


def test_include_selects_the_union_then_exclude_removes(tf, dtypes_ckpt):
    names = sorted(tf.train.load_checkpoint(dtypes_ckpt).get_variable_to_shape_map())
    expected = [n for n in names if n.startswith(("ints/", "dense/")) and n not in ("ints/i8", "dense/bias")]
    args = ["--include", "ints/*", "--include", "dense/*", "--exclude", "*/i8", "--exclude", "*bias"]
    listed = json.loads(run("ls", dtypes_ckpt, "--json", *args).stdout)["tensors"]
    assert [t["name"] for t in listed] == expected
    stats = json.loads(run("stats", dtypes_ckpt, "--json", *args).stdout)
    assert [t["name"] for t in stats["tensors"]] == expected
    shown = json.loads(run("show", dtypes_ckpt, "half", "--json", *args).stdout)
    assert [t["name"] for t in shown] == ["half", *expected]  # NAMEs, then what --include adds
    assert run("show", dtypes_ckpt, "--exclude", "half").exit_code == 2  # nothing chosen to exclude from
    verified = json.loads(run("verify", dtypes_ckpt, "--json", *args).stdout)
    assert verified["tensors"] == len(expected) and verified["ok"]
    only_exclude = json.loads(run("ls", dtypes_ckpt, "--json", "--exclude", "ints/*").stdout)["tensors"]
    assert [t["name"] for t in only_exclude] == [n for n in names if not n.startswith("ints/")]


def test_old_filter_spelling_still_works_with_a_note(dtypes_ckpt):
    result = run("ls", dtypes_ckpt, "--json", "--filter", "ints/*")
    assert [t["name"] for t in json.loads(result.stdout)["tensors"]] == ["ints/i32", "ints/i64", "ints/i8", "ints/u8"]
    assert result.stderr.splitlines() == ["note: --filter is deprecated; use --include (same meaning)"]
    result = run("stats", dtypes_ckpt, "--json", "--filter", "dense/k*")
    assert [t["name"] for t in json.loads(result.stdout)["tensors"]] == ["dense/kernel"]
    assert "--filter is deprecated" in result.stderr
    note, error = run("ls", dtypes_ckpt, "--filter", "x*").stderr.splitlines()
    assert "--filter is deprecated" in note and error.endswith("no tensor name matches the include glob 'x*'")


def test_verify_and_diff_check_only_what_the_filters_pick(dtypes_ckpt, tmp_path):
    corrupt(dtypes_ckpt, "dense/kernel")
    assert run("verify", dtypes_ckpt).exit_code == 1
    assert run("verify", dtypes_ckpt, "--exclude", "dense/kernel").exit_code == 0
    result = run("verify", dtypes_ckpt, "--include", "dense/*", "--json")
    assert result.exit_code == 1 and [e["name"] for e in json.loads(result.stdout)["errors"]] == ["dense/kernel"]

    a = ckptkit.save(os.fspath(tmp_path / "a"), {"x": np.float32(1), "y": np.float32(2)})
    b = ckptkit.save(os.fspath(tmp_path / "b"), {"x": np.float32(1), "y": np.float32(3), "z": np.float32(0)})
    assert run("diff", a, b).exit_code == 1
    assert run("diff", a, b, "--include", "x").exit_code == 0
    report = json.loads(run("diff", a, b, "--exclude", "y", "--json").stdout)
    assert report["only_b"] == ["z"] and not report["values"]
    assert run("diff", a, b, "--include", "z", "--exclude", "z").exit_code == 2  # nothing left: trouble


def test_ls_count_exclude_leaves_matches_out_of_the_totals(tf, dtypes_ckpt):
    reader = tf.train.load_checkpoint(dtypes_ckpt)
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    counted = [n for n in shapes if not n.startswith("ints/") and n != "half"]
    elements = sum(int(np.prod(shapes[n])) for n in counted)
    nbytes = sum(reader.get_tensor(n).nbytes for n in counted if dtypes[n] != tf.string) + 3 + 4 + 5 + 2
    out = run("ls", dtypes_ckpt, "--count-exclude", "ints/*", "--count-exclude", "half").stdout
    footer = out.splitlines()[-1].split()
    assert footer[:4] == ["12", "tensors", "(7", "counted)"] and "ints/i32" in out  # still listed
    assert footer[4] == f"{elements:,}" and footer[5] == f"{nbytes:,}"
    listed = json.loads(run("ls", dtypes_ckpt, "--json", "--count-exclude", "ints/*").stdout)["tensors"]
    assert {t["name"] for t in listed if not t["counted"]} == {"ints/i32", "ints/i64", "ints/i8", "ints/u8"}
    tree = run("ls", dtypes_ckpt, "--tree", "--count-exclude", "ints/*").stdout
    assert "\n  ints  (4 tensors, 0 B)" in tree
    result = run("ls", dtypes_ckpt, "--count-exclude", "Adam*")
    assert "the count-exclude glob 'Adam*'" in one_error_line(result.stderr)


def test_convert_dry_run_prints_the_plan_and_writes_nothing(dtypes_ckpt, tmp_path):
    out = tmp_path / "sub" / "x.safetensors"
    (tmp_path / "sub").mkdir()
    args = ["convert", dtypes_ckpt, out, "--include", "dense/*", "--include", "names", "--cast", "float64=float32",
            "--rename", "dense/(.*)", r"fc/\1", "--dry-run"]
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [["name", "new", "name", "dtype", "shape", "bytes"],
                    ["dense/bias", "fc/bias", "float64", "->", "float32", "[3]", "12"],
                    ["dense/kernel", "fc/kernel", "float32", "[2,3]", "24"]]
    assert "would leave out 1 tensor: names (safetensors has no strings)" in result.stderr
    assert "dry run: would convert 2 tensors (36 B)" in result.stderr and "nothing written" in result.stderr
    plan = json.loads(run(*args, "--json").stdout)
    assert plan["dry_run"] and plan["tensors"] == 2 and plan["bytes"] == 36
    assert plan["plan"][0] == {"name": "dense/bias", "new_name": "fc/bias", "dtype": "float32",
                               "source_dtype": "float64", "shape": [3], "source_shape": [3], "layout": None,
                               "bytes": 12}
    assert plan["left_out"] == [{"name": "names", "reason": "safetensors has no strings"}]
    assert os.listdir(tmp_path / "sub") == []
    run(*args[:-1])  # the same without --dry-run writes what the plan said

    written, _ = read_safetensors(os.fspath(out))
    assert {k: (str(v.dtype), list(v.shape)) for k, v in written.items()} == {
        r["new_name"]: (r["dtype"], r["shape"]) for r in plan["plan"]}
