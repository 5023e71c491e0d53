"""`.meta` files: build a MetaGraphDef TF can import, read and summarize one TF wrote.

(SavedModels, which hold MetaGraphDefs, are summarized in `saved_model.py`.)

The user flow this serves (TF1 tutorials, still common):

    saver = tf.compat.v1.train.import_meta_graph("model.ckpt.meta")
    saver.restore(sess, "model.ckpt")

For that to work on a checkpoint ckptkit wrote, the `.meta` must hold what
`tf.compat.v1.train.Saver` would have exported: per variable a `VariableV2` node with
its initializer (`Assign` from a cheap broadcast `Const`) and `read` snapshot, the
`variables` / `trainable_variables` collections of serialized `VariableDef`s, and the
`save/` subgraph (`SaveV2` / `RestoreV2` / one `Assign` per key / `restore_all`) that the
`SaverDef` names. Node names, attrs and the op set mirror what TF 2.21 exports for the
same variables; the OpDefs in `stripped_op_list` are TF's (checked in the tests), so TF
can add default attrs and reject nothing.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from .. import __version__, storage
from .. import dtypes as _dtypes
from ..errors import CheckpointError, DataLossError, InvalidArgumentError, NotFoundError, UnsupportedError
from ..proto import (
    attr_value_pb2,
    meta_graph_pb2,
    node_def_pb2,
    op_def_pb2,
    saver_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
    variable_pb2,
)
from ..storage import write_file

if TYPE_CHECKING:
    # what _attr turns into an AttrValue
    _AttrLike = (bool | int | str | bytes | attr_value_pb2.AttrValue | tensor_pb2.TensorProto
                 | tensor_shape_pb2.TensorShapeProto)
    _Specs = Mapping[str, tuple[_dtypes.DType, tuple[int, ...]]]  # variable -> (dtype, shape)

__all__ = ["GRAPH_PRODUCER", "TEXT_TOO_DEEP", "build_meta_graph", "read_meta_graph", "summarize_meta_graph",
           "write_meta_graph"]

# GraphDef.versions.producer. 30 is TF's first date-based GraphDef version (2019-05-09);
# every op used here exists since version 20, and TF accepts any producer >= 0
# (TF_GRAPH_DEF_VERSION_MIN_PRODUCER) with min_consumer 0, so TF 1.14+ and 2.x all load it.
GRAPH_PRODUCER = 30
PRODUCER_NAME = f"ckptkit {__version__}"

# TF's rule for node names (core/graph/graph_constructor.cc IsValidNodeName; TF 2.x allows '>').
_NODE_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\-/>]*\Z")
_CPU = "/device:CPU:0"
_CPU_ANY = "/device:CPU:*"
_STRING = _dtypes.STRING.enum

# OpDefs as TF 2.21 registers them (descriptions stripped, as in TF's stripped_op_list).
# Facts from tensorflow/core/ops/{state,array,io,string,math,no_op}_ops.cc.
_OP_DEFS_TEXT = {
    "Assign": """name: "Assign"
        input_arg { name: "ref" type_attr: "T" is_ref: true }
        input_arg { name: "value" type_attr: "T" }
        output_arg { name: "output_ref" type_attr: "T" is_ref: true }
        attr { name: "T" type: "type" }
        attr { name: "validate_shape" type: "bool" default_value { b: true } }
        attr { name: "use_locking" type: "bool" default_value { b: true } }
        allows_uninitialized_input: true""",
    "Const": """name: "Const"
        output_arg { name: "output" type_attr: "dtype" }
        attr { name: "value" type: "tensor" }
        attr { name: "dtype" type: "type" }""",
    "Identity": """name: "Identity"
        input_arg { name: "input" type_attr: "T" }
        output_arg { name: "output" type_attr: "T" }
        attr { name: "T" type: "type" }""",
    "MergeV2Checkpoints": """name: "MergeV2Checkpoints"
        input_arg { name: "checkpoint_prefixes" type: DT_STRING }
        input_arg { name: "destination_prefix" type: DT_STRING }
        attr { name: "delete_old_dirs" type: "bool" default_value { b: true } }
        attr { name: "allow_missing_files" type: "bool" default_value { b: false } }
        is_stateful: true""",
    "NoOp": """name: "NoOp" """,
    "Pack": """name: "Pack"
        input_arg { name: "values" type_attr: "T" number_attr: "N" }
        output_arg { name: "output" type_attr: "T" }
        attr { name: "N" type: "int" has_minimum: true minimum: 1 }
        attr { name: "T" type: "type" }
        attr { name: "axis" type: "int" default_value { i: 0 } }""",
    "PlaceholderWithDefault": """name: "PlaceholderWithDefault"
        input_arg { name: "input" type_attr: "dtype" }
        output_arg { name: "output" type_attr: "dtype" }
        attr { name: "dtype" type: "type" }
        attr { name: "shape" type: "shape" }""",
    "RestoreV2": """name: "RestoreV2"
        input_arg { name: "prefix" type: DT_STRING }
        input_arg { name: "tensor_names" type: DT_STRING }
        input_arg { name: "shape_and_slices" type: DT_STRING }
        output_arg { name: "tensors" type_list_attr: "dtypes" }
        attr { name: "dtypes" type: "list(type)" has_minimum: true minimum: 1 }
        is_stateful: true""",
    "SaveV2": """name: "SaveV2"
        input_arg { name: "prefix" type: DT_STRING }
        input_arg { name: "tensor_names" type: DT_STRING }
        input_arg { name: "shape_and_slices" type: DT_STRING }
        input_arg { name: "tensors" type_list_attr: "dtypes" }
        attr { name: "dtypes" type: "list(type)" has_minimum: true minimum: 1 }
        is_stateful: true""",
    "Select": """name: "Select"
        input_arg { name: "condition" type: DT_BOOL }
        input_arg { name: "t" type_attr: "T" }
        input_arg { name: "e" type_attr: "T" }
        output_arg { name: "output" type_attr: "T" }
        attr { name: "T" type: "type" }""",
    "ShardedFilename": """name: "ShardedFilename"
        input_arg { name: "basename" type: DT_STRING }
        input_arg { name: "shard" type: DT_INT32 }
        input_arg { name: "num_shards" type: DT_INT32 }
        output_arg { name: "filename" type: DT_STRING }""",
    "StaticRegexFullMatch": """name: "StaticRegexFullMatch"
        input_arg { name: "input" type: DT_STRING }
        output_arg { name: "output" type: DT_BOOL }
        attr { name: "pattern" type: "string" }""",
    "StringJoin": """name: "StringJoin"
        input_arg { name: "inputs" type: DT_STRING number_attr: "N" }
        output_arg { name: "output" type: DT_STRING }
        attr { name: "N" type: "int" has_minimum: true }
        attr { name: "separator" type: "string" default_value { s: "" } }""",
    "VariableV2": """name: "VariableV2"
        output_arg { name: "ref" type_attr: "dtype" is_ref: true }
        attr { name: "shape" type: "shape" }
        attr { name: "dtype" type: "type" }
        attr { name: "container" type: "string" default_value { s: "" } }
        attr { name: "shared_name" type: "string" default_value { s: "" } }
        is_stateful: true""",
}


def op_def(name: str) -> op_def_pb2.OpDef:
    """TF's OpDef for one of the ops ckptkit's graphs use."""
    return text_format.Parse(_OP_DEFS_TEXT[name], op_def_pb2.OpDef())


# The dtypes a .meta can hold: TF has no Assign kernel for the float8 / int4 types. A Const
# of them holds one value in its TensorProto field (dtypes.TENSOR_PROTO_FIELD), which TF
# broadcasts over the full shape.
_GRAPH_DTYPES = frozenset({"float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "uint8",
                           "uint16", "int64", "uint32", "uint64", "bool", "complex64", "complex128", "string"})


# --------------------------------------------------------------------------- node helpers

def _shape_proto(shape: Iterable[int]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape])


def _tensor(dtype: _dtypes.DType, shape: tuple[int, ...],
            values: Sequence[bytes | int | float] = ()) -> tensor_pb2.TensorProto:
    t = tensor_pb2.TensorProto(dtype=dtype.enum, tensor_shape=_shape_proto(shape))
    if values:
        getattr(t, _dtypes.TENSOR_PROTO_FIELD[dtype.name]).extend(values)
    return t


def _zero_tensor(dtype: _dtypes.DType, shape: tuple[int, ...]) -> tensor_pb2.TensorProto:
    """A TensorProto of `shape` holding one zero (or b""), which TF broadcasts: O(1) bytes."""
    field = _dtypes.TENSOR_PROTO_FIELD[dtype.name]
    zeros: dict[str, bytes | int] = {"string_val": b"", "bool_val": False}
    zero = zeros.get(field, 0)
    n = 2 if field in ("scomplex_val", "dcomplex_val") else 1
    return _tensor(dtype, shape, [zero] * n)


def _attr(value: _AttrLike) -> attr_value_pb2.AttrValue:
    """An AttrValue from a Python value: bool, int, bytes/str, or a ready proto."""
    if isinstance(value, attr_value_pb2.AttrValue):
        return value
    if isinstance(value, bool):
        return attr_value_pb2.AttrValue(b=value)
    if isinstance(value, int):
        return attr_value_pb2.AttrValue(i=value)
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return attr_value_pb2.AttrValue(s=value)
    if isinstance(value, tensor_pb2.TensorProto):
        return attr_value_pb2.AttrValue(tensor=value)
    if isinstance(value, tensor_shape_pb2.TensorShapeProto):
        return attr_value_pb2.AttrValue(shape=value)
    raise TypeError(f"no AttrValue for {value!r}")


def _type_attr(enum: types_pb2.DataType) -> attr_value_pb2.AttrValue:
    return attr_value_pb2.AttrValue(type=enum)


def _types_attr(enums: Iterable[types_pb2.DataType]) -> attr_value_pb2.AttrValue:
    return attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(type=list(enums)))


def _colocate(name: str) -> attr_value_pb2.AttrValue:
    return attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(s=[f"loc:@{name}".encode()]))


class _GraphBuilder:
    """Accumulates NodeDefs (refusing duplicate names) and the op types they use."""

    def __init__(self) -> None:
        self.nodes: list[node_def_pb2.NodeDef] = []
        self.names: set[str] = set()
        self.ops: set[str] = set()

    def add(self, name: str, op: str, inputs: Iterable[str] = (), *, device: str = "",
            **attrs: _AttrLike) -> str:
        if name in self.names:
            raise InvalidArgumentError(f"node name {name!r} is used twice in the graph")
        node = node_def_pb2.NodeDef(name=name, op=op, input=list(inputs), device=device)
        for key, value in attrs.items():
            node.attr[key].CopyFrom(_attr(value))
        self.nodes.append(node)
        self.names.add(name)
        self.ops.add(op)
        return name

    def const(self, name: str, tensor: tensor_pb2.TensorProto, *, device: str = "") -> str:
        return self.add(name, "Const", device=device, value=tensor, dtype=_type_attr(tensor.dtype))

    def string_const(self, name: str, values: list[bytes] | bytes, *, device: str = "") -> str:
        if isinstance(values, bytes):
            return self.const(name, _tensor(_dtypes.STRING, (), [values]), device=device)
        return self.const(name, _tensor(_dtypes.STRING, (len(values),), values), device=device)

    def int32_const(self, name: str, value: int, *, device: str = "") -> str:
        return self.const(name, _tensor(_dtypes.as_dtype("int32"), (), [value]), device=device)

    def scope_is_free(self, scope: str) -> bool:
        return scope not in self.names and not any(n.startswith(scope + "/") for n in self.names)


# --------------------------------------------------------------------------- building

def _check_variables(variables: Any, saved: Any
                     ) -> tuple[dict[str, tuple[_dtypes.DType, tuple[int, ...]]], list[tuple[str, str]]]:
    """Validate and normalize the arguments: [(name, dtype, shape)], [(key, var)] sorted by key."""
    if not isinstance(variables, Mapping):
        raise InvalidArgumentError("variables must be a mapping {name: (dtype, shape)}")
    specs: dict[str, tuple[_dtypes.DType, tuple[int, ...]]] = {}
    for name, spec in variables.items():
        if not isinstance(name, str) or not _NODE_NAME.match(name):
            raise InvalidArgumentError(
                "invalid variable name: TF node names match [A-Za-z0-9.][A-Za-z0-9_.\\-/>]*",
                key=str(name))
        try:
            dtype, shape = spec
            shape = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise InvalidArgumentError("variable spec must be (dtype, shape)", key=name) from None
        if any(d < 0 for d in shape):
            raise InvalidArgumentError(f"negative dimension in shape {list(shape)}", key=name)
        dtype = _dtypes.as_dtype(dtype)
        if dtype.name not in _GRAPH_DTYPES:
            # TF registers no Assign kernel for float8/int4 ref variables: restore would fail.
            raise UnsupportedError(f"{dtype.name} variables cannot be restored through a TF1 "
                                   "graph (no Assign kernel); save them without a .meta", key=name)
        specs[name] = (dtype, shape)
    if saved is None:
        saved = {name: name for name in specs}
    if not isinstance(saved, Mapping):
        raise InvalidArgumentError("saved must be a mapping {checkpoint key: variable name}")
    seen: dict[str, str] = {}
    for key, var in saved.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError("checkpoint keys must be non-empty strings", key=repr(key))
        if var not in specs:
            raise InvalidArgumentError(f"saved key refers to unknown variable {var!r}", key=key)
        if var in seen:
            raise InvalidArgumentError(
                f"variable {var!r} is saved under two keys ({seen[var]!r} and {key!r})", key=key)
        seen[var] = key
    if not saved:
        raise InvalidArgumentError("no variables to save")
    return specs, sorted(saved.items())


def is_trainable_by_default(name: str) -> bool:
    """TF creates `global_step` and moving-average shadows with trainable=False."""
    return name != "global_step" and not name.endswith("/ExponentialMovingAverage")


def _add_variable(g: _GraphBuilder, name: str, dtype: _dtypes.DType,
                  shape: tuple[int, ...], trainable: bool) -> variable_pb2.VariableDef:
    """VariableV2 + initial value + initializer + read snapshot, as tf.compat.v1.Variable makes them."""
    init = g.const(f"{name}/initial_value", _zero_tensor(dtype, shape))
    g.add(name, "VariableV2", shape=_shape_proto(shape), dtype=_type_attr(dtype.enum),
          container="", shared_name="")
    assign = g.add(f"{name}/Assign", "Assign", [name, init], T=_type_attr(dtype.enum),
                   validate_shape=True, use_locking=True, _class=_colocate(name))
    read = g.add(f"{name}/read", "Identity", [name], T=_type_attr(dtype.enum), _class=_colocate(name))
    return variable_pb2.VariableDef(variable_name=f"{name}:0", initializer_name=assign,
                                    snapshot_name=f"{read}:0", initial_value_name=f"{init}:0",
                                    trainable=trainable)


def _add_saver(g: _GraphBuilder, entries: list[tuple[str, str]], specs: _Specs, *, sharded: bool,
               max_to_keep: int, keep_hours: float) -> saver_pb2.SaverDef:
    """The `save/` subgraph of tf.compat.v1.train.Saver (V2 format, one CPU device)."""
    scope, i = "save", 0
    while not g.scope_is_free(scope):
        i += 1
        scope = f"save_{i}"
    keys = [key.encode("utf-8", "surrogateescape") for key, _ in entries]
    var_names = [var for _, var in entries]
    dtype_enums = [specs[var][0].enum for var in var_names]
    empty = [b""] * len(keys)

    default = g.string_const(f"{scope}/filename/input", b"model")
    filename = g.add(f"{scope}/filename", "PlaceholderWithDefault", [default],
                     dtype=_type_attr(_STRING), shape=_shape_proto(()))
    prefix = g.add(f"{scope}/Const", "PlaceholderWithDefault", [filename],
                   dtype=_type_attr(_STRING), shape=_shape_proto(()))

    def save_v2(target: str, device: str) -> str:
        names = g.string_const(f"{scope}/SaveV2/tensor_names", keys, device=device)
        slices = g.string_const(f"{scope}/SaveV2/shape_and_slices", empty, device=device)
        return g.add(f"{scope}/SaveV2", "SaveV2", [target, names, slices, *var_names],
                     device=device, dtypes=_types_attr(dtype_enums),
                     _has_manual_control_dependencies=True)

    if not sharded:
        save = save_v2(prefix, "")
        save_tensor = g.add(f"{scope}/control_dependency", "Identity", [prefix, f"^{save}"],
                            T=_type_attr(_STRING), _class=_colocate(prefix))
    else:
        # Write one temp shard "<prefix>_temp/part-00000-of-00001", then merge it into
        # <prefix> (s3:// paths use ".part" instead of a temp directory, as TF does).
        is_s3 = g.add(f"{scope}/StaticRegexFullMatch", "StaticRegexFullMatch", [prefix],
                      device=_CPU_ANY, pattern=b"^s3://.*")
        part = g.string_const(f"{scope}/Const_1", b".part", device=_CPU_ANY)
        temp = g.string_const(f"{scope}/Const_2", b"_temp/part", device=_CPU_ANY)
        suffix = g.add(f"{scope}/Select", "Select", [is_s3, part, temp], device=_CPU_ANY,
                       T=_type_attr(_STRING))
        tmp_prefix = g.add(f"{scope}/StringJoin", "StringJoin", [prefix, suffix], device=_CPU_ANY,
                           N=2, separator=b"")
        num_shards = g.int32_const(f"{scope}/num_shards", 1)
        shard = g.int32_const(f"{scope}/ShardedFilename/shard", 0, device=_CPU)
        shard_file = g.add(f"{scope}/ShardedFilename", "ShardedFilename",
                           [tmp_prefix, shard, num_shards], device=_CPU)
        save = save_v2(shard_file, _CPU)
        dep = g.add(f"{scope}/control_dependency", "Identity", [shard_file, f"^{save}"], device=_CPU,
                    T=_type_attr(_STRING), _class=_colocate(shard_file),
                    _has_manual_control_dependencies=True)
        packed = g.add(f"{scope}/MergeV2Checkpoints/checkpoint_prefixes", "Pack",
                       [shard_file, f"^{dep}"], device=_CPU, N=1, T=_type_attr(_STRING), axis=0)
        merge = g.add(f"{scope}/MergeV2Checkpoints", "MergeV2Checkpoints", [packed, prefix],
                      device=_CPU, delete_old_dirs=True, allow_missing_files=False,
                      _has_manual_control_dependencies=True)
        save_tensor = g.add(f"{scope}/Identity", "Identity", [prefix, f"^{merge}", f"^{dep}"],
                            device=_CPU, T=_type_attr(_STRING))

    names = g.string_const(f"{scope}/RestoreV2/tensor_names", keys, device=_CPU)
    slices = g.string_const(f"{scope}/RestoreV2/shape_and_slices", empty, device=_CPU)
    restore = g.add(f"{scope}/RestoreV2", "RestoreV2", [prefix, names, slices], device=_CPU,
                    dtypes=_types_attr(dtype_enums))
    assigns = []
    for i, var in enumerate(var_names):
        output = restore if i == 0 else f"{restore}:{i}"
        assigns.append(g.add(f"{scope}/Assign" + (f"_{i}" if i else ""), "Assign", [var, output],
                             T=_type_attr(specs[var][0].enum), validate_shape=True,
                             use_locking=True, _class=_colocate(var),
                             _has_manual_control_dependencies=True))
    controls = [f"^{a}" for a in assigns]
    if sharded:
        shard_restore = g.add(f"{scope}/restore_shard", "NoOp", controls,
                              _has_manual_control_dependencies=True)
        controls = [f"^{shard_restore}"]
    restore_all = g.add(f"{scope}/restore_all", "NoOp", controls)
    return saver_pb2.SaverDef(
        filename_tensor_name=f"{prefix}:0", save_tensor_name=f"{save_tensor}:0",
        restore_op_name=restore_all, max_to_keep=max_to_keep, sharded=sharded,
        keep_checkpoint_every_n_hours=keep_hours, version=saver_pb2.SaverDef.V2)


def build_meta_graph(variables: Mapping[str, tuple[_dtypes.DType, tuple[int, ...]]],
                     saved: Mapping[str, str] | None = None, *, max_to_keep: int = 5,
                     keep_checkpoint_every_n_hours: float = 10000.0,
                     sharded: bool = False,
                     trainable: Iterable[str] | None = None) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef tf.compat.v1.train.Saver would export for these variables.

    `variables`: {variable name: (dtype, shape)}; each starts at zeros (b"" for strings)
    when its initializer runs. `trainable`: the names listed in `trainable_variables`;
    default every variable but `global_step` and `*/ExponentialMovingAverage` shadows, as
    TF creates those. `saved`: {checkpoint key:
    variable name}, default identity over `variables` (e.g. {"v/ExponentialMovingAverage":
    "v"} restores the EMA shadow into `v`). The SaverDef carries `max_to_keep`,
    `keep_checkpoint_every_n_hours` and `sharded`, which TF's Saver reads back on import.
    """
    specs, entries = _check_variables(variables, saved)
    if max_to_keep is None:
        max_to_keep = 0
    if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 0:
        raise InvalidArgumentError(f"max_to_keep must be a non-negative int, got {max_to_keep!r}")
    try:
        keep_hours = float(keep_checkpoint_every_n_hours)
    except (TypeError, ValueError):
        raise InvalidArgumentError("keep_checkpoint_every_n_hours must be a number, got "
                                   f"{keep_checkpoint_every_n_hours!r}") from None
    g = _GraphBuilder()
    trainable = ({n for n in specs if is_trainable_by_default(n)} if trainable is None
                 else set(trainable))
    var_defs = [_add_variable(g, name, dtype, shape, name in trainable)
                for name, (dtype, shape) in specs.items()]
    saver_def = _add_saver(g, entries, specs, sharded=bool(sharded), max_to_keep=max_to_keep,
                           keep_hours=keep_hours)

    mg = meta_graph_pb2.MetaGraphDef()
    info = mg.meta_info_def
    # TF parses tensorflow_version as a PEP 440 version (>= 1.9 means "VariableDef.trainable
    # is set"; meta_graph.py); empty means the same. The free-form git version names us.
    info.tensorflow_version = ""
    info.tensorflow_git_version = PRODUCER_NAME
    info.stripped_op_list.op.extend(op_def(op) for op in sorted(g.ops))
    mg.graph_def.node.extend(g.nodes)
    mg.graph_def.versions.producer = GRAPH_PRODUCER
    mg.saver_def.CopyFrom(saver_def)
    mg.collection_def["variables"].bytes_list.value.extend(d.SerializeToString() for d in var_defs)
    mg.collection_def["trainable_variables"].bytes_list.value.extend(
        d.SerializeToString() for d in var_defs if d.trainable)
    return mg


def write_meta_graph(path: str | os.PathLike,
                     variables: Mapping[str, tuple[_dtypes.DType, tuple[int, ...]]],
                     saved: Mapping[str, str] | None = None, *, max_to_keep: int = 5,
                     keep_checkpoint_every_n_hours: float = 10000.0,
                     sharded: bool = False, trainable: Iterable[str] | None = None) -> None:
    """build_meta_graph(...) serialized to `path` (atomically: temp file, fsync, rename)."""
    path = storage.fspath(path)
    try:
        mg = build_meta_graph(variables, saved, max_to_keep=max_to_keep,
                              keep_checkpoint_every_n_hours=keep_checkpoint_every_n_hours,
                              sharded=sharded, trainable=trainable)
    except CheckpointError as exc:  # name the file the caller was writing
        raise type(exc)(exc.message, path=path, key=exc.key) from None
    try:
        write_file(path, mg.SerializeToString(deterministic=True))
    except FileNotFoundError:
        raise NotFoundError("directory does not exist", path=path) from None


# --------------------------------------------------------------------------- reading

def read_meta_graph(path: str | os.PathLike) -> meta_graph_pb2.MetaGraphDef:
    """Parse a `.meta` file (binary, or text format as TF also accepts)."""
    path = storage.fspath(path)
    data = storage.of(path).read_bytes(path, "meta graph file")
    mg = meta_graph_pb2.MetaGraphDef()
    try:
        mg.ParseFromString(data)
    except DecodeError:
        mg = _parse_text(data, path)
    if not (mg.HasField("graph_def") or mg.HasField("meta_info_def") or mg.HasField("saver_def")
            or mg.collection_def or mg.signature_def):
        raise DataLossError("not a MetaGraphDef (no graph, meta info, saver or collections)",
                            path=path)
    return mg


TEXT_TOO_DEEP = "cannot parse text protobuf: messages nested too deeply"


def _parse_text(data: bytes, path: str) -> meta_graph_pb2.MetaGraphDef:
    """TF's read_meta_graph_file falls back to text format when binary parsing fails."""
    mg = meta_graph_pb2.MetaGraphDef()
    try:
        text_format.Parse(data.decode("utf-8"), mg, allow_unknown_field=True)
    except RecursionError:  # protobuf's text parser recurses once per nested message
        raise DataLossError(TEXT_TOO_DEEP, path=path) from None
    except (UnicodeDecodeError, text_format.ParseError):
        raise DataLossError("cannot parse MetaGraphDef (neither binary nor text protobuf)",
                            path=path) from None
    return mg


_VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp", "AutoReloadVariable"}
_VARIABLE_COLLECTIONS = ("variables", "local_variables", "trainable_variables", "model_variables")


def _node_name(tensor_name: str) -> str:
    return tensor_name.lstrip("^").split(":", 1)[0]


def _variable_defs(mg: meta_graph_pb2.MetaGraphDef, collection: str) -> list[variable_pb2.VariableDef]:
    col = mg.collection_def.get(collection)
    if col is None or col.WhichOneof("kind") != "bytes_list":
        return []
    out = []
    for raw in col.bytes_list.value:
        vd = variable_pb2.VariableDef()
        try:
            vd.ParseFromString(raw)
        except DecodeError:
            continue  # not a VariableDef (a user collection under a variables-like name)
        out.append(vd)
    return out


def _summarize_variables(mg: meta_graph_pb2.MetaGraphDef) -> list[dict]:
    nodes = {n.name: n for n in mg.graph_def.node}
    trainable = {_node_name(vd.variable_name) for vd in _variable_defs(mg, "trainable_variables")}
    out: dict[str, dict] = {}
    for collection in _VARIABLE_COLLECTIONS:
        for vd in _variable_defs(mg, collection):
            name = _node_name(vd.variable_name)
            if name in out:
                continue
            node = nodes.get(name)
            dtype = shape = None
            if node is not None and node.op in _VARIABLE_OPS:
                if "dtype" in node.attr:
                    try:
                        dtype = _dtypes.from_enum(node.attr["dtype"].type).name
                    except UnsupportedError:  # a dtype ckptkit has no name for: its number
                        dtype = str(node.attr["dtype"].type)
                if "shape" in node.attr:
                    s = node.attr["shape"].shape
                    shape = None if s.unknown_rank else [d.size for d in s.dim]
            out[name] = {"name": name, "dtype": dtype, "shape": shape,
                         "trainable": bool(vd.trainable or name in trainable),
                         "resource": bool(vd.is_resource or (node is not None and node.op == "VarHandleOp"))}
    return list(out.values())


def summarize_meta_graph(path: str | os.PathLike) -> dict:
    """A JSON-friendly digest of a `.meta` file: producer, ops, variables, collections, saver."""
    mg = read_meta_graph(path)
    graph = mg.graph_def
    ops: dict[str, int] = {}
    for node in graph.node:
        ops[node.op] = ops.get(node.op, 0) + 1
    collections = {}
    for name in sorted(mg.collection_def):
        col = mg.collection_def[name]
        kind = col.WhichOneof("kind")
        collections[name] = {"kind": kind, "size": len(getattr(col, kind).value) if kind else 0}
    saver_def = None
    if mg.HasField("saver_def"):
        sd = mg.saver_def
        saver_def = {
            "filename_tensor_name": sd.filename_tensor_name,
            "save_tensor_name": sd.save_tensor_name,
            "restore_op_name": sd.restore_op_name,
            "max_to_keep": sd.max_to_keep,
            "sharded": sd.sharded,
            "keep_checkpoint_every_n_hours": sd.keep_checkpoint_every_n_hours,
            "version": saver_pb2.SaverDef.CheckpointFormatVersion.Name(sd.version)
            if sd.version in saver_pb2.SaverDef.CheckpointFormatVersion.values() else sd.version,
        }
    return {
        "path": os.fspath(path),
        "tensorflow_version": mg.meta_info_def.tensorflow_version,
        "tensorflow_git_version": mg.meta_info_def.tensorflow_git_version,
        "graph_producer": graph.versions.producer,
        "num_nodes": len(graph.node),
        "ops": dict(sorted(ops.items())),
        "variables": _summarize_variables(mg),
        "collections": collections,
        "saver_def": saver_def,
        "signature_defs": sorted(mg.signature_def),
        "functions": len(graph.library.function),
    }
