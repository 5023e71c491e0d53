"""Fault injection for every writing command: kill -9 at every step, and a full disk.

Kill: each writing command runs in a forked child that SIGKILLs itself right before,
or right after, its Nth call of os.replace/rename/unlink/fsync/link, for every N the
command makes (helpers.run_forked). After every kill, on a fresh copy of the
directory:
- the checkpoint reads whole (ckptkit.load and CheckpointReader agree) and holds
  exactly the old values or the new ones (a brand-new prefix may be missing), and the
  sequence of outcomes over the kill points is old...old new...new (one switch-over);
- `latest_checkpoint` (where there is a state file) names a checkpoint that loads whole;
- the next writing operation in the directory succeeds and leaves no temp file, no
  journal and no lock file; what readers saw before it is what is on disk after it
  (recovery rolls forward exactly what readers were shown), and TF reads the same values.
Full disk: the same commands (and convert to .npz, .safetensors, a checkpoint) on a
2 MiB tmpfs filled to leave too little room (or, where tmpfs can't be mounted, with
ENOSPC injected at every write call, persisting): a clean error, the old checkpoint
intact, and no temp file left right away.
"""
from __future__ import annotations

import errno
import io
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from helpers import (
    label_of,
    leftovers,
    run_forked,
    same_values,
    seeded_values,
    temps_and_journals,
    tf_values,
)

import ckptkit
from ckptkit.formats import bundle
from ckptkit.ops import convert, edit
from ckptkit.storage import files as ck_files
from ckptkit.storage.lock import LOCK_FILENAME

OLD, NEW = seeded_values(1), seeded_values(2)
SHADOW = "v/ExponentialMovingAverage"
EDITABLE = {**seeded_values(1), "v": np.arange(10, dtype=np.float32), SHADOW: np.arange(10, dtype=np.float32) + 100}


def renamed(vals: dict, old: str, new: str) -> dict:
    return {(new if k == old else k): v for k, v in vals.items()}


def without(vals: dict, *keys: str) -> dict:
    return {k: v for k, v in vals.items() if k not in keys}


EMA_APPLIED = {**without(EDITABLE, SHADOW), "v": EDITABLE[SHADOW]}
RANK = {"none": 0, "old": 0, "same": 0, "new": 1}


@dataclass
class Scenario:
    build: Callable[[str], None]          # the directory before the command
    op: Callable[[str], None]             # the writing command (runs in the child)
    observe: Callable[[str], str]         # "old"/"new"/"none"/"same", after checking wholeness
    next_op: Callable[[str], None]        # the next writing operation in the directory
    after_next: Callable[[str, str], dict]  # checks after next_op given the label; {prefix: values} for TF


def p(d: str, name: str) -> str:
    return os.path.join(d, name)


def data_files(prefix: str) -> list[str]:
    return sorted(os.path.basename(f) for f in bundle.existing_data_files(prefix))


def expect_shards(prefix: str, n: int) -> None:
    want = [os.path.basename(bundle.data_filename(prefix, s, n)) for s in range(n)]
    assert data_files(prefix) == want


# --------------------------------------------------------------------------- ckptkit.save

def _save_scenario(old_shards: int | None, new_shards: int) -> Scenario:
    def build(d):
        ckptkit.save(p(d, "other"), seeded_values(9))
        if old_shards is not None:
            ckptkit.save(p(d, "m"), OLD, num_shards=old_shards)

    def op(d):
        ckptkit.save(p(d, "m"), NEW, num_shards=new_shards)

    def observe(d):
        label_of(p(d, "other"), {"same": seeded_values(9)})
        choices = {"new": NEW} if old_shards is None else {"old": OLD, "new": NEW}
        return label_of(p(d, "m"), choices, allow_missing=old_shards is None)

    def next_op(d):
        ckptkit.save(p(d, "next"), seeded_values(3))

    def after_next(d, label):
        now = observe(d)
        if label == "none":
            # Killed after the commit point of a brand-new prefix (the journal is written,
            # the index not yet renamed): readers say "no checkpoint" until the next writer
            # rolls the commit forward; either way no data file is left without its index.
            assert now in ("none", "new")
            if now == "none":
                assert data_files(p(d, "m")) == []
                return {p(d, "next"): seeded_values(3)}
        else:
            assert now == label  # recovery completes exactly what readers were shown
        expect_shards(p(d, "m"), new_shards if now == "new" else old_shards)
        return {p(d, "m"): NEW if now == "new" else OLD, p(d, "next"): seeded_values(3)}

    return Scenario(build, op, observe, next_op, after_next)


# --------------------------------------------------------------------------- Saver.save

def _saver_step_scenario() -> Scenario:
    def build(d):
        saver = ckptkit.Saver(max_to_keep=2, save_relative_paths=True)
        for step in (1, 2):
            saver.save(seeded_values(step), p(d, "model"), global_step=step)

    def save_step(d, step):
        saver = ckptkit.Saver(max_to_keep=2, save_relative_paths=True)
        saver.recover_last_checkpoints(list(ckptkit.get_checkpoint_state(d).all_model_checkpoint_paths))
        saver.save(seeded_values(step), p(d, "model"), global_step=step)

    def check_state(d) -> int:
        latest = ckptkit.latest_checkpoint(d)
        assert latest is not None, "latest_checkpoint lost the checkpoint"
        step = int(latest.rsplit("-", 1)[1])
        label_of(latest, {"whole": seeded_values(step)})
        for path in ckptkit.get_checkpoint_state(d).all_model_checkpoint_paths:
            label_of(path, {"whole": seeded_values(int(path.rsplit("-", 1)[1]))})
        return step

    def observe(d):
        step = check_state(d)
        assert step in (2, 3), step
        label_of(p(d, "model-2"), {"whole": seeded_values(2)})  # never pruned here
        return "old" if step == 2 else "new"

    def after_next(d, label):
        assert check_state(d) == 4
        paths = ckptkit.get_checkpoint_state(d).all_model_checkpoint_paths
        assert [os.path.basename(x) for x in paths] == ["model-3" if label == "new" else "model-2", "model-4"]
        return {p(d, "model-4"): seeded_values(4)}

    return Scenario(build, lambda d: save_step(d, 3), observe, lambda d: save_step(d, 4), after_next)


def _saver_same_prefix_scenario() -> Scenario:
    def build(d):
        ckptkit.Saver(save_relative_paths=True).save(OLD, p(d, "m"))

    def observe(d):
        assert ckptkit.latest_checkpoint(d) == p(d, "m")
        return label_of(p(d, "m"), {"old": OLD, "new": NEW})

    def after_next(d, label):
        assert ckptkit.latest_checkpoint(d) == p(d, "m")
        label_of(p(d, "m"), {"next": seeded_values(3)})
        assert os.path.exists(p(d, "m.meta"))
        return {p(d, "m"): seeded_values(3)}

    return Scenario(build, lambda d: ckptkit.Saver(save_relative_paths=True).save(NEW, p(d, "m")), observe,
                    lambda d: ckptkit.Saver(save_relative_paths=True).save(seeded_values(3), p(d, "m")), after_next)


# --------------------------------------------------------------------------- edits in place

def _edit_scenario(op, new: dict, *, removed_before: str | None = None) -> Scenario:
    """An in-place edit of `m` (EDITABLE, 2 shards); the next op renames d -> d2 in place."""
    old = EDITABLE if removed_before is None else without(EDITABLE, removed_before)

    def build(d):
        ckptkit.save(p(d, "m"), EDITABLE, num_shards=2)
        if removed_before is not None:
            edit.remove_keys(p(d, "m"), [removed_before])

    def observe(d):
        choices = {"same": old} if same_values(old, new) else {"old": old, "new": new}
        return label_of(p(d, "m"), choices)

    def after_next(d, label):
        want = renamed(new if label == "new" else old, "d", "d2")
        label_of(p(d, "m"), {"edited": want})
        expect_shards(p(d, "m"), 2)
        return {p(d, "m"): want}

    return Scenario(build, lambda d: op(p(d, "m")), observe,
                    lambda d: edit.rename_keys(p(d, "m"), {"d": "d2"}), after_next)


def _output_scenario(op, new: dict, *, removed_before: str | None = None) -> Scenario:
    """An edit of `m` written with output= onto the existing checkpoint `o` (3 shards)."""
    src = EDITABLE if removed_before is None else without(EDITABLE, removed_before)
    old_o = seeded_values(7)

    def build(d):
        ckptkit.save(p(d, "m"), EDITABLE, num_shards=2)
        if removed_before is not None:
            edit.remove_keys(p(d, "m"), [removed_before])
        ckptkit.save(p(d, "o"), old_o, num_shards=3)

    def observe(d):
        label_of(p(d, "m"), {"same": src})
        return label_of(p(d, "o"), {"old": old_o, "new": new})

    def after_next(d, label):
        want = renamed(new if label == "new" else old_o, "d", "d2")
        label_of(p(d, "o"), {"edited": want})
        label_of(p(d, "m"), {"same": src})
        expect_shards(p(d, "o"), 2 if label == "new" else 3)
        return {p(d, "o"): want, p(d, "m"): src}

    return Scenario(build, lambda d: op(p(d, "m"), p(d, "o")), observe,
                    lambda d: edit.rename_keys(p(d, "o"), {"d": "d2"}), after_next)


# --------------------------------------------------------------------------- state file

def _state_scenario() -> Scenario:
    def build(d):
        ckptkit.save(p(d, "m1"), OLD)
        ckptkit.save(p(d, "m2"), NEW)
        ckptkit.update_checkpoint_state(d, p(d, "m1"), [p(d, "m1")], save_relative_paths=True)

    def observe(d):
        latest = ckptkit.latest_checkpoint(d)
        assert latest in (p(d, "m1"), p(d, "m2")), latest
        return label_of(latest, {"old": OLD, "new": NEW})

    def after_next(d, label):
        assert observe(d) == label
        return {ckptkit.latest_checkpoint(d): OLD if label == "old" else NEW}

    return Scenario(build, lambda d: ckptkit.update_checkpoint_state(
        d, p(d, "m2"), [p(d, "m1"), p(d, "m2")], save_relative_paths=True),
                    observe, lambda d: ckptkit.save(p(d, "next"), seeded_values(3)), after_next)


SCENARIOS = {
    "save-new-prefix": _save_scenario(None, 1),
    "save-new-prefix-3-shards": _save_scenario(None, 3),
    "save-resave": _save_scenario(1, 1),
    "save-resave-2-to-3-shards": _save_scenario(2, 3),
    "saver-global-step-prune": _saver_step_scenario(),
    "saver-same-prefix": _saver_same_prefix_scenario(),
    "rename-in-place": _edit_scenario(lambda m: edit.rename_keys(m, {"a": "z"}), renamed(EDITABLE, "a", "z")),
    "remove-in-place": _edit_scenario(lambda m: edit.remove_keys(m, ["c"]), without(EDITABLE, "c")),
    "ema-in-place": _edit_scenario(lambda m: edit.apply_ema(m), EMA_APPLIED),
    "compact-in-place": _edit_scenario(lambda m: edit.compact(m), without(EDITABLE, "b"), removed_before="b"),
    "rename-output-existing": _output_scenario(lambda m, o: edit.rename_keys(m, {"a": "z"}, output=o,
                                                                                overwrite=True),
                                               renamed(EDITABLE, "a", "z")),
    "compact-output-existing": _output_scenario(lambda m, o: edit.compact(m, output=o, overwrite=True),
                                                without(EDITABLE, "b"), removed_before="b"),
    "update-checkpoint-state": _state_scenario(),
}


def _fresh(template: str, root: str, n: int) -> str:
    d = os.path.join(root, f"case{n}")
    shutil.copytree(template, d, symlinks=True)
    return d


def _check_after_kill(sc: Scenario, d: str, tf, where: str) -> str:
    try:
        label = sc.observe(d)
    except Exception as exc:
        raise AssertionError(f"after a kill {where}: {exc!r}; files: {sorted(os.listdir(d))}") from exc
    sc.next_op(d)
    assert leftovers(d) == [], f"after a kill {where} and the next operation"
    for prefix, want in sc.after_next(d, label).items():
        assert same_values(tf_values(tf, prefix), want), f"TF disagrees on {prefix} after a kill {where}"
    return label


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_kill_at_every_step(name, tmp_path, tf):
    sc = SCENARIOS[name]
    template = str(tmp_path / "template")
    os.makedirs(template)
    sc.build(template)
    assert leftovers(template) == []
    start = time.monotonic()

    # uncounted run: how many calls, and the end state is "new"
    d = _fresh(template, str(tmp_path), 0)
    full = run_forked(lambda: sc.op(d))
    assert not full["killed"]
    k, trace = full["count"], full["trace"]
    assert k > 0
    assert sc.observe(d) in ("new", "same")
    assert temps_and_journals(d) == []
    shutil.rmtree(d)

    labels = []
    temp_left = 0
    n = 0
    for call in range(1, k + 1):
        for when in ("before", "after"):
            n += 1
            d = _fresh(template, str(tmp_path), n)
            where = f"{when} call {call}/{k} {trace[call - 1]}"
            result = run_forked(lambda d=d: sc.op(d), kill_at=call, when=when)
            assert result["killed"], f"the child was not killed {where}: calls are not deterministic"
            temp_left += bool(temps_and_journals(d))
            labels.append((_check_after_kill(sc, d, tf, where), where))
            shutil.rmtree(d)
    ranks = [RANK[label] for label, _ in labels]
    assert ranks == sorted(ranks), "outcomes go back and forth: " + "; ".join(
        f"{label} {where}" for label, where in labels)
    switch = next((where for label, where in labels if label == "new"), "never")
    print(f"\n{name}: {k} calls, {len(labels)} kills in {time.monotonic() - start:.1f} s; "
          f"{temp_left} left temps/journals; new from {switch}\n  trace: {' '.join(trace)}")


# --------------------------------------------------------------------------- random kill times

BIG_OLD = {"w": np.full((768, 1024), 1, np.float32), "x": np.arange(300_000, dtype=np.float64),
           "s": np.array([b"old-%d" % i for i in range(2000)], dtype=object)}
BIG_NEW = {"w": np.full((768, 1024), 2, np.float32), "x": np.arange(300_000, dtype=np.float64) * 2,
           "s": np.array([b"new-%d" % i for i in range(2000)], dtype=object)}


@pytest.mark.parametrize("command", ["resave-reshard", "compact"])
def test_kill_at_random_times_during_a_larger_write(command, tmp_path, tf):
    rng = random.Random(1010 + len(command))
    template = str(tmp_path / "template")
    os.makedirs(template)
    prefix = p(template, "m")
    if command == "resave-reshard":
        ckptkit.save(prefix, BIG_OLD, num_shards=2)
        old, new = BIG_OLD, BIG_NEW

        def op(d):
            ckptkit.save(p(d, "m"), BIG_NEW, num_shards=3)
    else:
        ckptkit.save(prefix, {**BIG_OLD, "gone": np.zeros(500_000, np.float32)}, num_shards=2)
        edit.remove_keys(prefix, ["gone"])
        old = new = BIG_OLD

        def op(d):
            edit.compact(p(d, "m"))
    durations = []  # the fastest of three: kill times then fall inside the op, however warm it runs
    for n in range(3):
        d = _fresh(template, str(tmp_path), 100 + n)
        t0 = time.monotonic()
        run_forked(lambda d=d: op(d))
        durations.append(time.monotonic() - t0)
        shutil.rmtree(d)
    duration = min(durations)
    outcomes = {"killed": 0, "finished": 0, "old": 0, "new": 0}
    for n in range(1, 37):  # 12 runs, more while fewer than 3 were killed (a loaded machine runs slower)
        if n > 12 and outcomes["killed"] >= 3:
            break
        d = _fresh(template, str(tmp_path), n)
        result = run_forked(lambda d=d: op(d), kill_after_seconds=rng.uniform(0, duration * 0.8))
        outcomes["killed" if result["killed"] else "finished"] += 1
        label = label_of(p(d, "m"), {"new": new} if old is new else {"old": old, "new": new})
        outcomes[label] += 1
        ckptkit.save(p(d, "next"), {"v": np.float32(n)})
        assert leftovers(d) == []
        assert label_of(p(d, "m"), {"new": new} if old is new else {"old": old, "new": new}) == label
        assert same_values(tf_values(tf, p(d, "m")), new if label == "new" else old)
        shutil.rmtree(d)
    print(f"\n{command}: op takes {duration * 1000:.0f} ms; {outcomes}")
    assert outcomes["killed"] >= 3


# --------------------------------------------------------------------------- full disk

NUMERIC = without(seeded_values(4), "c")


def _convert_scenario(ext: str) -> Scenario:
    src_vals = EDITABLE if ext != ".safetensors" else without(EDITABLE, "c")
    old_vals = seeded_values(7) if ext != ".safetensors" else without(seeded_values(7), "c")
    dst = "out" + ext

    def build(d):
        ckptkit.save(p(d, "src"), src_vals)
        ckptkit.save(p(d, "old"), old_vals)
        convert.convert(p(d, "old"), p(d, dst))
        for f in bundle.existing_data_files(p(d, "old")) + [bundle.index_filename(p(d, "old"))]:
            os.unlink(f)

    def observe(d):
        label_of(p(d, "src"), {"same": src_vals})
        got = convert.read_any(p(d, dst))
        for label, want in (("old", old_vals), ("new", src_vals)):
            if same_values(got, want):
                return label
        raise AssertionError(f"{dst} holds neither the old nor the new tensors")

    def after_next(d, label):
        assert observe(d) == label
        return {p(d, "src"): src_vals}

    return Scenario(build, lambda d: convert.convert(p(d, "src"), p(d, dst), overwrite=True), observe,
                    lambda d: ckptkit.save(p(d, "next"), seeded_values(3)), after_next)


FULL_DISK = {**{k: v for k, v in SCENARIOS.items() if "new-prefix-3" not in k},
             "convert-npz": _convert_scenario(".npz"),
             "convert-safetensors": _convert_scenario(".safetensors"),
             "convert-checkpoint": _convert_scenario("")}


class _Disk:
    """Injected ENOSPC: every write call from the `fail_from`th on fails (a full disk stays full)."""

    def __init__(self, fail_from: int | None) -> None:
        self.calls = 0
        self.fail_from = fail_from

    def check(self) -> None:
        self.calls += 1
        if self.fail_from is not None and self.calls >= self.fail_from:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")


def _inject(monkeypatch, disk: _Disk) -> None:
    class FullFileIO(io.FileIO):
        def write(self, b):
            disk.check()
            return super().write(b)

    real_open = open

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and mode in ("xb", "wb"):
            return io.BufferedWriter(FullFileIO(file, mode[0]))
        return real_open(file, mode, *args, **kwargs)

    real_pwrite, real_write = os.pwrite, os.write

    def pwrite(fd, data, offset):
        disk.check()
        return real_pwrite(fd, data, offset)

    def write(fd, data):
        disk.check()
        return real_write(fd, data)

    monkeypatch.setattr(ck_files, "open", fake_open, raising=False)
    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "write", write)


def _check_failed_write(name: str, sc: Scenario, d: str, exc: BaseException | None, tf) -> str:
    """After a write that hit a full disk: a clean error, the old state, no temp file."""
    if exc is not None:
        assert isinstance(exc, ckptkit.CheckpointError) or (
            isinstance(exc, OSError) and exc.errno == errno.ENOSPC), repr(exc)
    assert temps_and_journals(d) == [], f"{name}: {exc!r} left temp files"
    assert not os.path.exists(p(d, LOCK_FILENAME))
    label = sc.observe(d)
    if exc is not None and not name.startswith("saver"):
        assert label in ("old", "none", "same"), f"{name}: failed ({exc!r}) but published"
    return label


def _outcome(exc) -> str:
    if exc is None:
        return "ok"
    return type(exc).__name__ + ("/ENOSPC" if getattr(exc, "errno", None) == errno.ENOSPC else "")


@pytest.mark.parametrize("name", list(FULL_DISK))
def test_enospc_injected_at_every_write(name, tmp_path, monkeypatch, tf):
    sc = FULL_DISK[name]
    template = str(tmp_path / "template")
    os.makedirs(template)
    sc.build(template)
    counter = _Disk(None)
    d = _fresh(template, str(tmp_path), 0)
    with monkeypatch.context() as m:
        _inject(m, counter)
        sc.op(d)
    shutil.rmtree(d)
    outcomes: dict[str, int] = {}
    for n in range(1, counter.calls + 1):
        d = _fresh(template, str(tmp_path), n)
        exc = None
        with monkeypatch.context() as m:
            _inject(m, _Disk(n))
            try:
                sc.op(d)
            except Exception as e:  # noqa: BLE001 - checked below
                exc = e
        assert exc is not None, f"{name}: write {n} of {counter.calls} failed and nobody noticed"
        outcomes[_outcome(exc)] = outcomes.get(_outcome(exc), 0) + 1
        label = _check_failed_write(name, sc, d, exc, tf)
        sc.next_op(d)
        assert leftovers(d) == []
        for prefix, want in sc.after_next(d, label).items():
            assert same_values(tf_values(tf, prefix), want)
        shutil.rmtree(d)
    print(f"\n{name}: {counter.calls} write calls, each failing: {outcomes}")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (tests run as root in CI); None where mounting is not permitted."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"\ncannot mount a tmpfs ({done.stderr.strip()}): ENOSPC is injected instead")
        yield None
        return
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: str, leave: int) -> None:
    st = os.statvfs(mnt)
    size = max(0, st.f_bavail * st.f_frsize - leave)
    with open(os.path.join(mnt, "filler"), "wb") as f:
        while size:
            chunk = min(size, 1 << 20)
            try:
                f.write(b"\0" * chunk)
                f.flush()
            except OSError:
                break
            size -= chunk


@pytest.mark.parametrize("name", ["save-new-prefix", "save-resave-2-to-3-shards", "saver-global-step-prune",
                                  "saver-same-prefix", "rename-in-place", "ema-in-place", "compact-in-place",
                                  "rename-output-existing", "compact-output-existing",
                                  "update-checkpoint-state", "convert-npz", "convert-safetensors",
                                  "convert-checkpoint"])
def test_enospc_on_a_full_tmpfs(name, small_disk, tmp_path, monkeypatch, tf):
    """The real thing: the disk fills up at some point of the write, for every 4 KiB of room."""
    sc = FULL_DISK[name]
    if small_disk is None:  # no tmpfs here: the injected failure, at every third write call
        template = str(tmp_path / "template")
        os.makedirs(template)
        sc.build(template)
        for n in (1, 3, 6):
            d = _fresh(template, str(tmp_path), n)
            with monkeypatch.context() as m:
                _inject(m, _Disk(n))
                try:
                    sc.op(d)
                    exc = None
                except Exception as e:  # noqa: BLE001 - the outcome is checked below, whatever it is
                    exc = e
            _check_failed_write(name, sc, d, exc, tf)
        return
    outcomes: dict[str, int] = {}
    d = os.path.join(small_disk, "d")
    for leave in range(0, 1 << 20, 4096):
        if os.path.exists(d):
            shutil.rmtree(d)
        os.makedirs(d)
        sc.build(d)
        _fill(small_disk, leave)
        exc = None
        try:
            sc.op(d)
        except Exception as e:  # noqa: BLE001 - checked below
            exc = e
        outcomes[_outcome(exc)] = outcomes.get(_outcome(exc), 0) + 1
        label = _check_failed_write(name, sc, d, exc, tf)
        os.unlink(os.path.join(small_disk, "filler"))
        sc.next_op(d)
        assert leftovers(d) == []
        for prefix, want in sc.after_next(d, label).items():
            assert same_values(tf_values(tf, prefix), want)
        if exc is None:
            break
    print(f"\n{name}: {outcomes}")
    assert outcomes.get("ok") == 1 and len(outcomes) > 1
