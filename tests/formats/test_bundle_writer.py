"""BundleWriter: the one writer of V2 bundles, checked against TensorFlow's reader and Saver,
and the commits it writes into: killed before `finish`, and a Saver's save as one commit."""
from __future__ import annotations

import os
import shutil
import signal

import numpy as np
import pytest
from helpers import leftovers, read_all, run_forked, same_values

import ckptkit
from ckptkit import storage
from ckptkit.errors import InvalidArgumentError
from ckptkit.formats.bundle_writer import BundleWriter
from ckptkit.formats.slices import SlicedTensor, TensorSlice
from ckptkit.storage import files
from ckptkit.storage.journal import LocalCommit

RNG = np.random.default_rng(2026)
PART = RNG.standard_normal((7, 4)).astype(np.float32)
AX1 = RNG.standard_normal((5, 6)).astype(np.float32)
STRINGS = np.array([b"a", b"", "\u00fc".encode(), b"x" * 300, b"\x00q"], dtype=object)


def write_with_writer(prefix: str) -> None:
    """Plain tensors, strings and two partitioned variables, through BundleWriter's own API."""
    with storage.Commit(os.path.dirname(prefix)) as tx:
        writer = BundleWriter(tx, prefix)
        writer.add("dense/kernel", np.arange(12, dtype=np.float64).reshape(3, 4))
        writer.add("step", np.int64(42))
        writer.add("names", STRINGS)
        writer.add("note", "one string")
        for tslice, piece in SlicedTensor.split(PART, 2).pieces:
            writer.add_slice("part", PART.shape, tslice, piece)
        for tslice, piece in SlicedTensor.split(AX1, 3, axis=1).pieces:
            writer.add_slice("ax1", AX1.shape, tslice, piece)
        writer.finish()
        tx.publish()


def test_what_the_writer_writes_tf_reads(tf, tmp_path):
    prefix = os.fspath(tmp_path / "ck")
    write_with_writer(prefix)
    reader = tf.train.load_checkpoint(prefix)
    assert sorted(reader.get_variable_to_shape_map()) == ["ax1", "dense/kernel", "names", "note", "part", "step"]
    np.testing.assert_array_equal(reader.get_tensor("dense/kernel"), np.arange(12, dtype=np.float64).reshape(3, 4))
    assert reader.get_tensor("step") == 42
    assert list(reader.get_tensor("names")) == list(STRINGS)
    assert reader.get_tensor("note") == b"one string"
    np.testing.assert_array_equal(reader.get_tensor("part"), PART)  # the full-shape key, assembled by TF
    np.testing.assert_array_equal(reader.get_tensor("ax1"), AX1)
    assert same_values(read_all(prefix), {"dense/kernel": np.arange(12, dtype=np.float64).reshape(3, 4),
                                          "step": np.int64(42), "names": STRINGS,
                                          "note": np.array(b"one string", dtype=object), "part": PART, "ax1": AX1})


def test_tf1_saver_restores_the_writers_slices_into_partitioned_variables(tf, tf1, tmp_path):
    prefix = os.fspath(tmp_path / "ck")
    write_with_writer(prefix)
    graph = tf.Graph()
    with graph.as_default():
        part = tf1.get_variable("part", shape=[7, 4], partitioner=tf1.fixed_size_partitioner(3))
        ax1 = tf1.get_variable("ax1", shape=[5, 6], partitioner=tf1.fixed_size_partitioner(2, axis=1))
        saver = tf1.train.Saver([part, ax1])
        with tf1.Session(graph=graph) as sess:
            saver.restore(sess, prefix)
            np.testing.assert_array_equal(sess.run(part.as_tensor()), PART)
            np.testing.assert_array_equal(sess.run(ax1.as_tensor()), AX1)


def test_writer_output_is_byte_identical_to_tf_savev2_with_slices(tf, tmp_path):
    """The same tensors, slices and strings through TF's SaveV2 kernel (which writes data in
    call order, as the writer writes them in `add` order): the same bytes."""
    prefix, theirs = os.fspath(tmp_path / "ck"), os.fspath(tmp_path / "tf")
    write_with_writer(prefix)
    names, specs, tensors = [], [], []
    for name, value in (("dense/kernel", np.arange(12, dtype=np.float64).reshape(3, 4)), ("step", np.int64(42)),
                        ("names", STRINGS), ("note", np.array(b"one string", dtype=object))):  # added so
        names.append(name)
        specs.append("")
        tensors.append(tf.constant(value))
    for name, value, sliced in (("part", PART, SlicedTensor.split(PART, 2)),
                                ("ax1", AX1, SlicedTensor.split(AX1, 3, axis=1))):
        for tslice, piece in sliced.pieces:
            names.append(name)
            specs.append(" ".join(str(d) for d in value.shape) + " " + tslice.spec())
            tensors.append(tf.constant(piece))
    tf.raw_ops.SaveV2(prefix=theirs, tensor_names=names, shape_and_slices=specs, tensors=tensors)
    for suffix in (".index", ".data-00000-of-00001"):
        with open(prefix + suffix, "rb") as a, open(theirs + suffix, "rb") as b:
            assert a.read() == b.read(), suffix


def test_writer_refuses_a_key_twice_and_a_slice_of_the_wrong_shape(tmp_path):
    prefix = os.fspath(tmp_path / "ck")
    with storage.Commit(os.fspath(tmp_path)) as tx:
        writer = BundleWriter(tx, prefix)
        writer.add("x", np.ones(3))
        with pytest.raises(InvalidArgumentError, match="same key"):
            writer.add("x", np.ones(3))
        with pytest.raises(InvalidArgumentError, match="needs an array of shape"):
            writer.add_slice("p", (4,), TensorSlice.parse("0,2"), np.ones(3))
        with pytest.raises(InvalidArgumentError, match="share a dtype"):
            writer.add_slice("q", (4,), TensorSlice.parse("0,2"), np.ones(2, np.float32))
            writer.add_slice("q", (4,), TensorSlice.parse("2,2"), np.ones(2, np.float64))
    assert os.listdir(tmp_path) == []  # left without publishing: nothing at all


OLD = {"x": np.full(1000, -1.0, np.float32), "s": np.array([b"old"], dtype=object)}
NEW = {"x": np.full(1000, 2.0, np.float32), "s": np.array([b"new", b"er"], dtype=object)}


def test_killed_before_finish_leaves_the_old_checkpoint(tmp_path):
    prefix = ckptkit.save(os.fspath(tmp_path / "ck"), OLD)
    pid = os.fork()
    if pid == 0:  # the writer, killed with its shard written and the index not
        try:
            with storage.Commit(os.fspath(tmp_path)) as tx:
                writer = BundleWriter(tx, prefix)
                for key, value in NEW.items():
                    writer.add(key, value)
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert [n for n in os.listdir(tmp_path) if files.is_temp_name(n)]  # the dead writer's shard temp
    assert same_values(read_all(prefix), OLD)
    ckptkit.save(prefix, NEW)  # the next writer sweeps what the dead one left
    assert same_values(read_all(prefix), NEW)
    assert leftovers(os.fspath(tmp_path)) == []


def test_an_error_before_finish_leaves_the_old_checkpoint_and_no_temp(tmp_path):
    prefix = ckptkit.save(os.fspath(tmp_path / "ck"), OLD)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(InvalidArgumentError, match="not str/bytes"), storage.Commit(os.fspath(tmp_path)) as tx:
        writer = BundleWriter(tx, prefix)
        writer.add("x", NEW["x"])
        writer.add("s", np.array([b"ok", 3], dtype=object))
    assert sorted(os.listdir(tmp_path)) == before
    assert same_values(read_all(prefix), OLD)


# --------------------------------------------------------------------------- Saver.save: one commit

def saver_values(step: int) -> dict:
    return {"w": np.full((4, 4), step, np.float32), "global_step": np.int64(step)}


def test_saver_save_is_one_commit(tmp_path, monkeypatch):
    saver = ckptkit.Saver(max_to_keep=1)
    saver.save(saver_values(0), os.fspath(tmp_path / "model"), global_step=0)
    published = []
    real = LocalCommit.publish

    def counting(self):
        published.append(self.directory)
        return real(self)

    monkeypatch.setattr(LocalCommit, "publish", counting)
    saver.save(saver_values(1), os.fspath(tmp_path / "model"), global_step=1)  # prunes model-0 as well
    assert published == [os.fspath(tmp_path)]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "model-1.data-00000-of-00001", "model-1.index",
                                            "model-1.meta"]


def saver_files(step: int) -> list[str]:
    return sorted(["checkpoint"] + [f"model-{step}{s}" for s in (".data-00000-of-00001", ".index", ".meta")])


def test_saver_save_killed_at_every_step_leaves_old_or_new_whole(tmp_path):
    """A save of model-1 that prunes model-0 (max_to_keep=1), killed before and after each
    rename, unlink, fsync and link. Once the next writer has completed (or dropped) what
    the dead one left, the directory is exactly the old save or exactly the new one:
    checkpoint, `.meta` and state file together, never a checkpoint without the state
    file naming it (as three commits would leave) nor a state file naming a deleted one."""
    template = os.fspath(tmp_path / "template")
    os.mkdir(template)

    def save(directory: str, step: int) -> None:
        saver = ckptkit.Saver(max_to_keep=1, save_relative_paths=True)  # (the directory is copied)
        state = ckptkit.get_checkpoint_state(directory)
        if state is not None:
            saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
        saver.save(saver_values(step), os.path.join(directory, "model"), global_step=step)

    save(template, 0)
    probe = os.fspath(tmp_path / "probe")
    shutil.copytree(template, probe)
    steps = run_forked(lambda: save(probe, 1))["count"]
    assert sorted(os.listdir(probe)) == saver_files(1)
    seen = set()
    for call in range(1, steps + 1):
        for when in ("before", "after"):
            d = os.fspath(tmp_path / f"{call}-{when}")
            shutil.copytree(template, d)
            assert run_forked(lambda d=d: save(d, 1), kill_at=call, when=when)["killed"]
            storage.recover(d)  # what the next writer does first
            names = sorted(n for n in os.listdir(d) if not files.is_temp_name(n) and n != ".ckptkit.lock")
            latest = ckptkit.latest_checkpoint(d)
            step = int(latest.rsplit("-", 1)[1])
            assert names == saver_files(step), (call, when)
            assert same_values(read_all(latest), saver_values(step))
            assert ckptkit.get_checkpoint_state(d).all_model_checkpoint_paths == [latest]
            seen.add(step)
            save(d, 2)
            assert leftovers(d) == [] and sorted(os.listdir(d)) == saver_files(2)
    assert seen == {0, 1}
