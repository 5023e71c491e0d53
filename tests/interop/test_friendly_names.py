"""Friendly names of TF2 checkpoints: each variable named by its model's path in the object
graph, not by the optimizer's path to it (Keras 3 keys its weights under the optimizer).

Expected names are read off TF's own TrackableObjectGraph (TF's proto class, edges followed
by hand) and values come from the Keras model and `tf.train.load_checkpoint`.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import same, tf_values
from safetensors.numpy import load_file

import ckptkit
from ckptkit.cli import cli
from ckptkit.formats.objectgraph import OBJECT_GRAPH_KEY, friendly_names
from ckptkit.ops import convert

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def tf_graph(tf, prefix: str):
    """TF's own parse of the checkpoint's object graph."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2  # noqa: PLC0415 - TF only inside TF tests

    blob = tf.train.load_checkpoint(prefix).get_tensor(OBJECT_GRAPH_KEY)
    return trackable_object_graph_pb2.TrackableObjectGraph.FromString(blob)


def tf_key_at(graph, path: str) -> str:
    """The VARIABLE_VALUE key of the object `path` (local names joined by /) leads to in TF's graph."""
    node = graph.nodes[0]
    for part in path.split("/"):
        node = graph.nodes[next(c.node_id for c in node.children if c.local_name == part)]
    return next(a.checkpoint_key for a in node.attributes if a.name == "VARIABLE_VALUE")


def fit_once(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    model.fit(rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 2)).astype(np.float32),
              epochs=1, batch_size=4, verbose=0)


@pytest.fixture(scope="module")
def keras_run(tf, tmp_path_factory):
    """A compiled Keras 3 model (two Dense layers, Adam) after one and after two fit steps,
    each written with tf.train.Checkpoint(model=..., optimizer=model.optimizer)."""
    directory = tmp_path_factory.mktemp("keras_friendly")
    tf.random.set_seed(5)
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(4), tf.keras.layers.Dense(2)])
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="mse")
    out = []
    for step in (1, 2):
        fit_once(model, step)
        ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        prefix = ckpt.write(str(directory / f"step{step}"))
        out.append((prefix, [w.copy() for w in model.get_weights()],
                    {v.path: np.array(v.numpy()) for v in model.optimizer.variables}))
    return out


# Keras 3 puts a Sequential's layers at model/_functional/_operations/N (N=0 is the Input),
# a Dense layer's weights at `_kernel` and `bias`: read off TF's graph in the tests below.
MODEL_WEIGHTS = ["model/_functional/_operations/1/_kernel", "model/_functional/_operations/1/bias",
                 "model/_functional/_operations/2/_kernel", "model/_functional/_operations/2/bias"]


def test_exclude_optimizer_keeps_every_model_weight_under_its_model_path(tf, keras_run, tmp_path):
    prefix, weights, _ = keras_run[0]
    graph = tf_graph(tf, prefix)
    keys = [tf_key_at(graph, path) for path in MODEL_WEIGHTS]
    assert all(k.startswith("optimizer/_trainable_variables/") for k in keys)  # TF's own keys
    tf_reader = tf.train.load_checkpoint(prefix)
    for key, weight in zip(keys, weights, strict=True):
        assert same(tf_reader.get_tensor(key), weight), key
    dst = tmp_path / "model.safetensors"
    result = run("convert", prefix, dst, "--friendly-names", "--exclude", "optimizer/*", "--json")
    assert result.exit_code == 0, result.output
    got = load_file(str(dst))
    assert sorted(got) == sorted(MODEL_WEIGHTS)
    for path, weight in zip(MODEL_WEIGHTS, weights, strict=True):
        assert same(got[path], weight), path


def test_optimizer_state_keeps_the_optimizers_paths(tf, keras_run, tmp_path):
    prefix, _, optimizer_values = keras_run[0]
    dst = str(tmp_path / "opt.npz")
    result = convert.convert(prefix, dst, friendly_names=True, include=["optimizer/*"])
    expected = {k[: -len(SUFFIX)]: v for k, v in tf_values(tf, prefix).items()
                if k.endswith(SUFFIX) and not k.startswith("optimizer/_trainable_variables/")}
    assert "optimizer/_iterations" in expected and len(expected) == 2 + 2 * len(MODEL_WEIGHTS)
    with np.load(dst) as data:
        got = dict(data)
    assert sorted(got) == sorted(expected) and result["tensors"] == len(expected)
    for name, value in expected.items():
        assert same(got[name], value), name
    assert int(got["optimizer/_iterations"]) == 1
    # Adam's moments: the optimizer's own variables, each saved under the optimizer's path.
    moments = [v for p, v in optimizer_values.items() if p.endswith(("_momentum", "_velocity"))]
    assert len(moments) == 2 * len(MODEL_WEIGHTS)
    for value in moments:
        assert sum(same(v, value) for n, v in got.items() if n.startswith("optimizer/_variables/")) >= 1


def test_friendly_names_equal_tf_paths_without_an_optimizer_detour(tf, keras_run):
    """Every key TF does not reach through the optimizer keeps TF's own path (the key less
    `/.ATTRIBUTES/VARIABLE_VALUE`)."""
    prefix = keras_run[0][0]
    with ckptkit.CheckpointReader(prefix) as reader:
        names = friendly_names(reader.keys(), reader.object_graph())
    for key, name in names.items():
        if key == OBJECT_GRAPH_KEY:
            assert name == key
        elif key.startswith("optimizer/_trainable_variables/"):
            assert name in MODEL_WEIGHTS
        else:
            assert name == key[: -len(SUFFIX)]
    assert len(set(names.values())) == len(names)


def test_ls_tree_places_each_variable_at_its_friendly_name(tf, keras_run):
    prefix = keras_run[0][0]
    with ckptkit.CheckpointReader(prefix) as reader:
        names = friendly_names(reader.keys(), reader.object_graph())
    result = run("ls", prefix, "--tree", "--json")
    assert result.exit_code == 0, result.output
    placed: dict[str, str] = {}

    def walk(node: dict) -> None:
        for a in node.get("attributes", []):
            placed[a["checkpoint_key"]] = node["path"]
        for child in node.get("children", []):
            walk(child)

    walk(json.loads(result.output))
    assert placed == {k: v for k, v in names.items() if k != OBJECT_GRAPH_KEY}


def test_diff_reports_with_the_names_convert_writes(tf, keras_run, tmp_path):
    (first, _, _), (second, _, _) = keras_run
    result = run("diff", first, second, "--friendly-names", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    changed = {v["name"] for v in report["values"]}
    assert set(MODEL_WEIGHTS) <= changed and "optimizer/_iterations" in changed
    assert not any("_trainable_variables" in n or n.endswith("VARIABLE_VALUE") for n in changed)
    assert report["only_a"] == report["only_b"] == [] and report["changed"] == []
    tf_first, tf_second = tf_values(tf, first), tf_values(tf, second)
    assert report["compared"] == len(tf_first) - 1  # every tensor but the object graph
    assert len(changed) == sum(not same(tf_first[k], tf_second[k]) for k in tf_first if k != OBJECT_GRAPH_KEY)
    # A conversion with friendly names is the same checkpoint under the same names.
    converted = tmp_path / "second.safetensors"
    assert run("convert", second, converted, "--friendly-names").exit_code == 0
    assert run("diff", second, converted, "--friendly-names").exit_code == 0
    plain = run("diff", second, converted, "--json")  # by key, nothing pairs up but the names TF kept
    assert plain.exit_code == 1 and set(MODEL_WEIGHTS) <= set(json.loads(plain.output)["only_b"])


def test_slot_variables_are_named_after_their_variables_friendly_path(tf, tmp_path):
    """TF's slot_variables (a v1 optimizer's): `<variable>/.OPTIMIZER_SLOT/<optimizer>/<slot>`
    over friendly paths, so a slot follows its variable out of an optimizer's detour."""
    kernel = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    bias = tf.Variable(np.ones(3, np.float32))
    net = tf.Module()
    net.a = tf.Module()
    net.a.b = tf.Module()
    net.a.b.kernel = kernel
    net.bias = bias
    holder = tf.Module()  # an object an edge names `optimizer` that also holds the kernel
    holder.v = kernel
    adam = tf.compat.v1.train.AdamOptimizer(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(kernel ** 2) + tf.reduce_sum(bias)
    adam.apply_gradients(zip(tape.gradient(loss, [kernel, bias]), [kernel, bias], strict=True))
    prefix = tf.train.Checkpoint(net=net, optimizer=holder, adam=adam).write(str(tmp_path / "ckpt"))
    graph = tf_graph(tf, prefix)
    kernel_key = tf_key_at(graph, "net/a/b/kernel")
    assert kernel_key == "optimizer/v" + SUFFIX  # TF: breadth first reaches it there first
    keys = set(tf_values(tf, prefix))
    assert "optimizer/v/.OPTIMIZER_SLOT/adam/m" + SUFFIX in keys
    assert "net/bias/.OPTIMIZER_SLOT/adam/m" + SUFFIX in keys
    dst = str(tmp_path / "f.npz")
    convert.convert(prefix, dst, friendly_names=True)
    with np.load(dst) as data:
        got = dict(data)
    assert same(got["net/a/b/kernel"], kernel.numpy())
    for slot in ("m", "v"):
        assert same(got[f"net/a/b/kernel/.OPTIMIZER_SLOT/adam/{slot}"], adam.get_slot(kernel, slot).numpy())
        assert same(got[f"net/bias/.OPTIMIZER_SLOT/adam/{slot}"], adam.get_slot(bias, slot).numpy())
    assert not any(name.startswith("optimizer/") for name in got)


def test_names_that_would_clash_keep_their_keys(tf, tmp_path):
    """Two keys never get one name: those whose friendly names coincide keep their keys."""
    prefix = str(tmp_path / "plain")
    ckptkit.save(prefix, {"x": np.zeros(2, np.float32), "x" + SUFFIX: np.ones(3, np.float32),
                          "y" + SUFFIX: np.full(4, 2.0, np.float32)})
    dst = str(tmp_path / "out.npz")
    convert.convert(prefix, dst, friendly_names=True)  # no object graph: the per-key rule
    with np.load(dst) as data:
        assert sorted(data.files) == ["x", "x" + SUFFIX, "y"]
        assert same(data["x"], np.zeros(2, np.float32)) and same(data["x" + SUFFIX], np.ones(3, np.float32))
    # With an object graph: a stray key equal to an object's friendly name.
    module = tf.Module()
    module.kernel = tf.Variable([1.0, 2.0])
    tf_prefix = tf.train.Checkpoint(model=module).write(str(tmp_path / "tf2"))
    with ckptkit.CheckpointReader(tf_prefix) as reader:
        keys = [*reader.keys(), "model/kernel"]
        names = friendly_names(keys, reader.object_graph())
    assert names["model/kernel" + SUFFIX] == "model/kernel" + SUFFIX and names["model/kernel"] == "model/kernel"
    assert len(set(names.values())) == len(names)


def test_tf1_checkpoint_names_lose_only_the_suffix(tmp_path):
    prefix = str(tmp_path / "ck")
    ckptkit.save(prefix, {"dense/kernel": np.ones(2, np.float32), "a" + SUFFIX: np.ones(1, np.float32)})
    with ckptkit.CheckpointReader(prefix) as reader:
        assert friendly_names(reader.keys(), reader.object_graph()) == {"dense/kernel": "dense/kernel",
                                                                       "a" + SUFFIX: "a"}
