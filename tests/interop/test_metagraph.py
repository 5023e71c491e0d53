"""ckptkit.tf1.metagraph against real TensorFlow.

Writing: ckptkit writes checkpoint + .meta; TF's import_meta_graph + Saver.restore must give
back the values, the variable collections and the SaverDef. Structure is compared node by
node with what TF's own Saver exports for the same variables.
Summarizing: TF writes the .meta; the summary must agree with TF's own graph.
"""
from __future__ import annotations

import collections
import os

import ml_dtypes
import numpy as np
import pytest

import ckptkit
from ckptkit.dtypes import as_dtype
from ckptkit.errors import DataLossError, InvalidArgumentError, NotFoundError, UnsupportedError
from ckptkit.tf1.metagraph import (
    GRAPH_PRODUCER,
    build_meta_graph,
    read_meta_graph,
    summarize_meta_graph,
    write_meta_graph,
)

NUMERIC = ["float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64",
           "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128"]


def _array(dtype: str, shape, rng) -> np.ndarray:
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    if dtype.startswith("complex"):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    npd = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    return (rng.standard_normal(shape) * 100).astype(npd)


def _values() -> dict[str, np.ndarray]:
    """Every dtype as a matrix, a scalar and a zero-size tensor, under scoped names."""
    rng = np.random.default_rng(1234)
    out = {}
    for dtype in NUMERIC:
        out[f"net/{dtype}/matrix"] = _array(dtype, (2, 3), rng)
        out[f"net/{dtype}/scalar"] = _array(dtype, (), rng)
        out[f"{dtype}.empty"] = _array(dtype, (0, 4), rng)
    out["text/vector"] = np.array([b"a", b"", "ünï ✓".encode(), bytes(range(256))], dtype=object)
    out["text/scalar"] = np.array(b"hello", dtype=object)
    out["text/empty"] = np.zeros((0,), dtype=object)
    out["a/b/c"] = np.arange(5, dtype=np.int32)
    return out


def _specs(values):
    return {name: (as_dtype(v.dtype), v.shape) for name, v in values.items()}


def _assert_same(got, expected, key):
    got = np.asarray(got)
    assert got.shape == expected.shape, key
    if expected.dtype == object:
        assert got.tolist() == expected.tolist(), key
    else:
        assert got.dtype.itemsize == expected.dtype.itemsize, key
        assert got.tobytes() == expected.tobytes(), key


def _no_temp_files(directory):
    assert not [n for n in os.listdir(directory) if "ckptkit-tmp" in n]


# --------------------------------------------------------------------------- writing

@pytest.mark.parametrize("sharded", [False, True])
def test_tf_imports_and_restores_every_dtype(tmp_path, tf1, sharded):
    values = _values()
    prefix = ckptkit.save(str(tmp_path / "model.ckpt"), values)
    write_meta_graph(prefix + ".meta", _specs(values), max_to_keep=3,
                     keep_checkpoint_every_n_hours=2.5, sharded=sharded)
    _no_temp_files(tmp_path)
    with tf1.Graph().as_default():
        saver = tf1.train.import_meta_graph(prefix + ".meta")
        assert [v.op.name for v in tf1.global_variables()] == list(values)
        assert [v.op.name for v in tf1.trainable_variables()] == list(values)
        for v in tf1.global_variables():
            assert v.dtype.base_dtype.name == as_dtype(values[v.op.name].dtype).name
            assert v.shape.as_list() == list(values[v.op.name].shape)
        sd = saver.saver_def
        assert (sd.filename_tensor_name, sd.restore_op_name) == ("save/Const:0", "save/restore_all")
        assert sd.save_tensor_name == ("save/Identity:0" if sharded else "save/control_dependency:0")
        assert (sd.max_to_keep, sd.keep_checkpoint_every_n_hours, sd.sharded) == (3, 2.5, sharded)
        assert sd.version == 2  # V2
        with tf1.Session() as sess:
            # The initializers run (zeros, b"" for strings) ...
            sess.run(tf1.global_variables_initializer())
            assert sess.run("text/scalar:0") == b""
            assert not sess.run("net/float32/matrix:0").any()
            # ... and restore overwrites every variable with the checkpoint's values.
            saver.restore(sess, prefix)
            got = sess.run({name: f"{name}:0" for name in values})
            for name, expected in values.items():
                _assert_same(got[name], expected, name)
            # The save subgraph works too: TF re-saves, ckptkit reads it back.
            resaved = saver.save(sess, str(tmp_path / "resaved"), write_meta_graph=False)
    back = ckptkit.load(resaved)
    assert set(back) == set(values)
    for name, expected in values.items():
        _assert_same(back[name], expected, name)


def test_seed_flow_restores_ema_shadow_into_variable(tmp_path, tf1):
    """The seed tutorial's EMA example: TF writes v and its shadow; the .meta maps the shadow to v."""
    prefix = str(tmp_path / "model.ckpt")
    with tf1.Graph().as_default():
        v = tf1.Variable(0, dtype=tf1.float32, name="v", use_resource=False)
        ema = tf1.train.ExponentialMovingAverage(0.99)
        apply = ema.apply(tf1.global_variables())
        with tf1.Session() as sess:
            sess.run(v.initializer)  # the shadow's initializer reads v
            sess.run(tf1.global_variables_initializer())
            sess.run(tf1.assign(v, 10))
            sess.run(apply)
            shadow = sess.run(ema.average(v))
            tf1.train.Saver().save(sess, prefix, write_meta_graph=False)
    assert shadow == np.float32(0.099999905)
    write_meta_graph(prefix + ".meta", {"v": (as_dtype("float32"), ())},
                     {"v/ExponentialMovingAverage": "v"})
    with tf1.Graph().as_default():
        saver = tf1.train.import_meta_graph(prefix + ".meta")
        with tf1.Session() as sess:
            saver.restore(sess, prefix)
            assert sess.run("v:0") == shadow


def test_mapping_with_keys_unlike_names(tmp_path, tf1):
    values = {"ckpt/kernel": np.arange(6, dtype=np.float64).reshape(2, 3),
              "other": np.array(b"s", dtype=object)}
    prefix = ckptkit.save(str(tmp_path / "m"), values)
    specs = {"model/dense/kernel": (as_dtype("float64"), (2, 3)), "a/b/c": (as_dtype("string"), ()),
             "unsaved": (as_dtype("int32"), (4,))}
    write_meta_graph(prefix + ".meta", specs, {"ckpt/kernel": "model/dense/kernel", "other": "a/b/c"})
    with tf1.Graph().as_default():
        saver = tf1.train.import_meta_graph(prefix + ".meta")
        assert [v.op.name for v in tf1.global_variables()] == list(specs)
        with tf1.Session() as sess:
            sess.run(tf1.variables_initializer([v for v in tf1.global_variables() if v.op.name == "unsaved"]))
            saver.restore(sess, prefix)
            _assert_same(sess.run("model/dense/kernel:0"), values["ckpt/kernel"], "kernel")
            assert sess.run("a/b/c:0") == b"s"
            assert sess.run("unsaved:0").tolist() == [0, 0, 0, 0]


def _strip(node_def):
    """A NodeDef as comparable data: attrs that only describe (shapes, initial values) dropped."""
    attrs = {}
    for key, value in node_def.attr.items():
        if key == "_output_shapes" or (node_def.op == "Const" and key == "value"
                                       and not node_def.name.startswith("save")):
            continue
        attrs[key] = value.SerializeToString(deterministic=True)
    return node_def.name, node_def.op, tuple(node_def.input), node_def.device, attrs


@pytest.mark.parametrize("sharded", [False, True])
def test_graph_matches_what_tf_exports(tf1, sharded):
    """Same nodes, inputs, devices and attrs as TF's Saver graph, and TF's own OpDefs."""
    from tensorflow.core.protobuf import meta_graph_pb2 as tf_meta_graph_pb2  # noqa: PLC0415 - TF only inside TF tests

    specs = {"v": ("float32", (2, 3)), "a/s": ("string", ()), "z/int": ("int64", (0,))}
    with tf1.Graph().as_default():
        for name, (dtype, shape) in specs.items():
            initial = np.zeros(shape, dtype=object if dtype == "string" else dtype)
            if dtype == "string":
                initial = initial.astype(bytes)
            tf1.Variable(initial, dtype=dtype, name=name, use_resource=False)
        tf_mg = tf1.train.Saver(sharded=sharded).export_meta_graph()
    ours = tf_meta_graph_pb2.MetaGraphDef.FromString(build_meta_graph(
        {n: (as_dtype(d), s) for n, (d, s) in specs.items()}, sharded=sharded).SerializeToString())

    assert sorted(map(_strip, ours.graph_def.node)) == sorted(map(_strip, tf_mg.graph_def.node))
    assert ours.saver_def == tf_mg.saver_def
    assert ours.collection_def == tf_mg.collection_def
    assert list(ours.meta_info_def.stripped_op_list.op) == list(tf_mg.meta_info_def.stripped_op_list.op)
    assert 0 < ours.graph_def.versions.producer == GRAPH_PRODUCER <= tf_mg.graph_def.versions.producer


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "int4"])
def test_dtypes_without_assign_kernel_rejected(dtype):
    """TF (2.21) has no Assign kernel for these: a .meta holding them could never restore."""
    with pytest.raises(UnsupportedError, match="x"):
        build_meta_graph({"x": (as_dtype(dtype), (2,))})


def test_initial_values_are_tiny(tmp_path):
    path = str(tmp_path / "big.meta")
    write_meta_graph(path, {"big": (as_dtype("float32"), (4096, 4096))})
    assert os.path.getsize(path) < 4096


@pytest.mark.parametrize("name", ["", "bad name", "_private", "-x", "v:0", "a//b\n", "ü"])
def test_invalid_variable_names_rejected(name):
    with pytest.raises(InvalidArgumentError):
        build_meta_graph({name: (as_dtype("float32"), ())})


@pytest.mark.parametrize("variables,saved", [
    ({"v": ("float32", ()), "v/read": ("float32", ())}, None),              # node name clash
    ({"v": ("float32", ())}, {"k": "w"}),                                    # unknown variable
    ({"v": ("float32", ())}, {"k": "v", "k2": "v"}),                         # one variable, two keys
    ({"v": ("float32", ())}, {}),                                            # nothing to save
    ({"v": ("float32", (-1,))}, None),                                       # bad shape
])
def test_invalid_arguments_rejected(variables, saved):
    variables = {n: (as_dtype(d), s) for n, (d, s) in variables.items()}
    with pytest.raises(InvalidArgumentError):
        build_meta_graph(variables, saved)


def test_save_scope_avoids_variable_names(tmp_path, tf1):
    """A variable under "save/" pushes the saver to "save_1/", as TF's unique_name would."""
    values = {"save/x": np.ones((2,), np.float32)}
    prefix = ckptkit.save(str(tmp_path / "m"), values)
    write_meta_graph(prefix + ".meta", _specs(values))
    assert read_meta_graph(prefix + ".meta").saver_def.restore_op_name == "save_1/restore_all"
    with tf1.Graph().as_default():
        saver = tf1.train.import_meta_graph(prefix + ".meta")
        with tf1.Session() as sess:
            saver.restore(sess, prefix)
            assert sess.run("save/x:0").tolist() == [1, 1]


# --------------------------------------------------------------------------- summarizing

def _tf_summary_facts(tf_mg, graph):
    """What the summary should say, computed from TF's own objects."""
    ops = collections.Counter(n.op for n in graph.as_graph_def().node)
    cols = {}
    for name, col in tf_mg.collection_def.items():
        kind = col.WhichOneof("kind")
        cols[name] = {"kind": kind, "size": len(getattr(col, kind).value)}
    return dict(sorted(ops.items())), cols


def test_summarize_tf1_seed_graph_with_ema(tmp_path, tf, tf1):
    path = str(tmp_path / "model.ckpt.meta")
    g = tf1.Graph()
    with g.as_default():
        v1 = tf1.Variable(tf1.random_normal([1, 2]), name="v1", use_resource=False)
        tf1.Variable(tf1.random_normal([2, 3]), name="v2", use_resource=False)
        step = tf1.Variable(0, name="global_step", trainable=False, use_resource=False)
        ema = tf1.train.ExponentialMovingAverage(0.99, step)
        ema.apply([v1])
        saver = tf1.train.Saver(max_to_keep=4, keep_checkpoint_every_n_hours=2)
        tf_mg = saver.export_meta_graph(path)
        expected_vars = [(v.op.name, v.dtype.base_dtype.name, v.shape.as_list(),
                          any(v is t for t in tf1.trainable_variables()))
                         for v in tf1.global_variables()]
        ops, cols = _tf_summary_facts(tf_mg, g)
    s = summarize_meta_graph(path)
    assert s["tensorflow_version"] == tf.__version__
    assert s["tensorflow_git_version"] == tf.version.GIT_VERSION
    assert s["ops"] == ops
    assert s["num_nodes"] == sum(ops.values()) == len(tf_mg.graph_def.node)
    assert s["collections"] == cols
    assert "moving_average_variables" in cols
    got = [(v["name"], v["dtype"], v["shape"], v["trainable"]) for v in s["variables"]]
    assert got == expected_vars
    assert ("v1/ExponentialMovingAverage", "float32", [1, 2], False) in got
    assert not any(v["resource"] for v in s["variables"])
    assert s["saver_def"] == {
        "filename_tensor_name": saver.saver_def.filename_tensor_name,
        "save_tensor_name": saver.saver_def.save_tensor_name,
        "restore_op_name": saver.saver_def.restore_op_name,
        "max_to_keep": 4, "sharded": False, "keep_checkpoint_every_n_hours": 2.0, "version": "V2"}
    assert s["signature_defs"] == []
    assert s["functions"] == len(tf_mg.graph_def.library.function)  # EMA's cond bodies


def test_summarize_resource_variable_graph(tmp_path, tf, tf1):
    path = str(tmp_path / "res.meta")
    g = tf1.Graph()
    with g.as_default():
        r = tf1.Variable(tf1.zeros([3], tf1.int64), name="scope/r", use_resource=True)
        tf1.Variable(tf1.ones([2, 2], tf1.bfloat16), name="frozen", trainable=False, use_resource=True)

        @tf.function
        def double(x):
            return x * 2
        double(tf1.constant(1.0))
        signature = tf1.saved_model.signature_def_utils.predict_signature_def(
            {"x": r.read_value()}, {"y": r + 1})
        tf_mg = tf1.train.Saver().export_meta_graph()
        tf_mg.signature_def["serving_default"].CopyFrom(signature)
        with open(path, "wb") as f:
            f.write(tf_mg.SerializeToString())
        ops, cols = _tf_summary_facts(tf_mg, g)
    s = summarize_meta_graph(path)
    assert s["signature_defs"] == ["serving_default"]
    assert s["ops"] == ops and ops["VarHandleOp"] == 2
    assert s["collections"] == cols
    assert s["functions"] == len(tf_mg.graph_def.library.function) >= 1
    assert s["variables"] == [
        {"name": "scope/r", "dtype": "int64", "shape": [3], "trainable": True, "resource": True},
        {"name": "frozen", "dtype": "bfloat16", "shape": [2, 2], "trainable": False, "resource": True},
    ]


def test_summarize_text_format_meta(tmp_path, tf1):
    """export_meta_graph(as_text=True) writes text protobuf; TF reads it back, so do we."""
    path = str(tmp_path / "text.meta")
    with tf1.Graph().as_default():
        tf1.Variable(1.0, name="t", use_resource=False)
        tf1.train.Saver().export_meta_graph(path, as_text=True)
    s = summarize_meta_graph(path)
    assert [v["name"] for v in s["variables"]] == ["t"]
    assert s["saver_def"]["restore_op_name"] == "save/restore_all"


def test_summarize_what_we_wrote(tmp_path):
    path = str(tmp_path / "ours.meta")
    write_meta_graph(path, {"v": (as_dtype("bfloat16"), (2,)), "s": (as_dtype("string"), ())},
                     {"v/ExponentialMovingAverage": "v", "s": "s"}, max_to_keep=0)
    s = summarize_meta_graph(path)
    assert s["tensorflow_git_version"] == f"ckptkit {ckptkit.__version__}"
    assert s["variables"] == [
        {"name": "v", "dtype": "bfloat16", "shape": [2], "trainable": True, "resource": False},
        {"name": "s", "dtype": "string", "shape": [], "trainable": True, "resource": False}]
    assert s["ops"]["VariableV2"] == 2 and s["ops"]["RestoreV2"] == 1
    assert s["collections"] == {"trainable_variables": {"kind": "bytes_list", "size": 2},
                                "variables": {"kind": "bytes_list", "size": 2}}
    assert s["saver_def"]["max_to_keep"] == 0


# --------------------------------------------------------------------------- bad input

def test_garbage_meta_raises_data_loss(tmp_path):
    path = tmp_path / "garbage.meta"
    path.write_bytes(b"\xff\xfe this is not a protobuf \x00\x01")
    with pytest.raises(DataLossError, match="garbage.meta"):
        read_meta_graph(str(path))
    with pytest.raises(DataLossError, match="garbage.meta"):
        summarize_meta_graph(str(path))


def test_empty_meta_raises_data_loss(tmp_path):
    path = tmp_path / "empty.meta"
    path.write_bytes(b"")
    with pytest.raises(DataLossError, match="empty.meta"):
        read_meta_graph(str(path))


def test_missing_meta_raises_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="missing.meta"):
        read_meta_graph(str(tmp_path / "missing.meta"))


def test_write_errors_name_the_file(tmp_path):
    path = str(tmp_path / "bad.meta")
    with pytest.raises(InvalidArgumentError, match="bad.meta"):
        write_meta_graph(path, {"bad name": (as_dtype("float32"), ())})
    with pytest.raises(NotFoundError, match="nodir"):
        write_meta_graph(str(tmp_path / "nodir" / "m.meta"), {"v": (as_dtype("float32"), ())})
    assert os.listdir(tmp_path) == []


def test_trainable_split_matches_tf_for_the_seed_example(tmp_path, tf1):
    """TF makes global_step and EMA shadows non-trainable; our default graph agrees."""
    with tf1.Graph().as_default():
        v = tf1.Variable(0.0, name="v")
        tf1.train.get_or_create_global_step()
        tf1.train.ExponentialMovingAverage(0.99).apply([v])
        tf_trainable = sorted(x.op.name for x in tf1.trainable_variables())
        tf_all = sorted(x.op.name for x in tf1.global_variables())
    values = {"v": np.float32(10), "v/ExponentialMovingAverage": np.float32(0.1),
              "global_step": np.int64(1)}
    prefix = ckptkit.save(str(tmp_path / "model.ckpt"), values)
    write_meta_graph(prefix + ".meta", _specs(values))
    with tf1.Graph().as_default():
        tf1.train.import_meta_graph(prefix + ".meta")
        assert sorted(x.op.name for x in tf1.global_variables()) == tf_all
        assert sorted(x.op.name for x in tf1.trainable_variables()) == tf_trainable == ["v"]
    explicit = str(tmp_path / "explicit.meta")
    write_meta_graph(explicit, _specs(values), trainable=["global_step"])
    with tf1.Graph().as_default():
        tf1.train.import_meta_graph(explicit)
        assert [x.op.name for x in tf1.trainable_variables()] == ["global_step"]
