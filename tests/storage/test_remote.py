"""Checkpoints at URLs: the same reads, writes, Saver and edits on every store.

Stores: `memory://` (fsspec's in-process store), a real HTTP server on loopback with
range requests (reads), and moto's S3-compatible server on loopback (reads and writes).
Values are checked against what TF wrote or reads; bytes transferred are counted by the
HTTP server itself.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import CKPTKIT, REPO, make_seed, same_values, subprocess_env, tf_values
from servers import free_port, http_server, plain_http_server, silent_server

import ckptkit
from ckptkit import storage
from ckptkit.cli import cli
from ckptkit.errors import CheckpointChangedError, CheckpointError, InvalidArgumentError, NotFoundError, StorageError
from ckptkit.ops import edit, info
from ckptkit.ops.convert import convert
from ckptkit.storage import backends, http_range, remote
from ckptkit.storage.remote import call

VALUES = {"dense/kernel": np.arange(12, dtype=np.float32).reshape(3, 4), "dense/bias": np.ones(4, np.float16),
          "step": np.int64(7), "names": np.array([b"a", b"bc"], dtype=object)}


def _values(step: int) -> dict:
    return {k: (v * step if v.dtype.kind == "f" else v) for k, v in VALUES.items()}


@pytest.fixture(params=["local", "memory", "s3"])
def store_url(request, tmp_path):
    """(a fresh directory on a writable store: a local path or a URL, its storage_options)."""
    run = uuid.uuid4().hex[:8]
    if request.param == "local":
        return os.fspath(tmp_path / run), None
    if request.param == "memory":
        return f"memory://ckptkit-tests/{run}", None
    return f"s3://bucket/{run}", request.getfixturevalue("s3")


def test_saver_on_a_store_keeps_the_newest_and_a_state_file(store_url, tmp_path, tf):
    base, options = store_url
    saver = ckptkit.Saver(max_to_keep=2, storage_options=options)
    for step in (1, 2, 3):
        assert saver.save(_values(step), f"{base}/model.ckpt", global_step=step) == f"{base}/model.ckpt-{step}"
    with storage.options(options):
        names = sorted(n for n in storage.of(base).listdir(base) if n != ".ckptkit.lock")
        assert names == sorted(["checkpoint"] + [f"model.ckpt-{s}{ext}" for s in (2, 3)
                                                for ext in (".index", ".data-00000-of-00001", ".meta")])
        assert ckptkit.latest_checkpoint(base) == f"{base}/model.ckpt-3"
        state = ckptkit.get_checkpoint_state(base)
        assert list(state.all_model_checkpoint_paths) == [f"{base}/model.ckpt-2", f"{base}/model.ckpt-3"]
    assert same_values(ckptkit.load(base, storage_options=options), _values(3))
    assert same_values(saver.restore(f"{base}/model.ckpt-2"), _values(2))
    # TF reads the bytes that landed in the store (downloaded as they are)
    local = _download(base, options, tmp_path / "copy")
    assert same_values(tf_values(tf, os.path.join(local, "model.ckpt-3")), _values(3))


def test_s3_reads_transfer_only_what_they_need(s3):
    base = f"s3://bucket/{uuid.uuid4().hex[:8]}"
    big = {"big": np.zeros(1 << 20, np.float32), "small": np.arange(4, dtype=np.int32)}
    with storage.options(s3):
        ckptkit.save(f"{base}/m", big)
        store = storage.of(base)
        index_size = store.size(f"{base}/m.index")
        store.transferred = 0
        assert dict(ckptkit.list_variables(f"{base}/m")) == {"big": [1 << 20], "small": [4]}
        assert store.transferred == index_size
        store.transferred = 0
        assert ckptkit.load_variable(f"{base}/m", "small").tolist() == [0, 1, 2, 3]
        assert store.transferred == index_size + 16
        store.transferred = 0
        assert same_values(ckptkit.load(f"{base}/m"), big)
        assert store.transferred == index_size + (4 << 20) + 16


def test_the_cli_reaches_s3_through_fsspec_configuration(s3, tmp_path):
    base = f"s3://bucket/{uuid.uuid4().hex[:8]}"
    ckptkit.Saver(storage_options=s3).save(_values(4), f"{base}/model.ckpt", global_step=4)
    env = subprocess_env()
    env.update(FSSPEC_S3_KEY=s3["key"], FSSPEC_S3_SECRET=s3["secret"],
               FSSPEC_S3_ENDPOINT_URL=s3["client_kwargs"]["endpoint_url"])
    for args, expect in ((["ls", base], "dense/kernel"), (["rename", "-c", base, "step", "global_step"], ""),
                         (["show", base, "global_step"], "7"), (["state", base], "model.ckpt-4")):
        res = subprocess.run([*CKPTKIT, *args], capture_output=True, text=True, env=env, timeout=120, check=False)
        assert res.returncode == 0 and expect in res.stdout, (args, res.stdout, res.stderr)


def test_a_checkpoint_manager_on_a_store(store_url):
    base, options = store_url
    with storage.options(options):
        ckpt = ckptkit.Checkpoint(model={"w": np.zeros(3, np.float32)})
        manager = ckptkit.CheckpointManager(ckpt, base, max_to_keep=2)
        for step in range(3):
            ckpt.model["w"][:] = step  # type: ignore[index]
            manager.save()
        assert manager.checkpoints == [f"{base}/ckpt-2", f"{base}/ckpt-3"]
        assert ckptkit.latest_checkpoint(base) == f"{base}/ckpt-3"
        restored = ckptkit.Checkpoint(model={"w": np.zeros(3, np.float32)})
        restored.restore(manager.latest_checkpoint)
        assert restored.model["w"].tolist() == [2.0, 2.0, 2.0]  # type: ignore[index]


def _download(base: str, options, into) -> str:
    with storage.options(options):
        store = storage.of(base)
        os.makedirs(into)
        for name in store.listdir(base):
            with open(os.path.join(into, name), "wb") as f:
                f.write(store.read_bytes(f"{base}/{name}", "file"))
    return os.fspath(into)


def test_edits_and_convert_on_a_store(store_url, tmp_path, tf):
    base, options = store_url
    prefix = f"{base}/model.ckpt"
    with storage.options(options):
        ckptkit.save(prefix, _values(2))
        edit.rename_keys(prefix, {"dense/kernel": "dense/w"})
        edit.remove_keys(prefix, ["names"])
        freed = edit.compact(prefix)
        assert freed > 0
        edit.rename_keys(prefix, {"dense/w": "dense/kernel"}, output=f"{base}/out/renamed")
        want = {k: v for k, v in _values(2).items() if k != "names"}
        assert same_values(ckptkit.load(f"{base}/out/renamed"), want)
        assert set(ckptkit.load(prefix)) == {"dense/w", "dense/bias", "step"}
        # remote -> local and local -> remote, through convert

        convert(f"{base}/out/renamed", os.fspath(tmp_path / "local.ckpt"))
        convert(os.fspath(tmp_path / "local.ckpt"), f"{base}/out/st.safetensors")
        assert same_values(ckptkit.load(f"{base}/out/st.safetensors"),
                           {k: v for k, v in want.items() if k != "names"})
        # a tensor file on the store edited into a V2 checkpoint on the store, and here
        kept = {k: v for k, v in want.items() if k not in ("names", "step")}
        for out in (f"{base}/out/from_st", os.fspath(tmp_path / "from_st")):
            assert edit.remove_keys(f"{base}/out/st.safetensors", ["step"], output=out) == ["step"]
            assert same_values(ckptkit.load(out), kept)
    assert same_values(tf_values(tf, os.fspath(tmp_path / "local.ckpt")), want)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tf, tf1):
    """A TF-written checkpoint directory (a 4 MiB tensor among others), served over HTTP."""

    root = tmp_path_factory.mktemp("served")
    run = root / "run"
    run.mkdir()
    graph = tf.Graph()
    with graph.as_default():
        big = tf1.Variable(np.arange(1 << 20, dtype=np.float32), name="big")
        small = tf1.Variable([1.0, 2.0], name="small")
        name = tf1.Variable(b"hello", name="name")
        saver = tf1.train.Saver([big, small, name], save_relative_paths=True)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            saver.save(sess, os.fspath(run / "model.ckpt"), global_step=5)
    seed = root / "seed"
    seed.mkdir()
    make_seed(tf1, os.fspath(seed))
    with http_server(os.fspath(root)) as (url, counter):
        yield os.fspath(root), url, counter


def test_ls_over_http_reads_only_the_index(served):
    root, url, counter = served
    index_size = os.path.getsize(os.path.join(root, "run", "model.ckpt-5.index"))
    counter["bytes"] = 0
    res = subprocess.run([*CKPTKIT, "ls", f"{url}/run/model.ckpt-5"], capture_output=True, text=True,
                         env=subprocess_env(), timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "big" in res.stdout and "small" in res.stdout
    assert counter["bytes"] <= index_size + 4096, (counter, index_size)


def test_reads_over_http_equal_the_local_files(served, tf):
    root, url, counter = served
    local = os.path.join(root, "run", "model.ckpt-5")
    want = tf_values(tf, local)
    assert same_values(ckptkit.load(f"{url}/run/model.ckpt-5"), want)
    assert same_values(ckptkit.load(f"{url}/run"), want)  # the directory, through its state file
    assert ckptkit.latest_checkpoint(f"{url}/run") == f"{url}/run/model.ckpt-5"
    counter["bytes"] = 0
    with ckptkit.CheckpointReader(f"{url}/run/model.ckpt-5") as reader:
        assert same_values({"small": reader.get_tensor("small")}, {"small": want["small"]})
        # one small tensor: the index and that tensor's bytes, not the 4 MiB one
        assert counter["bytes"] < 64 << 10, counter
    res = subprocess.run([*CKPTKIT, "verify", f"{url}/run/model.ckpt-5"], capture_output=True, text=True,
                         env=subprocess_env(), timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([*CKPTKIT, "show", f"{url}/seed/model.ckpt", "v"], capture_output=True, text=True,
                         env=subprocess_env(), timeout=120, check=False)
    assert res.returncode == 0 and "10" in res.stdout, res.stderr


def test_a_partial_read_over_http_fetches_only_its_window(served):
    """get_slice over a store: range requests for the window's bytes, not the tensor's."""
    _, url, counter = served
    with ckptkit.CheckpointReader(f"{url}/run/model.ckpt-5") as reader:
        counter["bytes"] = 0
        window = reader.get_slice("big")[1000:1010]
        assert window.tolist() == list(range(1000, 1010))
        strided = reader.get_slice("big")[(1 << 20) - 5::2]
        assert strided.tolist() == [(1 << 20) - 5, (1 << 20) - 3, (1 << 20) - 1]
    assert counter["bytes"] < 4096, counter  # two windows: never the 4 MiB tensor


def test_a_flipped_byte_served_over_http_is_a_checksum_error(served, tmp_path):
    root, url, _ = served
    bad = os.path.join(root, "bad")
    shutil.copytree(os.path.join(root, "run"), bad)
    data = os.path.join(bad, "model.ckpt-5.data-00000-of-00001")
    with open(data, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CheckpointError, match="checksum") as exc:
        ckptkit.load(f"{url}/bad/model.ckpt-5")
    assert url in str(exc.value)


def test_a_state_file_naming_gs_paths_resolves_in_a_downloaded_copy(served, tmp_path, tf):
    root, _, _ = served
    copy = shutil.copytree(os.path.join(root, "run"), tmp_path / "copy")
    with open(copy / "checkpoint", "w") as f:  # what TF writes when it saves to gs://
        f.write('model_checkpoint_path: "gs://bucket/run/model.ckpt-5"\n'
                'all_model_checkpoint_paths: "gs://bucket/run/model.ckpt-5"\n')
    assert ckptkit.latest_checkpoint(os.fspath(copy)) == os.path.join(os.fspath(copy), "model.ckpt-5")
    assert same_values(ckptkit.load(os.fspath(copy)), tf_values(tf, os.path.join(root, "run", "model.ckpt-5")))


def test_a_state_file_naming_absolute_urls_resolves_remotely():
    base = f"memory://ckptkit-tests/{uuid.uuid4().hex[:8]}"
    ckptkit.save(f"{base}/m-1", _values(1))
    ckptkit.update_checkpoint_state(base, f"{base}/m-1")
    assert ckptkit.latest_checkpoint(base) == f"{base}/m-1"
    assert b"memory://" in storage.of(base).read_bytes(f"{base}/checkpoint", "state")


@pytest.mark.parametrize("path, message", [
    ("http://127.0.0.1:{closed}/x/model.ckpt", "cannot access"),     # connection refused
    ("{url}/forbidden/model.ckpt", "access to file denied"),         # 403
    ("{url}/run/nothing", "no checkpoint at this path"),               # 404
    ("memory://ckptkit-tests/nothing/here", "no checkpoint at this path"),
    ("nosuchproto://bucket/model.ckpt", "nosuchproto"),
])
def test_store_failures_are_one_line_naming_the_url(served, path, message):
    url = path.format(url=served[1], closed=free_port())
    with pytest.raises(CheckpointError, match=message) as exc:
        ckptkit.load(url)
    assert url.split("://")[1].split("/")[0] in str(exc.value)
    res = subprocess.run([*CKPTKIT, "ls", url], capture_output=True, text=True, env=subprocess_env(),
                         timeout=120, check=False)
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr and url.split("://")[1].split("/")[0] in res.stderr


def test_a_flaky_store_is_retried_and_a_truncating_one_is_an_error(served):
    root, url, counter = served
    for name in ("flaky", "truncated"):
        if not os.path.exists(os.path.join(root, name)):
            shutil.copytree(os.path.join(root, "run"), os.path.join(root, name))
    want = ckptkit.load(os.path.join(root, "run", "model.ckpt-5"))
    counter["flaky"] = 0
    assert same_values(ckptkit.load(f"{url}/flaky/model.ckpt-5"), want)  # every 503 retried
    assert counter["flaky"] >= 4
    with pytest.raises(CheckpointError, match="cannot access data shard") as exc:
        ckptkit.load(f"{url}/truncated/model.ckpt-5")
    assert f"{url}/truncated/model.ckpt-5.data-00000-of-00001" in str(exc.value)


def test_a_stalled_store_times_out_naming_the_url(served, monkeypatch):
    root, url, _ = served
    if not os.path.exists(os.path.join(root, "stalled")):
        shutil.copytree(os.path.join(root, "run"), os.path.join(root, "stalled"))
    monkeypatch.setattr(storage, "HTTP_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(storage, "_stores", {})
    monkeypatch.setattr("ckptkit.storage.remote.RETRIES", 1)
    with pytest.raises(CheckpointError, match="cannot access data shard") as exc:
        ckptkit.load(f"{url}/stalled/model.ckpt-5")
    assert f"{url}/stalled/" in str(exc.value)


def test_a_missing_object_is_not_found(served):
    _, url, _ = served
    with pytest.raises(NotFoundError, match="nope file"):
        storage.of(url).open(f"{url}/run/nope", "nope file")


def test_local_paths_never_import_fsspec(seed):
    code = ("import sys, ckptkit; ckptkit.load(sys.argv[1]); "
            "assert 'fsspec' not in sys.modules, 'fsspec imported for a local path'")
    subprocess.run([sys.executable, "-c", code, seed], check=True, env=subprocess_env(), timeout=120)


def test_s3_denied_says_the_key_may_be_missing():
    """S3 answers 403 for a missing key when the credentials may not list the bucket: the
    error says so (for other stores a 403 is only a denial)."""

    def denied():
        raise PermissionError("Forbidden")

    with pytest.raises(CheckpointError, match="access to checkpoint index denied \\(or it does not exist") as exc:
        call("s3://bucket/run/model.ckpt.index", "checkpoint index", denied)
    assert "s3://bucket/run/model.ckpt.index" in str(exc.value)
    with pytest.raises(CheckpointError, match="access to checkpoint index denied: PermissionError"):
        call("gs://bucket/run/model.ckpt.index", "checkpoint index", denied)


# --------------------------------------------------------------------------- servers that ignore Range

ST_VALUES = {"emb": np.arange(24, dtype=np.float32).reshape(6, 4), "ids": np.array([3, 1, 4], np.int64)}


@pytest.fixture(scope="module")
def plain_served(served):
    """`python -m http.server` (which ignores Range) over the TF-written checkpoints of
    `served`, and a .safetensors file written by the safetensors package."""
    from safetensors.numpy import save_file  # noqa: PLC0415 - the reference implementation

    root = served[0]
    save_file(ST_VALUES, os.path.join(root, "weights.safetensors"))
    with plain_http_server(root) as url:
        yield root, url


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CKPTKIT, *args], capture_output=True, text=True, env=subprocess_env(),
                          timeout=timeout, check=False)


def test_a_server_that_ignores_range_is_read_from_one_copy_of_each_file(plain_served, tf):
    root, url = plain_served
    want = tf_values(tf, os.path.join(root, "run", "model.ckpt-5"))
    assert same_values(ckptkit.load(f"{url}/run/model.ckpt-5"), want)
    assert same_values(ckptkit.load(f"{url}/run"), want)  # through the state file
    with ckptkit.CheckpointReader(f"{url}/run/model.ckpt-5") as reader:
        assert reader.get_slice("big")[1000:1003].tolist() == [1000, 1001, 1002]
    assert same_values(ckptkit.load(f"{url}/weights.safetensors"), ST_VALUES)

    res = _cli("ls", f"{url}/seed/model.ckpt")
    assert res.returncode == 0 and "v/ExponentialMovingAverage" in res.stdout, res.stderr
    res = _cli("show", f"{url}/seed/model.ckpt", "v")
    assert res.returncode == 0 and "10" in res.stdout, res.stderr
    # the server's behaviour is said once, in one line, and the reads work
    assert res.stderr.count("ignores HTTP Range requests") == 1 and len(res.stderr.splitlines()) == 1, res.stderr
    res = _cli("verify", f"{url}/run/model.ckpt-5")
    assert res.returncode == 0 and "OK: 3 tensors" in res.stdout, (res.stdout, res.stderr)
    assert "damaged" not in res.stdout + res.stderr
    res = _cli("ls", f"{url}/weights.safetensors")
    assert res.returncode == 0 and "emb" in res.stdout and "[6,4]" in res.stdout, res.stderr
    res = _cli("show", f"{url}/weights.safetensors", "ids")
    assert res.returncode == 0 and "3" in res.stdout and "4" in res.stdout, res.stderr


def test_a_file_over_the_bound_from_a_server_ignoring_range_is_one_clear_error(plain_served, monkeypatch):
    _, url = plain_served
    monkeypatch.setattr(http_range, "WHOLE_FILE_LIMIT", 1 << 20)  # the data shard holds a 4 MiB tensor
    monkeypatch.setattr(storage, "_stores", {})
    shard = f"{url}/run/model.ckpt-5.data-00000-of-00001"
    with pytest.raises(StorageError, match="ignores HTTP Range requests") as exc:
        ckptkit.load(f"{url}/run/model.ckpt-5")
    assert shard in str(exc.value) and "1 MiB" in str(exc.value)
    with pytest.raises(StorageError, match="ignores HTTP Range requests"):
        info.verify_checkpoint(f"{url}/run/model.ckpt-5")  # a transport fault: raised, never "damaged"
    res = CliRunner().invoke(cli, ["verify", f"{url}/run/model.ckpt-5"])
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "ignores HTTP Range requests" in lines[0] and shard in lines[0], res.stderr
    assert "damaged" not in res.output


@pytest.mark.parametrize("where, message", [
    ("wrong-range", "with Content-Range 'bytes "),
    ("overlong", "bytes of the data shard where"),
    ("unsized-overlong", "sent more than the"),  # stopped while streaming
])
def test_a_range_answer_of_other_bytes_is_refused(served, where, message):
    """A 206 naming another range, or sending more bytes than asked: never taken as data."""
    root, url, _ = served
    if not os.path.exists(os.path.join(root, where)):
        shutil.copytree(os.path.join(root, "run"), os.path.join(root, where))
    with pytest.raises(StorageError, match=message) as exc:
        ckptkit.load(f"{url}/{where}/model.ckpt-5")
    assert f"{url}/{where}/model.ckpt-5.data-00000-of-00001" in str(exc.value)
    res = _cli("verify", f"{url}/{where}/model.ckpt-5")
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "damaged" not in res.stdout + res.stderr and "Traceback" not in res.stderr


def test_unreachable_stores_fail_within_ten_seconds_in_one_line():
    """A closed port (refused) and a port that accepts and never answers: the CLI's one
    error line comes within 10 s, not after the library's retries and timeouts."""

    with silent_server() as silent:
        for url, message in ((f"http://127.0.0.1:{free_port()}/run", "cannot access"),
                             (f"{silent}/run/model.ckpt", "no answer from the store within")):
            started = time.monotonic()
            res = _cli("ls", url, timeout=60)
            took = time.monotonic() - started
            assert res.returncode == 1 and took < 10, (url, took, res.stderr)
            assert res.stderr.strip().splitlines() == [res.stderr.strip()] and message in res.stderr, res.stderr


NOISY_STORE = """
import logging, sys
import fsspec
from fsspec.implementations.memory import MemoryFileSystem

class Noisy(MemoryFileSystem):  # a store whose library logs its failures, with tracebacks
    protocol = "noisy"
    def info(self, path, **kwargs):
        try:
            raise ConnectionError("no route to host")
        except ConnectionError:
            logging.getLogger("noisylib").exception("request failed, giving up")
            raise

fsspec.register_implementation("noisy", Noisy, clobber=True)
from ckptkit.cli import main
main(sys.argv[1:])
"""


def test_a_store_library_log_stays_off_stderr_unless_verbose():
    quiet = subprocess.run([sys.executable, "-c", NOISY_STORE, "ls", "noisy://bucket/run"], capture_output=True,
                           text=True, env=subprocess_env(), timeout=60, check=False)
    assert quiet.returncode == 1, quiet.stderr
    assert quiet.stderr.strip().splitlines() == [
        "ckptkit: error: noisy://bucket/run: cannot access file: ConnectionError: no route to host"], quiet.stderr
    loud = subprocess.run([sys.executable, "-c", NOISY_STORE, "-v", "ls", "noisy://bucket/run"],
                          capture_output=True, text=True, env=subprocess_env(), timeout=60, check=False)
    assert loud.returncode == 1
    assert "noisylib: ERROR: request failed, giving up" in loud.stderr and "Traceback" in loud.stderr, loud.stderr


@pytest.mark.parametrize("protocol, package", [
    ("az", "adlfs"), ("gs", "gcsfs"), ("s3", "s3fs"), ("hf", "huggingface_hub"), ("sftp", "paramiko"),
])
def test_a_missing_store_package_is_named(protocol, package):
    """The message names the one package for that protocol, whatever is installed here."""
    message = backends.missing_backend(protocol, ImportError(f"Install {package}"))
    assert f"{protocol}:// URLs need {package}" in message and f"pip install {package}" in message
    in_extra = package in backends.IN_REMOTE_EXTRA
    assert ("tf-ckptkit[remote]" in message) == in_extra
    if importlib.util.find_spec(package) is None:  # and the CLI says it too
        res = _cli("ls", f"{protocol}://bucket/run/model.ckpt")
        assert res.returncode == 1 and f"pip install {package}" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_the_remote_extra_brings_what_the_hints_promise():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        extra = tomllib.load(f)["project"]["optional-dependencies"]["remote"]
    names = {re.split(r"[<>=\[; ]", spec, maxsplit=1)[0].replace("-", "_") for spec in extra}
    assert names == set(backends.IN_REMOTE_EXTRA)
    assert "huggingface_hub" in names  # hf:// with the extra installed


def test_a_store_made_early_gets_its_whole_first_contact_window(served, monkeypatch):
    """A Saver made before training makes its store long before the first save: that call
    still gets the whole window (only a call right after the store was made shares it)."""

    _, url, _ = served
    monkeypatch.setattr(remote, "FIRST_CONTACT_SECONDS", 1.0)
    monkeypatch.setattr(storage, "_stores", {})
    store = storage.of(f"{url}/run")
    time.sleep(1.2)
    assert store.kind(f"{url}/run/checkpoint") == "file"


# --------------------------------------------------------------------------- versions pinned, one deadline per read

@pytest.mark.parametrize("mode", ["honours", "ignores", "last-modified"])
def test_a_safetensors_file_replaced_between_two_reads_is_changed_never_mixed(served, mode):
    """The server swaps the file (same layout, other values, another ETag) before the last
    tensor's request: a 412 (If-Match / If-Unmodified-Since honoured) or the answer's own
    ETag says so (storage raises CheckpointChangedError), and the reader opens the new
    version, as it reopens a re-saved local checkpoint: never a tensor read from one
    version's offsets in the other's bytes."""
    from safetensors.numpy import save_file  # noqa: PLC0415 - the reference implementation

    root, url, counter = served
    os.makedirs(os.path.join(root, "swap"), exist_ok=True)
    path = os.path.join(root, "swap", f"{mode}.safetensors")
    old = {"a": np.zeros(4, np.float32), "b": np.zeros(4, np.float32)}
    new = {k: v + 1 for k, v in old.items()}
    save_file(old, path)
    save_file(new, path + ".v2")
    os.utime(path, (1_000_000_000, 1_000_000_000))  # Last-Modified has a second's resolution
    target = f"{url}/swap/{mode}.safetensors"
    try:
        counter.update(swap_mode=mode, swap_gets=0, swap_after=None)
        with ckptkit.CheckpointReader(target) as reader:
            counter["swap_after"] = counter["swap_gets"] + 1  # replaced after the next read
            assert reader.get_tensor("a").tolist() == [0, 0, 0, 0]
            assert reader.generation == 0
            assert reader.get_tensor("b").tolist() == [1, 1, 1, 1]  # the change seen: reopened
            assert reader.generation == 1 and reader.get_tensor("a").tolist() == [1, 1, 1, 1]
        assert same_values(ckptkit.load(target), new)  # the new version, whole
    finally:
        counter["swap_after"] = None


def _copy_run(root: str, name: str) -> None:
    if not os.path.exists(os.path.join(root, name)):
        shutil.copytree(os.path.join(root, "run"), os.path.join(root, name))


def test_a_stalled_server_fails_at_the_read_deadline_not_after_every_retry(served, monkeypatch):
    """Each attempt stalls until the socket timeout (0.8 s here): four attempts and their
    back-offs would take 4.6 s; the read's one deadline (2 s) ends it."""
    root, url, _ = served
    _copy_run(root, "stalled")
    monkeypatch.setattr(storage, "HTTP_TIMEOUT_SECONDS", 0.8)
    monkeypatch.setattr(storage, "_stores", {})
    monkeypatch.setenv("CKPTKIT_READ_DEADLINE", "2")
    started = time.monotonic()
    with pytest.raises(StorageError, match="within its deadline of 2 s") as exc:
        ckptkit.load(f"{url}/stalled/model.ckpt-5")
    took = time.monotonic() - started
    assert took < 4, took
    assert f"{url}/stalled/model.ckpt-5.data-00000-of-00001" in str(exc.value)


def test_a_server_dripping_a_byte_at_a_time_fails_at_the_read_deadline(served, monkeypatch):
    """A byte every 0.2 s never trips a socket timeout; the read's deadline still ends it."""
    root, url, _ = served
    _copy_run(root, "drip")
    monkeypatch.setenv("CKPTKIT_READ_DEADLINE", "2")
    shard = f"{url}/drip/model.ckpt-5.data-00000-of-00001"
    started = time.monotonic()
    with pytest.raises(StorageError, match="within its deadline of 2 s") as exc:
        ckptkit.load(f"{url}/drip/model.ckpt-5")
    took = time.monotonic() - started
    assert 1.9 < took < 4, took
    assert shard in str(exc.value)
    env = subprocess_env()
    env["CKPTKIT_READ_DEADLINE"] = "2"
    res = subprocess.run([*CKPTKIT, "verify", f"{url}/drip/model.ckpt-5"], capture_output=True, text=True,
                         env=env, timeout=60, check=False)
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [res.stderr.strip()], res.stderr
    assert "deadline of 2 s" in res.stderr and shard in res.stderr and "Traceback" not in res.stderr


def test_a_read_deadline_that_is_no_number_is_named(served, monkeypatch):
    _, url, _ = served
    monkeypatch.setenv("CKPTKIT_READ_DEADLINE", "soon")
    with pytest.raises(InvalidArgumentError, match="CKPTKIT_READ_DEADLINE='soon'"):
        ckptkit.load(f"{url}/run/model.ckpt-5")


def test_an_s3_object_replaced_while_open_is_changed_or_read_in_its_opened_version(s3):
    """Unversioned bucket: reads carry the ETag as IfMatch and a replaced object fails.
    Versioned bucket: reads ask for the VersionId opened and still get its bytes."""
    import boto3  # noqa: PLC0415 - comes with moto

    client = boto3.client("s3", aws_access_key_id="testing", aws_secret_access_key="testing",
                          **s3["client_kwargs"])
    client.create_bucket(Bucket="versioned")
    client.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    for bucket in ("bucket", "versioned"):
        url = f"s3://{bucket}/{uuid.uuid4().hex[:8]}/weights.bin"
        with storage.options(s3):
            store = storage.of(url)
            store.fs.pipe_file(store.key(url), b"old bytes, version one")
            handle = store.open(url, "weights file")
            assert handle.read(3, 0) == b"old"
            store.fs.pipe_file(store.key(url), b"NEW BYTES, VERSION TWO")
            if bucket == "bucket":
                with pytest.raises(CheckpointChangedError, match="replaced on the store") as exc:
                    handle.read(5, 4)
                assert url in str(exc.value)
            else:
                assert handle.read(5, 4) == b"bytes"  # the version opened, not the new one
            assert store.open(url, "weights file").read(5, 4) == b"BYTES"  # opened again: the new one
