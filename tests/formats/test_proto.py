"""The protobuf layer: generated code is current, private, and wire compatible with TF."""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool
from helpers import REPO

from ckptkit.proto import (
    graph_pb2,
    meta_graph_pb2,
    saver_pb2,
    tensor_bundle_pb2,
    tensor_slice_pb2,
    trackable_object_graph_pb2,
    types_pb2,
)
from ckptkit.proto._pool import POOL

ROOT = Path(REPO)
GEN_DIR = ROOT / "ckptkit" / "proto"
sys.path.insert(0, str(ROOT / "proto"))
import generate  # noqa: E402  (proto/generate.py)

sys.path.remove(str(ROOT / "proto"))

MODULES = sorted(p.stem for p in GEN_DIR.glob("*_pb2.py"))

# Fields of TF's messages that ckptkit's subset leaves out on purpose.
DROPPED_FIELDS: set[tuple[str, str]] = set()

# TF's generated modules holding the originals of every message we define.
TF_MODULES = [
    "tensorflow.core.framework.types_pb2",
    "tensorflow.core.framework.tensor_shape_pb2",
    "tensorflow.core.framework.tensor_pb2",
    "tensorflow.core.framework.resource_handle_pb2",
    "tensorflow.core.framework.tensor_slice_pb2",
    "tensorflow.core.framework.versions_pb2",
    "tensorflow.core.framework.full_type_pb2",
    "tensorflow.core.framework.attr_value_pb2",
    "tensorflow.core.framework.node_def_pb2",
    "tensorflow.core.framework.op_def_pb2",
    "tensorflow.core.framework.function_pb2",
    "tensorflow.core.framework.graph_debug_info_pb2",
    "tensorflow.core.framework.graph_pb2",
    "tensorflow.core.framework.variable_pb2",
    "tensorflow.core.protobuf.struct_pb2",
    "tensorflow.core.protobuf.saver_pb2",
    "tensorflow.core.protobuf.meta_graph_pb2",
    "tensorflow.core.protobuf.saved_model_pb2",
    "tensorflow.core.protobuf.saved_object_graph_pb2",
    "tensorflow.core.protobuf.tensor_bundle_pb2",
    "tensorflow.core.protobuf.trackable_object_graph_pb2",
    "tensorflow.core.util.saved_tensor_slice_pb2",
    "tensorflow.python.training.checkpoint_state_pb2",
]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def _run(code: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return res


def _import_all():
    return {m: importlib.import_module(f"ckptkit.proto.{m}") for m in MODULES}


def _must_not_skip() -> bool:
    return any(os.environ.get(k) for k in ("CI", "CKPTKIT_REQUIRE_PROTOC")) or (
        os.environ.get("CKPTKIT_REQUIRE_TF") == "1"
    )


# --- (a) the committed generated code matches the .proto sources ----------------------

def _committed() -> dict[str, bytes]:
    files = sorted(GEN_DIR.glob("*_pb2.py")) + sorted(GEN_DIR.glob("*_pb2.pyi"))
    return {p.name: p.read_bytes() for p in files}


def _regenerated(tmp_path: Path, python: str, allow_any: bool) -> dict[str, bytes]:
    out = tmp_path / "gen"
    generate.generate(out, python=python, allow_any_protoc=allow_any)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_every_proto_has_a_committed_module():
    protos = sorted(p.stem for p in (ROOT / "proto").glob("*.proto"))
    assert sorted(m[: -len("_pb2")] for m in MODULES) == protos
    assert all((GEN_DIR / f"{m}.pyi").is_file() for m in MODULES)


def test_generated_code_is_byte_identical(tmp_path):
    """Regenerate with the pinned grpcio-tools; the committed files must not drift."""
    python = os.environ.get("CKPTKIT_PROTOC_PYTHON", sys.executable)
    have = generate.installed_grpcio_tools(python)
    if have != generate.GRPCIO_TOOLS_VERSION:
        msg = (f"grpcio-tools=={generate.GRPCIO_TOOLS_VERSION} needed for the byte-exact drift "
               f"check, found {have} (pip install -e .[test], or set CKPTKIT_PROTOC_PYTHON)")
        if _must_not_skip():
            pytest.fail(msg)
        pytest.skip(msg)
    assert _regenerated(tmp_path, python, allow_any=False) == _committed()


def _normalize(name: str, data: bytes) -> bytes:
    text = data.decode()
    text = re.sub(r"# Protobuf Python Version: .*", "# Protobuf Python Version: X", text)
    text = re.sub(r"(_runtime_version\.Domain\.PUBLIC,\n)\s*\d+,\n\s*\d+,\n\s*\d+,\n",
                  r"\1X\n", text)
    return text.encode()


def test_generated_modules_match_sources_with_any_protoc(tmp_path):
    """Same check with whatever grpcio-tools is installed, ignoring the protoc version stamp.

    Catches a .proto edited without regenerating even where the pinned tools are absent.
    (.pyi stubs vary a little across protoc releases, so only the .py files are compared.)
    """
    if generate.installed_grpcio_tools(sys.executable) is None:
        if _must_not_skip():
            pytest.fail("grpcio-tools is not installed (it is in the test extra)")
        pytest.skip("grpcio-tools not installed")
    new = _regenerated(tmp_path, sys.executable, allow_any=True)
    old = _committed()
    assert sorted(new) == sorted(old)
    for name in sorted(old):
        if name.endswith(".py"):
            assert _normalize(name, new[name]) == _normalize(name, old[name]), name


def test_generated_imports_are_package_relative_and_private():
    for m in MODULES:
        for suffix in (".py", ".pyi"):
            text = (GEN_DIR / f"{m}{suffix}").read_text()
            for line in text.splitlines():
                if line.startswith(("import ", "from ")):
                    assert "tensorflow" not in line, (m, line)
                    assert not re.match(r"import \w+_pb2\b", line), (m, line)
            if suffix == ".py":
                assert "_descriptor_pool.Default()" not in text
                assert "_POOL.AddSerializedFile(" in text


def test_runtime_floor_matches_gencode():
    """pyproject's protobuf floor must admit the version stamped into the gencode."""
    stamps = {re.search(r"# Protobuf Python Version: (\S+)", (GEN_DIR / f"{m}.py").read_text())[1]
              for m in MODULES}
    assert len(stamps) == 1
    (stamp,) = stamps
    pyproject = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'"protobuf>=([\d.]+)', pyproject)[1]

    def as_tuple(version: str) -> tuple[int, ...]:
        return tuple(int(x) for x in version.split("."))

    assert as_tuple(floor) >= as_tuple(stamp)
    assert f'"grpcio-tools=={generate.GRPCIO_TOOLS_VERSION}"' in pyproject


# --- the private pool ----------------------------------------------------------------

def test_modules_register_in_private_pool_only():
    mods = _import_all()
    default = descriptor_pool.Default()
    for name, mod in mods.items():
        assert mod.DESCRIPTOR.pool is POOL, name
        assert mod.DESCRIPTOR.package == "tensorflow"
        with pytest.raises(KeyError):
            default.FindFileByName(mod.DESCRIPTOR.name)
    entry = mods["tensor_bundle_pb2"].BundleEntryProto
    assert entry.__module__ == "ckptkit.proto.tensor_bundle_pb2"
    assert POOL.FindMessageTypeByName("tensorflow.BundleEntryProto") is entry.DESCRIPTOR


def test_importing_protos_does_not_import_tensorflow():
    _run(f"""
        import importlib, sys
        for m in {MODULES!r}:
            importlib.import_module("ckptkit.proto." + m)
        from ckptkit.proto import tensor_bundle_pb2
        tensor_bundle_pb2.BundleHeaderProto(num_shards=1).SerializeToString()
        bad = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
        assert not bad, bad
    """)


def test_basic_round_trip_without_tf():
    e = tensor_bundle_pb2.BundleEntryProto(dtype=types_pb2.DT_FLOAT, shard_id=0, offset=8,
                                           size=24, crc32c=0xFFFFFFFF)
    e.shape.dim.add(size=2)
    e.shape.dim.add(size=3)
    back = tensor_bundle_pb2.BundleEntryProto.FromString(e.SerializeToString())
    assert back == e and back.crc32c == 0xFFFFFFFF
    ext = tensor_slice_pb2.TensorSliceProto.Extent(start=0)
    assert ext.WhichOneof("has_length_hack") is None
    ext.length = 0
    assert ext.WhichOneof("has_length_hack") == "length"
    assert types_pb2.DT_FLOAT8_E4M3FN == 25 and types_pb2.DT_FLOAT_REF == 101
    assert types_pb2.DT_INT4 == 29 and types_pb2.DT_FLOAT4_E2M1FN_REF == 133


# --- (b) interop with TensorFlow -----------------------------------------------------

def _import_tf_modules():
    return [importlib.import_module(m) for m in TF_MODULES]


def _field_sig(f):
    sub = f.message_type or f.enum_type
    return (f.number, f.type, f.is_repeated, sub.full_name if sub else None,
            f.containing_oneof.name if f.containing_oneof else None)


def _compare_message(ours, theirs, seen):
    assert ours.full_name == theirs.full_name
    for tf_field in theirs.fields:
        if (theirs.full_name, tf_field.name) in DROPPED_FIELDS:
            assert tf_field.name not in ours.fields_by_name
            assert tf_field.number not in ours.fields_by_number
            continue
        assert tf_field.name in ours.fields_by_name, (theirs.full_name, tf_field.name)
        assert _field_sig(ours.fields_by_name[tf_field.name]) == _field_sig(tf_field), (
            theirs.full_name, tf_field.name)
    assert {f.name for f in ours.fields} <= {f.name for f in theirs.fields}
    for e in ours.enum_types:
        _compare_enum(e, theirs.enum_types_by_name[e.name])
    for n in ours.nested_types:
        _compare_message(n, theirs.nested_types_by_name[n.name], seen)
    seen.add(ours.full_name)


def _compare_enum(ours, theirs):
    assert {v.name: v.number for v in ours.values} == {v.name: v.number for v in theirs.values}, (
        ours.full_name)


def test_descriptors_match_tensorflow(tf):
    """Every message/enum we define has TF's field names, numbers, types and enum values."""

    _import_tf_modules()
    default = descriptor_pool.Default()
    seen: set[str] = set()
    for mod in _import_all().values():
        fd = mod.DESCRIPTOR
        assert fd.package == "tensorflow"
        for e in fd.enum_types_by_name.values():
            _compare_enum(e, default.FindEnumTypeByName(e.full_name))
        for m in fd.message_types_by_name.values():
            _compare_message(m, default.FindMessageTypeByName(m.full_name), seen)
    for needed in ("tensorflow.BundleHeaderProto", "tensorflow.BundleEntryProto",
                   "tensorflow.MetaGraphDef.MetaInfoDef", "tensorflow.CollectionDef.AnyList",
                   "tensorflow.SignatureDef", "tensorflow.AssetFileDef", "tensorflow.GraphDef",
                   "tensorflow.SaverDef", "tensorflow.VariableDef", "tensorflow.SaveSliceInfoDef",
                   "tensorflow.SavedTensorSlices", "tensorflow.CheckpointState",
                   "tensorflow.TrackableObjectGraph.TrackableObject.SlotVariableReference",
                   "tensorflow.FunctionDefLibrary", "tensorflow.TensorProto", "tensorflow.SavedObjectGraph",
                   "tensorflow.SavedConcreteFunction", "tensorflow.SavedBareConcreteFunction"):
        assert needed in seen, needed


def test_bundle_entry_round_trips_with_tf(tf):
    from tensorflow.core.protobuf import tensor_bundle_pb2 as tf_bundle  # noqa: PLC0415 - TF only inside TF tests

    e = tensor_bundle_pb2.BundleEntryProto(dtype=types_pb2.DT_BFLOAT16, shard_id=2,
                                           offset=1 << 40, size=12, crc32c=0xDEADBEEF)
    e.shape.dim.add(size=3)
    e.shape.dim.add(size=2)
    ext = e.slices.add().extent
    ext.add(start=1, length=2)
    ext.add(start=0)
    t = tf_bundle.BundleEntryProto.FromString(e.SerializeToString())
    assert (t.dtype, t.shard_id, t.offset, t.size, t.crc32c) == (14, 2, 1 << 40, 12, 0xDEADBEEF)
    assert [d.size for d in t.shape.dim] == [3, 2]
    assert t.slices[0].extent[0].length == 2
    assert t.slices[0].extent[1].WhichOneof("has_length_hack") is None
    assert tensor_bundle_pb2.BundleEntryProto.FromString(t.SerializeToString()) == e

    h = tf_bundle.BundleHeaderProto(num_shards=3, endianness=tf_bundle.BundleHeaderProto.BIG)
    h.version.producer = 1
    ours = tensor_bundle_pb2.BundleHeaderProto.FromString(h.SerializeToString())
    assert (ours.num_shards, ours.endianness, ours.version.producer) == (
        3, tensor_bundle_pb2.BundleHeaderProto.BIG, 1)
    assert ours.SerializeToString() == h.SerializeToString()


def _tf_meta_graph(tf):
    tf1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        v = tf1.get_variable("v", [2, 3], initializer=tf1.zeros_initializer())
        tf1.get_variable("w", [4], dtype=tf.int64, initializer=tf1.zeros_initializer(),
                         trainable=False)
        tf1.add_to_collection("my_floats", 1.5)
        tf1.add_to_collection("my_ints", 7)
        tf1.add_to_collection("my_bytes", b"raw")
        saver = tf1.train.Saver()
        sig = tf1.saved_model.signature_def_utils.predict_signature_def(
            inputs={"x": tf1.placeholder(tf.float32, [None], name="x")}, outputs={"v": v})
        mg = tf1.train.export_meta_graph(graph=g, saver_def=saver.saver_def)
    mg.signature_def["serving_default"].CopyFrom(sig)
    return mg


def test_tf_meta_graph_parses_and_reserializes(tf, tmp_path):
    from tensorflow.core.protobuf import meta_graph_pb2 as tf_meta  # noqa: PLC0415 - TF only inside TF tests

    mg = _tf_meta_graph(tf)
    blob = mg.SerializeToString()
    ours = meta_graph_pb2.MetaGraphDef.FromString(blob)
    assert ours.meta_info_def.tensorflow_version == tf.__version__
    assert ours.saver_def.version == saver_pb2.SaverDef.V2
    assert {n.name for n in ours.graph_def.node} >= {"v", "w", "save/Const"}
    assert set(ours.collection_def) >= {"variables", "trainable_variables", "my_floats"}
    assert ours.collection_def["my_floats"].float_list.value == [1.5]
    assert ours.collection_def["my_ints"].int64_list.value == [7]
    assert ours.collection_def["my_bytes"].WhichOneof("kind") == "bytes_list"
    assert ours.signature_def["serving_default"].inputs["x"].name == "x:0"
    # Same bytes as TF's own parse + serialize (map order is the runtime's, not the input's),
    # and the same canonical bytes.
    assert ours.SerializeToString() == tf_meta.MetaGraphDef.FromString(blob).SerializeToString()
    assert ours.SerializeToString(deterministic=True) == mg.SerializeToString(deterministic=True)

    # A .meta written by TF's Saver.
    tf1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default(), tf1.Session(graph=g) as sess:
        tf1.get_variable("a", [3])
        saver = tf1.train.Saver()
        sess.run(tf1.global_variables_initializer())
        prefix = saver.save(sess, str(tmp_path / "model.ckpt"), global_step=1)
    meta = Path(prefix + ".meta").read_bytes()
    parsed = meta_graph_pb2.MetaGraphDef.FromString(meta)
    theirs = tf_meta.MetaGraphDef.FromString(meta)
    assert parsed.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True)
    assert parsed.saver_def.filename_tensor_name == theirs.saver_def.filename_tensor_name


def test_object_graph_def_parses_like_tf(tf):
    """MetaGraphDef.object_graph_def (a TF2 SavedModel's objects and functions) reads as TF wrote it."""
    from tensorflow.core.protobuf import meta_graph_pb2 as tf_meta  # noqa: PLC0415 - TF only inside TF tests

    mg = tf_meta.MetaGraphDef()
    mg.meta_info_def.tags.append("serve")
    root = mg.object_graph_def.nodes.add()
    root.children.add(node_id=1, local_name="f")
    root.user_object.identifier = "_generic_user_object"
    fn = mg.object_graph_def.nodes.add().function
    fn.concrete_functions.append("__inference_f_7")
    spec = mg.object_graph_def.concrete_functions["__inference_f_7"].canonicalized_input_signature
    spec.tuple_value.values.add().tensor_spec_value.name = "x"
    ours = meta_graph_pb2.MetaGraphDef.FromString(mg.SerializeToString())
    assert list(ours.meta_info_def.tags) == ["serve"]
    assert ours.object_graph_def.nodes[0].children[0].local_name == "f"
    assert list(ours.object_graph_def.nodes[1].function.concrete_functions) == ["__inference_f_7"]
    got = ours.object_graph_def.concrete_functions["__inference_f_7"].canonicalized_input_signature
    assert got.tuple_value.values[0].tensor_spec_value.name == "x"
    back = tf_meta.MetaGraphDef.FromString(ours.SerializeToString())
    assert back == mg


def test_graph_def_built_by_us_imports_into_tf(tf):
    g = graph_pb2.GraphDef()
    g.versions.producer = 1
    c = g.node.add(name="c", op="Const")
    c.attr["dtype"].type = types_pb2.DT_FLOAT
    t = c.attr["value"].tensor
    t.dtype = types_pb2.DT_FLOAT
    t.tensor_shape.dim.add(size=2)
    t.float_val.extend([1.5, -2.0])
    y = g.node.add(name="y", op="Identity", input=["c"])
    y.attr["T"].type = types_pb2.DT_FLOAT

    tf_graph_def = tf.compat.v1.GraphDef.FromString(g.SerializeToString())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(tf_graph_def, name="")
    assert graph.get_operation_by_name("y").type == "Identity"
    with tf.compat.v1.Session(graph=graph) as sess:
        assert sess.run("y:0").tolist() == [1.5, -2.0]


def test_trackable_object_graph_from_tf2_checkpoint(tf, tmp_path):
    ckpt = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0]))
    prefix = ckpt.write(str(tmp_path / "ckpt"))
    blob = tf.train.load_checkpoint(prefix).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
    graph = trackable_object_graph_pb2.TrackableObjectGraph.FromString(blob)
    keys = {a.checkpoint_key for n in graph.nodes for a in n.attributes}
    assert "v/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert graph.SerializeToString(deterministic=True) == blob


def test_tf_first_then_ours_in_one_process(tf):
    """TF registered its messages in the default pool; ours still import and interoperate."""
    _import_tf_modules()
    mods = _import_all()
    from tensorflow.core.framework import types_pb2 as tf_types  # noqa: PLC0415 - TF only inside TF tests

    assert mods["types_pb2"].DataType.items() == tf_types.DataType.items()


def test_ours_first_then_tf_in_a_subprocess(tf):
    _run(f"""
        import importlib
        mods = {{m: importlib.import_module("ckptkit.proto." + m) for m in {MODULES!r}}}
        import tensorflow as tf
        from tensorflow.core.protobuf import tensor_bundle_pb2 as tf_bundle
        for m in {TF_MODULES!r}:
            importlib.import_module(m)
        ours = mods["tensor_bundle_pb2"].BundleEntryProto(dtype=1, size=4, crc32c=7)
        theirs = tf_bundle.BundleEntryProto.FromString(ours.SerializeToString())
        assert (theirs.dtype, theirs.size, theirs.crc32c) == (1, 4, 7)
        v = tf.Variable(1.0)  # TF still works
        assert float(v.numpy()) == 1.0
    """)
