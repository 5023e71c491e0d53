"""kill -9 at every step of a CheckpointManager save (helpers.run_forked).

The directory holds ckpt-1 and ckpt-2 (max_to_keep=2); a restarted job restores the
latest and saves ckpt-3, which deletes ckpt-1. Killed right before or after each of its
os.replace/rename/unlink/fsync/link calls, the directory must still name a complete
checkpoint (ckpt-2, or ckpt-3 once the state file says so), every checkpoint the state
file lists must read whole (the state is written before pruning deletes anything), and
the next manager save must succeed, leave no temp file, journal or lock file, and write
what TF restores.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
from helpers import leftovers, run_forked, temps_and_journals

import ckptkit


def values(n: int) -> dict:
    return {"model": {"w": np.full((64, 64), n, np.float32)}, "note": np.array(f"save {n}".encode(), dtype=object)}


def save_next(d: str) -> str | None:
    """What a restarted training job does: recover, restore the latest, save the next."""
    ckpt = ckptkit.Checkpoint(**values(0))
    manager = ckptkit.CheckpointManager(ckpt, d, max_to_keep=2)
    manager.restore_or_initialize()
    n = ckpt.save_counter + 1
    ckpt.model = values(n)["model"]
    ckpt.note = values(n)["note"]
    return manager.save()


def check_whole(prefix: str, n: int) -> None:
    tree = ckptkit.Checkpoint().read(prefix)
    assert np.array_equal(tree["model"]["w"], values(n)["model"]["w"]) and tree["note"] == values(n)["note"]


def test_kill_manager_save_at_every_step(tmp_path, tf):
    template = str(tmp_path / "template")
    for _ in range(2):
        save_next(template)
    assert sorted(os.listdir(template)) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index",
                                            "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    d = str(tmp_path / "full")
    shutil.copytree(template, d)
    full = run_forked(lambda: save_next(d))
    assert not full["killed"] and full["count"] > 0
    assert ckptkit.latest_checkpoint(d) == os.path.join(d, "ckpt-3")
    assert not os.path.exists(os.path.join(d, "ckpt-1.index"))
    outcomes = []
    for call in range(1, full["count"] + 1):
        for when in ("before", "after"):
            d = str(tmp_path / f"k{call}{when}")
            shutil.copytree(template, d)
            where = f"{when} call {call}/{full['count']} {full['trace'][call - 1]}"
            assert run_forked(lambda d=d: save_next(d), kill_at=call, when=when)["killed"], where
            latest = ckptkit.latest_checkpoint(d)
            assert latest in (os.path.join(d, "ckpt-2"), os.path.join(d, "ckpt-3")), where
            check_whole(latest, int(latest.rsplit("-", 1)[1]))
            state = ckptkit.get_checkpoint_state(d)
            for path in state.all_model_checkpoint_paths:  # never one that was deleted
                check_whole(path, int(path.rsplit("-", 1)[1]))
            outcomes.append(latest.endswith("ckpt-3"))
            # the next save, by a fresh job, completes whatever was left and goes on
            nxt = save_next(d)
            assert leftovers(d) == [] and temps_and_journals(d) == [], where
            assert nxt == ckptkit.latest_checkpoint(d)
            check_whole(nxt, int(nxt.rsplit("-", 1)[1]))
            w = tf.Variable(np.zeros((64, 64), np.float32))
            tf.train.Checkpoint(model={"w": w}, note=tf.Variable(b"")).restore(nxt).assert_consumed()
            assert np.array_equal(w.numpy(), values(int(nxt.rsplit("-", 1)[1]))["model"]["w"]), where
            shutil.rmtree(d)
    assert outcomes == sorted(outcomes) and outcomes[-1], outcomes  # old ... old, new ... new
    print(f"\nmanager save: {full['count']} calls, new from kill {outcomes.index(True) + 1} of {len(outcomes)}; "
          f"trace: {' '.join(full['trace'])}")
