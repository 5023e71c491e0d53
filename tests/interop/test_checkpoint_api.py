"""ckptkit.Checkpoint against tf.train.Checkpoint: the same objects make the same files.

TF is the oracle both ways: for the same nested structure (dicts in TF track as
objects just as tf.Module attributes do) `write` and `save` must produce TF's files
byte for byte (index, data, object graph, state file); TF must read what ckptkit
writes with `assert_consumed()` and get every value exactly; ckptkit must read what
TF writes back into the nested dict of its objects.
"""
from __future__ import annotations

import os
import types

import numpy as np
import pytest
from helpers import assert_same_tensor, make_seed, variety

import ckptkit
from ckptkit.errors import CheckpointError, InvalidArgumentError, NotFoundError
from ckptkit.formats.objectgraph import OBJECT_GRAPH_KEY, ObjectGraph
from ckptkit.proto.trackable_object_graph_pb2 import TrackableObjectGraph
from ckptkit.tf2.checkpoint import ATTRIBUTES_KEY, build_object_graph

FILES = (".index", ".data-00000-of-00001")


def nest(flat: dict) -> dict:
    """{"a/b": v} -> {"a": {"b": v}}."""
    out: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def leaves(tree: dict, prefix: str = "") -> dict:
    """The inverse of nest (for trees without sharing)."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else key
        out.update(leaves(value, path) if isinstance(value, dict) else {path: value})
    return out


def tf_variables(tf, tree, like=None):
    """The same tree with each array a tf.Variable (`like`: zeros of each array's dtype/shape)."""
    def var(v):
        v = np.asarray(v)
        if like == "zeros":
            v = np.zeros(v.shape, dtype=v.dtype) if v.dtype != object else np.full(v.shape, b"", dtype=object)
        return tf.Variable(v)
    return {k: tf_variables(tf, v, like) if isinstance(v, dict) else var(v) for k, v in tree.items()}


def same_files(a: str, b: str) -> None:
    for suffix in FILES:
        with open(a + suffix, "rb") as fa, open(b + suffix, "rb") as fb:
            assert fa.read() == fb.read(), suffix


def tf_graph(tf, prefix: str) -> TrackableObjectGraph:
    """The object graph TF's own reader finds in `prefix`."""
    graph = TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(prefix).get_tensor(OBJECT_GRAPH_KEY))
    return graph


@pytest.fixture(scope="module")
def tree():
    """Every dtype (matrix, scalar, empty; strings), nested two and three levels deep."""
    return nest(variety(np.random.default_rng(20261125)))


# ---- writing: TF's bytes, TF reads it ------------------------------------------------

def test_write_is_byte_identical_to_tf(tf, tmp_path, tree):
    tf_prefix = tf.train.Checkpoint(model=tf_variables(tf, tree), step=tf.Variable(np.int64(7))).write(
        str(tmp_path / "tf"))
    ours = ckptkit.Checkpoint(model=tree, step=np.int64(7)).write(tmp_path / "ours")
    assert ours == str(tmp_path / "ours")
    same_files(tf_prefix, ours)


def test_tf_reads_ckptkit_write_with_assert_consumed(tf, tmp_path, tree):
    prefix = ckptkit.Checkpoint(model=tree, step=np.int64(7), lr=np.float32(0.5)).write(str(tmp_path / "ck"))
    target = tf_variables(tf, tree, like="zeros")
    step, lr = tf.Variable(np.int64(0)), tf.Variable(np.float32(0))
    tf.train.Checkpoint(model=target, step=step, lr=lr).read(prefix).assert_consumed()
    assert step.numpy() == 7 and lr.numpy() == np.float32(0.5)
    got = leaves(target)
    for key, want in leaves(tree).items():
        assert_same_tensor(got[key].numpy(), want, key)


def test_tf_module_attributes_restore(tf, tmp_path):
    """The issue's example: a tf.Module with attribute `dense` holding kernel and bias."""
    k = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([0.5, -1, 2], np.float32)
    prefix = ckptkit.Checkpoint(model={"dense": {"kernel": k, "bias": b}}, step=np.int64(7)).write(
        str(tmp_path / "ck"))
    with ckptkit.CheckpointReader(prefix) as reader:
        assert sorted(reader) == [OBJECT_GRAPH_KEY, "model/dense/bias/.ATTRIBUTES/VARIABLE_VALUE",
                                  "model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE", "step/.ATTRIBUTES/VARIABLE_VALUE"]
    m = tf.Module()
    m.dense = tf.Module()
    m.dense.kernel = tf.Variable(np.zeros((2, 3), np.float32))
    m.dense.bias = tf.Variable(np.zeros(3, np.float32))
    v = tf.Variable(np.int64(0))
    tf.train.Checkpoint(model=m, step=v).read(prefix).assert_consumed()
    assert np.array_equal(m.dense.kernel.numpy(), k) and np.array_equal(m.dense.bias.numpy(), b) and v.numpy() == 7
    # and the same module, written by TF, gives the same bytes
    m.dense.kernel.assign(k)
    m.dense.bias.assign(b)
    same_files(tf.train.Checkpoint(model=m, step=v).write(str(tmp_path / "tf")), prefix)


def test_names_are_escaped_and_orders_kept_like_tf(tf, tmp_path):
    """Root kwargs sorted, nested keys in insertion order, `/` and `.` escaped in keys."""
    tree = {"zz": np.float32(1), "a/b.c": {"x.y": np.int32(2), "0": np.float32(3)}, "aa": np.float64(4)}
    tf_prefix = tf.train.Checkpoint(zeta=tf_variables(tf, tree), alpha=tf.Variable(np.int8(5))).write(
        str(tmp_path / "tf"))
    ours = ckptkit.Checkpoint(zeta=tree, alpha=np.int8(5)).write(str(tmp_path / "ours"))
    same_files(tf_prefix, ours)
    with ckptkit.CheckpointReader(ours) as reader:
        assert "zeta/a.Sb..c/x..y/.ATTRIBUTES/VARIABLE_VALUE" in reader


def test_python_scalars_are_numpy_defaults(tf, tmp_path):
    prefix = ckptkit.Checkpoint(i=3, f=1.5, s="text", b=True).write(str(tmp_path / "ck"))
    i, f = tf.Variable(np.int64(0)), tf.Variable(np.float64(0))
    s, b = tf.Variable(b""), tf.Variable(False)
    tf.train.Checkpoint(i=i, f=f, s=s, b=b).read(prefix).assert_consumed()
    assert (i.numpy(), f.numpy(), s.numpy(), b.numpy()) == (3, 1.5, b"text", True)


def test_shared_objects_are_one_node_like_tf(tf, tmp_path):
    """One array (or dict) in two places is one object with two edges, as a shared variable
    (or tf.Module) is. (TF wraps a plain dict anew at each place it is assigned.)"""
    shared = np.arange(4, dtype=np.float32)
    layer = {"w": np.ones(2, np.float32)}
    tree = {"a": {"kernel": shared}, "b": {"alias": shared}, "l1": layer, "l2": layer}
    v = tf.Variable(shared)
    tf_layer = tf.Module()
    tf_layer.w = tf.Variable(layer["w"])
    tf_prefix = tf.train.Checkpoint(m={"a": {"kernel": v}, "b": {"alias": v}, "l1": tf_layer, "l2": tf_layer}).write(
        str(tmp_path / "tf"))
    ours = ckptkit.Checkpoint(m=tree).write(str(tmp_path / "ours"))
    same_files(tf_prefix, ours)
    back = ckptkit.Checkpoint().read(ours)
    assert back["m"]["a"]["kernel"] is back["m"]["b"]["alias"]
    assert back["m"]["l1"] is back["m"]["l2"]


def test_root_mapping_like_tf_root_module(tf, tmp_path):
    """root=: the root's own attributes, then the keyword arguments and TF's `root` self-edge."""
    m = tf.Module()
    m.kernel = tf.Variable(np.eye(2, dtype=np.float32))
    m.inner = tf.Module()
    m.inner.b = tf.Variable(np.float32(3))
    tf_ckpt = tf.train.Checkpoint(root=m, step=tf.Variable(np.int64(2)), a=tf.Variable(np.int8(1)))
    root = {"kernel": np.eye(2, dtype=np.float32), "inner": {"b": np.float32(3)}}
    ours = ckptkit.Checkpoint(root=root, step=np.int64(2), a=np.int8(1))
    same_files(tf_ckpt.save(str(tmp_path / "tf" / "ck")), ours.save(str(tmp_path / "ours" / "ck")))
    tf_ckpt.save(str(tmp_path / "tf" / "ck"))  # again, now that both counters exist
    with ckptkit.CheckpointReader(ours.save(str(tmp_path / "ours" / "ck"))) as reader:
        assert "kernel/.ATTRIBUTES/VARIABLE_VALUE" in reader
        assert ObjectGraph.from_reader(reader).root.children["root"].id == 0
    same_files(str(tmp_path / "tf" / "ck-2"), str(tmp_path / "ours" / "ck-2"))
    # read back: the self-edge is left out of the tree; the root's attributes go into `root`
    inner = np.zeros((), np.float32)
    held = {"kernel": np.zeros((2, 2), np.float32), "inner": {"b": inner}}
    ckpt = ckptkit.Checkpoint(root=held, step=np.array(0, np.int64))
    tree = ckpt.restore(str(tmp_path / "tf" / "ck-2"))
    assert set(tree) == {"kernel", "inner", "step", "a"} and ckpt.save_counter == 2
    assert np.array_equal(held["kernel"], np.eye(2)) and inner == 3 and ckpt.step == 2 and held["a"] == 1


def test_object_graph_nodes_match_tf(tf, tmp_path):
    """Node by node: children, attributes (name, full_name, checkpoint_key), has_checkpoint_values."""
    tree = {"dense": {"kernel": np.ones((2, 2), np.float32), "bias": np.zeros(2, np.float32)},
            "empty": {}, "deep": {"deeper": {"v": np.int32(1)}}}
    ckpt = tf.train.Checkpoint(model=tf_variables(tf, tree))
    ckpt.save_counter  # noqa: B018 - TF creates the counter on access; ours on save/restore
    want = tf_graph(tf, ckpt.write(str(tmp_path / "tf")))
    ours = ckptkit.Checkpoint(model=tree)
    ours.restore(None)  # creates the counter, as TF's restore does
    got, tensors = ours.object_graph()
    assert str(got) == str(want)
    assert got.SerializeToString() == want.SerializeToString()
    assert not got.nodes[got.nodes[1].children[1].node_id].has_checkpoint_values.value  # "empty"
    # data order is node order (breadth first), as TF lays out its data file
    assert list(tensors) == ["save_counter/.ATTRIBUTES/VARIABLE_VALUE", "model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE",
                             "model/dense/bias/.ATTRIBUTES/VARIABLE_VALUE",
                             "model/deep/deeper/v/.ATTRIBUTES/VARIABLE_VALUE"]


# ---- save: the counter and the state file ---------------------------------------------

def test_save_matches_tf_files_and_state(tf, tmp_path):
    tree = {"dense": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    tf_ckpt = tf.train.Checkpoint(model=tf_variables(tf, tree), step=tf.Variable(np.int64(1)))
    ours = ckptkit.Checkpoint(model=tree, step=np.int64(1))
    for n in (1, 2, 3):
        tf_path = tf_ckpt.save(str(tmp_path / "tf" / "sub" / "ckpt"))  # directories made as needed
        our_path = ours.save(tmp_path / "ours" / "sub" / "ckpt")
        assert os.path.basename(tf_path) == os.path.basename(our_path) == f"ckpt-{n}"
        assert ours.save_counter == n
        same_files(tf_path, our_path)
        assert sorted(os.listdir(tmp_path / "tf" / "sub")) == sorted(os.listdir(tmp_path / "ours" / "sub"))
        with open(tmp_path / "tf" / "sub" / "checkpoint", "rb") as a, \
                open(tmp_path / "ours" / "sub" / "checkpoint", "rb") as b:
            assert a.read() == b.read()
    assert ckptkit.latest_checkpoint(tmp_path / "ours" / "sub") == our_path
    # TF restores ckptkit's save, counter included, and numbers on from it
    fresh = tf.train.Checkpoint(model=tf_variables(tf, tree, like="zeros"), step=tf.Variable(np.int64(0)))
    fresh.restore(our_path).assert_consumed()
    assert fresh.save_counter.numpy() == 3
    assert fresh.save(str(tmp_path / "tf2" / "ckpt")).endswith("ckpt-4")


def test_save_in_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ckptkit.Checkpoint(v=np.float32(1)).save("ckpt") == "ckpt-1"
    assert ckptkit.latest_checkpoint(".") == os.path.join(".", "ckpt-1")


def test_save_refuses_a_state_file_it_cannot_write(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    ckpt = ckptkit.Checkpoint(v=np.float32(1))
    with pytest.raises(CheckpointError, match="directory"):
        ckpt.save(tmp_path / "ckpt")
    assert not list(tmp_path.glob("ckpt*"))


# ---- reading: TF's checkpoints into nested dicts ---------------------------------------

def test_read_tf_written_tree(tf, tmp_path, tree):
    prefix = tf.train.Checkpoint(model=tf_variables(tf, tree), step=tf.Variable(np.int64(9))).save(
        str(tmp_path / "ckpt"))
    ckpt = ckptkit.Checkpoint()
    got = ckpt.read(prefix)
    assert set(got) == {"model", "step"}  # save_counter is the Checkpoint's own
    assert_same_tensor(got["step"], np.int64(9))
    flat = leaves(got["model"])
    assert set(flat) == set(leaves(tree))
    for key, want in leaves(tree).items():
        assert_same_tensor(flat[key], want, key)
    assert ckpt.save_counter == 0  # read defers the counter, as TF does...
    ckpt.restore(prefix)
    assert ckpt.save_counter == 1  # ...restore creates it from the checkpoint
    assert ckpt.save(tmp_path / "ckpt").endswith("ckpt-2")


def test_read_keras_model_and_optimizer_round_trip(tf, tmp_path):
    """A Keras model after an Adam step: read it, write it back, TF restores it whole."""
    def build():
        model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(4), tf.keras.layers.Dense(2)])
        return model, tf.keras.optimizers.Adam(0.1)
    model, opt = build()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(np.ones((2, 3), np.float32)) ** 2)
    opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables, strict=True))
    prefix = tf.train.Checkpoint(model=model, optimizer=opt).save(str(tmp_path / "keras"))
    ckpt = ckptkit.Checkpoint()
    tree = ckpt.restore(prefix)
    kernel = model.layers[0].kernel.numpy()
    with ckptkit.CheckpointReader(prefix) as reader:
        graph = ObjectGraph.from_reader(reader)
        # every edge of the graph is an entry of the tree; variables are their tensors
        todo, seen, checked = [(graph.root, {**tree, "save_counter": None})], set(), 0
        while todo:
            node, value = todo.pop()
            if node.id in seen or value is None:
                continue
            seen.add(node.id)
            if node.attributes and not node.children:
                assert_same_tensor(value, reader[node.attributes[0].checkpoint_key], node.path)
                checked += 1
                continue
            assert set(value) == set(node.children), node.path
            todo.extend((child, value[name]) for name, child in node.children.items())
        assert checked == len(reader) - 2  # every tensor but the graph and the counter
    found = [v for v in leaves_shared(tree) if v.shape == kernel.shape and np.array_equal(v, kernel)]
    assert found and all(v is found[0] for v in found)  # one object, reached by several edges
    out = ckpt.write(str(tmp_path / "round"))
    model2, opt2 = build()
    opt2.build(model2.trainable_variables)
    tf.train.Checkpoint(model=model2, optimizer=opt2).restore(out).assert_consumed()
    for a, b in zip(model.variables + opt.variables, model2.variables + opt2.variables, strict=True):
        assert_same_tensor(b.numpy(), a.numpy(), a.path)


def leaves_shared(tree: dict) -> list:
    out, seen, todo = [], set(), [tree]
    while todo:
        d = todo.pop()
        if id(d) in seen:
            continue
        seen.add(id(d))
        for v in d.values():
            (todo if isinstance(v, dict) else out).append(v)
    return out


def test_read_assigns_into_held_objects(tf, tmp_path):
    """TF assigns restored values to its variables: held arrays get them in place."""
    src = {"dense": {"kernel": np.full((2, 2), 5, np.float32), "bias": np.float32(1), "new": np.int32(3)}}
    prefix = ckptkit.Checkpoint(model=src, step=np.array(4, np.int64)).write(str(tmp_path / "ck"))
    kernel = np.zeros((2, 2), np.float32)
    model = {"dense": {"kernel": kernel, "bias": np.float64(0)}, "kept": np.int8(1)}
    step = np.array(0, np.int64)
    ckpt = ckptkit.Checkpoint(model=model, step=step)
    got = ckpt.read(prefix)
    assert np.array_equal(kernel, src["dense"]["kernel"])  # assigned in place
    assert model["dense"]["kernel"] is kernel
    assert model["dense"]["bias"] == 1 and model["dense"]["bias"].dtype == np.float32  # not an array: replaced
    assert model["dense"]["new"] == 3 and model["kept"] == 1  # added; left alone
    assert step == 4 and ckpt.step is step
    assert ckpt.model is model
    assert got["model"]["dense"]["kernel"] is not kernel and set(got["model"]) == {"dense"}


@pytest.mark.parametrize("held", [np.zeros(3, np.float32), np.zeros((2, 2), np.float64)])
def test_read_refuses_a_held_array_of_another_shape_or_dtype(tf, tmp_path, held):
    """TF's test_restore_incompatible_shape: restoring into a variable of another shape (or
    dtype) fails; ckptkit raises before assigning anything."""
    tf_prefix = tf.train.Checkpoint(v=tf.Variable(np.ones((2, 2), np.float32))).write(str(tmp_path / "tf"))
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        tf.train.Checkpoint(v=tf.Variable(held)).read(tf_prefix).expect_partial()
    other = np.zeros((2, 2), np.float32)
    ckpt = ckptkit.Checkpoint(v=held.copy(), w={"x": other})
    ckpt.step = np.array(0, np.int64)
    prefix = ckptkit.Checkpoint(v=np.ones((2, 2), np.float32), w={"x": np.ones((2, 2), np.float32)},
                                step=np.array(9, np.int64)).write(str(tmp_path / "ck"))
    for path in (tf_prefix, prefix):
        with pytest.raises(InvalidArgumentError, match="incompatible tensor with shape") as info:
            ckpt.read(path)
        assert info.value.key == "v/.ATTRIBUTES/VARIABLE_VALUE" and info.value.path == path
    assert np.array_equal(ckpt.v, held) and not other.any() and ckpt.step == 0  # nothing assigned


def test_read_on_the_class_reads_into_a_fresh_checkpoint(tmp_path):
    prefix = ckptkit.Checkpoint(model={"w": np.float32(2)}).save(str(tmp_path / "ck"))
    assert ckptkit.Checkpoint.read(prefix) == {"model": {"w": 2}}
    assert ckptkit.Checkpoint.restore(prefix)["model"]["w"] == 2
    assert "nested dict" in (ckptkit.Checkpoint.read.__doc__ or "")


def test_read_into_an_immutable_root(tmp_path):
    prefix = ckptkit.Checkpoint(root={"w": np.float32(2)}, step=np.int64(3)).write(str(tmp_path / "ck"))
    root = types.MappingProxyType({"w": np.float32(0)})
    ckpt = ckptkit.Checkpoint(root=root, step=np.int64(0))
    assert ckpt.read(prefix) == {"w": 2, "step": 3}
    assert ckpt.step == 3 and root["w"] == 0 and list(ckpt.to_dict()) == ["w", "step"]


def test_restore_none_is_a_no_op(tmp_path):
    ckpt = ckptkit.Checkpoint(v=np.float32(1))
    assert ckpt.read(None) == {}
    assert ckpt.restore(None) == {}
    with ckptkit.CheckpointReader(ckpt.write(str(tmp_path / "ck"))) as reader:
        assert "save_counter/.ATTRIBUTES/VARIABLE_VALUE" in reader  # restore created the counter, as TF's


def test_read_missing_and_tf1_checkpoints(tf1, tmp_path):
    with pytest.raises(NotFoundError):
        ckptkit.Checkpoint().read(tmp_path / "nothing")
    prefix = make_seed(tf1, str(tmp_path))
    with pytest.raises(InvalidArgumentError, match="object-based"):
        ckptkit.Checkpoint().restore(prefix)


def test_attributes_key_round_trips_non_variable_tensors(tmp_path):
    tree = {"obj": {"child": np.float32(1), ATTRIBUTES_KEY: {"STATE": np.array(b"x", dtype=object)}}}
    prefix = ckptkit.Checkpoint(root=tree).write(str(tmp_path / "ck"))
    with ckptkit.CheckpointReader(prefix) as reader:
        assert "obj/.ATTRIBUTES/STATE" in reader
    back = ckptkit.Checkpoint().read(prefix)
    assert back["obj"][ATTRIBUTES_KEY]["STATE"].item() == b"x" and back["obj"]["child"] == 1


def test_cycles_write_and_read():
    a: dict = {"v": np.float32(1)}
    a["self"] = a
    graph, tensors = build_object_graph({"a": a})
    assert len(graph.nodes) == 3 and list(tensors) == ["a/v/.ATTRIBUTES/VARIABLE_VALUE"]
    assert [c.node_id for c in graph.nodes[1].children] == [2, 1]


# ---- bad input -------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"save_counter": np.int64(1)}, "counter"),
    ({"root": [1, 2]}, "Mapping"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        ckptkit.Checkpoint(**kwargs)


@pytest.mark.parametrize("tree, match", [
    ({"m": {1: np.float32(1)}}, "non-empty strings"),
    ({"m": {"": np.float32(1)}}, "non-empty strings"),
    ({"m": {"v": None}}, "None"),
    ({"m": {"layers": [{"w": 1}]}}, "list of objects"),
    ({"m": {"ragged": [np.zeros(2), np.zeros(3)]}}, "not an array"),
])
def test_bad_trees(tmp_path, tree, match):
    with pytest.raises(InvalidArgumentError, match=match):
        ckptkit.Checkpoint(**tree).write(str(tmp_path / "ck"))
    assert not os.listdir(tmp_path)


def test_attribute_access():
    ckpt = ckptkit.Checkpoint(model={"w": 1})
    assert ckpt.model == {"w": 1}
    ckpt.step = np.int64(2)
    assert list(ckpt.to_dict()) == ["model", "step"]
    del ckpt.step
    assert list(ckpt.to_dict()) == ["model"]
    rooted = ckptkit.Checkpoint(root={"z": 1, "b": 2}, a=3)
    assert list(rooted.to_dict()) == ["z", "b", "a"] and rooted.z == 1 and rooted.a == 3
    with pytest.raises(AttributeError):
        ckpt.save_counter = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ckpt.missing  # noqa: B018


def test_a_child_named_attributes_round_trips(tf, tmp_path):
    """TF's testLocalNameValidation: objects may be named `.ATTRIBUTES`. In ckptkit's nested
    dicts that key holds an object's own tensors, so such a child is keyed `..ATTRIBUTES` (one
    dot more; `..ATTRIBUTES` would be `...ATTRIBUTES`). It used to come back as own tensors and
    be written back as such, which TF's assert_consumed then refused."""
    root, leaf = tf.Module(), tf.Module()
    root._track_trackable(leaf, name=".ATTRIBUTES")
    leaf._track_trackable(tf.Variable(3.0), name="a")
    prefix = tf.train.Checkpoint(m=root).write(str(tmp_path / "ck"))
    tree = ckptkit.Checkpoint.read(prefix)
    assert tree == {"m": {"..ATTRIBUTES": {"a": 3.0}}}
    assert ckptkit.load(prefix)["m/..ATTRIBUTES/a/.ATTRIBUTES/VARIABLE_VALUE"] == 3.0  # TF's key in its test
    back = ckptkit.Checkpoint(**tree).write(str(tmp_path / "back"))
    same_files(back, prefix)  # the same objects, names and keys TF wrote, byte for byte
    assert tf.train.load_checkpoint(back).get_tensor("m/..ATTRIBUTES/a/.ATTRIBUTES/VARIABLE_VALUE") == 3.0
    # (TF 2.21 itself cannot restore such a checkpoint into objects: its restore asks for
    # `m/..ATTRIBUTES/VARIABLE_VALUE`, for the checkpoint TF wrote as for this one.)


def test_dotted_attributes_names_are_one_to_one(tmp_path):
    """`..ATTRIBUTES` (a child named `.ATTRIBUTES`), `...ATTRIBUTES` (named `..ATTRIBUTES`),
    `ATTRIBUTES` (itself) and `.ATTRIBUTES` (own tensors) stay apart through write and read;
    keys escape local names as TF does (`.` -> `..`)."""
    tree = {"..ATTRIBUTES": {"...ATTRIBUTES": np.float32(1), "ATTRIBUTES": np.float32(2),
                             ".ATTRIBUTES": {"STATE": np.float32(3)}}}
    prefix = ckptkit.Checkpoint(root=tree).write(str(tmp_path / "ck"))
    assert sorted(k for k, _ in ckptkit.list_variables(prefix) if k != "_CHECKPOINTABLE_OBJECT_GRAPH") == [
        "..ATTRIBUTES/....ATTRIBUTES/.ATTRIBUTES/VARIABLE_VALUE",
        "..ATTRIBUTES/.ATTRIBUTES/STATE",
        "..ATTRIBUTES/ATTRIBUTES/.ATTRIBUTES/VARIABLE_VALUE",
    ]
    assert ckptkit.Checkpoint.read(prefix) == tree
