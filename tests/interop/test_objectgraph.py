"""TF2 object-based checkpoints: the object tree, checked against what TF saved."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ckptkit
from ckptkit.errors import DataLossError
from ckptkit.formats.objectgraph import OBJECT_GRAPH_KEY, ObjectGraph, escape_local_name


def assert_paths_match_keys(graph: ObjectGraph, reader) -> None:
    """TF's own checkpoint keys are `<object path>/.ATTRIBUTES/<name>`: our paths must agree."""
    keys = set(reader)
    seen = set()
    for node in graph.walk():
        for attr in node.attributes:
            assert attr.checkpoint_key == f"{node.path}/.ATTRIBUTES/{attr.name}", node
            assert attr.checkpoint_key in keys
            seen.add(attr.checkpoint_key)
    assert seen == keys - {OBJECT_GRAPH_KEY}  # every saved tensor belongs to one object


@pytest.fixture(scope="module")
def keras_checkpoint(tf, tmp_path_factory):
    """A small Keras model after one Adam step (so the optimizer's state exists)."""
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(4), tf.keras.layers.Dense(2)])
    optimizer = tf.keras.optimizers.Adam(0.1)
    x = np.ones((2, 3), np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(x) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path_factory.mktemp("keras") / "ckpt"))
    return path, model, optimizer


def test_keras_model_object_tree(tf, keras_checkpoint):
    path, model, optimizer = keras_checkpoint
    with ckptkit.CheckpointReader(path) as reader:
        graph = reader.object_graph()
        assert graph is not None and len(graph) > 10
        assert_paths_match_keys(graph, reader)
        assert {"model", "optimizer", "save_counter"} <= set(graph.root.children)
        kernel_var = model.layers[0].kernel
        # Find the kernel by value: which object holds it, and under which key.
        kernel_key = next(k for k in reader if k != OBJECT_GRAPH_KEY
                          and reader[k].shape == tuple(kernel_var.shape)
                          and np.array_equal(reader[k], kernel_var.numpy()))
        kernel_path, attr = graph.key_to_object()[kernel_key]
        assert attr == "VARIABLE_VALUE"
        node = graph.node(kernel_path)
        assert node.attributes[0].full_name == kernel_var.path  # e.g. "sequential/dense/kernel"
        # Keras 3 keys the kernel under the optimizer (breadth-first search reaches it there
        # first); the tree shows it under its layer, and the optimizer's edge as a reference.
        assert kernel_path.startswith("optimizer/")
        tree = graph.format_tree(reader.get_variable_to_shape_map())
        json.dumps(tree)  # plain data
        placed = _find(tree, lambda d: [a["checkpoint_key"] for a in d.get("attributes", [])] == [kernel_key])
        assert len(placed) == 1 and placed[0]["name"] in ("kernel", "_kernel")
        assert placed[0]["path"].startswith("model/") and graph.find(placed[0]["path"]) is node
        refs = _find(tree, lambda d: d.get("ref") == placed[0]["path"])
        assert refs and all(r["name"].isdigit() for r in refs)  # optimizer/_trainable_variables/N
        # Keras 3 keeps Adam's moments as optimizer variables (no slot_variables in the graph).
        momentum = next(v for v in optimizer.variables if v.path.endswith("kernel_momentum")
                        and tuple(v.shape) == tuple(kernel_var.shape))
        m_key = next(k for k, (p, a) in graph.key_to_object().items()
                     if graph.node(p).attributes[0].full_name == momentum.path)
        np.testing.assert_array_equal(reader[m_key], momentum.numpy())
        lines = graph.tree_lines(reader.get_variable_to_shape_map())
        assert any(kernel_key in line and "[3,4]" in line for line in lines)
        assert any(m_key in line and "slot" in line for line in lines)  # under its variable


def _find(tree: dict, pred) -> list[dict]:
    out = [tree] if pred(tree) else []
    for child in tree.get("children", []):
        out += _find(child, pred)
    return out


def test_optimizer_slot_variables(tf, tmp_path):
    """TF's (v1) optimizers record slot variables in the object graph: variable -> slot -> key."""

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3), name="kernel")
            self.weights = {"a/b.c": tf.Variable([1.0, 2.0], name="odd")}

    net = Net()
    optimizer = tf.compat.v1.train.AdamOptimizer(0.1)
    variables = [net.kernel, net.weights["a/b.c"]]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net.kernel ** 2) + tf.reduce_sum(net.weights["a/b.c"])
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
    path = tf.train.Checkpoint(net=net, optimizer=optimizer).save(str(tmp_path / "ckpt"))

    with ckptkit.CheckpointReader(path) as reader:
        graph = ObjectGraph.from_reader(reader)
        assert_paths_match_keys(graph, reader)
        kernel = graph.node("net/kernel")
        assert kernel.attributes[0].checkpoint_key == "net/kernel/.ATTRIBUTES/VARIABLE_VALUE"
        odd = graph.node("net/weights/" + escape_local_name("a/b.c"))
        assert odd.path == "net/weights/a.Sb..c"
        slots = graph.slot_map()
        assert set(slots) == {"net/kernel", odd.path}
        assert set(slots["net/kernel"]) == {"m", "v"}
        m_key = slots["net/kernel"]["m"]
        assert m_key == "net/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE"
        np.testing.assert_array_equal(reader[m_key], optimizer.get_slot(net.kernel, "m").numpy())
        np.testing.assert_array_equal(reader[slots[odd.path]["v"]],
                                      optimizer.get_slot(net.weights["a/b.c"], "v").numpy())
        assert [s.slot_name for s in graph.node("optimizer").slot_variables].count("m") == 2
        slot_node = graph.node(kernel.slots["m"].slot)
        assert slot_node.attributes[0].checkpoint_key == m_key
        tree = graph.format_tree()
        kernel_dict = _find(tree, lambda d: d.get("path") == "net/kernel")[0]
        assert {s["slot_name"]: s["checkpoint_key"] for s in kernel_dict["slots"]} == slots["net/kernel"]
        assert any("slot 'm'" in line and m_key in line for line in graph.tree_lines())
        assert [n.path for n in graph.walk()][:3] == ["", "net", "optimizer"]


def test_tf1_checkpoint_has_no_object_graph(tmp_path):
    prefix = ckptkit.save(str(tmp_path / "tf1"), {"w": np.ones(3, np.float32)})
    with ckptkit.CheckpointReader(prefix) as reader:
        assert reader.object_graph() is None


def test_corrupt_object_graph_is_data_loss(tmp_path):
    prefix = ckptkit.save(str(tmp_path / "bad"), {OBJECT_GRAPH_KEY: np.array(b"\xff\xff\xff", dtype=object)})
    with ckptkit.CheckpointReader(prefix) as reader:
        with pytest.raises(DataLossError, match="TrackableObjectGraph") as info:
            reader.object_graph()
        assert "bad" in str(info.value)
