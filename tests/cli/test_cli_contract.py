"""The CLI contract on bad input, and the library errors behind it.

Bad input prints exactly one line `ckptkit: error: FILE: ...` on stderr and exits 1
(2 only for click usage errors); never a traceback, never "internal error". The
library raises CheckpointError subclasses naming the file and key. Names that are
not valid UTF-8 (TF keys are bytes) print safely: `\\xff` in text, `\\udcff` in JSON.
"""
from __future__ import annotations

import json
import os
import pathlib
import select
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import REPO

import ckptkit
from ckptkit.cli import cli
from ckptkit.errors import CheckpointError, DataLossError, InvalidArgumentError, NotFoundError, UnsupportedError
from ckptkit.formats import bundle
from ckptkit.formats.slices import SlicedTensor, TensorSlice
from ckptkit.ops import convert
from ckptkit.proto import tensor_slice_pb2
from ckptkit.tf1 import state

BAD = "a\udcff/b"      # the key b"a\xff/b": not UTF-8, decoded with surrogateescape
BAD_TEXT = "a\\xff/b"  # how text output shows it
ODD = {BAD: np.float32(1.5), "nl\nx": np.float32(2), "esc\x1b[31m": np.float32(3), "ok": np.arange(3)}


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("CKPTKIT_DEBUG", raising=False)


def run(*args):
    result = CliRunner().invoke(cli, [os.fspath(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output and "internal error" not in result.stderr
    return result


def fails(*args, naming: str, code: int = 1) -> str:
    """Run; expect exit `code` and exactly one error line on stderr naming `naming`."""
    result = run(*args)
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ckptkit: error: "), lines[0]
    assert naming in lines[0], (naming, lines[0])
    return lines[0]


def no_surrogates(text: str) -> None:
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text), repr(text)


@pytest.fixture
def odd(tmp_path) -> str:
    prefix = str(tmp_path / "odd.ckpt")
    ckptkit.save(prefix, ODD)
    return prefix


# --------------------------------------------------------------------------- 1: odd names print

def test_ls_prints_undecodable_and_control_characters_escaped(odd):
    result = run("ls", odd)
    assert result.exit_code == 0, result.output
    no_surrogates(result.stdout)
    lines = result.stdout.splitlines()
    assert len(lines) == 2 + len(ODD) + 1  # title, header, one line per tensor, totals
    names = [line.split()[0] for line in lines[2:-1]]
    assert names == sorted([BAD_TEXT, "esc\\x1b[31m", "nl\\x0ax", "ok"])
    assert "\x1b" not in result.stdout


def test_ls_tree_prints_undecodable_names(odd):
    result = run("ls", "--tree", odd)
    assert result.exit_code == 0, result.output
    no_surrogates(result.stdout)
    assert "  a\\xff  (1 tensor" in result.stdout and "    b  float32[]" in result.stdout


def test_ls_json_round_trips_undecodable_names(odd):
    result = run("ls", "--json", odd)
    assert result.exit_code == 0, result.output
    assert "\\udcff" in result.stdout
    listed = [t["name"] for t in json.loads(result.stdout)["tensors"]]
    assert sorted(listed) == sorted(ODD)
    for name in listed:  # the JSON names are the keys: they read back
        np.testing.assert_array_equal(ckptkit.load_variable(odd, name), ODD[name])
    tree = json.loads(run("ls", "--json", "--tree", odd).stdout)
    assert tree["children"]["a\udcff"]["children"]["b"]["tensor"]["name"] == BAD


def test_show_diff_rename_rm_with_undecodable_names(odd, tmp_path):
    result = run("show", odd, BAD)
    assert result.exit_code == 0 and result.stdout.startswith(f"{BAD_TEXT}: float32[]\n1.5")
    assert json.loads(run("show", "--json", odd, BAD).stdout)["name"] == BAD

    other = str(tmp_path / "other.ckpt")
    ckptkit.save(other, {"ok": np.arange(3)})
    result = run("diff", odd, other)
    assert result.exit_code == 1
    no_surrogates(result.stdout)
    assert f"only in A: {BAD_TEXT}" in result.stdout.splitlines()

    result = run("rename", "-c", odd, "--dry-run", BAD, "c")
    assert result.exit_code == 0 and result.stdout == f"{BAD_TEXT} -> c\n"
    assert json.loads(run("rename", "-c", odd, "--dry-run", "--json", BAD, "c").stdout) == {BAD: "c"}
    result = run("rm", "-c", odd, BAD)
    assert result.exit_code == 0 and result.stdout == f"{BAD_TEXT}\n"
    assert BAD not in ckptkit.load(odd)


def test_verify_names_a_damaged_undecodable_key_on_one_line(odd):
    entry = bundle.BundleIndex(odd).entry(BAD)
    with open(bundle.data_filename(odd, entry.shard_id, 1), "r+b") as f:
        f.seek(entry.offset)
        byte = f.read(1)
        f.seek(entry.offset)
        f.write(bytes([byte[0] ^ 1]))
    result = run("verify", odd)
    assert result.exit_code == 1
    no_surrogates(result.stderr)
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("ckptkit: error: ") and "a\\xff/b" in errors[0]
    assert result.stdout.startswith("FAILED: 1 of 4 tensors damaged")


def test_undecodable_path_prints_escaped(tmp_path):
    directory = os.path.join(os.fsdecode(bytes(tmp_path)), "d\udcff")
    os.makedirs(directory)
    prefix = os.path.join(directory, "m.ckpt")
    ckptkit.save(prefix, {"x": np.float32(1)})
    result = run("ls", prefix)
    assert result.exit_code == 0 and result.stdout.splitlines()[0].endswith("d\\xff/m.ckpt")
    fails("ls", os.path.join(directory, "missing"), naming="d\\xff/missing")


def test_real_process_with_strict_utf8_stdout(odd):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONPATH": REPO}
    env.pop("CKPTKIT_DEBUG", None)
    for args in (["ls", odd], ["ls", "--tree", odd], ["ls", "--json", odd], ["verify", odd]):
        proc = subprocess.run([sys.executable, "-m", "ckptkit", *args], capture_output=True,
                              text=True, env=env, timeout=120, check=False)
        assert proc.returncode == 0 and proc.stderr == "", (args, proc.stderr)


# --------------------------------------------------------------------------- 2: convert refuses names

@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_convert_refuses_undecodable_names_before_writing(odd, tmp_path, ext):
    dst = str(tmp_path / ("out" + ext))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(UnsupportedError, match="not valid UTF-8") as info:
        convert.convert(odd, dst)
    assert info.value.path == dst and info.value.key == BAD
    assert sorted(os.listdir(tmp_path)) == before  # no output, no temp file
    line = fails("convert", odd, dst, naming=dst)
    assert "key 'a\\xff/b'" in line
    assert sorted(os.listdir(tmp_path)) == before


def test_npz_refuses_overlong_and_nul_names(tmp_path):
    long_name = "x" * 70000
    src = str(tmp_path / "long.ckpt")
    ckptkit.save(src, {long_name: np.float32(1)})
    dst = str(tmp_path / "long.npz")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(UnsupportedError, match="70000 bytes long") as info:
        convert.convert(src, dst)
    assert info.value.path == dst and info.value.key == long_name
    line = fails("convert", src, dst, naming=dst)
    assert len(line) < 500 and "(70000 characters)" in line
    assert sorted(os.listdir(tmp_path)) == before
    with pytest.raises(UnsupportedError, match="NUL"):
        convert.write_npz(dst, {"a\x00b": np.float32(1)})
    assert sorted(os.listdir(tmp_path)) == before


def test_safetensors_refuses_a_tensor_named_metadata(tmp_path):
    dst = str(tmp_path / "m.safetensors")
    with pytest.raises(UnsupportedError, match="__metadata__"):
        convert.write_safetensors(dst, {"__metadata__": np.float32(1)})
    assert os.listdir(tmp_path) == []


def test_npz_round_trips_utf8_names(tmp_path):
    names = {"é/ü": np.float32(1), "x.npy": np.arange(2), "a/b/c": np.ones((2, 2))}
    path = str(tmp_path / "u.npz")
    convert.write_npz(path, names)
    back = convert.read_npz(path)
    assert sorted(back) == sorted(names)


# --------------------------------------------------------------------------- 3: bad npz/safetensors input

def _npz_bytes(tmp_path) -> bytes:
    path = tmp_path / "good.npz"
    np.savez(path, a=np.arange(100.0), b=np.ones((3, 3), np.int32))
    return path.read_bytes()


def test_empty_npz_is_data_loss(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(DataLossError, match="empty file") as info:
        convert.read_npz(path)
    assert info.value.path == str(path)
    fails("convert", path, tmp_path / "x.ckpt", naming=str(path))


@pytest.mark.parametrize("content, match", [
    (b"garbage", "not a zip archive"),
    (b"\x93NUMPY\x01\x00", "single .npy array"),
    (b"PK\x03\x04" + b"\0" * 30, "not a readable .npz"),
])
def test_garbage_npz_is_data_loss(tmp_path, content, match):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(DataLossError, match=match):
        convert.read_npz(path)


def test_truncated_or_damaged_npz_is_a_checkpoint_error(tmp_path):
    good = _npz_bytes(tmp_path)
    path = tmp_path / "bad.npz"
    cases = [good[:n] for n in range(0, len(good), 37)]
    cases += [good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1:] for i in range(0, len(good), 11)]
    for data in cases:
        path.write_bytes(data)
        try:
            convert.read_npz(path)
        except CheckpointError as exc:
            assert exc.path == str(path)


def test_npz_fifo_and_directory_fail_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        convert.read_npz(fifo)
    directory = tmp_path / "dir.npz"
    directory.mkdir()
    with pytest.raises(CheckpointError, match="is a directory"):
        convert.read_npz(directory)
    fails("convert", directory, tmp_path / "x.ckpt", naming=str(directory))


def _safetensors(header: dict, data: bytes = b"") -> bytes:
    blob = json.dumps(header).encode()
    return len(blob).to_bytes(8, "little") + blob + data


@pytest.mark.parametrize("content, error, match", [
    (b"", DataLossError, "shorter than"),
    (_safetensors({"x": {"dtype": "F32", "shape": [1], "data_offsets": ["a", 4]}}, b"\0" * 4),
     DataLossError, "data_offsets"),
    (_safetensors({"x": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]}}, b"\0" * 4),
     UnsupportedError, "rank 65"),
    (_safetensors({"x": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
     UnsupportedError, "dtype"),
    (_safetensors({"x": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, b"\0" * 4),
     DataLossError, "shape"),
    (_safetensors({"\ud800": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
     DataLossError, "surrogate"),
    (b"\x05\0\0\0\0\0\0\0[[[[[", DataLossError, "not valid JSON"),
])
def test_bad_safetensors_is_a_checkpoint_error(tmp_path, content, error, match):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(error, match=match) as info:
        convert.read_safetensors(path)
    assert info.value.path == str(path)
    fails("convert", path, tmp_path / "x.ckpt", naming=str(path))


def test_truncated_safetensors_is_a_checkpoint_error(tmp_path):
    good = tmp_path / "good.safetensors"
    convert.write_safetensors(good, {"a": np.arange(10, dtype=np.float32), "b": np.ones(3, np.int64)})
    data = good.read_bytes()
    path = tmp_path / "bad.safetensors"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        with pytest.raises(CheckpointError):
            convert.read_safetensors(path)
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        convert.read_safetensors(fifo)


# --------------------------------------------------------------------------- 4: unreadable paths exit 1

@pytest.fixture
def saved_dir(tmp_path) -> str:
    directory = tmp_path / "d"
    ckptkit.Saver().save({"v": np.float32(1)}, str(directory / "model"), global_step=1)
    return str(directory)


def test_paths_are_not_checked_by_click(saved_dir, monkeypatch):
    """click's readable check made an unreadable directory a usage error (exit 2)."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode == os.R_OK else real_access(p, mode, **kw))
    for command in ("verify", "state", "ls"):
        result = run(command, saved_dir)
        assert result.exit_code == 0, (command, result.output)


def _run_unprivileged(args: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of the CLI run as an unprivileged user (root reads everything)."""
    if os.geteuid() != 0:
        result = run(*args)
        return result.exit_code, result.stderr
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, run, report, exit without cleanup
        code = 99
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            result = CliRunner().invoke(cli, args, catch_exceptions=False)
            os.write(write_end, json.dumps([result.exit_code, result.stderr]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 60)
        assert ready, "unprivileged run hung"
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    exit_code, stderr = json.loads(b"".join(chunks))
    return exit_code, stderr


def test_unreadable_directory_exits_1_with_one_line(saved_dir, tmp_path):
    os.chmod(saved_dir, 0)
    try:
        for command in ("verify", "state", "ls"):
            exit_code, stderr = _run_unprivileged([command, saved_dir])
            lines = stderr.strip().splitlines()
            assert exit_code == 1, (command, exit_code, stderr)
            assert len(lines) == 1 and lines[0].startswith("ckptkit: error: "), stderr
    finally:
        os.chmod(saved_dir, 0o755)


def test_file_where_a_directory_is_expected(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("hi")
    fails("state", afile, naming=str(afile))
    fails("verify", afile, naming=str(afile))
    fails("verify", afile / "x", naming=str(afile / "x"))
    fails("state", afile / "x", naming=str(afile / "x"))
    fails("ls", afile / "x", naming=str(afile / "x"))


# --------------------------------------------------------------------------- 5: state file a directory

def test_saver_refuses_a_state_file_that_is_a_directory(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    with pytest.raises(CheckpointError, match="is a directory") as info:
        ckptkit.Saver().save({"v": np.float32(1)}, str(tmp_path / "model"), global_step=1)
    assert info.value.path == str(tmp_path / "checkpoint")
    assert (tmp_path / "checkpoint").is_dir() and os.listdir(tmp_path / "checkpoint") == []
    assert not [n for n in os.listdir(tmp_path) if ".ckptkit-tmp-" in n]


def test_update_and_read_state_file_that_is_a_directory(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    with pytest.raises(CheckpointError, match="is a directory") as info:
        state.update_checkpoint_state(str(tmp_path), str(tmp_path / "model-1"))
    assert info.value.path == str(tmp_path / "checkpoint")
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]
    with pytest.raises(CheckpointError, match="is a directory"):
        state.read_state_file(tmp_path / "checkpoint")
    with pytest.raises(CheckpointError, match="is a directory"):
        ckptkit.latest_checkpoint(str(tmp_path))
    fails("state", tmp_path, naming=str(tmp_path / "checkpoint"))
    fails("ls", tmp_path, naming=str(tmp_path / "checkpoint"))


def test_state_directory_that_is_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(NotFoundError, match="is not a directory") as info:
        state.update_checkpoint_state(str(afile), "model-1")
    assert info.value.path == str(afile)
    with pytest.raises(NotFoundError, match="is not a directory"):
        state.write_state_file(afile / "checkpoint", state.CheckpointState(model_checkpoint_path="m"))


# --------------------------------------------------------------------------- 6: bad slice extents

def _negative_slice_checkpoint(tmp_path, start: int = -2) -> str:
    prefix = str(tmp_path / "neg.ckpt")
    ckptkit.save(prefix, {"x": SlicedTensor.split(np.arange(4, dtype=np.float32), 2), "y": np.float32(1)})
    index = bundle.BundleIndex(prefix)
    items = []
    for key, _ in index.raw_items():
        entry = index.entry(key)
        if entry.slices:
            entry.slices[0].extent[0].start = start
        items.append((bundle.encode_key(key), entry.SerializeToString()))
    bundle.write_index(prefix, bundle.make_header(1), sorted(items)).commit()
    return prefix


def test_slice_extents_from_a_file_are_data_loss_naming_file_and_key():
    proto = tensor_slice_pb2.TensorSliceProto()
    extent = proto.extent.add()
    extent.start, extent.length = -2, 2
    with pytest.raises(DataLossError, match="start >= 0") as info:
        TensorSlice.from_proto(proto, path="f.index", key="x")
    assert (info.value.path, info.value.key) == ("f.index", "x")
    extent.start, extent.length = 1 << 62, 1 << 62
    with pytest.raises(DataLossError, match="2\\^63"):
        TensorSlice.from_proto(proto, path="f.index", key="x")
    with pytest.raises(InvalidArgumentError) as info:
        TensorSlice.parse("-1,2", path="p", key="k")
    assert (info.value.path, info.value.key) == ("p", "k")
    with pytest.raises(InvalidArgumentError):
        TensorSlice([(-1, 2)])


def test_negative_slice_start_in_a_checkpoint(tmp_path):
    prefix = _negative_slice_checkpoint(tmp_path)
    with pytest.raises(DataLossError, match="start >= 0"):
        ckptkit.load(prefix)
    for args in (["ls", prefix], ["verify", prefix], ["show", prefix, "x"], ["ls", "--json", prefix]):
        fails(*args, naming=prefix)
    fails("convert", prefix, tmp_path / "n.npz", naming="neg.ckpt")


# --------------------------------------------------------------------------- 7: other bad paths

def test_index_that_is_a_directory(tmp_path):
    (tmp_path / "m.ckpt.index").mkdir()
    fails("ls", tmp_path / "m.ckpt", naming=str(tmp_path / "m.ckpt"))
    fails("verify", tmp_path, naming=str(tmp_path))
    fails("ls", tmp_path / "m.ckpt.index", naming=str(tmp_path / "m.ckpt.index"))


def test_outputs_under_a_regular_file(odd, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    before = sorted(os.listdir(tmp_path))
    index_before = pathlib.Path(odd + ".index").read_bytes()
    for args in (["rename", "-c", odd, "ok", "ok2", "-o", afile / "out"],
                 ["rm", "-c", odd, "ok", "-o", afile / "sub" / "out"],
                 ["ema", "-c", odd, "-o", afile / "out"],
                 ["convert", odd, afile / "x"],
                 ["convert", odd, afile / "x.safetensors"]):
        line = fails(*args, naming=str(afile))
        assert "is not a directory" in line
    assert sorted(os.listdir(tmp_path)) == before
    assert pathlib.Path(odd + ".index").read_bytes() == index_before
    with pytest.raises(InvalidArgumentError, match="not a directory"):
        convert.check_destination(afile / "x.npz")


def test_convert_destination_checks(tmp_path):
    src = str(tmp_path / "s.ckpt")
    ckptkit.save(src, {"v": np.float32(1)})
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        convert.convert(src, tmp_path / "dir.npz")
    with pytest.raises(NotFoundError, match="does not exist"):
        convert.convert(src, tmp_path / "nodir" / "x.npz")
    fails("convert", src, tmp_path / "nodir" / "x.safetensors", naming="nodir")
    # a checkpoint destination's missing directories are created, as TF does
    convert.convert(src, tmp_path / "new" / "deeper" / "c")
    assert ckptkit.load(tmp_path / "new" / "deeper" / "c")["v"] == 1


def test_npz_written_is_a_plain_zip(tmp_path):
    path = tmp_path / "t.npz"
    convert.write_npz(path, {"é": np.float32(1)})
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["é.npy"]


def test_example_into_bad_directories(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    fails("example", afile / "x", naming=str(afile))
    (tmp_path / "d" / "checkpoint").mkdir(parents=True)
    fails("example", tmp_path / "d", naming=str(tmp_path / "d" / "checkpoint"))
