"""SavedModel directories, against TF 2.21 and its saved_model_cli.

SavedModels written by TF in this session (a Keras model through `model.export` and
through `tf.saved_model.save`, a `tf.Module` with `@tf.function(input_signature=...)`
signatures) and a real old one (TF Serving's saved_model_half_plus_two_cpu, written by a
TF1 builder with a snappy-compressed index; opt-in, marked `testdata`): ckptkit lists, verifies and loads
`variables/variables` with TF's values, and `ckptkit meta` prints every signature's
inputs and outputs exactly as `saved_model_cli show --all` does.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import REPO, TESTDATA, subprocess_env

import ckptkit
from ckptkit import metagraph
from ckptkit.cli import cli

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
    if TESTDATA is not None:
        out["real_tf1"] = str(TESTDATA / REAL)
    return out


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


KINDS = ["keras_export", "keras_saved_model_save", "module", pytest.param("real_tf1", marks=pytest.mark.testdata)]


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
    assert summary == json.loads(json.dumps(metagraph.summarize_saved_model(directory)))
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
    summary = metagraph.summarize_saved_model(saved_models["module"])
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
    text = "\n".join(metagraph.format_saved_model(summary))
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
    summary = metagraph.summarize_saved_model(str(bare))
    assert summary["variables"]["error"] and summary["meta_graphs"]
    res = CliRunner().invoke(cli, ["meta", str(bare)])
    assert res.exit_code == 0 and "Variables (" in res.output


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
    assert metagraph.find_meta_graph(str(tmp_path)) == prefix + ".meta"


def test_meta_without_a_meta_file_is_one_line_error(tmp_path):
    prefix = ckptkit.save(str(tmp_path / "plain"), {"v": np.float32(1.0)})
    for form in (prefix, str(tmp_path)):
        res = subprocess.run([sys.executable, "-m", "ckptkit", "meta", form], capture_output=True, text=True,
                             env=subprocess_env(), cwd=REPO)
        assert res.returncode == 1
        assert res.stderr.count("\n") == 1, res.stderr
        assert "has no .meta file" in res.stderr and "plain.meta" in res.stderr
    with pytest.raises(ckptkit.CheckpointError, match="no .meta file"):
        metagraph.summarize(prefix)
    res = CliRunner().invoke(cli, ["meta", str(tmp_path / "nothing_here")])
    assert res.exit_code == 1


def test_saved_model_pbtxt_reads_like_the_pb(tf, saved_models, tmp_path):
    """TF's loader also takes `saved_model.pbtxt` (text format); with both, the `.pb` wins."""
    from google.protobuf import text_format  # noqa: PLC0415
    from tensorflow.python.tools import saved_model_utils  # noqa: PLC0415 - TF only in the oracle

    source = saved_models["module"]
    copy = tmp_path / "text"
    copy.mkdir()
    sm = saved_model_utils.read_saved_model(source)
    (copy / "saved_model.pbtxt").write_text(text_format.MessageToString(sm))
    os.symlink(os.path.join(source, "variables"), copy / "variables")
    want = metagraph.summarize_saved_model(source)
    got = metagraph.summarize_saved_model(str(copy))
    assert got["file"] == str(copy / "saved_model.pbtxt")
    assert got["meta_graphs"] == want["meta_graphs"]
    assert got["variables"]["tensors"] == want["variables"]["tensors"]
    assert ckptkit.list_variables(str(copy)) == ckptkit.list_variables(source)
    (copy / "saved_model.pb").write_bytes(pathlib.Path(source, "saved_model.pb").read_bytes())
    (copy / "saved_model.pbtxt").write_text("not: [a SavedModel")
    assert metagraph.summarize_saved_model(str(copy))["meta_graphs"] == want["meta_graphs"]
