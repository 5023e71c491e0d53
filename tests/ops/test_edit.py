"""ckptkit.ops.edit: renames, removals, EMA swap and compaction as index rewrites, checked by TF."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from helpers import SEED_EMA, bounded_memory, same, tf_values

import ckptkit
from ckptkit.errors import InvalidArgumentError, TensorNotFoundError
from ckptkit.formats import bundle
from ckptkit.ops import edit

DATA = ".data-00000-of-00001"


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_rename_rewrites_only_the_index(tf, seed):
    data_before = digest(seed + DATA)
    before = tf_values(tf, seed)
    mapping = edit.rename_keys(seed, {"v": "w"})
    assert mapping == {"v": "w"}
    after = tf_values(tf, seed)
    assert sorted(after) == ["v/ExponentialMovingAverage", "w"]
    assert same(after["w"], before["v"]) and same(after["v/ExponentialMovingAverage"], SEED_EMA)
    assert digest(seed + DATA) == data_before
    assert not [n for n in os.listdir(os.path.dirname(seed)) if "tmp" in n]


def test_rename_there_and_back_gives_tfs_index_bytes(seed):
    """Our index writer lays out the same entries exactly as TF did."""
    original = digest(seed + ".index")
    edit.rename_keys(seed, {"v": "w"})
    assert digest(seed + ".index") != original
    edit.rename_keys(seed, {"w": "v"})
    assert digest(seed + ".index") == original


def test_rename_onto_existing_key_is_refused_and_changes_nothing(tf, seed):
    index_before = digest(seed + ".index")
    with pytest.raises(InvalidArgumentError) as info:
        edit.rename_keys(seed, {"v": "v/ExponentialMovingAverage"})
    assert "v/ExponentialMovingAverage" in str(info.value) and seed in str(info.value)
    assert digest(seed + ".index") == index_before


def test_rename_overwrite_drops_the_old_target(tf, seed):
    edit.rename_keys(seed, {"v": "v/ExponentialMovingAverage"}, overwrite=True)
    after = tf_values(tf, seed)
    assert sorted(after) == ["v/ExponentialMovingAverage"]
    assert same(after["v/ExponentialMovingAverage"], np.float32(10.0))


def test_swap_and_collisions(tf, seed):
    edit.rename_keys(seed, {"v": "v/ExponentialMovingAverage", "v/ExponentialMovingAverage": "v"})
    after = tf_values(tf, seed)
    assert same(after["v"], SEED_EMA) and same(after["v/ExponentialMovingAverage"], np.float32(10.0))
    index_before = digest(seed + ".index")
    with pytest.raises(InvalidArgumentError, match="both"):
        edit.rename_keys(seed, {"v": "x", "v/ExponentialMovingAverage": "x"}, overwrite=True)
    with pytest.raises(TensorNotFoundError, match="nope"):
        edit.rename_keys(seed, {"nope": "x"})
    with pytest.raises(InvalidArgumentError):
        edit.rename_keys(seed, {"v": ""})
    assert digest(seed + ".index") == index_before


def test_rename_with_function_and_dry_run(tf, dtypes_ckpt):
    before = tf_values(tf, dtypes_ckpt)
    index_before = digest(dtypes_ckpt + ".index")

    def renamer(key):
        return "model/" + key if key.startswith("ints/") else None

    planned = edit.rename_keys(dtypes_ckpt, renamer, dry_run=True)
    assert planned == {"ints/i32": "model/ints/i32", "ints/i64": "model/ints/i64",
                       "ints/i8": "model/ints/i8", "ints/u8": "model/ints/u8"}
    assert digest(dtypes_ckpt + ".index") == index_before
    assert edit.rename_keys(dtypes_ckpt, renamer) == planned
    after = tf_values(tf, dtypes_ckpt)
    assert sorted(after) == sorted(planned.get(k, k) for k in before)
    for old, value in before.items():
        assert same(after[planned.get(old, old)], value), old


def test_output_links_shards_and_leaves_source(tf, seed, tmp_path):
    index_before = digest(seed + ".index")
    out = os.fspath(tmp_path / "out" / "renamed.ckpt")
    edit.rename_keys(seed, {"v": "w"}, output=out)
    assert digest(seed + ".index") == index_before
    assert sorted(tf_values(tf, seed)) == ["v", "v/ExponentialMovingAverage"]
    after = tf_values(tf, out)
    assert sorted(after) == ["v/ExponentialMovingAverage", "w"] and same(after["w"], np.float32(10))
    assert os.stat(out + DATA).st_ino == os.stat(seed + DATA).st_ino  # same filesystem: hard link


def test_output_copies_when_linking_fails(tf, seed, tmp_path, monkeypatch):
    def no_link(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    out = os.fspath(tmp_path / "copy.ckpt")
    edit.rename_keys(seed, {"v": "w"}, output=out)
    assert os.stat(out + DATA).st_ino != os.stat(seed + DATA).st_ino
    assert digest(out + DATA) == digest(seed + DATA)
    assert same(tf_values(tf, out)["w"], np.float32(10))


def test_multi_shard_output_loads_in_tf(tf, tmp_path):
    src = ckptkit.save(os.fspath(tmp_path / "s.ckpt"),
                       {f"layer{i}/w": np.full((100,), i, np.float32) for i in range(6)}, num_shards=3)
    out = os.fspath(tmp_path / "o.ckpt")
    edit.rename_keys(src, lambda k: k.replace("layer", "block"), output=out)
    got = tf_values(tf, out)
    assert sorted(got) == [f"block{i}/w" for i in range(6)]
    for i in range(6):
        assert same(got[f"block{i}/w"], np.full((100,), i, np.float32))


def test_remove_and_compact(tf, dtypes_ckpt):
    before = tf_values(tf, dtypes_ckpt)
    size_before = os.path.getsize(dtypes_ckpt + DATA)
    assert edit.remove_keys(dtypes_ckpt, ["dense/kernel", "names"]) == ["dense/kernel", "names"]
    after = tf_values(tf, dtypes_ckpt)
    assert sorted(after) == sorted(set(before) - {"dense/kernel", "names"})
    assert os.path.getsize(dtypes_ckpt + DATA) == size_before  # bytes stay until compaction
    freed = edit.compact(dtypes_ckpt)
    assert freed == size_before - os.path.getsize(dtypes_ckpt + DATA) > 0
    compacted = tf_values(tf, dtypes_ckpt)
    assert sorted(compacted) == sorted(after)
    for key, value in after.items():
        assert same(compacted[key], value), key
    with pytest.raises(TensorNotFoundError, match="dense/kernel"):
        edit.remove_keys(dtypes_ckpt, ["dense/kernel"])


def test_compact_to_output_keeps_strings(tf, dtypes_ckpt, tmp_path):
    edit.remove_keys(dtypes_ckpt, ["bf16"])
    out = os.fspath(tmp_path / "c.ckpt")
    edit.compact(dtypes_ckpt, output=out)
    src, got = tf_values(tf, dtypes_ckpt), tf_values(tf, out)
    assert sorted(got) == sorted(src)
    for key in src:
        assert same(got[key], src[key]), key


def test_apply_ema_matches_tf_variables_to_restore(tf, tf1, seed, tmp_path):
    # TF's own answer: restore the original with ema.variables_to_restore().
    with tf.Graph().as_default():
        v = tf1.Variable(0.0, name="v")
        ema = tf1.train.ExponentialMovingAverage(0.99)
        ema.apply([v])
        restore_map = ema.variables_to_restore()
        with tf1.Session() as sess:
            tf1.train.Saver(restore_map).restore(sess, seed)
            expected = sess.run(v)
    assert sorted(restore_map) == ["v/ExponentialMovingAverage"]
    assert edit.ema_mapping(["v", "v/ExponentialMovingAverage"]) == {"v/ExponentialMovingAverage": "v"}
    ours = ckptkit.ExponentialMovingAverage(0.99) if hasattr(ckptkit, "ExponentialMovingAverage") else None
    if ours is not None:
        ours.apply({"v": np.float32(0)})
        assert ours.variables_to_restore() == {"v/ExponentialMovingAverage": "v"}
    mapping = edit.apply_ema(seed)
    assert mapping == {"v/ExponentialMovingAverage": "v"}
    after = tf_values(tf, seed)
    assert sorted(after) == ["v"]
    assert same(after["v"], expected) and same(after["v"], SEED_EMA)
    # A plain TF1 Saver now loads the averaged value straight into v.
    with tf.Graph().as_default():
        v = tf1.Variable(0.0, name="v")
        with tf1.Session() as sess:
            tf1.train.Saver().restore(sess, seed)
            assert same(sess.run(v), SEED_EMA)
    with pytest.raises(InvalidArgumentError, match="no moving averages"):
        edit.apply_ema(seed)


def test_sliced_variables_move_with_their_slices(tf, partitioned):
    """A partitioned variable is renamed or removed with every slice key (re-encoded)."""
    slice_keys = [k for k in bundle.BundleIndex(partitioned).keys() if edit.is_slice_key(k)]
    assert len(slice_keys) == 2  # TF wrote two slices, under OrderedCode keys starting with NUL
    assert edit.rename_keys(partitioned, {"part": "whole", "plain": "scalar"}) == {"part": "whole",
                                                                                   "plain": "scalar"}
    got = tf_values(tf, partitioned)
    assert sorted(got) == ["scalar", "whole"] and same(got["whole"], np.ones((4, 2), np.float32))
    keys = bundle.BundleIndex(partitioned).keys()
    assert len([k for k in keys if edit.is_slice_key(k)]) == 2 and not any("part" in k for k in keys)
    assert edit.remove_keys(partitioned, ["whole"]) == ["whole"]
    assert bundle.BundleIndex(partitioned).keys() == ["scalar"]
    assert sorted(tf_values(tf, partitioned)) == ["scalar"]


def test_missing_checkpoint_is_not_found(tmp_path):
    with pytest.raises(ckptkit.NotFoundError, match="nowhere"):
        edit.rename_keys(os.fspath(tmp_path / "nowhere"), {"a": "b"})


def test_output_edit_of_a_tensor_file_streams_one_tensor_at_a_time(tmp_path):
    """A `.safetensors` file (written by the safetensors package) edited into a V2 output:
    its tensors pass one at a time (peak memory below two of them), checked end to end."""
    from safetensors.numpy import save_file  # noqa: PLC0415 - a test dependency

    rng = np.random.default_rng(7)
    tensors = {f"layer{i}/w": rng.standard_normal(2 << 20, np.float32) for i in range(4)}  # 8 MiB each
    source = os.fspath(tmp_path / "model.safetensors")
    save_file(tensors, source)
    out = os.fspath(tmp_path / "out" / "model")
    with bounded_memory(14 << 20):
        assert edit.remove_keys(source, ["layer1/w"], output=out) == ["layer1/w"]
    got = ckptkit.load(out)
    assert sorted(got) == ["layer0/w", "layer2/w", "layer3/w"]
    assert all(np.array_equal(got[k], tensors[k]) for k in got)
    assert sorted(os.listdir(tmp_path / "out")) == ["model.data-00000-of-00001", "model.index"]
