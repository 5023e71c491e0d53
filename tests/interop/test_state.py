"""ckptkit.tf1.state against TF's checkpoint_management: the state file, mtimes, removal.

TF's functions run on the same inputs; their state files are compared byte for byte
with ckptkit's, and removals by the names left behind. The safety tests check what
TF does not promise: nothing outside a checkpoint's directory is ever deleted.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import ckptkit
from ckptkit.errors import InvalidArgumentError, NotFoundError
from ckptkit.tf1 import state
from ckptkit.tf1.saver import Saver


@pytest.fixture(scope="module")
def cm(tf):
    from tensorflow.python.checkpoint import checkpoint_management  # noqa: PLC0415 - TF only inside TF tests
    return checkpoint_management


def touch(path, data=b"x"):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def names(directory) -> list[str]:
    return sorted(os.listdir(directory))


def fake_v2(prefix, shards=1, meta=True):
    touch(prefix + ".index")
    for s in range(shards):
        touch(f"{prefix}.data-{s:05d}-of-{shards:05d}")
    if meta:
        touch(prefix + ".meta")


# ---- update_checkpoint_state: the same bytes as TF -------------------------------------

UPDATE_CASES = [
    dict(model="M/model-3", paths=["M/model-1", "M/model-2", "M/model-3"]),
    dict(model="M/model-3", paths=["M/model-1", "M/model-2"]),           # latest appended
    dict(model="M/model-3", paths=None),
    dict(model="M/model-3", paths=["M/model-3", "M/model-1"]),           # latest not last
    dict(model="M/model-2", paths=["M/model-1", "M/model-2"], stamps=[1.5, 1700000000.25],
         preserved=1699999999.125),
    dict(model="M/model-2", paths=["M/model-1"], stamps=[3.0, 4.0]),     # 2 after appending
    dict(model="model-2", paths=["model-1", "model-2"]),                 # relative names
    dict(model="/elsewhere/model-2", paths=["M/model-1", "/elsewhere/model-2"]),
]


@pytest.mark.parametrize("relative_dir", [False, True], ids=["abs-dir", "rel-dir"])
@pytest.mark.parametrize("save_relative", [False, True], ids=["abs-paths", "rel-paths"])
@pytest.mark.parametrize("case", range(len(UPDATE_CASES)))
def test_update_checkpoint_state_bytes_match_tf(cm, tmp_path, monkeypatch, case, relative_dir,
                                                save_relative):
    c = UPDATE_CASES[case]
    monkeypatch.chdir(tmp_path)
    out = {}
    for who in ("tf", "ck"):
        d = tmp_path / who
        d.mkdir()
        save_dir = who if relative_dir else str(d)
        model = in_dir(c["model"], save_dir)
        paths = [in_dir(p, save_dir) for p in c["paths"]] if c["paths"] is not None else None
        if save_relative and paths is None:
            paths = []  # TF iterates the list when save_relative_paths; None would crash it
        kwargs = dict(all_model_checkpoint_timestamps=c.get("stamps"),
                      last_preserved_timestamp=c.get("preserved"), save_relative_paths=save_relative)
        given = list(paths) if paths is not None else None
        if who == "tf":
            cm.update_checkpoint_state_internal(save_dir, model, given, **kwargs)
        else:
            state.update_checkpoint_state(save_dir, model, given, **kwargs)
            assert given == paths  # the caller's list is not modified (TF appends to it)
        text = (d / "checkpoint").read_bytes()
        out[who] = text.replace(str(d).encode(), b"<DIR>").replace(str(tmp_path).encode(), b"<TMP>")
    assert out["ck"] == out["tf"]


def in_dir(p: str, save_dir: str) -> str:
    """Test paths spell the save directory as "M/"."""
    return save_dir + p[1:] if p.startswith("M/") else p


def test_update_checkpoint_state_validation_like_tf(cm, tmp_path):
    d = str(tmp_path)
    # timestamps that don't match the paths (after appending the latest)
    with pytest.raises(ValueError):
        cm.update_checkpoint_state(d, f"{d}/m-2", [f"{d}/m-1"], all_model_checkpoint_timestamps=[1.0])
    with pytest.raises(InvalidArgumentError, match="timestamps"):
        state.update_checkpoint_state(d, f"{d}/m-2", [f"{d}/m-1"], all_model_checkpoint_timestamps=[1.0])
    # the latest checkpoint would be the state file itself
    with pytest.raises(RuntimeError):
        cm.update_checkpoint_state(d, f"{d}/checkpoint")
    with pytest.raises(InvalidArgumentError, match="conflicts"):
        state.update_checkpoint_state(d, f"{d}/checkpoint")
    with pytest.raises(InvalidArgumentError, match="conflicts"):
        state.update_checkpoint_state(d, f"{d}/ckpt-state", latest_filename="ckpt-state")
    # stricter than TF: the state file stays in save_dir
    with pytest.raises(InvalidArgumentError, match="path components"):
        state.update_checkpoint_state(d, f"{d}/m-1", latest_filename="../checkpoint")
    with pytest.raises(NotFoundError):
        state.update_checkpoint_state(f"{d}/missing", f"{d}/missing/m-1")
    assert names(d) == []


def test_update_state_is_atomic_and_leaves_no_temp(tmp_path):
    state.update_checkpoint_state(tmp_path, tmp_path / "m-1", [tmp_path / "m-1"])
    state.update_checkpoint_state(tmp_path, tmp_path / "m-2", [tmp_path / "m-1", tmp_path / "m-2"])
    assert names(tmp_path) == ["checkpoint"]


# ---- reading the state -----------------------------------------------------------------

@pytest.mark.parametrize("relative", [False, True])
def test_get_checkpoint_state_and_latest_like_tf(tf1, cm, tmp_path, monkeypatch, relative):
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "run"
    fake_v2(str(d / "model-1"))
    fake_v2(str(d / "model-2"))
    save_dir = "run" if relative else str(d)
    cm.update_checkpoint_state_internal(save_dir, f"{save_dir}/model-2",
                                        [f"{save_dir}/model-1", f"{save_dir}/model-2"],
                                        all_model_checkpoint_timestamps=[10.0, 20.0],
                                        last_preserved_timestamp=5.0)
    for query in (save_dir, str(d)):
        theirs = tf1.train.get_checkpoint_state(query)
        ours = ckptkit_state(query)
        assert ours.model_checkpoint_path == theirs.model_checkpoint_path
        assert list(ours.all_model_checkpoint_paths) == list(theirs.all_model_checkpoint_paths)
        assert list(ours.all_model_checkpoint_timestamps) == [10.0, 20.0]
        assert ours.last_preserved_timestamp == theirs.last_preserved_timestamp == 5.0
        assert state.latest_checkpoint(query) == tf1.train.latest_checkpoint(query)
    assert state.latest_checkpoint(tmp_path) is None and tf1.train.latest_checkpoint(str(tmp_path)) is None


def ckptkit_state(d):
    return state.get_checkpoint_state(d)


def test_latest_checkpoint_custom_latest_filename(tf1, tmp_path):
    fake_v2(str(tmp_path / "a-1"))
    state.update_checkpoint_state(tmp_path, tmp_path / "a-1", latest_filename="mystate")
    assert state.latest_checkpoint(tmp_path) is None
    theirs = tf1.train.latest_checkpoint(str(tmp_path), "mystate")
    assert state.latest_checkpoint(tmp_path, "mystate") == theirs
    assert state.latest_checkpoint(tmp_path, latest_filename="mystate") == str(tmp_path / "a-1")


def test_latest_checkpoint_state_naming_missing_checkpoint(tf1, tmp_path):
    state.update_checkpoint_state(tmp_path, tmp_path / "gone-1")
    assert state.latest_checkpoint(tmp_path) is None is tf1.train.latest_checkpoint(str(tmp_path))


def test_moved_directory_resolves_into_new_place(tf1, tmp_path):
    """Better than TF: absolute paths into the old place find the same checkpoint here."""
    old = tmp_path / "old"
    s = Saver(max_to_keep=3)
    for step in (1, 2):
        s.save({"v": np.float32(step)}, str(old / "model"), global_step=step, write_meta_graph=False)
    assert state.read_state_file(old / "checkpoint").model_checkpoint_path == str(old / "model-2")
    new = tmp_path / "new"
    old.rename(new)
    assert tf1.train.latest_checkpoint(str(new)) is None  # TF follows the stale absolute path
    assert state.latest_checkpoint(new) == str(new / "model-2")
    st = state.get_checkpoint_state(new)
    assert list(st.all_model_checkpoint_paths) == [str(new / "model-1"), str(new / "model-2")]
    assert ckptkit.load(state.latest_checkpoint(new))["v"] == np.float32(2)


# ---- checkpoint_exists, get_checkpoint_mtimes ------------------------------------------

def test_checkpoint_exists_and_mtimes_like_tf(cm, tmp_path):
    fake_v2(str(tmp_path / "v2-1"), shards=2)
    touch(str(tmp_path / "v1-1"))
    fake_v2(str(tmp_path / "v2-2"))
    os.utime(tmp_path / "v2-1.index", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    os.utime(tmp_path / "v1-1", ns=(1_500_000_000_987_654_321, 1_500_000_000_987_654_321))
    prefixes = [str(tmp_path / p) for p in ("v2-1", "missing", "v1-1", "v2-2", "nodir/x")]
    for p in prefixes:
        assert state.checkpoint_exists(p) == cm.checkpoint_exists(p), p
    ours = state.get_checkpoint_mtimes(prefixes)
    assert ours == cm.get_checkpoint_mtimes(prefixes)
    assert ours == [1_600_000_000.0, 1_500_000_000.0, ours[2]]  # TF's local fs: whole seconds


# ---- remove_checkpoint: the same names left as TF --------------------------------------

DISTRACTORS = ["model-1.index.bak", "model-10.index", "model-10.data-00000-of-00001", "model-10.meta",
               "model-1x.meta", "model-1.data-00000-of-00001.tmp", "xmodel-1.index", "model-1.metax",
               "model-1.data-0-of-1", "model", "checkpoint"]


@pytest.mark.parametrize("version,suffix", [(state.V2, "meta"), (state.V2, "mg"), (state.V1, "meta")])
def test_remove_checkpoint_leaves_what_tf_leaves(cm, tmp_path, version, suffix):
    dirs = {}
    for who in ("tf", "ck"):
        d = tmp_path / who
        fake_v2(str(d / "model-1"), shards=3)
        touch(str(d / f"model-1.{suffix}"))
        touch(str(d / "model-1"))               # a V1 file of the same prefix
        for n in DISTRACTORS:
            touch(str(d / n))
        dirs[who] = d
    before = set(names(dirs["ck"]))
    cm.remove_checkpoint(str(dirs["tf"] / "model-1"), version, suffix)
    removed = state.remove_checkpoint(dirs["ck"] / "model-1", version, suffix)
    assert names(dirs["ck"]) == names(dirs["tf"])
    assert sorted(os.path.basename(p) for p in removed) == sorted(before - set(names(dirs["ck"])))
    assert len(removed) == (5 if version == state.V2 else 2)


def test_remove_v1_sharded_like_tf(cm, tmp_path):
    for who in ("tf", "ck"):
        for s in range(2):
            touch(str(tmp_path / who / f"m-7-{s:05d}-of-00002"))
        touch(str(tmp_path / who / "m-7.meta"))
        touch(str(tmp_path / who / "m-7-00000-of-00003"))
    cm.remove_checkpoint(str(tmp_path / "tf" / "m-7-?????-of-00002"), state.V1)
    state.remove_checkpoint(str(tmp_path / "ck" / "m-7-?????-of-00002"), state.V1)
    assert names(tmp_path / "ck") == names(tmp_path / "tf") == ["m-7-00000-of-00003"]


# ---- safety: never delete outside the checkpoint's directory ----------------------------

def test_remove_checkpoint_refuses_outside_root(tmp_path):
    managed = tmp_path / "managed"
    outside = tmp_path / "outside"
    fake_v2(str(outside / "x"))
    managed.mkdir()
    with pytest.raises(InvalidArgumentError, match="outside"):
        state.remove_checkpoint(str(managed / ".." / "outside" / "x"), root=managed)
    with pytest.raises(InvalidArgumentError, match="outside"):
        state.remove_checkpoint(str(outside / "x"), root=managed)
    (managed / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidArgumentError, match="outside"):
        state.remove_checkpoint(str(managed / "sub" / "x"), root=managed)
    assert names(outside) == ["x.data-00000-of-00001", "x.index", "x.meta"]


def test_remove_checkpoint_unlinks_symlinks_not_targets(tmp_path):
    outside = tmp_path / "outside"
    fake_v2(str(outside / "real"))
    d = tmp_path / "d"
    d.mkdir()
    for suffix in (".index", ".data-00000-of-00001", ".meta"):
        (d / f"model-5{suffix}").symlink_to(outside / f"real{suffix}")
    (d / "model-5.data-00001-of-00002").mkdir()  # a directory with a data name: never removed
    removed = state.remove_checkpoint(d / "model-5", root=d)
    assert len(removed) == 3
    assert names(d) == ["model-5.data-00001-of-00002"]
    assert names(outside) == ["real.data-00000-of-00001", "real.index", "real.meta"]


def test_checkpoint_files_lists_only_own_names(tmp_path):
    fake_v2(str(tmp_path / "model-1"), shards=2)
    for n in DISTRACTORS:
        touch(str(tmp_path / n))
    assert [os.path.basename(p) for p in state.checkpoint_files(tmp_path / "model-1")] == [
        "model-1.data-00000-of-00002", "model-1.data-00001-of-00002", "model-1.index", "model-1.meta"]
    assert state.checkpoint_files(tmp_path / "nodir" / "model-1") == []
    assert state.checkpoint_files(str(tmp_path) + "/") == []


def test_meta_graph_filename_like_tf(cm):
    for p in ("a/model-10", "a/model-10-00001-of-00002", "a/model-10-?????-of-00002", "m.ckpt"):
        for suffix in ("meta", "mg"):
            assert state.meta_graph_filename(p, suffix) == cm.meta_graph_filename(p, suffix)


def test_copied_directory_does_not_touch_original(tmp_path):
    """A copy whose state names absolute paths into the original: removal stays in the copy."""
    orig = tmp_path / "orig"
    s = Saver(max_to_keep=2)
    for step in (1, 2):
        s.save({"v": np.float32(step)}, str(orig / "m"), global_step=step, write_meta_graph=False)
    copy = tmp_path / "copy"
    shutil.copytree(orig, copy)
    s2 = Saver(max_to_keep=2)
    s2.recover_last_checkpoints(state.get_checkpoint_state(copy).all_model_checkpoint_paths)
    # the state's absolute paths exist in orig, so they resolve there; pruning must refuse them
    for step in (3, 4):
        s2.save({"v": np.float32(step)}, str(copy / "m"), global_step=step, write_meta_graph=False)
    assert sorted(names(orig)) == ["checkpoint", "m-1.data-00000-of-00001", "m-1.index",
                                   "m-2.data-00000-of-00001", "m-2.index"]
