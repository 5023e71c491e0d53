"""ckptkit.Saver against TF's tf.compat.v1.train.Saver, save sequence by save sequence.

Each test runs the same saves through TF's Saver (graph mode, its own Graph and
Session) and ckptkit's Saver, in sibling temp directories, under one fake clock that
both see (`time.time` is patched; TF's saver.py reads it at build and in
_RecordLastCheckpoint, which a test below checks). After every save the two
directories must hold the same file names and byte-identical state files (the
directory itself replaced by a placeholder).
"""
from __future__ import annotations

import inspect
import os
import time
import types

import numpy as np
import pytest

import ckptkit
from ckptkit.errors import CheckpointError, InvalidArgumentError, NotFoundError, TensorNotFoundError
from ckptkit.tf1 import state
from ckptkit.tf1.ema import ExponentialMovingAverage
from ckptkit.tf1.saver import Saver

T0 = 1_700_000_000.0
HOUR = 3600.0

VALUES = {"v": np.arange(6, dtype=np.float32).reshape(2, 3), "w": np.int64(7),
          "scope/b": np.array([True, False])}


@pytest.fixture
def clock(monkeypatch):
    """A fake `time.time` shared by TF's saver module and ours; tests set `clock.now`."""
    c = types.SimpleNamespace(now=T0)
    monkeypatch.setattr(time, "time", lambda: c.now)
    return c


class TFSaver:
    """A TF1 graph holding variables named like `values`, and a tf.compat.v1.train.Saver on them."""

    def __init__(self, tf1, values=VALUES, var_list=None, **kwargs) -> None:
        self.graph = tf1.Graph()
        with self.graph.as_default():
            self.vars = {n: tf1.Variable(v, name=n) for n, v in values.items()}
            if isinstance(var_list, dict):
                var_list = {k: self.vars[n] for k, n in var_list.items()}
            elif var_list is not None:
                var_list = [self.vars[n] for n in var_list]
            self.saver = tf1.train.Saver(var_list, **kwargs)
            init = tf1.global_variables_initializer()
        self.sess = tf1.Session(graph=self.graph)
        self.sess.run(init)

    def save(self, path, **kwargs):
        with self.graph.as_default():  # outside its graph, TF's Saver takes the eager path
            return self.saver.save(self.sess, str(path), **kwargs)

    def restore(self, path) -> dict:
        with self.graph.as_default():
            self.saver.restore(self.sess, str(path))
            return self.sess.run(self.vars)

    def recover_last_checkpoints(self, paths) -> None:
        with self.graph.as_default():
            self.saver.recover_last_checkpoints(list(paths))

    def close(self) -> None:
        self.sess.close()


@pytest.fixture
def tf_saver(tf1):
    made = []

    def make(**kwargs):
        s = TFSaver(tf1, **kwargs)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def snapshot(directory, latest_filename="checkpoint"):
    """(file names, state file text with the directory as <DIR>) — what must match TF."""
    directory = str(directory)
    files = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    path = os.path.join(directory, latest_filename)
    text = open(path).read().replace(directory, "<DIR>") if os.path.exists(path) else None
    return files, text


def rel(prefix, directory):
    return None if prefix is None else os.path.relpath(prefix, directory)


class Pair:
    """The TF and ckptkit savers side by side, saving into tmp/tf and tmp/ck."""

    def __init__(self, tf_saver, tmp_path, var_list=None, **kwargs) -> None:
        self.tf = tf_saver(var_list=var_list, **kwargs)
        self.ck = Saver(var_list, **kwargs)
        self.dirs = {"tf": tmp_path / "tf", "ck": tmp_path / "ck"}
        for d in self.dirs.values():
            d.mkdir(exist_ok=True)

    def save(self, name="model", check=True, **kwargs):
        latest = kwargs.get("latest_filename") or "checkpoint"
        got_tf = self.tf.save(self.dirs["tf"] / name, **kwargs)
        got_ck = self.ck.save(VALUES, self.dirs["ck"] / name, **kwargs)
        assert rel(got_ck, self.dirs["ck"]) == rel(got_tf, self.dirs["tf"])
        if check:
            self.check(latest)
        return got_ck

    def check(self, latest_filename="checkpoint"):
        assert snapshot(self.dirs["ck"], latest_filename) == snapshot(self.dirs["tf"], latest_filename)
        assert [rel(p, self.dirs["ck"]) for p in self.ck.last_checkpoints] == \
            [rel(p, self.dirs["tf"]) for p in self.tf.saver.last_checkpoints]

    def files(self):
        return snapshot(self.dirs["ck"])[0]


def test_tf_saver_reads_time_time(tf):
    """The fake clock is only fair if TF's Saver really asks `time.time()`."""
    from tensorflow.python.training import saver as tf_saver_module  # noqa: PLC0415 - TF only inside TF tests
    assert tf_saver_module.time is time
    assert "time.time()" in inspect.getsource(tf_saver_module.Saver._RecordLastCheckpoint)
    assert "time.time()" in inspect.getsource(tf_saver_module.Saver._build)


# ---- max_to_keep ---------------------------------------------------------------------

@pytest.mark.parametrize("max_to_keep", [1, 2, 5])
def test_max_to_keep_like_tf(tf_saver, tmp_path, clock, max_to_keep):
    pair = Pair(tf_saver, tmp_path, max_to_keep=max_to_keep)
    for i, step in enumerate([1, 2, 3, 10, 20, 30, 40]):
        clock.now = T0 + 60 * i
        pair.save(global_step=step)
    kept = [f for f in pair.files() if f.endswith(".index")]
    assert len(kept) == min(max_to_keep, 7)
    assert state.latest_checkpoint(pair.dirs["ck"]) == str(pair.dirs["ck"] / "model-40")


@pytest.mark.parametrize("max_to_keep", [0, None])
def test_max_to_keep_zero_or_none_keeps_all_names_latest(tf_saver, tmp_path, clock, max_to_keep):
    pair = Pair(tf_saver, tmp_path, max_to_keep=max_to_keep)
    for step in range(4):
        pair.save(global_step=step)
    assert [f for f in pair.files() if f.endswith(".index")] == [f"model-{s}.index" for s in range(4)]
    st = state.read_state_file(pair.dirs["ck"] / "checkpoint")
    assert list(st.all_model_checkpoint_paths) == [st.model_checkpoint_path]
    assert pair.ck.last_checkpoints == []


def test_same_path_saved_again_moves_to_end(tf_saver, tmp_path, clock):
    pair = Pair(tf_saver, tmp_path, max_to_keep=2)
    for name, step in [("a", None), ("b", None), ("a", None), ("c", None), ("model", 5), ("model", 5)]:
        clock.now += 1
        pair.save(name, global_step=step)


# ---- keep_checkpoint_every_n_hours ---------------------------------------------------

KEEP_CASES = {
    # hours, max_to_keep, save offsets from the Saver's creation in seconds
    "1h": (1.0, 2, [m * 60 for m in (0, 20, 40, 61, 80, 100, 125, 130, 190, 250, 251, 400)]),
    "0.5h-keep1": (0.5, 1, [m * 60 for m in range(0, 200, 7)]),
    # float32: TF's SaverDef stores 0.1 h as 0.100000001490116 h = 360.0000054 s, so a
    # checkpoint at 360.000001 s is not past the keep time (it would be with float64).
    "float32-hours": (0.1, 1, [10, 360.000001, 370, 720.00002, 730, 1090, 1100]),
}


@pytest.mark.parametrize("case", KEEP_CASES)
def test_keep_checkpoint_every_n_hours_like_tf(tf_saver, tmp_path, clock, case):
    hours, max_to_keep, offsets = KEEP_CASES[case]
    clock.now = T0
    pair = Pair(tf_saver, tmp_path, max_to_keep=max_to_keep, keep_checkpoint_every_n_hours=hours)
    for step, offset in enumerate(offsets):
        clock.now = T0 + offset
        pair.save(global_step=step)
    kept = [f for f in pair.files() if f.endswith(".index")]
    assert len(kept) > max_to_keep  # the case really exercises keeping
    if case == "float32-hours":
        assert "model-1.index" not in kept and "model-0.index" not in kept


def test_state_has_no_timestamps_like_tf(tf_saver, tmp_path, clock):
    pair = Pair(tf_saver, tmp_path, max_to_keep=3, keep_checkpoint_every_n_hours=1.0)
    for step in range(4):
        clock.now = T0 + step * HOUR
        pair.save(global_step=step)
    st = state.read_state_file(pair.dirs["ck"] / "checkpoint")
    assert len(st.all_model_checkpoint_timestamps) == 0 and st.last_preserved_timestamp == 0


# ---- naming --------------------------------------------------------------------------

def test_pad_step_number_like_tf(tf_saver, tmp_path, clock):
    pair = Pair(tf_saver, tmp_path, max_to_keep=3, pad_step_number=True)
    for step in (0, 3, 12345, 123456789):
        pair.save(global_step=step)
    assert "model-00012345.index" in pair.files() and "model-123456789.index" in pair.files()


def test_save_relative_paths_like_tf(tf_saver, tmp_path, clock):
    pair = Pair(tf_saver, tmp_path, max_to_keep=2, save_relative_paths=True)
    for step in range(3):
        pair.save(global_step=step)
    text = (pair.dirs["ck"] / "checkpoint").read_text()
    assert text == (pair.dirs["tf"] / "checkpoint").read_text()  # not even the directory differs
    assert "/" not in text
    assert state.latest_checkpoint(pair.dirs["ck"]) == str(pair.dirs["ck"] / "model-2")


def test_relative_save_path_like_tf(tf_saver, tmp_path, clock, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tf").mkdir()
    (tmp_path / "ck").mkdir()
    tf_s, ck_s = tf_saver(max_to_keep=2), Saver(max_to_keep=2)
    for step in range(3):
        assert tf_s.save("tf/run/model", global_step=step) == f"tf/run/model-{step}"
        assert ck_s.save(VALUES, "ck/run/model", global_step=step) == f"ck/run/model-{step}"
    assert snapshot("ck/run") == snapshot("tf/run")
    assert (tmp_path / "ck/run/checkpoint").read_text() == (tmp_path / "tf/run/checkpoint").read_text()
    tf_s, ck_s = tf_saver(max_to_keep=1), Saver(max_to_keep=1)
    for who in ("tf", "ck"):  # a bare name: the working directory
        monkeypatch.chdir(tmp_path / who)
        for step in (8, 9):
            if who == "tf":
                assert tf_s.save("model", global_step=step) == f"model-{step}"
            else:
                assert ck_s.save(VALUES, "model", global_step=step) == f"model-{step}"
    assert snapshot(tmp_path / "ck") == snapshot(tmp_path / "tf")
    files = snapshot(tmp_path / "ck")[0]
    assert "model-9.index" in files and "model-8.index" not in files


@pytest.mark.parametrize("step", [7, np.int64(7), np.int32(7), np.array(7), np.array(7, np.uint8)])
def test_global_step_forms(tmp_path, step):
    assert Saver().save(VALUES, tmp_path / "m", global_step=step, write_meta_graph=False) == f"{tmp_path}/m-7"


def test_global_step_tensor_in_tf_gives_same_name(tf1, tmp_path):
    g = tf1.Graph()
    with g.as_default():
        tf1.Variable(1.0, name="v")
        gs = tf1.Variable(np.int64(42), name="global_step")
        s = tf1.train.Saver()
        with tf1.Session(graph=g) as sess:
            sess.run(tf1.global_variables_initializer())
            got = s.save(sess, str(tmp_path / "tf" / "m"), global_step=gs, write_meta_graph=False)
    ours = Saver().save({"v": np.float32(1)}, tmp_path / "ck" / "m", global_step=np.array(42, np.int64),
                        write_meta_graph=False)
    assert os.path.basename(got) == os.path.basename(ours) == "m-42"


def test_custom_latest_filename_and_write_state_false(tf_saver, tmp_path, clock):
    pair = Pair(tf_saver, tmp_path, max_to_keep=1)
    pair.save(global_step=1, latest_filename="mystate")
    pair.save(global_step=2, latest_filename="mystate")
    pair.save(global_step=3, write_state=False)       # no state, no recording, no pruning
    pair.save(global_step=4, latest_filename="mystate")
    assert snapshot(pair.dirs["ck"])[1] is None       # no `checkpoint` file at all
    assert [f for f in pair.files() if f.endswith(".index")] == ["model-3.index", "model-4.index"]


def test_bad_arguments_rejected_like_tf(tf_saver, tmp_path, clock):
    (tmp_path / "tf").mkdir()
    (tmp_path / "ck").mkdir()
    tf_s, ck_s = tf_saver(), Saver()
    for kwargs in (dict(latest_filename="sub/state"),):
        with pytest.raises(ValueError):
            tf_s.save(tmp_path / "tf" / "m", **kwargs)
        with pytest.raises(InvalidArgumentError):
            ck_s.save(VALUES, tmp_path / "ck" / "m", **kwargs)
    with pytest.raises(ValueError, match="collides"):
        tf_s.save(tmp_path / "tf" / "checkpoint")
    with pytest.raises(InvalidArgumentError, match="collides"):
        ck_s.save(VALUES, tmp_path / "ck" / "checkpoint")
    # a missing last directory level is created; a deeper miss fails, in both
    tf_s.save(tmp_path / "tf" / "new" / "m", write_meta_graph=False)
    ck_s.save(VALUES, tmp_path / "ck" / "new" / "m", write_meta_graph=False)
    assert snapshot(tmp_path / "ck" / "new") == snapshot(tmp_path / "tf" / "new")
    with pytest.raises(ValueError, match="Parent directory"):
        tf_s.save(tmp_path / "tf" / "a" / "b" / "m", write_meta_graph=False)
    with pytest.raises(InvalidArgumentError, match="parent directory"):
        ck_s.save(VALUES, tmp_path / "ck" / "a" / "b" / "m", write_meta_graph=False)
    assert not (tmp_path / "ck" / "a").exists() and not (tmp_path / "tf" / "a").exists()


# ---- restart: recover_last_checkpoints ----------------------------------------------

@pytest.mark.parametrize("second_max", [2, 3, 4])
def test_restart_recovers_list_like_tf(tf_saver, tmp_path, clock, second_max):
    pair = Pair(tf_saver, tmp_path, max_to_keep=3, keep_checkpoint_every_n_hours=1.0)
    for step in range(5):
        clock.now = T0 + step * 1200
        pair.save(global_step=step)
    # the process restarts two hours later; mtimes are made identical in both directories
    listed = {}
    for d in pair.dirs.values():
        for i, p in enumerate(sorted(d.glob("*.index"))):
            os.utime(p, (T0 + 1000 * i + 0.75, T0 + 1000 * i + 0.75))
    clock.now = T0 + 2 * HOUR
    pair2 = Pair(tf_saver, tmp_path, max_to_keep=second_max, keep_checkpoint_every_n_hours=0.5)
    import tensorflow as tf  # noqa: PLC0415 - TF only inside TF tests
    listed["tf"] = tf.compat.v1.train.get_checkpoint_state(str(pair.dirs["tf"])).all_model_checkpoint_paths
    listed["ck"] = state.get_checkpoint_state(pair.dirs["ck"]).all_model_checkpoint_paths
    pair2.tf.recover_last_checkpoints(listed["tf"])
    pair2.ck.recover_last_checkpoints(list(listed["ck"]))
    assert [t for _, t in pair2.ck._last_checkpoints] == [t for _, t in pair2.tf.saver._last_checkpoints]
    pair2.check()
    for step in range(5, 10):
        clock.now = T0 + 2 * HOUR + (step - 4) * 1000
        pair2.save(global_step=step)


def test_set_last_checkpoints_with_time_like_tf(tf_saver, tmp_path, clock):
    pair = Pair(tf_saver, tmp_path, max_to_keep=2, keep_checkpoint_every_n_hours=1.0)
    for step in range(3):
        pair.save(global_step=step, check=False)
    clock.now = T0 + 5 * HOUR
    for who, saver in (("tf", pair.tf.saver), ("ck", pair.ck)):
        d = pair.dirs[who]
        saver.set_last_checkpoints_with_time([(str(d / "model-0"), T0 + 2 * HOUR),
                                              (str(d / "model-1"), T0 - 1), (str(d / "model-2"), T0 + 3)])
    for step in range(3, 6):
        pair.save(global_step=step)


# ---- values --------------------------------------------------------------------------

def test_values_read_back_both_ways(tf, tf_saver, tmp_path):
    values = {"v": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "i": np.int32(-5),
              "d/e": np.array([1.5, np.nan], np.float64), "s": np.array([b"ab", b""], dtype=object)}
    ours = Saver().save(values, tmp_path / "ck" / "m", global_step=1, write_meta_graph=False)
    reader = tf.train.load_checkpoint(ours)
    assert sorted(reader.get_variable_to_shape_map()) == sorted(values)
    for k, v in values.items():
        np.testing.assert_array_equal(reader.get_tensor(k), v)
    tf_s = tf_saver(values=values)
    for k, v in tf_s.restore(ours).items():
        np.testing.assert_array_equal(v, values[k])
    theirs = tf_s.save(tmp_path / "tf" / "m", global_step=1)
    back = Saver().restore(theirs)
    assert sorted(back) == sorted(values)
    for k, v in back.items():
        np.testing.assert_array_equal(v, values[k])
        assert v.dtype == np.asarray(values[k]).dtype


def test_sharded_saver_tf_reads(tf, tmp_path):
    values = {f"x{i}": np.full((100,), i, np.float32) for i in range(6)}
    prefix = Saver(sharded=True, num_shards=3).save(values, tmp_path / "m", write_meta_graph=False)
    assert sorted(f for f in os.listdir(tmp_path) if ".data-" in f) == [
        f"m.data-0000{s}-of-00003" for s in range(3)]
    reader = tf.train.load_checkpoint(prefix)
    for k, v in values.items():
        np.testing.assert_array_equal(reader.get_tensor(k), v)


def test_seed_example_restore_shadow_into_v(tf1, tmp_path):
    """The seed document: TF writes v=10 and its EMA shadow 0.099999905; restore the shadow as v."""
    g = tf1.Graph()
    with g.as_default():
        v = tf1.Variable(0., name="v")
        ema = tf1.train.ExponentialMovingAverage(0.99)
        op = ema.apply([v])
        saver = tf1.train.Saver()
        with tf1.Session(graph=g) as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(tf1.assign(v, 10))
            sess.run(op)
            path = saver.save(sess, str(tmp_path / "model.ckpt"))
            tf_v, tf_shadow = sess.run([v, ema.average(v)])
    assert tf_v == 10.0 and tf_shadow == np.float32(0.099999905)
    got = Saver({"v/ExponentialMovingAverage": "v"}).restore(path)
    assert list(got) == ["v"] and got["v"].dtype == np.float32 and got["v"].shape == ()
    assert got["v"] == tf_shadow == np.float32(0.099999905)
    assert Saver({"v": "v"}).restore(path)["v"] == np.float32(10.0)
    assert Saver(["v"]).restore(path) == {"v": np.float32(10.0)}
    # the seed's third way: the mapping from ExponentialMovingAverage.variables_to_restore()
    ema_ck = ExponentialMovingAverage(0.99)
    ema_ck.apply({"v": np.float32(1)})
    assert ema_ck.variables_to_restore() == {"v/ExponentialMovingAverage": "v"}
    assert Saver(ema_ck.variables_to_restore()).restore(path) == {"v": tf_shadow}


def test_dict_var_list_save_is_read_by_tf_with_the_same_mapping(tf_saver, tmp_path):
    mapping = {"v/ExponentialMovingAverage": "v", "w_saved_as": "w"}
    prefix = Saver(mapping).save({"v": np.full((2, 3), 0.5, np.float32), "w": np.int64(3), "ignored": 1},
                                 tmp_path / "m", write_meta_graph=False)
    assert sorted(ckptkit.load(prefix)) == sorted(mapping)
    tf_s = tf_saver(values={"v": np.zeros((2, 3), np.float32), "w": np.int64(0)}, var_list=mapping)
    got = tf_s.restore(prefix)
    np.testing.assert_array_equal(got["v"], np.full((2, 3), 0.5, np.float32))
    assert got["w"] == 3
    assert Saver(mapping).restore(prefix)["w"] == 3


# ---- errors --------------------------------------------------------------------------

def test_errors(tmp_path):
    prefix = Saver(["v"]).save(VALUES, tmp_path / "m", write_meta_graph=False)
    with pytest.raises(TensorNotFoundError) as info:
        Saver({"v/ExponentialMovingAverage": "v"}).restore(prefix)
    assert prefix in str(info.value) and "v/ExponentialMovingAverage" in str(info.value)
    assert isinstance(info.value, KeyError) and isinstance(info.value, CheckpointError)
    with pytest.raises(NotFoundError):
        Saver().restore(tmp_path / "nothing")
    with pytest.raises(InvalidArgumentError):
        Saver().restore(None)
    for empty in ([], {}):
        with pytest.raises(InvalidArgumentError, match="no variables"):
            Saver(empty)
        s = Saver(empty, allow_empty=True)
        assert s.save(VALUES, tmp_path / "e") is None and s.restore(prefix) == {}
    with pytest.raises(InvalidArgumentError, match="no variables"):
        Saver().save({}, tmp_path / "e")
    assert Saver(allow_empty=True).save({}, tmp_path / "e") is None
    s = Saver(allow_empty=True)  # TF's testAllowEmpty: an empty save, then restore of that path
    with pytest.raises(InvalidArgumentError, match="no variables"):
        Saver().save({}, tmp_path / "e")
    with pytest.raises(NotFoundError):  # emptiness is not known before a save
        s.restore(tmp_path / "e")
    assert s.save({}, tmp_path / "e") is None and s.restore(tmp_path / "e") == {}
    assert s.save(VALUES, tmp_path / "full", write_meta_graph=False)  # no longer empty
    with pytest.raises(NotFoundError):
        s.restore(tmp_path / "e")
    with pytest.raises(InvalidArgumentError, match="'nope'"):
        Saver(["nope"]).save(VALUES, tmp_path / "m2")
    with pytest.raises(InvalidArgumentError):
        Saver(["v", "v"])
    with pytest.raises(InvalidArgumentError):
        Saver("v")
    with pytest.raises(InvalidArgumentError):
        Saver(max_to_keep=-1)
    with pytest.raises(InvalidArgumentError):
        Saver(num_shards=2)
    for bad in (True, 1.5, np.float32(2), np.array(2.0), np.zeros(2, np.int64), "7"):
        with pytest.raises(InvalidArgumentError):
            Saver().save(VALUES, tmp_path / "m3", global_step=bad)
    assert not any(n.startswith(("e", "m2", "m3")) for n in os.listdir(tmp_path))


# ---- safety: hostile state files -----------------------------------------------------

def hostile_setup(tmp_path, tag):
    """A managed directory whose state names checkpoints outside it, plus symlinks out."""
    base = tmp_path / tag
    managed, outside, elsewhere = base / "managed", base / "outside", tmp_path / f"elsewhere-{tag}"
    for d in (managed, outside, elsewhere):
        d.mkdir(parents=True)
    ckptkit.save(outside / "x", {"a": np.float32(1)})
    ckptkit.save(elsewhere / "y", {"a": np.float32(2)})
    ckptkit.save(outside / "real", {"a": np.float32(3)})
    ckptkit.save(outside / "z", {"a": np.float32(4)})
    for suffix in (".index", ".data-00000-of-00001"):
        (managed / f"link-3{suffix}").symlink_to(outside / f"real{suffix}")
    (managed / "sub").symlink_to(outside, target_is_directory=True)
    state.update_checkpoint_state(managed, managed / "link-3",
                                  ["../outside/x", str(elsewhere / "y"), "sub/z", str(managed / "link-3")])
    text = (managed / "checkpoint").read_text()
    assert '"../outside/x"' in text and f'"{elsewhere}/y"' in text
    outside_files = sorted(str(p) for d in (outside, elsewhere) for p in d.iterdir())
    for p in outside_files:  # older than the Saver: keep_checkpoint_every_n_hours won't spare them
        os.utime(p, (T0 - 100, T0 - 100))
    return managed, outside_files


def test_pruning_never_deletes_outside_managed_directory(tmp_path, clock, caplog):
    managed, outside_files = hostile_setup(tmp_path, "ck")
    s = Saver(max_to_keep=1)
    s.recover_last_checkpoints(state.get_checkpoint_state(managed).all_model_checkpoint_paths)
    assert len(s.last_checkpoints) == 4
    for step in range(6):
        clock.now += 1
        s.save(VALUES, managed / "model", global_step=step, write_meta_graph=False)
    assert all(os.path.exists(p) for p in outside_files)
    assert not os.path.lexists(managed / "link-3.index")  # the link itself was pruned
    refused = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
    assert len(refused) == 3  # ../outside/x, /elsewhere/y, sub/z (a symlinked directory)
    # TF's rule: one deletion per save, so a recovered list of 4 stays 4 long with max_to_keep=1
    assert s.last_checkpoints == [str(managed / f"model-{i}") for i in range(2, 6)]
    assert sorted(os.listdir(managed)) == sorted(["checkpoint", "sub"] + [
        f"model-{i}{suffix}" for i in range(2, 6) for suffix in (".data-00000-of-00001", ".index")])


def test_tf_saver_does_delete_outside_in_the_same_setup(tf_saver, tmp_path, clock):
    """Why the safety rule exists: TF's Saver follows the hostile state file out of its directory."""
    import tensorflow as tf  # noqa: PLC0415 - TF only inside TF tests
    managed, outside_files = hostile_setup(tmp_path, "tf")
    s = tf_saver(max_to_keep=1)
    s.recover_last_checkpoints(
        tf.compat.v1.train.get_checkpoint_state(str(managed)).all_model_checkpoint_paths)
    for step in range(6):
        clock.now += 1
        s.save(managed / "model", global_step=step, write_meta_graph=False)
    gone = [p for p in outside_files if not os.path.exists(p)]
    assert any("/outside/x." in p for p in gone) and any("elsewhere-tf/y." in p for p in gone)


def test_remove_checkpoint_with_root_on_hostile_paths(tmp_path):
    managed, outside_files = hostile_setup(tmp_path, "rm")
    for p in state.get_checkpoint_state(managed).all_model_checkpoint_paths:
        try:
            state.remove_checkpoint(p, root=managed)
        except InvalidArgumentError:
            pass
    assert all(os.path.exists(p) for p in outside_files)


@pytest.mark.parametrize("var_list", [None, {"v/ExponentialMovingAverage": "v", "w": "w"}])
def test_meta_graph_written_and_importable_by_tf(tf1, tmp_path, var_list):
    prefix = Saver(var_list, max_to_keep=2).save(VALUES, tmp_path / "m", global_step=3,
                                                 meta_graph_suffix="mg")
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "m-3.data-00000-of-00001", "m-3.index", "m-3.mg"]
    g = tf1.Graph()
    with g.as_default(), tf1.Session(graph=g) as sess:
        saver = tf1.train.import_meta_graph(prefix + ".mg")
        assert saver.saver_def.max_to_keep == 2
        saver.restore(sess, prefix)
        names = VALUES if var_list is None else ["v", "w"]
        got = sess.run({n: g.get_tensor_by_name(f"{n}:0") for n in names})
    for k in names:
        np.testing.assert_array_equal(got[k], VALUES[k])


def test_name_tf_graph_cannot_hold_fails_before_any_file_is_written(tmp_path):
    saver = ckptkit.Saver()
    with pytest.raises(ckptkit.InvalidArgumentError, match="write_meta_graph=False"):
        saver.save({"bad name": np.zeros(2)}, str(tmp_path / "model.ckpt"), global_step=1)
    assert os.listdir(tmp_path) == []
    prefix = saver.save({"bad name": np.zeros(2)}, str(tmp_path / "model.ckpt"), global_step=1,
                        write_meta_graph=False)
    assert ckptkit.load(prefix)["bad name"].tolist() == [0, 0]
