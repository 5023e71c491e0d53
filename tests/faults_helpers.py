"""Fault-injection helpers for test_faults.py and test_races.py.

`run_forked(op, kill_at=N, when="before"|"after")` runs `op()` in a forked child whose
os.replace/rename/unlink/fsync/link are wrapped: the child SIGKILLs itself right before
or right after the Nth such call (counted over all of them, in the order the writer
makes them). Run with kill_at=None first to learn how many calls the operation makes
(and their trace, for failure messages). Forking is fast (ckptkit and numpy are
already imported), so every step of every writing command can be killed in CI time.
"""
from __future__ import annotations

import json
import os
import select
import signal
import time
import traceback

import numpy as np

import ckptkit
from ckptkit.format import files
from ckptkit.format.commit import JOURNAL_SUFFIX
from ckptkit.format.lock import LOCK_FILENAME

WATCHED = ("replace", "rename", "unlink", "fsync", "link")
CHILD_TIMEOUT = 30.0


def _describe(args) -> str:
    out = []
    for a in args:
        if isinstance(a, (str, bytes, os.PathLike)):
            out.append(os.path.basename(os.fsdecode(a)))
        else:
            out.append("fd")
    return ",".join(out)


def _child(op, kill_at: int | None, when: str, wfd: int) -> None:
    """Runs in the forked child; never returns."""
    code = 0
    try:
        from ckptkit.format import bundle
        bundle._POOL = None  # the parent's reader threads do not exist in the child
        state = {"count": 0, "trace": []}

        def wrap(name, real):
            def wrapper(*args, **kwargs):
                state["count"] += 1
                n = state["count"]
                if kill_at is None:
                    state["trace"].append(f"{name}({_describe(args)})")
                if n == kill_at and when == "before":
                    os.kill(os.getpid(), signal.SIGKILL)
                try:
                    return real(*args, **kwargs)
                finally:
                    if n == kill_at and when == "after":
                        os.kill(os.getpid(), signal.SIGKILL)
            return wrapper

        for name in WATCHED:
            setattr(os, name, wrap(name, getattr(os, name)))
        op()
        result = {"count": state["count"], "trace": state["trace"]}
    except BaseException:  # noqa: BLE001 - reported to the parent
        result = {"error": traceback.format_exc()}
        code = 1
    try:
        os.write(wfd, json.dumps(result).encode())
    finally:
        os._exit(code)


def run_forked(op, kill_at: int | None = None, when: str = "before",
               kill_after_seconds: float | None = None) -> dict:
    """Fork, run `op()` in the child, wait. Returns {"killed": bool, "count", "trace"} or
    raises AssertionError with the child's traceback if `op` raised."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        _child(op, kill_at, when, wfd)
    os.close(wfd)
    chunks = []
    deadline = time.monotonic() + CHILD_TIMEOUT
    kill_time = None if kill_after_seconds is None else time.monotonic() + kill_after_seconds
    try:
        while True:
            now = time.monotonic()
            if now > deadline:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"child hung for {CHILD_TIMEOUT} s (kill_at={kill_at} {when})")
            wait = deadline - now if kill_time is None else max(0.0, kill_time - now)
            ready, _, _ = select.select([rfd], [], [], min(wait, 1.0))
            if kill_time is not None and time.monotonic() >= kill_time and not ready:
                os.kill(pid, signal.SIGKILL)
                kill_time = None
                continue
            if ready:
                data = os.read(rfd, 1 << 20)
                if not data:
                    break
                chunks.append(data)
    finally:
        os.close(rfd)
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL, status
        return {"killed": True, "count": None, "trace": []}
    result = json.loads(b"".join(chunks).decode() or "{}")
    if "error" in result:
        raise AssertionError("operation failed in the child:\n" + result["error"])
    result["killed"] = False
    return result


# --------------------------------------------------------------------------- checks

def leftovers(directory: str) -> list[str]:
    """Temp files, journals and the lock file: what must not survive the next operation."""
    return sorted(n for n in os.listdir(directory)
                  if files.is_temp_name(n) or n.endswith(JOURNAL_SUFFIX) or n == LOCK_FILENAME)


def temps_and_journals(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if files.is_temp_name(n) or n.endswith(JOURNAL_SUFFIX))


def same_values(got: dict, want: dict) -> bool:
    if set(got) != set(want):
        return False
    for k, w in want.items():
        g = np.asarray(got[k])
        w = np.asarray(w)
        if g.shape != w.shape:
            return False
        if w.dtype == object or g.dtype == object:
            if [bytes(x) for x in g.reshape(-1)] != [bytes(x) for x in w.reshape(-1)]:
                return False
        elif g.dtype != w.dtype or not np.array_equal(g, w):
            return False
    return True


def read_all(prefix: str) -> dict:
    """ckptkit.load, cross-checked with CheckpointReader (both must agree)."""
    got = ckptkit.load(prefix)
    with ckptkit.CheckpointReader(prefix) as reader:
        again = {k: reader.get_tensor(k) for k in reader}
    assert same_values(again, got), f"load and CheckpointReader disagree on {prefix}"
    return got


def label_of(prefix: str, choices: dict, allow_missing: bool = False) -> str:
    """Which of `choices` ({label: values}) the checkpoint at `prefix` holds, whole."""
    try:
        got = read_all(prefix)
    except ckptkit.NotFoundError:
        if allow_missing:
            return "none"
        raise
    for label, want in choices.items():
        if same_values(got, want):
            return label
    raise AssertionError(f"{prefix} holds neither of {sorted(choices)}: keys {sorted(got)}")


def tf_values(tf, prefix: str) -> dict:
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


def values(seed: int, n: int = 64) -> dict:
    """A small checkpoint's worth of tensors of several dtypes (a function of `seed`)."""
    rng = np.random.default_rng(seed)
    return {"a": rng.standard_normal((n, n)).astype(np.float32),
            "b": np.arange(1000, dtype=np.int64) * (seed + 1),
            "c": np.array([f"s{seed}-{i}".encode() * (i % 5 + 1) for i in range(20)], dtype=object),
            "d": np.float64(seed + 0.5),
            "e": rng.integers(0, 255, size=(3000,), dtype=np.uint8)}
