"""SavedModel directories, against TF 2.21 and its saved_model_cli.

SavedModels written by TF in this session (a Keras model through `model.export` and
through `tf.saved_model.save`, a `tf.Module` with `@tf.function(input_signature=...)`
signatures) and a real old one (TF Serving's saved_model_half_plus_two_cpu, written by a
TF1 builder with a snappy-compressed index; opt-in, marked `testdata`): ckptkit lists, verifies and loads
`variables/variables` with TF's values, and `ckptkit meta` prints every signature's
inputs and outputs exactly as `saved_model_cli show --all` does, and a TF2 SavedModel's
concrete functions with their argument specs as its "Concrete Functions:" section (a
tf.function traced three times with Python arguments, namedtuple, dict, ragged and sparse
arguments, a bare concrete function), and its `--tag_set` / `--signature_def` views.
"""
from __future__ import annotations

import collections
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from helpers import REPO, TESTDATA, subprocess_env

import ckptkit
from ckptkit.cli import cli
from ckptkit.tf1 import saved_model

REAL = pathlib.Path("tf-serving/saved_model_half_plus_two_cpu/00000123")  # under the testdata folder
REAL_VALUES = {"a": 0.5, "b": 2.0, "a2": 0.5, "c": 3.0, "c2": 3.0}  # as the testdata README says


@pytest.fixture(scope="module")
def saved_models(tf, tmp_path_factory) -> dict[str, str]:
    """{kind: SavedModel directory}: written by TF 2.21 here, plus the real TF Serving one
    where the testdata folder is given."""
    root = tmp_path_factory.mktemp("saved_models")
    out = {}
    inp = tf.keras.Input(shape=(3,), name="x")
    model = tf.keras.Model(inp, tf.keras.layers.Dense(2, name="dense")(inp))
    out["keras_export"] = str(root / "keras_export")
    model.export(out["keras_export"])
    out["keras_saved_model_save"] = str(root / "keras_saved")
    tf.saved_model.save(model, out["keras_saved_model_save"])

    class Scorer(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.arange(6, dtype=np.float32).reshape(3, 2), name="w")
            self.step = tf.Variable(np.int64(7), name="step")
            self.table = tf.Variable(np.array([b"a", b"bc"], dtype=object), name="table")

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="features"),
                                      tf.TensorSpec([], tf.string, name="tag")])
        def predict(self, features, tag):
            return {"scores": tf.matmul(features, self.w), "tag": tag, "n": tf.shape(features)[0]}

        @tf.function(input_signature=[tf.TensorSpec(None, tf.int32, name="z"),
                                      tf.TensorSpec([2, None, 4], tf.float64, name="y")])
        def other(self, z, y):
            return z + 1, y * 2.0

    module = Scorer()
    out["module"] = str(root / "module")
    tf.saved_model.save(module, out["module"], signatures={"serving_default": module.predict,
                                                            "other": module.other})
    out["functions"] = str(root / "functions")
    _save_functions_module(tf, out["functions"])
    if TESTDATA is not None:
        out["real_tf1"] = str(TESTDATA / REAL)
    return out


Point = collections.namedtuple("Point", ["x", "y"])


def _save_functions_module(tf, directory: str) -> None:
    """A tf.Module whose functions take every kind of argument saved_model_cli prints."""

    class Functions(tf.Module):
        def __init__(self):
            super().__init__()
            self.scale = tf.Variable(2.0, name="scale")

        @tf.function
        def poly(self, x, training=False, factor=2.0, names=("a", "b"), cfg=None):
            return x * factor * self.scale

        @tf.function
        def nested(self, p, feats, k=3, mode="train", sizes=(1, 2)):
            return p.x + p.y + feats["a"]

        @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.float32, ragged_rank=1,
                                                           row_splits_dtype=tf.int64)])
        def ragged(self, r):
            return r.flat_values

        @tf.function(input_signature=[tf.SparseTensorSpec([None, 4], tf.int64)])
        def sparse(self, s):
            return s.values

    m = Functions()
    m.poly(tf.constant([1.0]), training=True)
    m.poly(tf.constant([[1.0, 2.0]]), factor=3.0, cfg={"k": 1, "m": "s"})
    m.poly(tf.constant(1.0), names=["x"])
    m.nested(Point(tf.constant(1.0), tf.constant(2.0)), {"a": tf.constant(1.0), "b": tf.constant([1, 2])})
    m.bare = m.nested.get_concrete_function(
        Point(tf.TensorSpec([], tf.float32, name="px"), tf.TensorSpec([], tf.float32)),
        {"a": tf.TensorSpec(None, tf.float32), "b": tf.TensorSpec([2], tf.int32)}, k=5)
    tf.saved_model.save(m, directory, signatures={"serving_default": m.ragged, "sparse": m.sparse})


def _saved_model_cli() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    return [script] if os.path.isfile(script) else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


@pytest.fixture(scope="module")
def cli_outputs(saved_models) -> dict[str, str]:
    """`saved_model_cli show --all --dir DIR` stdout per SavedModel (run in parallel)."""
    env = subprocess_env()
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    procs = {kind: subprocess.Popen([*_saved_model_cli(), "show", "--all", "--dir", d], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for kind, d in saved_models.items()}
    out = {}
    for kind, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        out[kind] = stdout
    return out


# The lines of saved_model_cli's report that `ckptkit meta` reproduces (tag-sets, signatures).
_SIGNATURE_LINES = ("MetaGraphDef with tag-set: ", "signature_def[", "  The given SavedModel SignatureDef",
                    "    inputs[", "    outputs[", "        dtype: ", "        shape: ", "        name: ",
                    "  Method name is:")


def _signature_lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.startswith(_SIGNATURE_LINES)]


KINDS = ["keras_export", "keras_saved_model_save", "module", "functions",
         pytest.param("real_tf1", marks=pytest.mark.testdata)]
TF2_KINDS = ["keras_export", "keras_saved_model_save", "module", "functions"]


@pytest.mark.parametrize("kind", KINDS)
def test_meta_prints_signatures_as_saved_model_cli(saved_models, cli_outputs, kind):
    theirs = _signature_lines(cli_outputs[kind])
    assert len(theirs) > 10 and any(line.startswith("    inputs[") for line in theirs)
    res = CliRunner().invoke(cli, ["meta", saved_models[kind]])
    assert res.exit_code == 0, res.output
    assert _signature_lines(res.output) == theirs
    pb = CliRunner().invoke(cli, ["meta", os.path.join(saved_models[kind], "saved_model.pb")])
    assert pb.exit_code == 0 and pb.output == res.output


@pytest.mark.parametrize("kind", KINDS)
def test_meta_json_matches_tf(tf, saved_models, kind):
    from tensorflow.python.tools import saved_model_utils  # noqa: PLC0415 - TF only in the oracle

    directory = saved_models[kind]
    res = CliRunner().invoke(cli, ["meta", directory, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary == json.loads(json.dumps(saved_model.summarize_saved_model(directory)))
    assert summary["kind"] == "saved_model"
    sm = saved_model_utils.read_saved_model(directory)
    assert summary["saved_model_schema_version"] == sm.saved_model_schema_version
    tf_graphs = sorted(sm.meta_graphs, key=lambda m: list(m.meta_info_def.tags))
    assert [g["tags"] for g in summary["meta_graphs"]] == [list(m.meta_info_def.tags) for m in tf_graphs]
    for graph, mg in zip(summary["meta_graphs"], tf_graphs, strict=True):
        assert [s["key"] for s in graph["signatures"]] == sorted(mg.signature_def)
        for sig in graph["signatures"]:
            tf_sig = mg.signature_def[sig["key"]]
            assert sig["method_name"] == tf_sig.method_name
            for side, tf_side in (("inputs", tf_sig.inputs), ("outputs", tf_sig.outputs)):
                assert [t["key"] for t in sig[side]] == sorted(tf_side)
                for t in sig[side]:
                    info = tf_side[t["key"]]
                    assert t["name"] == info.name
                    shape = tf.TensorShape(info.tensor_shape)
                    want = None if shape.rank is None else [-1 if d is None else d for d in shape.as_list()]
                    assert t["shape"] == want
                    if info.dtype:
                        assert t["dtype"] == "DT_" + tf.dtypes.as_dtype(info.dtype).name.upper().replace(
                            "FLOAT32", "FLOAT").replace("FLOAT64", "DOUBLE")
    prefix = os.path.join(directory, "variables", "variables")
    assert summary["variables"]["prefix"] == prefix and summary["variables"]["error"] is None
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    assert [(t["name"], t["shape"]) for t in summary["variables"]["tensors"]] == [
        (n, list(s)) for n, s in tf.train.list_variables(prefix)]
    assert all(t["dtype"] == dtypes[t["name"]].name for t in summary["variables"]["tensors"])


def test_module_signature_shapes_and_dtypes(saved_models):
    summary = saved_model.summarize_saved_model(saved_models["module"])
    (graph,) = summary["meta_graphs"]
    assert graph["tags"] == ["serve"]
    sigs = {s["key"]: s for s in graph["signatures"]}
    assert set(sigs) == {"__saved_model_init_op", "other", "serving_default"}
    serving = sigs["serving_default"]
    assert serving["method_name"] == "tensorflow/serving/predict"
    assert [(t["key"], t["dtype"], t["shape"]) for t in serving["inputs"]] == [
        ("features", "DT_FLOAT", [-1, 3]), ("tag", "DT_STRING", [])]
    assert [(t["key"], t["dtype"], t["shape"]) for t in serving["outputs"]] == [
        ("n", "DT_INT32", []), ("scores", "DT_FLOAT", [-1, 2]), ("tag", "DT_STRING", [])]
    assert [(t["key"], t["dtype"], t["shape"]) for t in sigs["other"]["inputs"]] == [
        ("y", "DT_DOUBLE", [2, -1, 4]), ("z", "DT_INT32", None)]
    text = "\n".join(saved_model.format_saved_model(summary))
    assert "shape: (2, -1, 4)" in text and "shape: unknown_rank" in text
    assert "  w/.ATTRIBUTES/VARIABLE_VALUE (float32) [3,2]" in text
    assert "  table/.ATTRIBUTES/VARIABLE_VALUE (string) [2]" in text


@pytest.mark.parametrize("kind", KINDS)
def test_saved_model_dir_lists_verifies_and_loads_like_tf(tf, saved_models, kind):
    directory = saved_models[kind]
    prefix = os.path.join(directory, "variables", "variables")
    reader = tf.train.load_checkpoint(prefix)
    for form in (directory, os.path.join(directory, "saved_model.pb"), prefix):
        assert ckptkit.CheckpointReader(form).prefix == prefix
        assert ckptkit.list_variables(form) == [(n, list(s)) for n, s in tf.train.list_variables(prefix)]
    got = ckptkit.load(directory)
    assert sorted(got) == sorted(reader.get_variable_to_shape_map())
    for name, value in got.items():
        want = reader.get_tensor(name)
        if value.dtype == object:
            wants = [want] if isinstance(want, bytes) else list(np.asarray(want, dtype=object).reshape(-1))
            assert [bytes(v) for v in value.reshape(-1)] == wants, name  # (numpy's S dtype drops trailing NULs)
        else:
            assert value.dtype == want.dtype and np.array_equal(value, want), name
    runner = CliRunner()
    ls = runner.invoke(cli, ["ls", directory, "--json"])
    assert ls.exit_code == 0, ls.output
    assert set(reader.get_variable_to_shape_map()) <= set(ls.output.split('"'))
    verify = runner.invoke(cli, ["verify", directory])
    assert verify.exit_code == 0, verify.output
    assert verify.output.startswith(f"OK: {len(got)} tensors")
    show = runner.invoke(cli, ["show", directory, sorted(got)[-1]])
    assert show.exit_code == 0, show.output
    diff = runner.invoke(cli, ["diff", directory, prefix])
    assert diff.exit_code == 0, diff.output


@pytest.mark.testdata
def test_real_old_saved_model_values(saved_models):
    got = ckptkit.load(saved_models["real_tf1"])
    assert {k: float(v) for k, v in got.items()} == REAL_VALUES
    assert all(v.dtype == np.float32 and v.shape == () for v in got.values())
    with ckptkit.CheckpointReader(os.path.join(saved_models["real_tf1"], "saved_model.pb")) as reader:
        assert float(reader.get_tensor("c2")) == 3.0


def test_saved_model_without_variables_fails_cleanly(saved_models, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "saved_model.pb").write_bytes(pathlib.Path(saved_models["module"], "saved_model.pb").read_bytes())
    with pytest.raises(ckptkit.CheckpointError, match="SavedModel without variables"):
        ckptkit.load(str(bare))
    res = CliRunner().invoke(cli, ["ls", str(bare)])
    assert res.exit_code == 1
    summary = saved_model.summarize_saved_model(str(bare))
    assert summary["variables"]["error"] and summary["meta_graphs"]
    res = CliRunner().invoke(cli, ["meta", str(bare)])
    assert res.exit_code == 0 and "Variables (" in res.output
    res = CliRunner().invoke(cli, ["verify", str(bare)])
    assert res.exit_code == 0, res.output
    assert res.output == f"OK: {bare}: the SavedModel has no variables to verify (no variables/variables.index)\n"


def test_damaged_saved_model_pb_is_one_line_error(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"\xff\xff\xff garbage")
    res = subprocess.run([sys.executable, "-m", "ckptkit", "meta", str(broken)], capture_output=True,
                         text=True, env=subprocess_env(), cwd=REPO)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "saved_model.pb" in res.stderr, res.stderr


# --------------------------------------------------------------------------- meta on checkpoints

def test_meta_finds_the_meta_of_a_prefix_or_directory(tf, tmp_path):
    tf1 = tf.compat.v1
    graph = tf1.Graph()
    with graph.as_default():
        tf1.get_variable("v", initializer=np.float32([1.0, 2.0]))
        saver = tf1.train.Saver()
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            prefix = saver.save(sess, str(tmp_path / "model.ckpt"), global_step=3)
    runner = CliRunner()
    want = runner.invoke(cli, ["meta", prefix + ".meta", "--json"])
    assert want.exit_code == 0, want.output
    for form in (prefix, str(tmp_path), prefix + ".index"):
        res = runner.invoke(cli, ["meta", form, "--json"])
        assert res.exit_code == 0, res.output
        summary = json.loads(res.output)
        assert summary["kind"] == "meta_graph" and summary["path"] == prefix + ".meta"
        assert summary == json.loads(want.output)
        assert [v["name"] for v in summary["variables"]] == ["v"]
    assert saved_model.find_meta_graph(str(tmp_path)) == prefix + ".meta"


def test_meta_without_a_meta_file_is_one_line_error(tmp_path):
    prefix = ckptkit.save(str(tmp_path / "plain"), {"v": np.float32(1.0)})
    for form in (prefix, str(tmp_path)):
        res = subprocess.run([sys.executable, "-m", "ckptkit", "meta", form], capture_output=True, text=True,
                             env=subprocess_env(), cwd=REPO)
        assert res.returncode == 1
        assert res.stderr.count("\n") == 1, res.stderr
        assert "has no .meta file" in res.stderr and "plain.meta" in res.stderr
    with pytest.raises(ckptkit.CheckpointError, match="no .meta file"):
        saved_model.summarize(prefix)
    res = CliRunner().invoke(cli, ["meta", str(tmp_path / "nothing_here")])
    assert res.exit_code == 1


def test_saved_model_pbtxt_reads_like_the_pb(tf, saved_models, tmp_path):
    """TF's loader also takes `saved_model.pbtxt` (text format); with both, the `.pb` wins."""
    from tensorflow.python.tools import saved_model_utils  # noqa: PLC0415 - TF only in the oracle

    source = saved_models["module"]
    copy = tmp_path / "text"
    copy.mkdir()
    sm = saved_model_utils.read_saved_model(source)
    (copy / "saved_model.pbtxt").write_text(text_format.MessageToString(sm))
    os.symlink(os.path.join(source, "variables"), copy / "variables")
    want = saved_model.summarize_saved_model(source)
    got = saved_model.summarize_saved_model(str(copy))
    assert got["file"] == str(copy / "saved_model.pbtxt")
    assert got["meta_graphs"] == want["meta_graphs"]
    assert got["variables"]["tensors"] == want["variables"]["tensors"]
    assert ckptkit.list_variables(str(copy)) == ckptkit.list_variables(source)
    (copy / "saved_model.pb").write_bytes(pathlib.Path(source, "saved_model.pb").read_bytes())
    (copy / "saved_model.pbtxt").write_text("not: [a SavedModel")
    assert saved_model.summarize_saved_model(str(copy))["meta_graphs"] == want["meta_graphs"]


# --------------------------------------------------------------------------- concrete functions

def _cli_functions(text: str) -> list[str]:
    """saved_model_cli's "Concrete Functions:" section as a terminal shows it: its
    `, \b\b]` (a trailing separator backspaced over) is `]`."""
    start = text.find("\nConcrete Functions:")
    assert start >= 0, text
    return re.sub(r", \x08\x08([\]}])", r"\1", text[start + 1:]).rstrip("\n").split("\n")


def _our_functions(text: str) -> list[str]:
    lines = text.split("\n")
    start = lines.index("Concrete Functions:")
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("Variables ("))
    assert lines[end - 1] == ""
    return lines[start:end - 1]


_DICT_ENTRY = re.compile(r", (?='[^']*': )")


def _canonical(lines: list[str]) -> list[tuple[str, list[list[str]]]]:
    """Per function, its options in sorted order and each dict's entries sorted: the two
    orders saved_model_cli takes from the run (load-time function names, protobuf map order)."""
    functions: list[tuple[str, list[list[str]]]] = []
    for line in lines[1:]:
        if line.startswith("  Function Name: "):
            functions.append((line, []))
        elif line.startswith("    Option #") or not functions[-1][1]:
            functions[-1][1].append([])
        if line.startswith(("  Function Name: ", "    Option #")) or not line:
            continue
        if "Value: {" in line:
            head, body = line.split("Value: {", 1)
            line = head + "Value: {" + ", ".join(sorted(_DICT_ENTRY.split(body[:-1]))) + "}"
        functions[-1][1][-1].append(line)
    return [(name, sorted(options)) for name, options in functions]


@pytest.mark.parametrize("kind", TF2_KINDS)
def test_meta_prints_concrete_functions_as_saved_model_cli(saved_models, cli_outputs, kind):
    theirs = _cli_functions(cli_outputs[kind])
    res = CliRunner().invoke(cli, ["meta", saved_models[kind]])
    assert res.exit_code == 0, res.output
    ours = _our_functions(res.output)
    assert any(line.startswith("          ") for line in theirs)  # some argument spec
    assert _canonical(ours) == _canonical(theirs)
    if not any(line.startswith("    Option #2") for line in theirs):
        assert ours == theirs


def test_functions_module_prints_every_kind_of_argument(saved_models):
    text = "\n".join(saved_model.format_saved_model(saved_model.summarize_saved_model(saved_models["functions"])))
    for want in ("  Function Name: 'bare'", "    Option #3",
                 "          x: TensorSpec(shape=(1, 2), dtype=tf.float32, name='x')",
                 "          DType: Point",
                 "          Value: [TensorSpec(shape=(), dtype=tf.float32, name='px'), "
                 "TensorSpec(shape=(), dtype=tf.float32, name='p_y')]",
                 "          Value: {'k': 1, 'm': 's'}", "          DType: NoneType", "          train",
                 "          Value: RaggedTensorSpec(TensorShape([None, None]), tf.float32, 1, tf.int64)",
                 "          Value: SparseTensorSpec(TensorShape([None, 4]), tf.int64)"):
        assert want in text.split("\n"), want
    # traces in the order they were traced
    poly = [line for line in text.split("\n") if line.startswith("          x: TensorSpec")]
    assert [line.split("shape=")[1].split(", dtype")[0] for line in poly] == ["(1,)", "(1, 2)", "()"]


def _tf_typed(tf, value):
    """A Python value TF decoded, typed as ckptkit's JSON types it."""
    if isinstance(value, tf.TensorSpec):
        return {"type": type(value).__name__, "name": value.name, "dtype": value.dtype.name,
                "shape": None if value.shape.rank is None else value.shape.as_list()}
    if isinstance(value, tf.TypeSpec):
        return {"type": type(value).__name__}
    if isinstance(value, tf.TensorShape):
        return {"type": "TensorShape", "value": None if value.rank is None else value.as_list()}
    if isinstance(value, tf.dtypes.DType):
        return {"type": "DType", "value": value.name}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {"type": type(value).__name__, "namedtuple": True,
                "value": {k: _tf_typed(tf, v) for k, v in zip(value._fields, value, strict=True)}}
    if isinstance(value, (tuple, list)):
        return {"type": type(value).__name__, "value": [_tf_typed(tf, v) for v in value]}
    if isinstance(value, dict):
        return {"type": "dict", "value": {k: _tf_typed(tf, v) for k, v in value.items()}}
    return {"type": type(value).__name__, "value": value}


def _comparable(value):
    """ckptkit's typed value, a type spec's serialized state left out (the text test checks its repr)."""
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if not isinstance(value, dict):
        return value
    if value.get("type_spec"):
        return {"type": value["type"]}
    return {k: _comparable(v) for k, v in value.items()}


@pytest.mark.parametrize("kind", TF2_KINDS)
def test_concrete_functions_json_matches_tf(tf, saved_models, kind):
    """Every signature decodes as TF's nested_structure_coder decodes it, and each function
    lists the concrete functions TF's loader gives it."""
    from tensorflow.python.saved_model import nested_structure_coder  # noqa: PLC0415 - the oracle
    from tensorflow.python.tools import saved_model_utils  # noqa: PLC0415 - TF only in the oracle

    directory = saved_models[kind]
    res = CliRunner().invoke(cli, ["meta", directory, "--json"])
    assert res.exit_code == 0, res.output
    (graph,) = json.loads(res.output)["meta_graphs"]
    functions = graph["concrete_functions"]
    object_graph = saved_model_utils.read_saved_model(directory).meta_graphs[0].object_graph_def
    for fn in functions:
        for cf in fn["concrete_functions"]:
            proto = object_graph.concrete_functions[cf["concrete_function"]]
            args, kwargs = nested_structure_coder.decode_proto(proto.canonicalized_input_signature)
            assert _comparable(cf["args"]) == [_tf_typed(tf, a) for a in args]
            assert _comparable(cf["kwargs"]) == {k: _tf_typed(tf, v) for k, v in kwargs.items()}
            assert list(cf["kwargs"]) == sorted(cf["kwargs"])
            assert _comparable(cf["outputs"]) == _tf_typed(
                tf, nested_structure_coder.decode_proto(proto.output_signature))
    loaded = tf.saved_model.load(directory)
    for fn in functions:
        child = getattr(loaded, fn["name"])
        if isinstance(child, tf.types.experimental.ConcreteFunction):
            assert fn["kind"] == "concrete_function"
            traced = [child]
        else:
            assert fn["kind"] == "function"
            traced = child._list_all_concrete_functions_for_serialization()  # as saved_model_cli lists them
        want = sorted(json.dumps([[_tf_typed(tf, a) for a in c.structured_input_signature[0]],
                                  {k: _tf_typed(tf, v) for k, v in c.structured_input_signature[1].items()}],
                                 sort_keys=True) for c in traced)
        got = sorted(json.dumps([_comparable(c["args"]), _comparable(c["kwargs"])], sort_keys=True)
                     for c in fn["concrete_functions"])
        assert got == want, fn["name"]


# --------------------------------------------------------------------------- --tag-set / --signature-def

@pytest.fixture(scope="module")
def tf1_two_graphs(tf, tmp_path_factory) -> str:
    """A SavedModel of TF1's builder with two MetaGraphDefs ({serve}, {serve, gpu}) and no
    variables (its `variables/` is empty, as the builder leaves it)."""
    tf1 = tf.compat.v1
    directory = str(tmp_path_factory.mktemp("tf1") / "two_graphs")
    graph = tf1.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None, 2], name="x")
        y = tf1.identity(x * 2.0, name="y")
        z = tf1.identity(x + 1.0, name="z")
        with tf1.Session(graph=graph) as sess:
            builder = tf1.saved_model.Builder(directory)
            predict = tf1.saved_model.predict_signature_def
            builder.add_meta_graph_and_variables(sess, ["serve"],
                                                 signature_def_map={"serving_default": predict({"x": x}, {"y": y})})
            builder.add_meta_graph(["serve", "gpu"], signature_def_map={
                "serving_default": predict({"x": x}, {"y": y}), "plus_one": predict({"x": x}, {"z": z})})
            builder.save()
    assert os.listdir(os.path.join(directory, "variables")) == []
    return directory


@pytest.fixture(scope="module")
def cli_views(saved_models, tf1_two_graphs) -> dict[tuple, str]:
    """`saved_model_cli show --dir D [--tag_set T [--signature_def K]]` stdout (run in parallel)."""
    runs = {("module", "serve", None), ("module", "serve", "other"), ("tf1", "gpu,serve", None),
            ("tf1", "gpu,serve", "plus_one"), ("tf1", "all", None)}
    env = subprocess_env()
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    procs = {}
    for run in runs:
        kind, tags, key = run
        cmd = [*_saved_model_cli(), "show", "--dir", tf1_two_graphs if kind == "tf1" else saved_models[kind]]
        cmd += ["--all"] if tags == "all" else ["--tag_set", tags] + (["--signature_def", key] if key else [])
        procs[run] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    for run, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        out[run] = stdout
    return out


def test_tag_set_and_signature_def_print_as_saved_model_cli(saved_models, tf1_two_graphs, cli_views):
    runner = CliRunner()
    for (kind, tags, key), theirs in cli_views.items():
        if tags == "all":
            continue
        args = ["meta", tf1_two_graphs if kind == "tf1" else saved_models[kind], "--tag-set", tags]
        res = runner.invoke(cli, args + (["--signature-def", key] if key else []))
        assert res.exit_code == 0, res.output
        assert res.output == theirs, (kind, tags, key)
    res = runner.invoke(cli, ["meta", tf1_two_graphs, "--tag-set", " serve , gpu"])  # spaces, any order
    assert res.exit_code == 0 and res.output == cli_views[("tf1", "gpu,serve", None)]
    # one MetaGraphDef: --tag-set may be left out
    res = runner.invoke(cli, ["meta", saved_models["module"], "--signature-def", "other"])
    assert res.exit_code == 0 and res.output == cli_views[("module", "serve", "other")]


def test_tag_set_and_signature_def_json(saved_models, tf1_two_graphs):
    res = CliRunner().invoke(cli, ["meta", tf1_two_graphs, "--tag-set", "gpu,serve", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == {"kind": "saved_model", "path": tf1_two_graphs, "tags": ["serve", "gpu"],
                                      "signature_keys": ["plus_one", "serving_default"]}
    res = CliRunner().invoke(cli, ["meta", saved_models["module"], "--tag-set", "serve",
                                   "--signature-def", "serving_default", "--json"])
    assert res.exit_code == 0, res.output
    view = json.loads(res.output)
    full = saved_model.summarize_saved_model(saved_models["module"])
    assert view["tags"] == ["serve"]
    assert view["signature"] == next(s for s in full["meta_graphs"][0]["signatures"] if s["key"] == "serving_default")


def _meta_error(args: list[str]) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "ckptkit", "meta", *args], capture_output=True, text=True,
                         env=subprocess_env(), cwd=REPO)
    assert res.stdout == "" and res.stderr.count("\n") == 1, res.stderr
    return res


def test_unknown_tag_set_or_signature_is_one_line_listing_what_there_is(saved_models, tf1_two_graphs):
    res = _meta_error([tf1_two_graphs, "--tag-set", "train"])
    assert res.returncode == 1
    assert res.stderr == (f"ckptkit: error: {tf1_two_graphs}: no MetaGraphDef with tag-set 'train' "
                          "(tag-sets: 'serve'; 'gpu, serve')\n")
    res = _meta_error([tf1_two_graphs, "--tag-set", "serve,gpu", "--signature-def", "nope"])
    assert res.returncode == 1
    assert res.stderr == (f"ckptkit: error: {tf1_two_graphs}: no signature 'nope' in the MetaGraphDef with "
                          "tag-set 'gpu, serve' (signatures: plus_one, serving_default)\n")
    res = _meta_error([tf1_two_graphs, "--signature-def", "serving_default"])  # two graphs: which?
    assert res.returncode == 1 and "choose one with --tag-set (tag-sets: 'serve'; 'gpu, serve')" in res.stderr
    res = _meta_error([saved_models["module"], "--tag-set", ","])
    assert res.returncode == 1 and "empty tag-set" in res.stderr
    prefix = os.path.join(saved_models["module"], "variables", "variables")
    res = subprocess.run([sys.executable, "-m", "ckptkit", "meta", prefix, "--tag-set", "serve"],
                         capture_output=True, text=True, env=subprocess_env(), cwd=REPO)
    assert res.returncode == 2 and "select in a SavedModel" in res.stderr


def test_tf1_saved_model_has_no_concrete_functions(tf1_two_graphs, cli_views):
    theirs = cli_views[("tf1", "all", None)]
    assert "Concrete Functions" not in theirs
    res = CliRunner().invoke(cli, ["meta", tf1_two_graphs])
    assert res.exit_code == 0, res.output
    assert "Concrete Functions" not in res.output
    assert _signature_lines(res.output) == _signature_lines(theirs)
    summary = saved_model.summarize_saved_model(tf1_two_graphs)
    assert [g["concrete_functions"] for g in summary["meta_graphs"]] == [None, None]


def test_verify_saved_model_without_variables(tf1_two_graphs, tmp_path):
    for form in (tf1_two_graphs, os.path.join(tf1_two_graphs, "saved_model.pb")):
        res = CliRunner().invoke(cli, ["verify", form])
        assert res.exit_code == 0, res.output
        assert res.output == (f"OK: {tf1_two_graphs}: the SavedModel has no variables to verify "
                              "(no variables/variables.index)\n")
    res = CliRunner().invoke(cli, ["verify", tf1_two_graphs, "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["ok"] is True and json.loads(res.output)["tensors"] == 0
    damaged = tmp_path / "damaged"
    (damaged / "variables").mkdir(parents=True)
    data = pathlib.Path(tf1_two_graphs, "saved_model.pb").read_bytes()
    (damaged / "saved_model.pb").write_bytes(data[: len(data) // 2])
    res = subprocess.run([sys.executable, "-m", "ckptkit", "verify", str(damaged)], capture_output=True,
                         text=True, env=subprocess_env(), cwd=REPO)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "saved_model.pb" in res.stderr, res.stderr
