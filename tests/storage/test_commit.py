"""The commit protocol (storage/journal.py): journal, roll-forward, readers through a pending
commit, hostile journals, and the old index never unlinked during a rewrite."""
from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import leftovers, tf_values

import ckptkit
from ckptkit.cli import cli
from ckptkit.errors import CheckpointError
from ckptkit.formats import bundle
from ckptkit.formats.bundle import BundleData
from ckptkit.storage import Commit
from ckptkit.storage import journal as commit
from ckptkit.storage.journal import JOURNAL_SUFFIX


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs (not even cleanup that catches Exception)."""


def crash_after_commit_point(monkeypatch, renames_done: int) -> None:
    """Make LocalCommit.publish die after the journal is written and `renames_done` renames ran."""
    real_replace = os.replace
    state = {"n": 0, "journaled": False}

    def replace(src, dst):
        if str(dst).endswith(JOURNAL_SUFFIX):
            state["journaled"] = True
            return real_replace(src, dst)
        if state["journaled"]:
            if state["n"] == renames_done:
                raise Crash
            state["n"] += 1
        return real_replace(src, dst)

    monkeypatch.setattr(commit.os, "replace", replace)
    # a dead process runs no cleanup: LocalCommit.__exit__ must not undo a published commit
    monkeypatch.setattr(commit.LocalCommit, "abort", lambda self: None)


@pytest.mark.parametrize("renames_done", [0, 1, 2])
def test_a_rewrite_that_dies_after_its_commit_point_reads_as_the_new_checkpoint(tmp_path, monkeypatch,
                                                                               renames_done):
    prefix = str(tmp_path / "model")
    old = {"a": np.arange(6, dtype=np.float32), "b": np.ones(3, np.int64)}
    new = {"a": np.arange(6, dtype=np.float32) * 2, "b": np.zeros(3, np.int64)}
    ckptkit.save(prefix, old, num_shards=2)
    with monkeypatch.context() as m:
        crash_after_commit_point(m, renames_done)
        with pytest.raises(Crash):
            ckptkit.save(prefix, new, num_shards=2)
    journal = bundle.index_filename(prefix) + JOURNAL_SUFFIX
    assert os.path.exists(journal)
    # readers see the new checkpoint through the journal, before anyone recovers it
    got = ckptkit.load(prefix)
    assert got.keys() == new.keys() and all(np.array_equal(got[k], new[k]) for k in new)
    # the next writer in the directory rolls it forward, then the files alone say "new"
    commit.recover(str(tmp_path))
    assert leftovers(tmp_path) == [n for n in leftovers(tmp_path) if n == ".ckptkit.lock"] == []
    got = ckptkit.load(prefix)
    assert all(np.array_equal(got[k], new[k]) for k in new)


def test_the_next_writer_completes_an_interrupted_commit_before_sweeping(tmp_path, monkeypatch, tf):
    prefix = str(tmp_path / "model")
    ckptkit.save(prefix, {"v": np.arange(4, dtype=np.float32)})
    with monkeypatch.context() as m:
        crash_after_commit_point(m, 0)
        with pytest.raises(Crash):
            ckptkit.save(prefix, {"v": np.arange(4, dtype=np.float32) + 10})
    ckptkit.save(str(tmp_path / "other"), {"x": np.float32(1)})  # any writer in the directory
    assert leftovers(tmp_path) == []
    np.testing.assert_array_equal(tf.train.load_checkpoint(prefix).get_tensor("v"),
                                  np.arange(4, dtype=np.float32) + 10)


def test_a_journal_over_files_tf_rewrote_since_is_rolled_back_not_forward(tmp_path, monkeypatch, tf):
    """A ckptkit writer dies past its commit point; TF (which knows nothing of journals)
    then saves the same prefix. The journal recorded what it replaces, so it is stale:
    readers read TF's checkpoint, and recovery deletes the dead writer's temps instead of
    renaming them over TF's files."""
    prefix = str(tmp_path / "model")
    ckptkit.save(prefix, {"v": np.arange(4, dtype=np.float32)})
    with monkeypatch.context() as m:
        crash_after_commit_point(m, 1)  # the data shard renamed, the index not yet
        with pytest.raises(Crash):
            ckptkit.save(prefix, {"v": np.arange(4, dtype=np.float32) + 10})
    assert commit.pending_journals(str(tmp_path)) == [bundle.index_filename(prefix) + JOURNAL_SUFFIX]
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["v"], shape_and_slices=[""],
                      tensors=[tf.constant(np.arange(4, dtype=np.float32) + 100)])
    want = np.arange(4, dtype=np.float32) + 100
    np.testing.assert_array_equal(ckptkit.load(prefix)["v"], want)  # the stale journal is ignored
    (outcome,) = commit.recover(str(tmp_path))
    assert outcome.outcome == "rolled back" and "model.index changed since the commit" in outcome.detail
    assert leftovers(tmp_path) == [] and commit.pending_journals(str(tmp_path)) == []
    np.testing.assert_array_equal(tf.train.load_checkpoint(prefix).get_tensor("v"), want)
    np.testing.assert_array_equal(ckptkit.load(prefix)["v"], want)


def test_verify_reports_an_unfinished_commit_and_recover_completes_it(tmp_path, monkeypatch, tf):
    """What TF sees after a writer died past its commit point is half-replaced: verify says
    so (exit 1) and `ckptkit recover DIR` completes the commit, after which TF reads it."""
    prefix = str(tmp_path / "model")
    ckptkit.save(prefix, {"v": np.arange(4, dtype=np.float32)}, num_shards=2)
    with monkeypatch.context() as m:
        crash_after_commit_point(m, 1)
        with pytest.raises(Crash):
            ckptkit.save(prefix, {"v": np.arange(4, dtype=np.float32) + 10}, num_shards=2)
    journal = bundle.index_filename(prefix) + JOURNAL_SUFFIX
    runner = CliRunner()
    result = runner.invoke(cli, ["verify", prefix])
    assert result.exit_code == 1
    assert f"ckptkit: error: {journal}: a ckptkit writer died after its commit point" in result.stderr
    assert result.stdout.startswith("FAILED: 1 unfinished commit(s)")
    assert json.loads(runner.invoke(cli, ["verify", prefix, "--json"]).stdout)["pending_commits"] == [journal]
    result = runner.invoke(cli, ["recover", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    (done,) = json.loads(result.stdout)["recovered"]
    assert done["journal"] == journal and done["outcome"] == "completed"
    assert runner.invoke(cli, ["verify", prefix]).exit_code == 0
    assert runner.invoke(cli, ["recover", str(tmp_path)]).stderr == f"nothing to recover in {tmp_path}\n"
    np.testing.assert_array_equal(tf.train.load_checkpoint(prefix).get_tensor("v"),
                                  np.arange(4, dtype=np.float32) + 10)
    assert leftovers(tmp_path) == []


def test_a_rewrite_never_leaves_the_prefix_without_an_index(tmp_path):
    """TF-style re-save of one prefix: a reader polling the index never finds it missing."""
    prefix = str(tmp_path / "model")
    ckptkit.save(prefix, {"v": np.zeros(1000, np.float32)})
    missing, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            if not os.path.exists(bundle.index_filename(prefix)):
                missing.append(1)

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        for step in range(40):
            ckptkit.Saver().save({"v": np.full(1000, step, np.float32)}, prefix,
                                 write_meta_graph=False, write_state=False)
    finally:
        stop.set()
        thread.join()
    assert not missing
    np.testing.assert_array_equal(ckptkit.load(prefix)["v"], np.full(1000, 39, np.float32))


def test_a_resave_with_fewer_shards_deletes_the_old_shards_after_the_new_index(tmp_path, tf):
    prefix = str(tmp_path / "model")
    ckptkit.save(prefix, {f"t{i}": np.full(10, i, np.float32) for i in range(4)}, num_shards=3)
    ckptkit.save(prefix, {"t0": np.float32(7)}, num_shards=1)
    assert sorted(os.listdir(tmp_path)) == ["model.data-00000-of-00001", "model.index"]
    assert tf.train.load_checkpoint(prefix).get_tensor("t0") == np.float32(7)


@pytest.mark.parametrize("journal", [
    {"version": 1, "renames": [["x.ckptkit-tmp-1-ab", "../escape"]], "deletes": []},
    {"version": 1, "renames": [["x.ckptkit-tmp-1-ab", "/etc/passwd"]], "deletes": []},
    {"version": 1, "renames": [], "deletes": ["../precious"]},
    {"version": 1, "renames": [["precious", "model.index"]], "deletes": []},  # source not a temp
    {"version": 1, "renames": [], "deletes": ["sub/precious"]},
    {"version": 2, "renames": [], "deletes": ["precious"]},
    "not json at all",
    "[" * 100_000,
    {"version": 1, "renames": [["a"]], "deletes": []},
    ["a list"],
])
def test_a_hostile_or_damaged_journal_touches_nothing(tmp_path, journal):
    directory = tmp_path / "run"
    directory.mkdir()
    (tmp_path / "precious").write_text("keep")
    (directory / "precious").write_text("keep")
    (directory / "sub").mkdir()
    (directory / "sub" / "precious").write_text("keep")
    prefix = str(directory / "model")
    ckptkit.save(prefix, {"v": np.float32(3)})
    text = journal if isinstance(journal, str) else json.dumps(journal)
    (directory / ("model.index" + JOURNAL_SUFFIX)).write_text(text)
    assert ckptkit.load(prefix)["v"] == np.float32(3)  # readers ignore it
    assert commit.recover(str(directory)) == []       # writers leave it alone
    ckptkit.save(str(directory / "other"), {"x": np.float32(1)})
    for path in (tmp_path / "precious", directory / "precious", directory / "sub" / "precious"):
        assert path.read_text() == "keep"
    assert ckptkit.load(prefix)["v"] == np.float32(3)


def test_commit_refuses_files_outside_its_directory(tmp_path):
    (tmp_path / "a").mkdir()
    with Commit(str(tmp_path / "a")) as tx, pytest.raises(CheckpointError, match="outside"):
        tx.file(str(tmp_path / "b" / "x"))
    assert leftovers(tmp_path / "a") == []


def test_commit_refuses_to_publish_over_an_index_changed_by_another_program(tmp_path):
    prefix = str(tmp_path / "model")
    ckptkit.save(prefix, {"v": np.float32(1), "w": np.float32(2)})
    index = bundle.index_filename(prefix)
    before = commit.identity(index)
    os.utime(index, ns=(1, 1))  # another program rewrote it meanwhile
    with Commit(str(tmp_path)) as tx:
        tx.guard(index, before)
        tx.file(index).write(b"whatever")
        with pytest.raises(commit.ConcurrentModificationError, match="changed by another program"):
            tx.publish()
    assert leftovers(tmp_path) == []
    assert ckptkit.load(prefix)["w"] == np.float32(2)


def test_link_of_a_shard_that_is_not_a_regular_file_fails_cleanly(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    os.symlink("/dev/zero", tmp_path / "zero")
    with Commit(str(tmp_path)) as tx:
        for name in ("fifo", "zero", "missing"):
            with pytest.raises(CheckpointError):
                tx.link(str(tmp_path / name), str(tmp_path / f"out-{name}"))
    assert leftovers(tmp_path) == []
    assert not [n for n in os.listdir(tmp_path) if n.startswith("out-")]


def test_a_reader_opened_before_a_resave_reads_the_new_checkpoint_whole(tmp_path):
    """The shards are opened lazily: one opened after a re-save belongs to the new index."""
    prefix = str(tmp_path / "model")
    old = {f"t{i}": np.full(8, i, np.float32) for i in range(6)}
    new = {f"t{i}": np.full(8, 10 + i, np.float32) for i in range(6)}
    ckptkit.save(prefix, old, num_shards=3)
    reader = ckptkit.CheckpointReader(prefix)
    ckptkit.save(prefix, new, num_shards=3)
    np.testing.assert_array_equal(reader.get_tensor("t0"), new["t0"])
    assert reader.generation == 1
    # load(): one shard read, then a re-save, then the next shard: it starts over
    reader = ckptkit.CheckpointReader(prefix)
    first = reader.get_tensor("t0")  # shard 0 open, the others not yet
    ckptkit.save(prefix, old, num_shards=3)
    np.testing.assert_array_equal(first, new["t0"])
    got = ckptkit.load(prefix)
    assert all(np.array_equal(got[k], old[k]) for k in old)


def test_a_listed_key_renamed_under_a_reader_is_a_clear_change_not_not_found(tmp_path, tf):
    """A reader listed `t0`; an in-place edit renames it before the reader opens a shard:
    CheckpointChangedError naming it (never TensorNotFoundError for a listed key), and
    `load` started then lists again and reads the new checkpoint whole."""
    prefix = str(tmp_path / "model")
    ckptkit.save(prefix, {f"t{i}": np.full(8, i, np.float32) for i in range(3)})
    reader = ckptkit.CheckpointReader(prefix)
    assert "t0" in reader
    CliRunner().invoke(cli, ["rename", "-c", prefix, "t0", "renamed"], catch_exceptions=False)
    with pytest.raises(ckptkit.CheckpointChangedError, match="replaced while it was being read") as info:
        reader.get_tensor("t0")
    assert info.value.key == "t0" and info.value.path == prefix
    assert not isinstance(info.value, KeyError)
    np.testing.assert_array_equal(reader.get_tensor("renamed"), np.zeros(8, np.float32))  # the new one
    assert sorted(ckptkit.load(prefix)) == sorted(tf_values(tf, prefix)) == ["renamed", "t1", "t2"]


def test_load_never_mixes_two_checkpoints(tmp_path, monkeypatch):
    prefix = str(tmp_path / "model")
    ckptkit.save(prefix, {f"t{i}": np.full(4, i, np.int64) for i in range(4)}, num_shards=4)

    real = BundleData._file
    calls = {"n": 0}

    def open_shard(self, shard):
        if shard not in self._files:
            calls["n"] += 1
            if calls["n"] == 2:  # between opening the first and the second shard, a re-save
                ckptkit.save(prefix, {f"t{i}": np.full(4, 100 + i, np.int64) for i in range(4)}, num_shards=4)
        return real(self, shard)

    monkeypatch.setattr(BundleData, "_file", open_shard)
    got = ckptkit.load(prefix)
    assert {k: int(v[0]) for k, v in got.items()} == {f"t{i}": 100 + i for i in range(4)}
