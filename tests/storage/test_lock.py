"""Two Savers in one directory: detected by the directory lock, never a corrupted state file."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import subprocess_env

import ckptkit
from ckptkit.errors import CheckpointError
from ckptkit.storage import files
from ckptkit.storage.lock import LOCK_FILENAME, DirectoryLock, DirectoryLockedError

HOLDER = r"""
import sys
from ckptkit.storage.lock import DirectoryLock
with DirectoryLock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()          # hold until told (or killed)
print("released", flush=True)
"""

SAVER = r"""
import os, sys
import numpy as np
import ckptkit
from ckptkit.storage.lock import DirectoryLockedError
directory, name, count, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
saver = ckptkit.Saver(max_to_keep=2, lock_timeout=None if timeout == "none" else float(timeout))
print("ready", flush=True)
sys.stdin.readline()              # start together
ok = refused = 0
for step in range(count):
    try:
        saver.save({"v": np.full(200_000, step, np.float32)}, os.path.join(directory, name), global_step=step)
        ok += 1
    except DirectoryLockedError as exc:
        assert "another ckptkit writer is writing to" in str(exc) and "pid" in str(exc), exc
        refused += 1
print(ok, refused, flush=True)
"""


def spawn(script: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path until told to let go."""
    proc = spawn(HOLDER, tmp_path)
    assert proc.stdout.readline() == "locked\n", proc.stderr.read()
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def save(directory, step: int, **kwargs) -> str:
    return ckptkit.Saver(**kwargs).save({"v": np.float32(step)}, os.path.join(directory, "model"),
                                        global_step=step)


def test_second_saver_fails_clearly_and_writes_nothing(tmp_path, holder):
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(DirectoryLockedError) as info:
        save(tmp_path, 1)
    message = str(info.value)
    assert f"another ckptkit writer is writing to {tmp_path} (pid {holder.pid} on " in message
    assert isinstance(info.value, CheckpointError)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, nothing swept
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.stdout.readline() == "released\n"
    assert save(tmp_path, 1) == str(tmp_path / "model-1")
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "model-1.data-00000-of-00001", "model-1.index",
                                            "model-1.meta"]


def test_lock_timeout_waits_for_the_other_saver(tmp_path, holder):
    def let_go():
        time.sleep(0.5)
        holder.stdin.write("\n")
        holder.stdin.flush()

    threading.Thread(target=let_go).start()
    start = time.monotonic()
    assert save(tmp_path, 2, lock_timeout=10) == str(tmp_path / "model-2")
    assert 0.4 < time.monotonic() - start < 5
    with pytest.raises(CheckpointError, match="lock_timeout"):
        ckptkit.Saver(lock_timeout=-1)


def test_a_killed_holder_leaves_no_lock(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert os.path.exists(tmp_path / LOCK_FILENAME)  # the file stays, the flock died with its holder
    assert save(tmp_path, 3) == str(tmp_path / "model-3")
    assert not os.path.exists(tmp_path / LOCK_FILENAME)


@pytest.mark.parametrize("timeout", ["none", "0"])
def test_two_processes_saving_at_once(tmp_path, timeout):
    """Two Saver processes hammer one directory: waiting, both finish; not waiting, one is refused.

    Either way the state file always parses and names a whole checkpoint, and no temp
    file or lock file is left behind.
    """
    count = 25
    procs = [spawn(SAVER, tmp_path, name, count, timeout) for name in ("a", "b")]
    for proc in procs:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
    for proc in procs:
        proc.stdin.write("\n")
        proc.stdin.flush()
    results = []
    while any(p.poll() is None for p in procs):  # meanwhile, a reader watches the state file
        latest = ckptkit.latest_checkpoint(str(tmp_path))
        if latest is not None:
            try:
                value = ckptkit.load(latest)["v"]
            except ckptkit.NotFoundError:
                continue  # pruned by the other Saver between lookup and read: the race TF has too
            assert (value == value[0]).all()
        time.sleep(0.01)
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(tuple(int(x) for x in out.split()[-2:]))
    ok = sum(r[0] for r in results)
    refused = sum(r[1] for r in results)
    assert ok + refused == 2 * count
    if timeout == "none":
        assert refused == 0
    else:
        assert refused > 0, results  # the saves did overlap, and were refused rather than interleaved
    latest = ckptkit.latest_checkpoint(str(tmp_path))
    assert latest is not None and ckptkit.load(latest)["v"].shape == (200_000,)
    assert not [n for n in os.listdir(tmp_path) if files.is_temp_name(n) or n == LOCK_FILENAME]


def test_two_threads_exclude_each_other(tmp_path):
    """flock belongs to an open file: two Savers in one process are caught as well."""
    lock = DirectoryLock(str(tmp_path))
    lock.acquire()
    caught = []

    def other_thread():
        try:
            save(tmp_path, 4)
        except DirectoryLockedError as exc:
            caught.append(exc)

    try:
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert len(caught) == 1 and f"pid {os.getpid()}" in str(caught[0])
        # the lock is reentrant within its own thread: a writer inside a writer goes on
        assert save(tmp_path, 3) == str(tmp_path / "model-3")
    finally:
        lock.release()
    assert save(tmp_path, 4) == str(tmp_path / "model-4")


def test_lock_file_symlink_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("precious")
    os.symlink(target, tmp_path / LOCK_FILENAME)
    with pytest.raises(CheckpointError, match="symlink"):
        save(tmp_path, 5)
    assert target.read_text() == "precious"


EDIT_HOLDER = HOLDER.replace("DirectoryLock(sys.argv[1])", "DirectoryLock(sys.argv[1], role='edit')")


def test_a_waiting_saver_says_whom_it_waits_for(tmp_path, caplog):
    """A Saver waits up to 60 s for an edit; after a second it logs the holder: pid, role,
    command, since when (a hung edit used to make it wait in silence)."""
    proc = spawn(EDIT_HOLDER, tmp_path)
    try:
        assert proc.stdout.readline() == "locked\n", proc.stderr.read()

        def let_go():
            time.sleep(2.0)
            proc.stdin.write("\n")
            proc.stdin.flush()

        threading.Thread(target=let_go).start()
        with caplog.at_level("WARNING", logger="ckptkit.storage.lock"):
            assert save(tmp_path, 3) == str(tmp_path / "model-3")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    (record,) = [r for r in caplog.records if r.name == "ckptkit.storage.lock"]
    message = record.getMessage()
    assert message.startswith(f"{tmp_path}: waiting for another ckptkit writer to finish (pid {proc.pid} on ")
    assert f", edit, `-c {tmp_path}`, since " in message and " s ago)" in message
