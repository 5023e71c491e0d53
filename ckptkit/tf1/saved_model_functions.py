"""A TF2 SavedModel's functions and their argument specs, as `saved_model_cli show --all`
lists them under "Concrete Functions:".

saved_model_cli loads the SavedModel with TensorFlow to list them (and cannot where a
custom op is missing). The facts are in the `SavedObjectGraph` of saved_model.pb
(`MetaGraphDef.object_graph_def`), so ckptkit reads them without TF: the root object's
children that are a `tf.function` (`SavedFunction`: the concrete functions traced from
it) or a bare concrete function, and for each concrete function its
`canonicalized_input_signature`: the `(args, kwargs)` it was traced with, TensorSpecs and
Python values encoded as a `StructuredValue` (TF's nested_structure_coder).

A decoded value is plain JSON, typed the way saved_model_cli prints it ("DType: tuple"):
`{"type": "TensorSpec", "name": ..., "shape": [None, 3] | None, "dtype": "float32"}`,
`{"type": "tuple", "value": [...]}`, `{"type": "dict", "value": {...}}`,
`{"type": "bool", "value": true}`, `{"type": "NoneType", "value": None}`; a namedtuple
has its own name as "type" and `"namedtuple": true`, its fields in "value"; other type
specs (RaggedTensorSpec, ...) carry their serialized state, which their repr prints.

Two orders differ from saved_model_cli on purpose, both because TF's vary from run to
run: a function's concrete functions are listed in the order they were traced (TF sorts
them by the names it gives them while loading, which depend on how many functions the
process made before), and dict keys are sorted (TF keeps protobuf's map order, which is
randomized per process).
"""
from __future__ import annotations

from typing import Any

from ..errors import DataLossError
from ..proto import meta_graph_pb2, saved_object_graph_pb2, struct_pb2, tensor_shape_pb2, types_pb2

__all__ = ["summarize_functions", "format_functions", "decode", "value_str"]

# TF's Python names of its DataTypes (tf.as_dtype(n).name), by number.
_DTYPE_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    8: "complex64", 9: "int64", 10: "bool", 11: "qint8", 12: "quint8", 13: "qint32",
    14: "bfloat16", 15: "qint16", 16: "quint16", 17: "uint16", 18: "complex128", 19: "float16",
    20: "resource", 21: "variant", 22: "uint32", 23: "uint64", 24: "float8_e5m2",
    25: "float8_e4m3fn", 26: "float8_e4m3fnuz", 27: "float8_e4m3b11fnuz", 28: "float8_e5m2fnuz",
    29: "int4", 30: "uint4", 31: "int2", 32: "uint2", 33: "float4_e2m1fn",
}

# The Python class TF decodes each TypeSpecProto.TypeSpecClass into (nested_structure_coder).
_TYPE_SPEC_CLASSES = {
    1: "SparseTensorSpec", 2: "IndexedSlicesSpec", 3: "RaggedTensorSpec", 4: "TensorArraySpec",
    5: "DatasetSpec", 6: "IteratorSpec", 7: "OptionalSpec", 8: "PerReplicaSpec", 9: "VariableSpec",
    10: "RowPartitionSpec",
}

Value = Any  # a decoded StructuredValue: {"type": ..., ...}


def _dtype_name(enum: int) -> str:
    base = enum - 100 if enum > 100 else enum  # a ref type (DT_FLOAT_REF): TF names it float32_ref
    name = _DTYPE_NAMES.get(base)
    if name is None:
        try:
            return types_pb2.DataType.Name(enum)
        except ValueError:
            return str(enum)
    return name + "_ref" if enum > 100 else name


def _dims(shape: tensor_shape_pb2.TensorShapeProto) -> list[int | None] | None:
    """TF's TensorShape of the proto: None for unknown rank, None for an unknown dimension."""
    if shape.unknown_rank:
        return None
    return [None if d.size < 0 else d.size for d in shape.dim]


def decode(value: struct_pb2.StructuredValue) -> Value:
    """A StructuredValue as typed JSON (see the module docstring)."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "none_value":
        return {"type": "NoneType", "value": None}
    if kind == "bool_value":
        return {"type": "bool", "value": value.bool_value}
    if kind == "int64_value":
        return {"type": "int", "value": value.int64_value}
    if kind == "float64_value":
        return {"type": "float", "value": value.float64_value}
    if kind == "string_value":
        return {"type": "str", "value": value.string_value}
    if kind in ("list_value", "tuple_value"):
        items = getattr(value, kind).values
        return {"type": kind[:-6], "value": [decode(v) for v in items]}
    if kind == "dict_value":
        fields = value.dict_value.fields
        return {"type": "dict", "value": {k: decode(fields[k]) for k in sorted(fields)}}
    if kind == "named_tuple_value":
        nt = value.named_tuple_value
        return {"type": nt.name, "namedtuple": True, "value": {p.key: decode(p.value) for p in nt.values}}
    if kind in ("tensor_spec_value", "bounded_tensor_spec_value"):
        spec = getattr(value, kind)
        return {"type": "TensorSpec" if kind == "tensor_spec_value" else "BoundedTensorSpec",
                "name": spec.name or None, "shape": _dims(spec.shape), "dtype": _dtype_name(spec.dtype)}
    if kind == "tensor_shape_value":
        return {"type": "TensorShape", "value": _dims(value.tensor_shape_value)}
    if kind == "tensor_dtype_value":
        return {"type": "DType", "value": _dtype_name(value.tensor_dtype_value)}
    if kind == "type_spec_value":
        ts = value.type_spec_value
        name = _TYPE_SPEC_CLASSES.get(ts.type_spec_class) or ts.type_spec_class_name or "TypeSpec"
        return {"type": name.rsplit(".", 1)[-1], "type_spec": True, "state": decode(ts.type_state)}
    # tensor_value / numpy_value: a constant argument; its dtype and shape, not its values
    tensor = getattr(value, kind)
    return {"type": "Tensor" if kind == "tensor_value" else "ndarray", "dtype": _dtype_name(tensor.dtype),
            "shape": _dims(tensor.tensor_shape)}


# --------------------------------------------------------------------------- Python's str/repr

def _shape_str(dims: list[int | None] | None) -> str:
    """str(tf.TensorShape): `(None, 3)`, `(3,)`, `()`, `<unknown>`."""
    if dims is None:
        return "<unknown>"
    return repr(tuple(dims))


def value_repr(v: Value) -> str:
    """repr() of the Python value TF decodes `v` into (what print shows inside a container)."""
    t = v["type"]
    if t in ("TensorSpec", "BoundedTensorSpec"):
        name = repr(v["name"])
        return f"{t}(shape={_shape_str(v['shape'])}, dtype=tf.{v['dtype']}, name={name})"
    if t == "TensorShape":
        return "TensorShape(None)" if v["value"] is None else f"TensorShape({v['value']!r})"
    if t == "DType":
        return f"tf.{v['value']}"
    if v.get("type_spec"):  # TypeSpec.__repr__: the class name, then str() of its serialized tuple
        state = v["state"]
        return t + (_container(state) if state["type"] == "tuple" else f"({value_repr(state)})")
    if v.get("namedtuple"):
        return t + "(" + ", ".join(f"{k}={value_repr(x)}" for k, x in v["value"].items()) + ")"
    if t in ("tuple", "list", "dict"):
        return _container(v)
    if t in ("Tensor", "ndarray"):
        return f"<{t} shape={_shape_str(v['shape'])} dtype={v['dtype']}>"
    return repr(v["value"])


def _container(v: Value) -> str:
    """repr() of a tuple, list or dict."""
    t = v["type"]
    if t == "dict":
        return "{" + ", ".join(f"{k!r}: {value_repr(x)}" for k, x in v["value"].items()) + "}"
    inner = ", ".join(value_repr(x) for x in v["value"])
    if t == "list":
        return f"[{inner}]"
    return f"({inner},)" if len(v["value"]) == 1 else f"({inner})"


def value_str(v: Value) -> str:
    """str() of the Python value TF decodes `v` into."""
    t = v["type"]
    if t == "str":
        return v["value"]
    if t == "TensorShape":
        return _shape_str(v["value"])
    if t == "DType":
        return f"<dtype: {v['value']!r}>"
    return value_repr(v)


def _items(v: Value) -> list[Value] | None:
    """The elements Python iterates over in the value (None: not iterable, or a dict)."""
    t = v["type"]
    if t in ("tuple", "list"):
        return v["value"]
    if v.get("namedtuple"):
        return list(v["value"].values())
    if t == "TensorShape" and v["value"] is not None:
        return [{"type": "NoneType" if d is None else "int", "value": d} for d in v["value"]]
    return None


# --------------------------------------------------------------------------- the object graph

def _concrete_function(graph: saved_object_graph_pb2.SavedObjectGraph, name: str,
                       keywords: list[str] | None) -> dict:
    proto = graph.concrete_functions.get(name)
    args = kwargs = outputs = None
    if proto is not None and proto.HasField("canonicalized_input_signature"):
        signature = decode(proto.canonicalized_input_signature)
        if signature["type"] == "tuple" and len(signature["value"]) == 2:
            positional, named = signature["value"]
            args = positional["value"] if positional["type"] in ("tuple", "list") else [positional]
            kwargs = named["value"] if named["type"] == "dict" else {}
    if proto is not None and proto.HasField("output_signature"):
        outputs = decode(proto.output_signature)
    return {"concrete_function": name, "args": args, "kwargs": kwargs,
            "argument_keywords": keywords, "outputs": outputs}


def summarize_functions(mg: meta_graph_pb2.MetaGraphDef, *, path: str | None = None) -> list[dict] | None:
    """The functions of a MetaGraphDef's object graph (None when it has none: a TF1
    SavedModel): each root child that is a tf.function or a concrete function, sorted by
    name, as {"name", "kind": "function" | "concrete_function", "concrete_functions":
    [{"concrete_function": its name in the library, "args": [value] | None, "kwargs":
    {name: value} | None, "argument_keywords": [str] | None, "outputs": value | None}]}."""
    if not mg.HasField("object_graph_def"):
        return None
    graph = mg.object_graph_def
    if not graph.nodes:
        return []
    out = []
    for ref in sorted(graph.nodes[0].children, key=lambda r: r.local_name):
        if not 0 <= ref.node_id < len(graph.nodes):
            raise DataLossError(f"object graph: child {ref.local_name!r} of the root is node {ref.node_id}, "
                                f"and there are {len(graph.nodes)} nodes", path=path)
        node = graph.nodes[ref.node_id]
        kind = node.WhichOneof("kind")
        if kind == "function":
            names, keywords = list(node.function.concrete_functions), None
        elif kind == "bare_concrete_function":
            bare = node.bare_concrete_function
            names, keywords = [bare.concrete_function_name], list(bare.argument_keywords)
        else:
            continue
        out.append({"name": ref.local_name,
                    "kind": "function" if kind == "function" else "concrete_function",
                    "concrete_functions": [_concrete_function(graph, n, keywords) for n in names]})
    return out


# --------------------------------------------------------------------------- text

def _quoted(v: Value) -> str:
    """saved_model_cli's _maybe_add_quotes: a str in quotes, anything else as str() prints it."""
    return f"'{v['value']}'" if v["type"] == "str" else value_str(v)


def _argument_lines(arguments: list[Value], label: str) -> list[str]:
    """saved_model_cli's _print_args at indent 4 (its `\\b\\b]` after a trailing `, ` as a
    terminal shows it: `]`)."""
    pad = "  " * 4
    lines = []
    for index, v in enumerate(arguments, 1):
        lines.append(f"{pad}{label} #{index}")
        t = v["type"]
        items = _items(v) if t != "str" else None
        if t == "str":
            lines.append(f"{pad}  {v['value']}")
        elif t in ("TensorSpec", "BoundedTensorSpec"):
            lines.append(f"{pad}  {v['name']}: {value_repr(v)}")
        elif items is not None:
            lines.append(f"{pad}  DType: {t}")
            lines.append(f"{pad}  Value: [" + ", ".join(_quoted(x) for x in items) + "]")
        elif t == "dict":
            lines.append(f"{pad}  DType: dict")
            lines.append(f"{pad}  Value: {{" + ", ".join(f"'{k}': {_quoted(x)}" for k, x in v["value"].items())
                         + "}")
        else:
            lines.append(f"{pad}  DType: {t}")
            lines.append(f"{pad}  Value: {value_str(v)}")
    return lines


def format_functions(functions: list[dict]) -> list[str]:
    """saved_model_cli's "Concrete Functions:" section for `summarize_functions`'s result."""
    lines = ["", "Concrete Functions:"]
    for i, fn in enumerate(functions):
        if i:
            lines.append("")
        lines.append(f"  Function Name: '{fn['name']}'")
        for index, cf in enumerate(fn["concrete_functions"], 1):
            args = cf["args"]
            if args is None and cf["argument_keywords"]:
                args = [{"type": "str", "value": k} for k in cf["argument_keywords"]]
            if args:
                lines += [f"    Option #{index}", "      Callable with:"]
                lines += _argument_lines(args, "Argument")
            if cf["kwargs"]:
                lines += _argument_lines([{"type": "str", "value": k} for k in cf["kwargs"]], "Named Argument")
    return lines
