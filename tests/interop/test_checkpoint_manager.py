"""ckptkit.CheckpointManager against tf.train.CheckpointManager, save by save.

Each test runs the same saves through TF's manager (on a tf.train.Checkpoint of
tf.Variables) and ckptkit's (on a ckptkit.Checkpoint of the same numpy values), in
sibling directories, under one fake clock both see (`time.time` patched: TF's
checkpoint_management reads it for timestamps). After every save both directories
must hold the same file names, byte-identical `checkpoint` state files (paths are
relative, timestamps from the clock) and byte-identical checkpoint files, and the
managers must report the same `checkpoints` and `latest_checkpoint`.
"""
from __future__ import annotations

import os
import threading
import time
import types

import numpy as np
import pytest

import ckptkit
from ckptkit.errors import InvalidArgumentError

T0 = 1_700_000_000.0
HOUR = 3600.0
FILES = (".index", ".data-00000-of-00001")


@pytest.fixture
def clock(monkeypatch):
    """A fake `time.time` shared by TF's checkpoint_management and ours; tests set `clock.now`."""
    c = types.SimpleNamespace(now=T0)
    monkeypatch.setattr(time, "time", lambda: c.now)
    return c


class Pair:
    """A TF manager and a ckptkit manager over the same values, in tmp/tf and tmp/ck."""

    def __init__(self, tf, tmp_path, step=0, **kwargs) -> None:
        self.tf_mod = tf
        self.dirs = {"tf": tmp_path / "tf", "ck": tmp_path / "ck"}
        self.kernel = np.arange(6, dtype=np.float32).reshape(2, 3)
        self.tf_step = tf.Variable(np.int64(step))
        self.ck_step = np.array(step, np.int64)  # updated in place, as the TF variable is assigned
        self.tf_ckpt = tf.train.Checkpoint(model={"kernel": tf.Variable(self.kernel)}, step=self.tf_step)
        self.ck_ckpt = ckptkit.Checkpoint(model={"kernel": self.kernel.copy()}, step=self.ck_step)
        self.init_calls: list[str] = []
        self.new_managers(**kwargs)

    def new_managers(self, **kwargs) -> None:
        """Managers as a restarted process makes them: recovering the directory's state."""
        counter = kwargs.pop("step_counter", None)
        self.tf = self.tf_mod.train.CheckpointManager(
            self.tf_ckpt, str(self.dirs["tf"]), init_fn=lambda: self.init_calls.append("tf"),
            step_counter=self.tf_step if counter else None, **kwargs)
        self.ck = ckptkit.CheckpointManager(
            self.ck_ckpt, self.dirs["ck"], init_fn=lambda: self.init_calls.append("ck"),
            step_counter=self.ck_step if counter else None, **kwargs)
        self.check()

    def set_step(self, step: int) -> None:
        self.tf_step.assign(step)
        self.ck_step[...] = step

    def save(self, **kwargs):
        tf_kwargs = dict(kwargs)
        if isinstance(kwargs.get("checkpoint_number"), np.ndarray):
            tf_kwargs["checkpoint_number"] = self.tf_mod.Variable(kwargs["checkpoint_number"])
        got = {"tf": self.tf.save(**tf_kwargs), "ck": self.ck.save(**kwargs)}
        names = {who: None if p is None else os.path.relpath(p, self.dirs[who]) for who, p in got.items()}
        assert names["ck"] == names["tf"]
        self.check()
        if got["ck"] is not None:
            for suffix in FILES:  # the same counter and values: the same bytes
                assert (self.dirs["tf"] / (names["tf"] + suffix)).read_bytes() == \
                    (self.dirs["ck"] / (names["ck"] + suffix)).read_bytes(), suffix
        return names["ck"]

    def rel(self, who: str, paths):
        return [os.path.relpath(p, self.dirs[who]) for p in paths]

    def check(self) -> None:
        tf_dir, ck_dir = self.dirs["tf"], self.dirs["ck"]
        tf_files = sorted(os.listdir(tf_dir)) if tf_dir.exists() else []
        ck_files = sorted(os.listdir(ck_dir)) if ck_dir.exists() else []
        assert ck_files == tf_files
        if "checkpoint" in tf_files:
            assert (ck_dir / "checkpoint").read_bytes() == (tf_dir / "checkpoint").read_bytes()
        assert self.rel("ck", self.ck.checkpoints) == self.rel("tf", self.tf.checkpoints)
        latest = {"tf": self.tf.latest_checkpoint, "ck": self.ck.latest_checkpoint}
        assert (latest["ck"] is None) == (latest["tf"] is None)
        if latest["ck"] is not None:
            assert self.rel("ck", [latest["ck"]]) == self.rel("tf", [latest["tf"]])


@pytest.fixture
def pair(tf, tmp_path, clock):
    return lambda **kwargs: Pair(tf, tmp_path, **kwargs)


def state_text(pair: Pair) -> str:
    return (pair.dirs["ck"] / "checkpoint").read_text()


# ---- the save sequence -------------------------------------------------------------

def test_max_to_keep_and_n_hours_like_tf(pair, clock):
    p = pair(max_to_keep=2, keep_checkpoint_every_n_hours=1.0)
    for i in range(12):
        clock.now = T0 + i * 20 * 60 + 0.25  # every 20 minutes: every third one is preserved
        assert p.save() == f"ckpt-{i + 1}"
    text = state_text(p)
    assert "all_model_checkpoint_timestamps" in text and "last_preserved_timestamp" in text
    preserved = sorted(n for n in os.listdir(p.dirs["ck"]) if n.endswith(".index"))
    assert len(preserved) > 2  # kept by keep_checkpoint_every_n_hours, beyond the last two
    assert p.ck.checkpoints == [os.path.join(p.dirs["ck"], n) for n in ("ckpt-11", "ckpt-12")]


def test_restart_recovers_state_like_tf(pair, clock):
    p = pair(max_to_keep=3, keep_checkpoint_every_n_hours=0.5)
    for i in range(5):
        clock.now = T0 + i * 1000
        p.save()
    # a restarted job: fresh managers on the same checkpoints, restoring the latest
    clock.now = T0 + 2 * HOUR
    p.new_managers(max_to_keep=2, keep_checkpoint_every_n_hours=0.5)
    assert p.ck.restore_or_initialize() == p.ck.latest_checkpoint
    assert p.tf.restore_or_initialize() == p.tf.latest_checkpoint
    assert p.ck_ckpt.save_counter == int(p.tf_ckpt.save_counter.numpy()) == 5
    for i in range(4):
        clock.now = T0 + 2 * HOUR + i * 1000
        assert p.save() == f"ckpt-{6 + i}"
    assert p.init_calls == []


def test_clock_behind_the_state_file(pair, clock):
    p = pair(max_to_keep=2, keep_checkpoint_every_n_hours=1.0)
    for i in range(4):
        clock.now = T0 + i * HOUR
        p.save()
    clock.now = T0 + HOUR  # the clock went back: recovered times are clamped to it
    p.new_managers(max_to_keep=2, keep_checkpoint_every_n_hours=1.0)
    for _ in range(3):
        clock.now += 600
        p.save()


def test_checkpoint_number_and_resaving_a_number(pair, clock):
    p = pair(max_to_keep=3)
    assert p.save(checkpoint_number=100) == "ckpt-100"
    clock.now += 1
    assert p.save(checkpoint_number=np.int64(7)) == "ckpt-7"
    clock.now += 1
    assert p.save(checkpoint_number=np.array(100, np.int64)) == "ckpt-100"  # moves to the end of the list
    clock.now += 1
    assert p.save() == "ckpt-4"  # the counter counted every save
    clock.now += 1
    p.save(checkpoint_number=5)
    assert p.ck.checkpoints[-1].endswith("ckpt-5")


def test_max_to_keep_none_keeps_everything(pair, clock):
    p = pair(max_to_keep=None)
    for _ in range(7):
        clock.now += 10
        p.save()
    assert len(p.ck.checkpoints) == 7


def test_step_counter_and_checkpoint_interval(pair, clock):
    p = pair(max_to_keep=5, step_counter=True, checkpoint_interval=10)
    results = []
    for step, check in [(0, True), (0, True), (5, True), (10, True), (12, False), (12, False),
                        (15, True), (22, True), (40, True)]:
        p.set_step(step)
        clock.now += 1
        results.append(p.save(check_interval=check))
    assert results == ["ckpt-1", None, None, "ckpt-2", "ckpt-3", None, None, "ckpt-4", "ckpt-5"]
    # restore_or_initialize remembers the restored step as the last saved one
    p.set_step(0)
    p.new_managers(max_to_keep=5, step_counter=True, checkpoint_interval=10)
    p.ck.restore_or_initialize()
    p.tf.restore_or_initialize()
    assert int(p.ck_step) == int(p.tf_step.numpy()) == 40  # assigned in place, as TF assigns the variable
    p.set_step(45)
    assert p.save() is None
    p.set_step(50)
    assert p.save() == "ckpt-6"


def test_restore_or_initialize_calls_init_fn_without_checkpoints(pair):
    p = pair(max_to_keep=2)
    assert p.ck.restore_or_initialize() is None and p.tf.restore_or_initialize() is None
    assert p.init_calls == ["ck", "tf"]


def test_recovers_a_state_file_without_timestamps(tf, pair, clock):
    """A state file written by Checkpoint.save (no timestamps) is recovered as TF does."""
    p = pair(max_to_keep=2)
    p.tf_ckpt.save(str(p.dirs["tf"] / "ckpt"))
    p.ck_ckpt.save(p.dirs["ck"] / "ckpt")
    clock.now += 100
    p.new_managers(max_to_keep=2, keep_checkpoint_every_n_hours=1.0)
    for _ in range(3):
        clock.now += 1
        p.save()


# ---- arguments ---------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [{"max_to_keep": 0}, {"max_to_keep": -1}, {"checkpoint_interval": 5}])
def test_bad_arguments_like_tf(tf, tmp_path, kwargs):
    with pytest.raises(ValueError):
        tf.train.CheckpointManager(tf.train.Checkpoint(), str(tmp_path / "tf"), **{"max_to_keep": 1, **kwargs})
    with pytest.raises(InvalidArgumentError):
        ckptkit.CheckpointManager(ckptkit.Checkpoint(), tmp_path / "ck", **{"max_to_keep": 1, **kwargs})


def test_needs_a_ckptkit_checkpoint(tmp_path):
    with pytest.raises(InvalidArgumentError, match="ckptkit.Checkpoint"):
        ckptkit.CheckpointManager({"v": 1}, tmp_path)  # type: ignore[arg-type]


def test_step_counter_forms(tmp_path):
    """A callable, a 0-d array and anything with .numpy() all count; a float is refused."""
    ckpt = ckptkit.Checkpoint(v=np.float32(1))
    box = {"step": 0}
    m = ckptkit.CheckpointManager(ckpt, tmp_path, step_counter=lambda: box["step"], checkpoint_interval=2)
    assert m.save() is not None and m.save() is None
    box["step"] = 2
    assert m.save() is not None
    holder = types.SimpleNamespace(numpy=lambda: np.int32(9))
    m2 = ckptkit.CheckpointManager(ckpt, tmp_path / "b", step_counter=holder, checkpoint_interval=1)
    assert m2.save() is not None
    m3 = ckptkit.CheckpointManager(ckpt, tmp_path / "c", step_counter=np.float32(1.5), checkpoint_interval=1)
    with pytest.raises(InvalidArgumentError, match="step_counter"):
        m3.save()


def test_deletes_only_inside_its_directory(tmp_path, clock):
    """A state file naming a checkpoint elsewhere never makes the manager delete there."""
    outside = ckptkit.Checkpoint(v=np.float32(1)).write(str(tmp_path / "elsewhere" / "ckpt-1"))
    directory = tmp_path / "run"
    directory.mkdir()
    ckptkit.update_checkpoint_state(str(directory), outside, [outside],
                                    all_model_checkpoint_timestamps=[T0], last_preserved_timestamp=T0 - 1)
    m = ckptkit.CheckpointManager(ckptkit.Checkpoint(v=np.float32(2)), directory, max_to_keep=1)
    assert m.checkpoints == [outside]
    clock.now += 1
    m.save()
    assert ckptkit.checkpoint_exists(outside)
    assert [os.path.basename(p) for p in m.checkpoints] == ["ckpt-1"]


# ---- following a directory: checkpoints_iterator ------------------------------------

def test_checkpoints_iterator_yields_each_new_checkpoint(tmp_path):
    ckpt = ckptkit.Checkpoint(v=np.float32(1))
    manager = ckptkit.CheckpointManager(ckpt, tmp_path, max_to_keep=2)
    seen: list[str] = []
    taken = threading.Event()

    def train():
        for _ in range(3):
            taken.clear()
            manager.save()
            assert taken.wait(30)  # the evaluator saw it before the next save supersedes it

    thread = threading.Thread(target=train)
    thread.start()
    try:
        for path in ckptkit.checkpoints_iterator(tmp_path, timeout=3):
            seen.append(path)
            taken.set()
    finally:
        thread.join(60)
    assert [os.path.basename(p) for p in seen] == ["ckpt-1", "ckpt-2", "ckpt-3"]


def test_checkpoints_iterator_matches_tf_and_timeout_fn(tf, tmp_path):
    """TF's iterator and ours, polling a directory with one checkpoint, agree; timeout_fn ends both."""
    prefix = ckptkit.Checkpoint(v=np.float32(1)).save(tmp_path / "ckpt")
    calls = {"tf": 0, "ck": 0}

    def done(who):
        def fn():
            calls[who] += 1
            return calls[who] >= 2
        return fn

    got_tf = list(tf.train.checkpoints_iterator(str(tmp_path), timeout=0.2, timeout_fn=done("tf")))
    got_ck = list(ckptkit.checkpoints_iterator(tmp_path, timeout=0.2, timeout_fn=done("ck")))
    assert got_ck == got_tf == [prefix]
    assert calls == {"tf": 2, "ck": 2}


def test_wait_for_new_checkpoint_times_out(tmp_path):
    start = time.monotonic()
    assert ckptkit.wait_for_new_checkpoint(tmp_path, seconds_to_sleep=0.05, timeout=0.3) is None
    assert time.monotonic() - start < 5
    prefix = ckptkit.Checkpoint(v=np.float32(1)).save(tmp_path / "ckpt")
    assert ckptkit.wait_for_new_checkpoint(tmp_path, timeout=0) == prefix
    assert ckptkit.wait_for_new_checkpoint(tmp_path, last_checkpoint=prefix, seconds_to_sleep=0.05,
                                           timeout=0.2) is None
