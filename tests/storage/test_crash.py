"""Crash safety: SIGKILL a process in the middle of saving, over and over.

A child process runs the usual training-loop pattern: recover the Saver's list from
the `checkpoint` state file, resume from the latest checkpoint's global_step, then
save every step (a few MB, values a function of the step) with max_to_keep=3. The
test kills it at random moments — in the middle of writing shards, renaming, writing
the .meta, the state file, or pruning — and after every kill checks that
`latest_checkpoint` names a checkpoint that reads back whole with exactly the values
of its step, and that every checkpoint the state file lists does too. The next
child's first save sweeps the temp files the killed one left.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import subprocess_env

import ckptkit
from ckptkit.storage import files

KILLS = 30

CHILD = r"""
import os, sys
import numpy as np
import ckptkit

def values(step):
    return {"w": np.full((512, 1024), step, np.float32),                      # 2 MB
            "b": np.arange(100_000, dtype=np.float64) + step,                 # 0.8 MB
            "names": np.array([f"s{step}-{i}".encode() for i in range(1000)], dtype=object),
            "global_step": np.int64(step)}

directory, count = sys.argv[1], int(sys.argv[2])
saver = ckptkit.Saver(max_to_keep=3)
state = ckptkit.get_checkpoint_state(directory)
start = 0
if state is not None:
    saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
    latest = ckptkit.latest_checkpoint(directory)
    if latest is not None:
        start = int(ckptkit.load_variable(latest, "global_step")) + 1
print("ready", start, flush=True)
for step in range(start, start + count):
    saver.save(values(step), os.path.join(directory, "model.ckpt"), global_step=step)
    print("saved", step, flush=True)
"""


def expected(step: int) -> dict:
    return {"w": np.full((512, 1024), step, np.float32),
            "b": np.arange(100_000, dtype=np.float64) + step,
            "names": [f"s{step}-{i}".encode() for i in range(1000)],
            "global_step": step}


def assert_whole(prefix: str) -> int:
    """The checkpoint reads back whole, with its own step's values; returns the step."""
    step = int(prefix.rsplit("-", 1)[1])
    got = ckptkit.load(prefix)
    want = expected(step)
    assert set(got) == set(want), prefix
    np.testing.assert_array_equal(got["w"], want["w"])
    np.testing.assert_array_equal(got["b"], want["b"])
    assert list(got["names"]) == want["names"]
    assert int(got["global_step"]) == step
    return step


def temp_files(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if files.is_temp_name(n))


def run_child(directory: str, count: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, directory, str(count)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env())


def test_sigkill_while_saving(tmp_path):
    directory = str(tmp_path)
    rng = random.Random(20240607)
    stats = {"saves": 0, "kills_with_temp_files": 0, "kills_before_first_save": 0}
    last_step = -1
    for _ in range(KILLS):
        child = run_child(directory, 1000)
        ready = child.stdout.readline()
        assert ready.startswith("ready"), child.stderr.read()
        assert int(ready.split()[1]) == last_step + 1  # resumed right after the latest checkpoint
        # One save done first (however slow the machine), then the kill lands at a random
        # moment of the saves that follow.
        first = child.stdout.readline()
        assert first.startswith("saved"), child.stderr.read()
        time.sleep(rng.uniform(0.0, 0.12))
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL, err
        # (a kill can cut the last line short: only whole "saved N" lines count)
        saved = [int(parts[1]) for parts in map(str.split, (first + out).splitlines())
                 if len(parts) == 2 and parts[0] == "saved" and parts[1].isdigit()]
        stats["saves"] += len(saved)
        stats["kills_with_temp_files"] += bool(temp_files(directory))
        latest = ckptkit.latest_checkpoint(directory)
        if latest is None:  # killed before its first save completed
            assert last_step == -1
            stats["kills_before_first_save"] += 1
            continue
        step = assert_whole(latest)
        # the state file moves forward: at least to the last save the child reported done
        assert step >= max(saved, default=last_step) and step >= last_step
        last_step = step
        state = ckptkit.get_checkpoint_state(directory)
        assert 1 <= len(state.all_model_checkpoint_paths) <= 3
        for path in state.all_model_checkpoint_paths:
            assert_whole(path)

    # A last, uninterrupted run carries on in the same directory.
    child = run_child(directory, 5)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.splitlines()[0] == f"ready {last_step + 1}"
    state = ckptkit.get_checkpoint_state(directory)
    assert [assert_whole(p) for p in state.all_model_checkpoint_paths] == [last_step + 3, last_step + 4,
                                                                          last_step + 5]
    assert temp_files(directory) == []  # swept by the saves after the kills
    assert not os.path.exists(os.path.join(directory, ".ckptkit.lock"))
    # Orphans: checkpoints a kill interrupted while pruning (TF's Saver leaks those too);
    # they are never in the state file, so never read by mistake.
    indexes = sorted(n for n in os.listdir(directory) if n.endswith(".index"))
    print(f"\n{KILLS} kills, {stats}, {len(indexes)} index files at the end")
    assert stats["saves"] >= KILLS  # every kill landed while saves were under way


# --------------------------------------------------------------------------- the sweep rule

def fake_temp(directory, real_name: str, writer: str | None, pid: int, age: float = 0.0) -> str:
    """A temp file as a writer `writer` (None: an older ckptkit's name) with `pid` leaves it."""
    tag = f"{pid}-0123abcd" if writer is None else f"{writer}-{pid}-0123abcd"
    path = os.path.join(directory, f"{real_name}{files.TEMP_MARKER}{tag}")
    with open(path, "wb") as f:
        f.write(b"partial")
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sweep_deletes_only_dead_or_old_writers_temps(tmp_path):
    here = files.writer_id()
    other = "0" * 8 if here != "0" * 8 else "1" * 8
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gone = dead_pid()
        keep = [
            fake_temp(tmp_path, "m-1.index", here, live.pid),            # a live writer here
            fake_temp(tmp_path, "m-1.data-00000-of-00001", here, os.getpid()),  # this very process
            fake_temp(tmp_path, "m-2.index", other, gone),              # elsewhere, recent: can't tell
            fake_temp(tmp_path, "m-3.index", other, 7, age=7200),       # elsewhere, old, but its
            fake_temp(tmp_path, "m-3.meta", other, 7, age=60),          # sibling is fresh: still writing
            fake_temp(tmp_path, "m-4.index", here, live.pid, age=60),
        ]
        drop = [
            fake_temp(tmp_path, "m-5.index", here, gone),                # dead writer here
            fake_temp(tmp_path, "m-5.data-00000-of-00001", here, gone, age=1),
            fake_temp(tmp_path, "m-6.index", other, 8, age=7200),       # elsewhere, all old
            fake_temp(tmp_path, "checkpoint", None, gone, age=7200),    # older name, old
        ]
        keep.append(fake_temp(tmp_path, "model.meta", None, 424242))   # older name, recent
        # not ours, or not here: never touched
        (tmp_path / "sub").mkdir()
        nested = fake_temp(tmp_path / "sub", "m-9.index", here, gone)
        lookalike = str(tmp_path / "notes.ckptkit-tmp-by-hand")
        open(lookalike, "w").close()
        os.mkdir(tmp_path / f"d{files.TEMP_MARKER}{here}-{gone}-00")
        removed = files.sweep_stale_temps(str(tmp_path))
        assert sorted(removed) == sorted(drop)
        for path in keep + [nested, lookalike, str(tmp_path / f"d{files.TEMP_MARKER}{here}-{gone}-00")]:
            assert os.path.exists(path), path
    finally:
        live.kill()
        live.wait()
    # once the live writer is dead, its leftovers go on the next sweep
    assert sorted(files.sweep_stale_temps(str(tmp_path))) == sorted(keep[0:1] + keep[5:6])


def test_saver_sweeps_on_save(tmp_path):
    stale = fake_temp(tmp_path, "model-0.index", files.writer_id(), dead_pid())
    saver = ckptkit.Saver()
    saver.save({"v": np.float32(1)}, str(tmp_path / "model"), global_step=1)
    assert not os.path.exists(stale)
    assert temp_files(str(tmp_path)) == []


def test_temp_names_identify_their_writer(tmp_path):
    name = os.path.basename(files.temp_name(str(tmp_path / "model.ckpt-7.data-00000-of-00001")))
    assert name.startswith("model.ckpt-7.data-00000-of-00001" + files.TEMP_MARKER)
    assert files.parse_temp_name(name) == (files.writer_id(), os.getpid())
    assert files.parse_temp_name("checkpoint.ckptkit-tmp-123-abcdef01") == (None, 123)  # older ckptkit
    for junk in ("checkpoint", "x.ckptkit-tmp-", "x.ckptkit-tmp-abc", ".ckptkit-tmp-1-ab"):
        assert files.parse_temp_name(junk) is None


@pytest.mark.parametrize("moment", ["shards", "index", "meta", "state"])
def test_failure_at_each_step_of_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, moment):
    """An exception (disk full, say) at each step of a save: latest stays whole, temps are gone."""
    saver = ckptkit.Saver(max_to_keep=3)
    small = {"w": np.arange(10, dtype=np.float32), "global_step": np.int64(0)}
    saver.save(small, str(tmp_path / "model"), global_step=0)

    calls = {"n": 0}
    real_close = files.AtomicFile.close
    targets = {"shards": ".data-", "index": ".index", "meta": ".meta", "state": "checkpoint"}

    def failing_close(self):  # the flush + fsync of each new file: where a full disk shows
        if targets[moment] in os.path.basename(self.path) and not self.file.closed:
            calls["n"] += 1
            raise OSError(28, "No space left on device")
        real_close(self)

    monkeypatch.setattr(files.AtomicFile, "close", failing_close)
    with pytest.raises(OSError, match="No space"):
        saver.save({"w": np.arange(10, dtype=np.float32) + 1, "global_step": np.int64(1)},
                   str(tmp_path / "model"), global_step=1)
    assert calls["n"] == 1
    monkeypatch.undo()
    latest = ckptkit.latest_checkpoint(str(tmp_path))
    assert latest == str(tmp_path / "model-0")
    np.testing.assert_array_equal(ckptkit.load(latest)["w"], np.arange(10, dtype=np.float32))
    assert os.path.exists(tmp_path / "model-0.meta")
    assert not os.path.exists(tmp_path / ".ckptkit.lock")
    assert temp_files(str(tmp_path)) == []  # the failed save cleaned up on its way out
    saver.save({"w": np.arange(10, dtype=np.float32) + 2, "global_step": np.int64(2)},
               str(tmp_path / "model"), global_step=2)
    assert temp_files(str(tmp_path)) == []
    assert ckptkit.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model-2")
