"""Edits of TF2 checkpoints keep the object graph consistent: TF restores what ckptkit edited."""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from helpers import CKPTKIT, copy_dir, label_of, leftovers, read_all, run_forked, same_values, subprocess_env, tf_values

import ckptkit
from ckptkit.errors import InvalidArgumentError, TensorNotFoundError
from ckptkit.formats.objectgraph import OBJECT_GRAPH_KEY, ObjectGraph
from ckptkit.ops import edit, info
from ckptkit.proto import trackable_object_graph_pb2

X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], np.float32)


def keras_model(tf):
    return tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(4), tf.keras.layers.Dense(2)])


def train_step(tf, model, optimizer) -> None:
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(X) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))


@pytest.fixture(scope="module")
def keras_dir(tf, tmp_path_factory):
    """A Keras 3 model + Adam after one step (so the moments exist), saved by TF2, with the
    model's and optimizer's values."""
    tf.keras.utils.set_random_seed(1)
    model, optimizer = keras_model(tf), tf.keras.optimizers.Adam(0.1)
    train_step(tf, model, optimizer)
    directory = tmp_path_factory.mktemp("keras")
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).save(os.fspath(directory / "ckpt"))
    weights = [v.numpy() for v in model.weights]
    opt_state = [v.numpy() for v in optimizer.variables]  # iterations, learning rate, (m, v) per weight
    return os.fspath(directory), os.path.basename(path), weights, opt_state


@pytest.fixture
def keras_ckpt(keras_dir, tmp_path):
    directory, name, weights, opt_state = keras_dir
    return os.path.join(copy_dir(directory, tmp_path / "k"), name), weights, opt_state


def restored_model(tf, prefix: str, **extra):
    model = keras_model(tf)
    status = tf.train.Checkpoint(model=model, **extra).restore(prefix)
    return model, status


def test_rm_optimizer_leaves_a_model_checkpoint_tf_restores(tf, keras_ckpt, tmp_path):
    prefix, weights, _ = keras_ckpt
    data_file = prefix + ".data-00000-of-00001"
    size_before = os.path.getsize(data_file)
    removed = edit.remove_keys(prefix, ["optimizer"])
    assert removed and all(k.startswith("optimizer/") for k in removed)
    with ckptkit.CheckpointReader(prefix) as reader:
        keys = set(reader)
        graph = reader.object_graph()
    assert not [k for k in keys if "optimizer" in k]
    assert "optimizer" not in graph.root.children
    # The model's weights, which Keras 3 keyed under the optimizer, follow their objects to
    # the keys TF itself gives a model-only checkpoint.
    model = keras_model(tf)
    theirs = tf.train.Checkpoint(model=model).save(os.fspath(tmp_path / "tf" / "ckpt"))
    assert keys == set(tf.train.load_checkpoint(theirs).get_variable_to_shape_map())
    assert os.path.getsize(data_file) < size_before  # the graph's shard was rewritten, live bytes only
    model, status = restored_model(tf, prefix)
    status.assert_existing_objects_matched()
    status.assert_consumed()
    for got, want in zip(model.weights, weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want)
    assert info.verify_checkpoint(prefix).ok


def test_rm_optimizer_flag_and_dry_run(tf, keras_ckpt):
    prefix, weights, _ = keras_ckpt
    index_before = open(prefix + ".index", "rb").read()
    would = edit.remove_keys(prefix, optimizer=True, dry_run=True)
    assert open(prefix + ".index", "rb").read() == index_before
    assert len(would) == 10 and all(k.startswith("optimizer/_") for k in would)  # iterations, lr, 8 moments
    removed, freed = edit.remove_and_compact(prefix, optimizer=True)
    assert removed == would and freed > 0
    model, status = restored_model(tf, prefix)
    status.assert_consumed()
    np.testing.assert_array_equal(model.weights[0].numpy(), weights[0])


def test_rename_model_key_restores_model_and_optimizer(tf, keras_ckpt):
    """A renamed key is renamed in the graph too: TF finds the kernel by its object and reads
    the new key, and the optimizer's moments still restore."""
    prefix, weights, opt_state = keras_ckpt
    with ckptkit.CheckpointReader(prefix) as reader:
        graph = reader.object_graph()
    kernel = graph.find("model/_functional/_operations/1/_kernel")
    old = kernel.attributes[0].checkpoint_key
    before = open(prefix + ".index", "rb").read()
    # TF reads an object's tensors from `<prefix>/.ATTRIBUTES/<attribute>`: other names are refused.
    with pytest.raises(InvalidArgumentError, match=r"\.ATTRIBUTES/VARIABLE_VALUE") as exc:
        edit.rename_keys(prefix, {old: "first_kernel"})
    assert exc.value.key == "first_kernel" and open(prefix + ".index", "rb").read() == before
    new = "first_kernel/.ATTRIBUTES/VARIABLE_VALUE"
    assert edit.rename_keys(prefix, {old: new}) == {old: new}
    assert new in ckptkit.CheckpointReader(prefix)
    model, optimizer = keras_model(tf), tf.keras.optimizers.Adam(0.1)
    optimizer.build(model.trainable_variables)
    status = tf.train.Checkpoint(model=model, optimizer=optimizer).restore(prefix)
    status.assert_consumed()
    for got, want in zip(model.weights, weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want)
    for v, want in zip(optimizer.variables, opt_state, strict=True):
        np.testing.assert_array_equal(v.numpy(), want)
    assert info.verify_checkpoint(prefix).ok


def test_rename_object_path_restores_under_the_new_name(tf, keras_ckpt):
    prefix, weights, opt_state = keras_ckpt
    mapping = edit.rename_keys(prefix, {"model": "net"})
    assert mapping == {}  # Keras 3 keys its weights under the optimizer: no key follows "model"
    model, optimizer = keras_model(tf), tf.keras.optimizers.Adam(0.1)
    optimizer.build(model.trainable_variables)
    status = tf.train.Checkpoint(net=model, optimizer=optimizer).restore(prefix)
    status.assert_consumed()
    for got, want in zip(model.weights, weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want)
    for v, want in zip(optimizer.variables, opt_state, strict=True):
        np.testing.assert_array_equal(v.numpy(), want)
    status = restored_model(tf, prefix)[1]
    with pytest.raises(AssertionError):  # the old structure no longer matches
        status.assert_existing_objects_matched()
    status.expect_partial()  # (TF would log what it left unrestored)
    # Keys named after an object's path follow it: the optimizer's keys move with it.
    mapping = edit.rename_keys(prefix, {"optimizer": "opt"})
    assert mapping and all(o.startswith("optimizer/") and n == "opt" + o[len("optimizer"):]
                           for o, n in mapping.items())
    model, optimizer = keras_model(tf), tf.keras.optimizers.Adam(0.1)
    optimizer.build(model.trainable_variables)
    tf.train.Checkpoint(net=model, opt=optimizer).restore(prefix).assert_consumed()
    np.testing.assert_array_equal(model.weights[2].numpy(), weights[2])
    assert info.verify_checkpoint(prefix).ok


@pytest.fixture
def v1_adam(tf, tmp_path):
    """tf.Module variables trained by tf.compat.v1's Adam, which records slot variables in the
    object graph (variable -> slot -> key), with a variable the optimizer never saw."""

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
            self.bias = tf.Variable([1.0, 2.0, 3.0])
            self.frozen = tf.Variable([7.0])

    net = Net()
    optimizer = tf.compat.v1.train.AdamOptimizer(0.1)
    variables = [net.kernel, net.bias]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum((tf.ones([1, 2]) @ net.kernel + net.bias) ** 2)
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
    path = tf.train.Checkpoint(net=net, optimizer=optimizer).save(os.fspath(tmp_path / "v1adam" / "ckpt"))
    return path, Net, {"kernel": net.kernel.numpy(), "bias": net.bias.numpy(), "frozen": net.frozen.numpy()}


def test_removing_a_variable_object_takes_its_slots(tf, v1_adam):
    path, _, values = v1_adam
    removed = edit.remove_keys(path, ["net/kernel"])
    assert sorted(removed) == ["net/kernel/.ATTRIBUTES/VARIABLE_VALUE",
                               "net/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE",
                               "net/kernel/.OPTIMIZER_SLOT/optimizer/v/.ATTRIBUTES/VARIABLE_VALUE"]
    with ckptkit.CheckpointReader(path) as reader:
        graph = reader.object_graph()
        assert set(graph.slot_map()) == {"net/bias"}
        assert "net/bias/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE" in reader
    # TF numbers nodes breadth first, then slot variables: the pruned graph is TF's own layout.
    net = tf.Module()  # the structure the edited checkpoint has: Net without its kernel
    net.bias, net.frozen = tf.Variable(tf.zeros([3])), tf.Variable([0.0])
    optimizer = tf.compat.v1.train.AdamOptimizer(0.1)
    theirs = tf.train.Checkpoint(net=net, optimizer=optimizer)
    theirs.read(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(net.bias.numpy(), values["bias"])
    np.testing.assert_array_equal(net.frozen.numpy(), values["frozen"])
    assert info.verify_checkpoint(path).ok


def test_rm_optimizer_drops_slot_variables(tf, v1_adam):
    path, net_class, values = v1_adam
    removed = edit.remove_keys(path, optimizer=True)
    assert len([k for k in removed if ".OPTIMIZER_SLOT" in k]) == 4
    assert {k for k in removed if ".OPTIMIZER_SLOT" not in k} == {
        "optimizer/beta1_power/.ATTRIBUTES/VARIABLE_VALUE", "optimizer/beta2_power/.ATTRIBUTES/VARIABLE_VALUE"}
    with ckptkit.CheckpointReader(path) as reader:
        assert sorted(reader) == [OBJECT_GRAPH_KEY, "net/bias/.ATTRIBUTES/VARIABLE_VALUE",
                                  "net/frozen/.ATTRIBUTES/VARIABLE_VALUE", "net/kernel/.ATTRIBUTES/VARIABLE_VALUE",
                                  "save_counter/.ATTRIBUTES/VARIABLE_VALUE"]
        proto = reader.object_graph().proto
        assert not any(node.slot_variables for node in proto.nodes)
    net = net_class()
    status = tf.train.Checkpoint(net=net).read(path)
    status.assert_existing_objects_matched()
    for name, value in values.items():
        np.testing.assert_array_equal(getattr(net, name).numpy(), value)


def test_unknown_name_and_root_are_refused(keras_ckpt):
    prefix, _, _ = keras_ckpt
    before = open(prefix + ".index", "rb").read()
    with pytest.raises(TensorNotFoundError, match="object path") as exc:
        edit.remove_keys(prefix, ["model/nothing"])
    assert exc.value.key == "model/nothing"
    with pytest.raises(InvalidArgumentError, match="exists"):
        edit.rename_keys(prefix, {"model": "optimizer"})
    with pytest.raises(InvalidArgumentError, match="object graph"):
        edit.remove_keys(prefix, [OBJECT_GRAPH_KEY])
    assert open(prefix + ".index", "rb").read() == before


def _save_with_graph(tf, tmp_path, mutate) -> str:
    """A TF2 checkpoint rewritten with a hand-broken object graph (and what else `mutate` adds)."""
    root = tf.Module()
    root.w = tf.Variable([1.0, 2.0])
    source = tf.train.Checkpoint(net=root).write(os.fspath(tmp_path / "src" / "ckpt"))
    values = ckptkit.load(source)
    proto = trackable_object_graph_pb2.TrackableObjectGraph()
    proto.ParseFromString(values[OBJECT_GRAPH_KEY].item())
    mutate(proto, values)
    values[OBJECT_GRAPH_KEY] = np.array(proto.SerializeToString(), dtype=object)
    return ckptkit.save(os.fspath(tmp_path / "broken" / "ckpt"), values)


def test_verify_finds_a_hand_broken_graph(tf, tmp_path):
    def break_it(proto, values):  # what an index-only rename did: the graph names the old key
        values["net/x/.ATTRIBUTES/VARIABLE_VALUE"] = values.pop("net/w/.ATTRIBUTES/VARIABLE_VALUE")
        values["stray"] = np.float32(1)

    prefix = _save_with_graph(tf, tmp_path, break_it)
    root = tf.Module()
    root.w = tf.Variable([0.0, 0.0])
    with pytest.raises(Exception, match="net/w/.ATTRIBUTES/VARIABLE_VALUE"):  # TF's own restore fails
        tf.train.Checkpoint(net=root).read(prefix)
    report = info.verify_checkpoint(prefix)
    assert not report.ok and report.errors == []
    problems = dict(report.graph_problems)
    assert set(problems) == {"net/w/.ATTRIBUTES/VARIABLE_VALUE", "net/x/.ATTRIBUTES/VARIABLE_VALUE", "stray"}
    assert "not in the index" in problems["net/w/.ATTRIBUTES/VARIABLE_VALUE"]
    assert "no object" in problems["stray"]
    result = subprocess.run([*CKPTKIT, "verify", prefix], capture_output=True, text=True, env=subprocess_env(),
                            timeout=120)
    assert result.returncode == 1
    assert "net/w/" in result.stderr and "stray" in result.stderr and "object graph" in result.stdout
    as_json = json.loads(subprocess.run([*CKPTKIT, "verify", prefix, "--json"], capture_output=True, text=True,
                                        env=subprocess_env(), timeout=120).stdout)
    assert not as_json["ok"] and {p["name"] for p in as_json["graph_problems"]} == set(problems)


def test_ls_tree_and_show_by_object_path(tf, keras_ckpt):
    prefix, weights, opt_state = keras_ckpt
    env = subprocess_env()

    def ckptkit_run(*args):
        return subprocess.run([*CKPTKIT, *args], capture_output=True, text=True, env=env, timeout=120)

    tree = ckptkit_run("ls", "--tree", prefix)
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    kernel_at = lines.index("          _kernel/")  # model/_functional/_operations/1/_kernel
    assert lines[kernel_at + 1] == ("            .VARIABLE_VALUE float32[3,4]  "
                                    "optimizer/_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE")
    slots = lines[kernel_at + 2:kernel_at + 4]
    assert [s.split()[:2] for s in slots] == [["slot", "'momentums'"], ["slot", "'velocities'"]]
    with ckptkit.CheckpointReader(prefix) as reader:
        momentum_key = slots[0].split()[-1]
        np.testing.assert_array_equal(reader[momentum_key], opt_state[2])  # the first kernel's m
    shown = ckptkit_run("show", prefix, "model/_functional/_operations/1/_kernel", "--json")
    assert shown.returncode == 0, shown.stderr
    np.testing.assert_array_equal(np.array(json.loads(shown.stdout)["values"], np.float32), weights[0])
    listed = json.loads(ckptkit_run("ls", prefix, "model/_functional/_operations/2", "--json").stdout)["tensors"]
    assert sorted(tuple(t["shape"]) for t in listed) == [(2,), (2,), (2,), (4, 2), (4, 2), (4, 2)]
    missing = ckptkit_run("show", prefix, "model/nothing")
    assert missing.returncode == 1 and "model/nothing" in missing.stderr
    removed = ckptkit_run("rm", "-c", prefix, "optimizer", "--json")
    assert removed.returncode == 0 and len(json.loads(removed.stdout)) == 10
    assert ckptkit_run("verify", prefix).returncode == 0


def test_graph_reads_back_as_tf_wrote_it(tf, keras_ckpt):
    """An edit that changes no structure leaves the graph TF's, node for node."""
    prefix, _, _ = keras_ckpt
    before = ObjectGraph.from_reader(ckptkit.CheckpointReader(prefix)).proto
    edit.rename_keys(prefix, {"save_counter/.ATTRIBUTES/VARIABLE_VALUE": "counter/.ATTRIBUTES/VARIABLE_VALUE"})
    after = ObjectGraph.from_reader(ckptkit.CheckpointReader(prefix)).proto
    changed = [i for i, (a, b) in enumerate(zip(before.nodes, after.nodes, strict=True)) if a != b]
    assert len(changed) == 1
    assert after.nodes[changed[0]].attributes[0].checkpoint_key == "counter/.ATTRIBUTES/VARIABLE_VALUE"
    assert tf.train.load_checkpoint(prefix).get_tensor("counter/.ATTRIBUTES/VARIABLE_VALUE") == 1
    ckpt = tf.train.Checkpoint()
    ckpt.restore(prefix).assert_existing_objects_matched()
    assert int(ckpt.save_counter.numpy()) == 1  # TF reads it from the renamed key


def test_damaged_graph_refuses_edits_naming_it(tmp_path):
    prefix = ckptkit.save(os.fspath(tmp_path / "bad"), {OBJECT_GRAPH_KEY: np.array(b"\xff\xff\xff", dtype=object),
                                                         "w": np.ones(2, np.float32)})
    before = open(prefix + ".index", "rb").read()
    for change in (lambda: edit.remove_keys(prefix, ["w"]), lambda: edit.rename_keys(prefix, {"w": "x"})):
        with pytest.raises(ckptkit.errors.DataLossError, match="TrackableObjectGraph") as exc:
            change()
        assert exc.value.path == prefix and exc.value.key == OBJECT_GRAPH_KEY
    assert open(prefix + ".index", "rb").read() == before
    report = info.verify_checkpoint(prefix)
    assert [k for k, _ in report.graph_problems] == [OBJECT_GRAPH_KEY] and not report.ok


def hand_graph_values() -> dict:
    """A TF2-style checkpoint built without TF: net/w trained by an optimizer with one slot
    variable (TF's slot_variables layout), plus a key no object saves."""
    proto = trackable_object_graph_pb2.TrackableObjectGraph()
    root, net, opt, w, it, slot = (proto.nodes.add() for _ in range(6))
    root.children.add(node_id=1, local_name="net")
    root.children.add(node_id=2, local_name="optimizer")
    net.children.add(node_id=3, local_name="w")
    opt.children.add(node_id=4, local_name="iter")
    opt.slot_variables.add(original_variable_node_id=3, slot_name="m", slot_variable_node_id=5)
    keys = {3: "net/w/.ATTRIBUTES/VARIABLE_VALUE", 4: "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE",
            5: "net/w/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE"}
    for node_id, key in keys.items():
        proto.nodes[node_id].attributes.add(name="VARIABLE_VALUE", full_name=key.split("/.")[0], checkpoint_key=key)
    return {OBJECT_GRAPH_KEY: np.array(proto.SerializeToString(), dtype=object),
            keys[3]: np.arange(4096, dtype=np.float32), keys[4]: np.int64(7),
            keys[5]: np.full(4096, 0.5, np.float32), "extra": np.ones(3, np.float64)}


def prefix_in(directory) -> str:
    return os.path.join(directory, "m")


def test_kill_at_every_step_of_an_object_removal(tf, tmp_path):
    """An edit that rewrites the graph's shard is one commit: a SIGKILL at any of its file
    operations leaves the old checkpoint or the new one, whole, and the next edit cleans up."""
    template = tmp_path / "template"
    ckptkit.save(prefix_in(template), hand_graph_values(), num_shards=2)
    old = read_all(prefix_in(template))
    first = copy_dir(os.fspath(template), tmp_path / "full")
    full = run_forked(lambda: edit.remove_keys(prefix_in(first), ["optimizer"]))
    new = read_all(prefix_in(first))
    assert sorted(new) == [OBJECT_GRAPH_KEY, "extra", "net/w/.ATTRIBUTES/VARIABLE_VALUE"]
    labels = []
    for call in range(1, full["count"] + 1):
        for when in ("before", "after"):
            d = copy_dir(os.fspath(template), tmp_path / f"case-{call}-{when}")
            assert run_forked(lambda d=d: edit.remove_keys(prefix_in(d), ["optimizer"]),
                              kill_at=call, when=when)["killed"]
            label = label_of(prefix_in(d), {"old": old, "new": new})
            labels.append(label)
            edit.rename_keys(prefix_in(d), {"extra": "extra2"})  # the next writer rolls any journal forward
            assert leftovers(d) == []
            want = {("extra2" if k == "extra" else k): v for k, v in (new if label == "new" else old).items()}
            assert same_values(tf_values(tf, prefix_in(d)), want), (call, when)
            report = info.verify_checkpoint(prefix_in(d))
            assert report.errors == [] and [k for k, _ in report.graph_problems] == ["extra2"]  # no object saves it
    assert labels == sorted(labels, key=["old", "new"].index) and labels[0] == "old" and labels[-1] == "new"


def test_big_shards_stay_and_the_graph_gets_a_shard_of_its_own(tf, keras_ckpt, monkeypatch):
    """Where the graph's shard holds many live bytes, a graph change copies none of them: the
    shards are linked under -of-N+1 names and the new graph goes into a shard of its own,
    which later edits rewrite."""
    prefix, weights, opt_state = keras_ckpt
    monkeypatch.setattr(edit, "GRAPH_SHARD_COPY_LIMIT", 0)
    old_data = os.stat(prefix + ".data-00000-of-00001")
    edit.rename_keys(prefix, {"model": "net"})
    directory = os.path.dirname(prefix)
    data = sorted(n for n in os.listdir(directory) if ".data-" in n)
    name = os.path.basename(prefix)
    assert data == [name + ".data-00000-of-00002", name + ".data-00001-of-00002"]
    linked = os.stat(prefix + ".data-00000-of-00002")
    assert (linked.st_ino, linked.st_size) == (old_data.st_ino, old_data.st_size)  # the same file, not a copy
    with ckptkit.CheckpointReader(prefix) as reader:
        assert reader.entry(OBJECT_GRAPH_KEY).shard_id == 1
        assert reader.entry(OBJECT_GRAPH_KEY).size == os.path.getsize(prefix + ".data-00001-of-00002")
    edit.rename_keys(prefix, {"optimizer": "opt"})  # the graph's own shard is rewritten, the count stays
    assert sorted(n for n in os.listdir(directory) if ".data-" in n) == data
    model, optimizer = keras_model(tf), tf.keras.optimizers.Adam(0.1)
    optimizer.build(model.trainable_variables)
    tf.train.Checkpoint(net=model, opt=optimizer).restore(prefix).assert_consumed()
    for got, want in zip([*model.weights, *optimizer.variables], [*weights, *opt_state], strict=True):
        np.testing.assert_array_equal(got.numpy(), want)
    assert info.verify_checkpoint(prefix).ok
