"""Surgery on TF-written checkpoints: average, merge, stats; every result read back by TF."""
from __future__ import annotations

import math
import os

import ml_dtypes
import numpy as np
import pytest
from helpers import bounded_memory, make_v1, same, tf_values

import ckptkit
from ckptkit.errors import AlreadyExistsError, DataLossError, InvalidArgumentError, UnsupportedError
from ckptkit.formats import bundle
from ckptkit.formats.slices import SlicedTensor
from ckptkit.ops import average, info, merge, stats

OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"


def mean_of(values: list[np.ndarray]) -> np.ndarray:
    """The float64 mean cast back to the inputs' dtype (complex: complex128)."""
    arrays = [np.asarray(v) for v in values]
    wide = np.complex128 if arrays[0].dtype.kind == "c" else np.float64
    return np.mean(np.stack([a.astype(wide) for a in arrays]), axis=0).astype(arrays[0].dtype)


# --------------------------------------------------------------------------- average: TF1

@pytest.fixture(scope="module")
def tf1_run(tf, tf1, tmp_path_factory) -> str:
    """A TF1 Saver directory with 4 checkpoints of float32/64/16, bfloat16, a partitioned
    variable, global_step and a bool; every variable re-initialized at random per save."""
    directory = os.fspath(tmp_path_factory.mktemp("tf1_run"))
    with tf.Graph().as_default():
        tf1.set_random_seed(7)
        init = tf1.random_normal_initializer()
        tf1.get_variable("dense/kernel", [3, 4], tf.float32, init)
        tf1.get_variable("dense/bias", [4], tf.float64, init)
        tf1.Variable(tf.cast(tf1.random_normal([5]), tf.float16), name="half")
        tf1.Variable(tf.cast(tf1.random_normal([4]), tf.bfloat16), name="bf16")
        tf1.get_variable("emb", [6, 2], tf.float32, init, partitioner=tf1.fixed_size_partitioner(2))
        step = tf1.train.get_or_create_global_step()
        flag = tf1.Variable(True, name="flag")
        saver = tf1.train.Saver(max_to_keep=5, save_relative_paths=True)
        with tf1.Session() as sess:
            for i in range(4):
                sess.run(tf1.global_variables_initializer())
                sess.run([step.assign(100 * i + 7), flag.assign(i % 2 == 0)])
                saver.save(sess, os.path.join(directory, "model.ckpt"), global_step=step)
    return directory


def test_average_of_three_tf1_saver_checkpoints_is_the_float64_mean(tf, tf1, tf1_run, tmp_path):
    paths = average.last_checkpoints(tf1_run, 3)
    assert [os.path.basename(p) for p in paths] == ["model.ckpt-107", "model.ckpt-207", "model.ckpt-307"]
    inputs = [tf_values(tf, p) for p in paths]
    out = os.fspath(tmp_path / "avg" / "model.ckpt")
    result = average.average_checkpoints(paths, out, chunk_bytes=16)  # tiny chunks: many per tensor
    assert result["averaged"] == 5 and result["copied"] == 2 and result["meta"] == out + ".meta"

    got = tf_values(tf, out)  # TF reads what we wrote
    assert sorted(got) == sorted(inputs[-1])
    for key in ("dense/kernel", "dense/bias", "half", "bf16", "emb"):
        want = mean_of([v[key] for v in inputs])
        assert same(got[key], want), key
        assert not same(got[key], inputs[-1][key]), key  # really averaged
    assert got["global_step"] == 307 and got["flag"] == np.False_  # from the last (i = 3: odd)
    assert ckptkit.CheckpointReader(out).slices("emb") == ckptkit.CheckpointReader(paths[-1]).slices("emb")
    np.testing.assert_array_equal(  # hand-checkable: the mean of three bf16 values, rounded to bf16
        got["bf16"], ((inputs[0]["bf16"].astype(np.float64) + inputs[1]["bf16"].astype(np.float64)
                       + inputs[2]["bf16"].astype(np.float64)) / 3).astype(ml_dtypes.bfloat16))

    # TF1 restores it through the .meta copied beside it, partitioned variable included
    with tf.Graph().as_default(), tf1.Session() as sess:
        saver = tf1.train.import_meta_graph(out + ".meta")
        saver.restore(sess, out)
        emb = mean_of([v["emb"] for v in inputs])
        variables = {v.op.name: v for v in tf1.global_variables()}
        restored = sess.run({"k": variables["dense/kernel"], "p0": variables["emb/part_0"],
                             "p1": variables["emb/part_1"], "step": variables["global_step"]})
    assert same(restored["k"], got["dense/kernel"])
    assert same(restored["p0"], emb[:3]) and same(restored["p1"], emb[3:])
    assert restored["step"] == 307


def test_average_refuses_checkpoints_that_disagree_naming_the_key(tf1_run, tmp_path):
    first = average.last_checkpoints(tf1_run, 1)[0]
    values = ckptkit.load(first)
    other = ckptkit.save(os.fspath(tmp_path / "other"), {**values, "extra": np.float32(1)})
    with pytest.raises(InvalidArgumentError, match="'extra'") as info:
        average.average_checkpoints([first, other], tmp_path / "out")
    assert info.value.key == "extra"
    reshaped = ckptkit.save(os.fspath(tmp_path / "reshaped"),
                            {**values, "dense/bias": np.zeros(5, np.float64)})
    with pytest.raises(InvalidArgumentError, match=r"'dense/bias'.*float64\[5\]"):
        average.average_checkpoints([first, reshaped], tmp_path / "out")
    recast = ckptkit.save(os.fspath(tmp_path / "recast"), {**values, "half": values["half"].astype(np.float32)})
    with pytest.raises(InvalidArgumentError, match="'half'"):
        average.average_checkpoints([recast, first], tmp_path / "out")
    assert not os.path.exists(tmp_path / "out.index")
    with pytest.raises(InvalidArgumentError, match="replace one of the checkpoints"):
        average.average_checkpoints([first, other], other)
    with pytest.raises(InvalidArgumentError, match="lists 4"):
        average.last_checkpoints(tf1_run, 5)


# --------------------------------------------------------------------------- average: TF2

@pytest.fixture(scope="module")
def tf2_run(tf, tmp_path_factory):
    """A TF2 CheckpointManager directory: a Keras model and its Adam slots, 3 saves."""
    directory = os.fspath(tmp_path_factory.mktemp("tf2_run"))
    tf.random.set_seed(3)
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(4), tf.keras.layers.Dense(2)])
    optimizer = tf.keras.optimizers.Adam(0.1)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=5)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(tf.random.normal((2, 3))) ** 2)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                      strict=True))
        manager.save()
    return directory


def test_average_of_tf2_checkpoints_restores_in_tf_with_the_object_graph(tf, tf2_run, tmp_path):
    paths = average.last_checkpoints(tf2_run, 3)
    inputs = [tf_values(tf, p) for p in paths]
    out = os.fspath(tmp_path / "avg" / "ckpt")
    result = average.average_checkpoints(paths, out)
    assert result["meta"] is None  # TF2 writes no .meta
    got = tf_values(tf, out)
    assert sorted(got) == sorted(inputs[-1])
    averaged = 0
    for key, value in inputs[-1].items():
        if np.asarray(value).dtype.kind == "f":
            assert same(got[key], mean_of([v[key] for v in inputs])), key
            averaged += 1
        else:  # save_counter, the optimizer's iteration, the object graph: the last one's
            assert same(got[key], value), key
    assert averaged == result["averaged"] and averaged >= 8  # kernels, biases, Adam's m and v
    assert got[OBJECT_GRAPH] == inputs[-1][OBJECT_GRAPH]

    def restored_weights(prefix: str) -> list[np.ndarray]:
        """The model's weights as TF restores them from `prefix` into a fresh model."""
        model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(4), tf.keras.layers.Dense(2)])
        tf.train.Checkpoint(model=model).restore(prefix).assert_existing_objects_matched()
        return [w.numpy() for w in model.weights]

    each = [restored_weights(p) for p in paths]
    for got_weight, *input_weights in zip(restored_weights(out), *each, strict=True):
        assert same(got_weight, mean_of(input_weights))


def test_average_streams_in_bounded_memory(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(ckptkit.save(os.fspath(tmp_path / f"m{i}"), {"big": rng.standard_normal(8 << 20, np.float32),
                                                                   "step": np.int64(i)}))
    want = mean_of([ckptkit.load_variable(p, "big") for p in paths])
    with bounded_memory(16 << 20):  # three 32 MiB inputs, one 32 MiB output
        average.average_checkpoints(paths, tmp_path / "avg")
    assert same(ckptkit.load_variable(tmp_path / "avg", "big"), want)
    assert ckptkit.load_variable(tmp_path / "avg", "step") == 2


def test_average_complex_and_partitioned_written_by_ckptkit(tmp_path):
    rng = np.random.default_rng(1)
    values = [{"c": rng.standard_normal(3).astype(np.complex64) * 1j, "p": rng.standard_normal((7, 2))}
              for _ in range(2)]
    paths = [ckptkit.save(os.fspath(tmp_path / f"m{i}"), {"c": v["c"], "p": SlicedTensor.split(v["p"], 3)})
             for i, v in enumerate(values)]
    average.average_checkpoints(paths, tmp_path / "avg")
    got = ckptkit.load(tmp_path / "avg")
    assert same(got["c"], mean_of([v["c"] for v in values])) and same(got["p"], mean_of([v["p"] for v in values]))
    assert len(ckptkit.CheckpointReader(tmp_path / "avg").slices("p")) == 3


# --------------------------------------------------------------------------- merge

def _save_v2(tf, prefix: str, tensors: dict, slices: dict | None = None) -> str:
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                      shape_and_slices=[(slices or {}).get(n, "") for n in names],
                      tensors=[tensors[n] for n in names])
    return prefix


def test_merge_of_two_tf_written_parts_reads_in_tf(tf, tf1, tmp_path):
    a = _save_v2(tf, os.fspath(tmp_path / "a" / "part"), {
        "w": tf.constant(np.arange(12, dtype=np.float32).reshape(3, 4)), "names": tf.constant([b"x", b"yz"])})
    b = _save_v2(tf, os.fspath(tmp_path / "b" / "part"), {
        "v": tf.constant([1.5, -2.0], tf.float64), "step": tf.constant(42, tf.int64)})
    expected = {**tf_values(tf, a), **tf_values(tf, b)}
    out = os.fspath(tmp_path / "merged" / "model.ckpt")
    result = merge.merge_checkpoints([a, b], out)
    assert result == {"output": out, "parts": [a, b], "tensors": 4, "shards": 2}

    got = tf_values(tf, out)  # TF's reader
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert same(got[key], value), key
    # byte for byte: each part's data shard is the merged checkpoint's, hard-linked here
    for shard, part in enumerate([a, b]):
        source, merged_shard = bundle.data_filename(part, 0, 1), bundle.data_filename(out, shard, 2)
        assert os.stat(source).st_ino == os.stat(merged_shard).st_ino
    # and a TF1 Saver restores every variable from it
    with tf.Graph().as_default(), tf1.Session() as sess:
        w = tf1.Variable(tf.zeros([3, 4]), name="w")
        v = tf1.Variable(tf.zeros([2], tf.float64), name="v")
        tf1.train.Saver([w, v]).restore(sess, out)
        assert same(sess.run(w), expected["w"]) and same(sess.run(v), expected["v"])

    # TF's own MergeV2Checkpoints on copies of the parts gives the same tensors
    theirs = os.fspath(tmp_path / "tf_merged" / "model.ckpt")
    copies = [_save_v2(tf, os.fspath(tmp_path / f"c{i}" / "part"),
                       {k: tf.constant(val) for k, val in tf_values(tf, p).items()}) for i, p in enumerate([a, b])]
    tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=copies, destination_prefix=theirs)
    assert sorted(tf_values(tf, theirs)) == sorted(got)
    with open(theirs + ".index", "rb") as f, open(out + ".index", "rb") as g:
        assert f.read() == g.read()  # the same index, byte for byte: shards numbered as TF numbers them


def test_merge_joins_a_partitioned_variable_split_across_parts(tf, tmp_path):
    emb = np.arange(8, dtype=np.float32).reshape(4, 2)
    a = _save_v2(tf, os.fspath(tmp_path / "a"), {"emb": tf.constant(emb[:2]), "x": tf.constant(1.0)},
                 {"emb": "4 2 0,2:-"})
    b = _save_v2(tf, os.fspath(tmp_path / "b"), {"emb": tf.constant(emb[2:])}, {"emb": "4 2 2,2:-"})
    out = os.fspath(tmp_path / "m")
    assert merge.merge_checkpoints([a, b], out)["tensors"] == 2
    got = tf_values(tf, out)
    assert same(got["emb"], emb) and got["x"] == np.float32(1.0)
    assert [s.spec() for s in ckptkit.CheckpointReader(out).slices("emb")] == ["0,2:-", "2,2:-"]
    theirs = os.fspath(tmp_path / "tf_merged")
    tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=[
        _save_v2(tf, os.fspath(tmp_path / "ca"), {"emb": tf.constant(emb[:2]), "x": tf.constant(1.0)},
                 {"emb": "4 2 0,2:-"}),
        _save_v2(tf, os.fspath(tmp_path / "cb"), {"emb": tf.constant(emb[2:])}, {"emb": "4 2 2,2:-"})],
        destination_prefix=theirs)
    with open(theirs + ".index", "rb") as f, open(out + ".index", "rb") as g:
        assert f.read() == g.read()  # slice lists joined as TF joins them
    with pytest.raises(InvalidArgumentError, match="do not make the whole variable"):
        merge.merge_checkpoints([a], tmp_path / "half")


def test_merge_refuses_duplicates_and_v1_naming_them(tf, tf1, tmp_path):
    a = _save_v2(tf, os.fspath(tmp_path / "a"), {"w": tf.constant(1.0), "u": tf.constant(2.0)})
    b = _save_v2(tf, os.fspath(tmp_path / "b"), {"w": tf.constant(3.0)})
    with pytest.raises(InvalidArgumentError, match=r"'w' is in both .*a and .*b") as info:
        merge.merge_checkpoints([a, b], tmp_path / "out")
    assert info.value.key == "w" and not os.path.exists(tmp_path / "out.index")
    with pytest.raises(InvalidArgumentError, match="given twice"):
        merge.merge_checkpoints([a, a], tmp_path / "out")
    with pytest.raises(InvalidArgumentError, match="replace one of the parts"):
        merge.merge_checkpoints([a], a)

    old = make_v1(tf1, os.fspath(tmp_path))
    with pytest.raises(UnsupportedError, match="only V2"):
        merge.merge_checkpoints([a, old], tmp_path / "out")


# --------------------------------------------------------------------------- stats

def test_stats_finds_planted_nan_and_inf_with_hand_checked_numbers(tf, tmp_path):
    prefix = _save_v2(tf, os.fspath(tmp_path / "s"), {
        "w": tf.constant([1, 2, 3, 4, 0, 0, np.nan, np.inf], tf.float32),
        "i": tf.constant([-3, 0, 5], tf.int32),
        "ok": tf.constant([[0.5, 0.5], [-0.5, -0.5]], tf.float64),
        "flags": tf.constant([True, False, True]),
        "names": tf.constant([b"a", b"bc"]),
    })
    report = stats.checkpoint_stats(prefix, chunk_bytes=8)  # 2 float32s per chunk
    by = {t["name"]: t for t in report["tensors"]}
    # w's finite values are 1, 2, 3, 4, 0, 0: mean 10/6, variance 30/6 - (10/6)^2 = 20/9
    w = by["w"]["stats"]
    assert (w["nan"], w["inf"], w["zeros"], w["min"], w["max"]) == (1, 1, 2, 0.0, 4.0)
    assert w["mean"] == pytest.approx(10 / 6, rel=1e-15) and w["std"] == pytest.approx(math.sqrt(20 / 9), rel=1e-15)
    assert by["i"]["stats"] == {"elements": 3, "zeros": 1, "min": -3, "max": 5, "mean": pytest.approx(2 / 3),
                                "std": pytest.approx(math.sqrt((121 / 9 + 4 / 9 + 169 / 9) / 3))}
    assert by["ok"]["stats"]["mean"] == 0.0 and by["ok"]["stats"]["std"] == 0.5
    assert by["flags"]["stats"] == {"elements": 3, "true": 2, "false": 1}
    assert by["names"]["stats"] is None and by["names"]["dtype"] == "string"
    assert report["nonfinite"] == ["w"] and (report["nan"], report["inf"]) == (1, 1) and not report["ok"]
    clean = stats.checkpoint_stats(prefix, "[iof]*")
    assert [t["name"] for t in clean["tensors"]] == ["flags", "i", "ok"] and clean["ok"]


def test_stats_of_a_big_tensor_in_bounded_memory_and_checked(tmp_path):
    values = np.random.default_rng(2).standard_normal(12 << 20, np.float32)  # 48 MiB
    values[123_456_789 % values.size] = np.nan
    prefix = ckptkit.save(os.fspath(tmp_path / "big"), {"x": values})
    with bounded_memory(16 << 20):
        report = stats.checkpoint_stats(prefix)
    finite = values[~np.isnan(values)].astype(np.float64)
    got = report["tensors"][0]["stats"]
    assert got["nan"] == 1 and got["min"] == finite.min() and got["max"] == finite.max()
    assert got["mean"] == pytest.approx(finite.mean(), abs=1e-12) and got["std"] == pytest.approx(finite.std())
    # a flipped byte in the last chunk's span fails the crc summed over the whole entry
    entry = ckptkit.CheckpointReader(prefix).entry("x")
    shard = bundle.data_filename(prefix, 0, 1)
    with open(shard, "r+b") as f:
        f.seek(entry.offset + entry.size - 1)
        last = f.read(1)
        f.seek(entry.offset + entry.size - 1)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(DataLossError, match="checksum"):
        stats.checkpoint_stats(prefix)


def test_show_stats_and_stats_share_numbers(tf, dtypes_ckpt):
    with ckptkit.CheckpointReader(dtypes_ckpt) as reader:
        for name in ("dense/kernel", "dense/bias", "ints/i32", "half", "bf16", "cplx", "flags", "empty"):
            assert info.tensor_stats(reader.get_tensor(name)) == stats.stream_stats(reader, name, 4), name


def test_stats_of_partitioned_and_v1_checkpoints_match_tf_values(tf, tf1, partitioned, tmp_path):
    for prefix in (partitioned, make_v1(tf1, os.fspath(tmp_path))):
        expected = tf_values(tf, prefix)
        report = stats.checkpoint_stats(prefix, chunk_bytes=4)
        assert sorted(t["name"] for t in report["tensors"]) == sorted(expected)
        for t in report["tensors"]:
            want = None if t["dtype"] == "string" else stats.array_stats(np.asarray(expected[t["name"]]))
            assert t["stats"] == want, t["name"]


def test_diff_compares_in_bounded_memory_across_layouts(tmp_path):
    values = np.random.default_rng(4).standard_normal((1 << 10, 1 << 13), np.float32)  # 32 MiB
    a = ckptkit.save(os.fspath(tmp_path / "a"), {"x": values, "s": np.array([b"p", b"q"], dtype=object)})
    changed = values.copy()
    changed[-1, -1] += 1  # in the last chunk
    b = ckptkit.save(os.fspath(tmp_path / "b"), {"x": changed, "s": np.array([b"p", b"q"], dtype=object)})
    with bounded_memory(16 << 20):
        report = info.diff_checkpoints(a, b)
    assert report["values"] == [{"name": "x", "dtype": "float32", "mismatched": 1, "elements": values.size,
                                 "max_abs_diff": pytest.approx(1.0, abs=1e-6),
                                 "max_rel_diff": pytest.approx(1 / max(abs(values[-1, -1]), abs(changed[-1, -1])),
                                                               rel=1e-6)}]
    # a partitioned tensor against a plain and a .npz copy of the same values: equal
    small = values[:6, :5]
    sliced = ckptkit.save(os.fspath(tmp_path / "sliced"), {"x": SlicedTensor.split(small, 3, axis=1)})
    plain = ckptkit.save(os.fspath(tmp_path / "plain"), {"x": small})
    np.savez(tmp_path / "x.npz", x=small)
    for other in (plain, os.fspath(tmp_path / "x.npz")):
        assert info.diff_checkpoints(sliced, other)["equal"], other


# --------------------------------------------------------------------------- existing outputs

def _files(directory) -> dict[str, bytes]:
    return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))}


def _tf2_weights(tf, prefix: str) -> list[np.ndarray]:
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(4), tf.keras.layers.Dense(2)])
    tf.train.Checkpoint(model=model).restore(prefix).assert_existing_objects_matched()
    return [w.numpy() for w in model.weights]


def test_average_needs_two_and_replaces_an_output_only_with_overwrite(tf, tf1, tf1_run, tf2_run, tmp_path):
    out = os.fspath(tmp_path / "avg" / "model.ckpt")
    with pytest.raises(InvalidArgumentError, match="two or more checkpoints, got 1"):
        average.average_checkpoints(average.last_checkpoints(tf1_run, 1), out)
    assert not os.path.exists(tmp_path / "avg")
    tf1_paths, tf2_paths = average.last_checkpoints(tf1_run, 2), average.last_checkpoints(tf2_run, 2)
    assert average.average_checkpoints(tf1_paths, out)["meta"] == out + ".meta"
    before = _files(tmp_path / "avg")
    with pytest.raises(AlreadyExistsError, match=r"model\.ckpt: a checkpoint already exists.*--overwrite"):
        average.average_checkpoints(tf2_paths, out)
    assert _files(tmp_path / "avg") == before

    # Replaced by an average of TF2 checkpoints: the TF1 .meta beside it would be a lie, and goes.
    result = average.average_checkpoints(tf2_paths, out, overwrite=True)
    assert result["meta"] is None and not os.path.exists(out + ".meta")
    assert OBJECT_GRAPH in tf_values(tf, out) and "dense/kernel" not in tf_values(tf, out)
    for got, *inputs in zip(_tf2_weights(tf, out), *[_tf2_weights(tf, p) for p in tf2_paths], strict=True):
        assert same(got, mean_of(inputs))
    # And back: the TF1 average with its .meta, which TF imports and restores.
    average.average_checkpoints(tf1_paths, out, overwrite=True)
    with tf.Graph().as_default(), tf1.Session() as sess:
        tf1.train.import_meta_graph(out + ".meta").restore(sess, out)
        step = sess.run(tf1.train.get_global_step())
    assert step == tf_values(tf, tf1_paths[-1])["global_step"]


def test_merge_replaces_an_output_only_with_overwrite_dropping_its_old_files(tf, tf1, tmp_path):
    a = _save_v2(tf, os.fspath(tmp_path / "a"), {"w": tf.constant([1.0, 2.0])})
    b = _save_v2(tf, os.fspath(tmp_path / "b"), {"step": tf.constant(5, tf.int64)})
    out_dir = os.fspath(tmp_path / "out")
    with tf.Graph().as_default():  # the output: a TF1 Saver checkpoint of another graph, one shard, a .meta
        tf1.Variable(tf.zeros([3]), name="old")
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            out = tf1.train.Saver().save(sess, os.path.join(out_dir, "model.ckpt"))
    before = _files(out_dir)
    with pytest.raises(AlreadyExistsError, match="--overwrite"):
        merge.merge_checkpoints([a, b], out)
    assert _files(out_dir) == before
    assert merge.merge_checkpoints([a, b], out, overwrite=True)["shards"] == 2
    assert sorted(f for f in os.listdir(out_dir) if f.startswith("model.ckpt")) == [
        "model.ckpt.data-00000-of-00002", "model.ckpt.data-00001-of-00002", "model.ckpt.index"]
    got = tf_values(tf, out)
    assert sorted(got) == ["step", "w"] and same(got["w"], np.array([1.0, 2.0], np.float32))
    assert tf.train.latest_checkpoint(out_dir) == out  # the Saver's state file still names it
