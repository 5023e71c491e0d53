"""A Saver, CLI edits and readers racing on one directory for a few seconds.

A Saver process saves over and over (with global_step and max_to_keep=3, or re-saving
one prefix without global_step); meanwhile `python -m ckptkit rename/rm/ema` edit the
checkpoint in place (the prefix the Saver re-saves: the read-then-publish race) and
reader threads load the latest checkpoint and the prefix. Every value of a save is a
function of its step, so a reader that mixed two saves is caught by value as well as
by checksum. Asserted: readers never see "no checkpoint" for a prefix that existed
before; edits succeed or fail cleanly (DirectoryLockedError/ConcurrentModificationError
or "tensor not found", exit 1, one line, never a traceback); once everything stops,
every checkpoint on disk verifies (`ckptkit verify`), the directory holds no temp,
journal or lock file, and TF reads the latest checkpoint as ckptkit does.
A reader that opened the index before a re-save and a data shard after it reopens the
new checkpoint (CheckpointReader), so no read is ever torn: a DataLossError fails the
test. Outcome counts are printed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter

import numpy as np
import pytest
from helpers import leftovers, same_values, subprocess_env, tf_values

import ckptkit
from ckptkit.errors import CheckpointError, DataLossError, NotFoundError
from ckptkit.ops import edit

DURATION = 6.0

SAVER = r"""
import json, os, sys, time
import numpy as np
import ckptkit
from ckptkit.errors import CheckpointError

directory, mode, duration = sys.argv[1], sys.argv[2], float(sys.argv[3])

def values(step):
    return {"a": np.full(200_000, step, np.float32), "extra": np.full(50_000, step, np.float32),
            "v": np.full(1000, step, np.float32),
            "v/ExponentialMovingAverage": np.full(1000, step + 0.5, np.float32),
            "step": np.int64(step)}

saver = ckptkit.Saver(max_to_keep=3, save_relative_paths=True)
counts = {"saved": 0}
end = time.monotonic() + duration
step = 1
print("ready", flush=True)
while time.monotonic() < end:
    step += 1
    try:
        if mode == "step":
            saver.save(values(step), os.path.join(directory, "model"), global_step=step)
        else:
            saver.save(values(step), os.path.join(directory, "m"))
        counts["saved"] += 1
    except CheckpointError as exc:
        counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1
print(json.dumps(counts), flush=True)
"""


def check_consistent(vals: dict) -> None:
    """Every tensor comes from one save (a function of its step), whatever edits did to the names."""
    step = int(vals["step"])
    for key, value in vals.items():
        if key != "step":
            assert set(np.unique(value).tolist()) <= {step, step + 0.5}, (key, step)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ckptkit", *args], capture_output=True, text=True,
                          timeout=90, env=subprocess_env(), check=False)


EDITS = [("rename", "a", "a2"), ("rename", "a2", "a"), ("rm", "extra"), ("ema",)]


def editor(prefix: str, stop: threading.Event, outcomes: Counter, problems: list) -> None:
    i = 0
    while not stop.is_set():
        cmd, *args = EDITS[i % len(EDITS)]
        i += 1
        done = cli(cmd, "-c", prefix, *args)
        # the one error line, after a note naming the lock's holder if the edit waited for it
        err = "\n".join(line for line in done.stderr.strip().splitlines()
                        if "waiting for another ckptkit writer to finish" not in line)
        if done.returncode == 0:
            outcomes[f"{cmd} ok"] += 1
            continue
        if done.returncode != 1 or "Traceback" in err or "internal error" in err or len(err.splitlines()) != 1:
            problems.append(f"{cmd} {args}: exit {done.returncode}: {err}")
        if "checksum" in err or "DataLoss" in err:
            problems.append(f"{cmd} {args}: {err}")
        if "another ckptkit writer" in err:
            outcomes[f"{cmd} locked out"] += 1
        elif "changed by another program" in err:
            outcomes[f"{cmd} concurrent modification"] += 1
        elif "not found" in err or "no moving averages" in err:
            outcomes[f"{cmd} nothing to do"] += 1
        else:
            outcomes[f"{cmd} other: {err[-80:]}"] += 1


def reader(directory: str, prefix: str | None, stop: threading.Event, outcomes: Counter, problems: list) -> None:
    while not stop.is_set():
        latest = ckptkit.latest_checkpoint(directory)
        if latest is None:
            problems.append("latest_checkpoint is None")
            continue
        target = prefix or latest
        try:
            check_consistent(ckptkit.load(target))
            with ckptkit.CheckpointReader(target) as r:
                check_consistent({k: r.get_tensor(k) for k in r})
            outcomes["read ok"] += 1
        except NotFoundError as exc:
            if prefix is None and ckptkit.latest_checkpoint(directory) != latest:
                outcomes["pruned while reading (Saver moved on)"] += 1
            else:
                problems.append(f"no checkpoint: {exc}")
        except DataLossError as exc:  # a torn read: the reader reopens a replaced checkpoint instead
            problems.append(f"torn read: {exc}")
        except CheckpointError as exc:
            outcomes[f"transient {type(exc).__name__}: {str(exc)[-60:]}"] += 1
        except AssertionError as exc:
            problems.append(f"mixed values: {exc}")


@pytest.mark.parametrize("mode", ["step", "same-prefix"])
def test_saver_edits_and_readers_race(mode, tmp_path, tf):
    directory = str(tmp_path)
    # the first checkpoint exists before the race starts
    first = ckptkit.Saver(save_relative_paths=True)
    base = {"a": np.full(200_000, 1, np.float32), "extra": np.full(50_000, 1, np.float32),
            "v": np.full(1000, 1, np.float32), "v/ExponentialMovingAverage": np.full(1000, 1.5, np.float32),
            "step": np.int64(1)}
    first.save(base, os.path.join(directory, "model-1" if mode == "step" else "m"))
    prefix = None if mode == "step" else os.path.join(directory, "m")
    edit_target = directory if mode == "step" else prefix

    saver = subprocess.Popen([sys.executable, "-c", SAVER, directory, mode, str(DURATION)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        assert saver.stdout.readline() == "ready\n", saver.stderr.read()
        stop = threading.Event()
        edits, reads = Counter(), Counter()
        problems: list[str] = []
        threads = [threading.Thread(target=editor, args=(edit_target, stop, edits, problems)),
                   threading.Thread(target=editor, args=(edit_target, stop, edits, problems))]
        threads += [threading.Thread(target=reader, args=(directory, prefix, stop, reads, problems))
                    for _ in range(2)]
        for t in threads:
            t.start()
        out, err = saver.communicate(timeout=DURATION + 120)
        stop.set()
        for t in threads:
            t.join(timeout=120)
            assert not t.is_alive(), "a racing thread hangs"
    finally:
        if saver.poll() is None:
            saver.kill()
            saver.wait()
    assert saver.returncode == 0, err
    saved = json.loads(out.strip().splitlines()[-1])
    print(f"\n{mode}: saver {saved}\n  edits {dict(edits)}\n  reads {dict(reads)}")
    assert not problems, problems[:10]
    assert saved["saved"] > 3 and reads["read ok"] > 10 and sum(edits.values()) > 3

    # Nothing permanent: every checkpoint on disk verifies, TF agrees on the latest.
    assert leftovers(directory) == []
    indexes = sorted(n[: -len(".index")] for n in os.listdir(directory) if n.endswith(".index"))
    assert indexes
    for name in indexes:
        done = cli("verify", os.path.join(directory, name))
        assert done.returncode == 0, done.stdout + done.stderr
        check_consistent(ckptkit.load(os.path.join(directory, name)))
    latest = ckptkit.latest_checkpoint(directory)
    assert latest is not None
    assert same_values(tf_values(tf, latest), ckptkit.load(latest))


def test_edit_of_a_checkpoint_pruned_before_the_lock_says_not_found(tmp_path, monkeypatch):
    """What was resolved is checked again under the lock: a checkpoint pruned meanwhile is 'not found'."""
    prefix = str(tmp_path / "model-5")
    ckptkit.save(prefix, {"a": np.float32(1)})
    real = edit.locate

    def resolve_then_pruned(path):
        found = real(path)
        for name in os.listdir(tmp_path):  # the Saver's pruning, right after the edit resolved it
            os.unlink(tmp_path / name)
        return found

    monkeypatch.setattr(edit, "locate", resolve_then_pruned)
    with pytest.raises(NotFoundError):
        edit.rename_keys(prefix, {"a": "b"})
