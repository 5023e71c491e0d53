"""SavedModels: read `saved_model.pb`, and `ckptkit meta`'s digest of a SavedModel or a
`.meta` file in `saved_model_cli show`'s terms (signatures, concrete functions, variables).

Apart from `metagraph.py`, which builds and reads the MetaGraphDefs a SavedModel holds.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from .. import storage
from ..errors import CheckpointError, DataLossError, NotFoundError
from ..formats import naming
from ..proto import meta_graph_pb2, saved_model_pb2, types_pb2
from . import saved_model_functions, saved_model_views
from .metagraph import TEXT_TOO_DEEP, summarize_meta_graph

if TYPE_CHECKING:
    from ..location import Location

Locate = Callable[[str], "Location"]  # a user's path -> its resolved checkpoint

__all__ = ["dtype_enum_name", "find_meta_graph", "format_saved_model", "is_saved_model", "read_saved_model",
           "summarize", "summarize_saved_model"]


def read_saved_model(path: str | os.PathLike) -> saved_model_pb2.SavedModel:
    """Parse a SavedModel's `saved_model.pb` (binary) or `saved_model.pbtxt` (text).

    `path` is the SavedModel directory or that file; in a directory holding both, the
    `.pb` is read, as TF's loader does.
    """
    path = storage.fspath(path)
    filename = naming.saved_model_file(path) if storage.isdir(path) else path
    if filename is None:
        raise NotFoundError("not a SavedModel directory (no saved_model.pb or saved_model.pbtxt)", path=path)
    data = storage.of(filename).read_bytes(filename, "SavedModel file")
    sm = saved_model_pb2.SavedModel()
    try:
        if filename.endswith(".pbtxt"):
            text_format.Parse(data.decode("utf-8"), sm, allow_unknown_field=True)
        else:
            sm.ParseFromString(data)
    except RecursionError:
        raise DataLossError(TEXT_TOO_DEEP, path=filename) from None
    except (DecodeError, UnicodeDecodeError, text_format.ParseError):
        raise DataLossError("cannot parse SavedModel", path=filename) from None
    if not sm.meta_graphs:
        raise DataLossError("not a SavedModel (no MetaGraphDef)", path=filename)
    return sm


def is_saved_model(path: str | os.PathLike) -> bool:
    """True for a SavedModel directory or its `saved_model.pb` / `.pbtxt` file."""
    path = storage.fspath(path)
    if storage.isdir(path):
        return naming.saved_model_file(path) is not None
    return os.path.basename(path) in naming.SAVED_MODEL_FILENAMES and storage.isfile(path)


def dtype_enum_name(enum: int) -> str:
    """TF's DataType enum name (`DT_FLOAT`), as saved_model_cli prints it; the number if unknown."""
    try:
        return types_pb2.DataType.Name(enum)
    except ValueError:
        return str(enum)


def _tensor_info(key: str, info: meta_graph_pb2.TensorInfo) -> dict:
    """One signature input/output as saved_model_cli shows it (shape None: unknown rank)."""
    shape = info.tensor_shape
    out: dict[str, Any] = {
        "key": key,
        "dtype": dtype_enum_name(info.dtype),
        "shape": None if shape.unknown_rank else [d.size for d in shape.dim],
        "name": info.name,
        "encoding": info.WhichOneof("encoding"),
    }
    if out["encoding"] == "coo_sparse":
        coo = info.coo_sparse
        out["coo_sparse"] = {"values": coo.values_tensor_name, "indices": coo.indices_tensor_name,
                             "dense_shape": coo.dense_shape_tensor_name}
    elif out["encoding"] == "composite_tensor":
        out["components"] = [_tensor_info(str(i), c) for i, c in enumerate(info.composite_tensor.components)]
    return out


def _ops_used(mg: meta_graph_pb2.MetaGraphDef) -> list[str]:
    """The op types of the graph and of every function in its library."""
    ops = {n.op for n in mg.graph_def.node}
    for fn in mg.graph_def.library.function:
        ops.update(n.op for n in fn.node_def)
    return sorted(ops)


def _summarize_signatures(mg: meta_graph_pb2.MetaGraphDef) -> list[dict]:
    out = []
    for key in sorted(mg.signature_def):
        sig = mg.signature_def[key]
        out.append({
            "key": key,
            "method_name": sig.method_name,
            "inputs": [_tensor_info(k, sig.inputs[k]) for k in sorted(sig.inputs)],
            "outputs": [_tensor_info(k, sig.outputs[k]) for k in sorted(sig.outputs)],
        })
    return out


def _summarize_saved_model_variables(export_dir: str) -> dict:
    from ..reader import CheckpointReader  # noqa: PLC0415 - reader pulls in numpy and the format layer

    prefix = naming.saved_model_variables_prefix(export_dir)
    if not storage.isfile(naming.index_filename(prefix)):
        return {"prefix": prefix, "error": "no variables/variables.index (a SavedModel without variables)",
                "tensors": []}
    try:
        with CheckpointReader(prefix) as reader:
            dtypes = reader.get_variable_to_dtype_map()
            shapes = reader.get_variable_to_shape_map()
    except CheckpointError as exc:
        return {"prefix": prefix, "error": str(exc), "tensors": []}
    return {"prefix": prefix, "error": None,
            "tensors": [{"name": k, "dtype": dtypes[k].name, "shape": shapes[k]} for k in sorted(shapes)]}


def summarize_saved_model(path: str | os.PathLike) -> dict:
    """A JSON-friendly digest of a SavedModel, as `saved_model_cli show --all` gives it.

    `path` is the SavedModel directory or its `saved_model.pb`. Per MetaGraphDef (sorted by
    tags, as saved_model_cli): its tags, each signature (sorted by key) with its method name
    and its inputs and outputs (sorted by key: dtype as TF's enum name, `DT_FLOAT`; shape
    with -1 for an unknown dimension, None for an unknown rank; tensor name), the ops used;
    then the variables of `variables/variables` (name, dtype as TF names it, shape).
    A variables checkpoint that cannot be read is reported in `variables.error`.
    A TF2 SavedModel's graph also lists its functions with their argument specs
    (`concrete_functions`, see saved_model_functions; None for a TF1 SavedModel).
    """
    path = storage.fspath(path)
    sm = read_saved_model(path)
    export_dir = path if storage.isdir(path) else (os.path.dirname(path) or ".")
    filename = naming.saved_model_file(export_dir) if storage.isdir(path) else path
    graphs = []
    for mg in sorted(sm.meta_graphs, key=lambda m: list(m.meta_info_def.tags)):
        graphs.append({
            "tags": list(mg.meta_info_def.tags),
            "tensorflow_version": mg.meta_info_def.tensorflow_version,
            "signatures": _summarize_signatures(mg),
            "ops": _ops_used(mg),
            "functions": len(mg.graph_def.library.function),
            "concrete_functions": saved_model_functions.summarize_functions(mg, path=filename),
        })
    return {
        "kind": "saved_model",
        "path": path,
        "file": filename,
        "saved_model_schema_version": sm.saved_model_schema_version,
        "meta_graphs": graphs,
        "variables": _summarize_saved_model_variables(export_dir),
    }


def format_saved_model(summary: dict) -> list[str]:
    """Text lines for `summarize_saved_model`'s result: the tag-sets, signatures and
    concrete functions in `saved_model_cli show --all`'s words and layout (its ops line
    left out), then the variables."""
    lines: list[str] = []
    for graph in summary["meta_graphs"]:
        lines.append("")
        lines.append(f"MetaGraphDef with tag-set: '{', '.join(graph['tags'])}' "
                     "contains the following SignatureDefs:")
        for sig in graph["signatures"]:
            lines.append("")
            lines.append(f"signature_def['{sig['key']}']:")
            lines.extend(saved_model_views.signature_lines(sig, indent=1))
    with_functions = [g for g in summary["meta_graphs"] if g.get("concrete_functions") is not None]
    if len(summary["meta_graphs"]) == 1 and with_functions:
        lines.extend(saved_model_functions.format_functions(with_functions[0]["concrete_functions"]))
    elif with_functions:  # saved_model_cli cannot load these without tags: it prints N/A too
        lines += ["", f"Concrete Functions: N/A ({len(summary['meta_graphs'])} MetaGraphDefs: "
                  "see --json, which lists them per MetaGraphDef)"]
    variables = summary["variables"]
    lines.append("")
    if variables["error"]:
        lines.append(f"Variables ({variables['prefix']}): {variables['error']}")
        return lines
    lines.append(f"Variables ({variables['prefix']}): {len(variables['tensors'])}")
    for t in variables["tensors"]:
        shape = "[" + ",".join(str(d) for d in t["shape"]) + "]"
        lines.append(f"  {t['name']} ({t['dtype']}) {shape}")
    return lines


def find_meta_graph(path: str | os.PathLike, *, locate: Locate | None = None) -> str:
    """The `.meta` file a path names: the file itself, `PATH.meta`, or the `.meta` of the
    checkpoint a prefix or directory names (via its state file / latest checkpoint),
    resolved once by `locate` (default `location.locate`; the CLI passes its `located`,
    which notes why a directory opens what it does); a Location's own `.meta`."""
    if locate is None:
        from ..location import locate as resolve  # noqa: PLC0415 - the format layer, only when needed

        locate = resolve

    path = storage.fspath(path)
    if storage.isfile(path) and path.endswith("." + naming.META_SUFFIX):
        return path
    direct = naming.meta_graph_filename(path)
    if not storage.isdir(path) and storage.isfile(direct):
        return direct
    try:
        prefix = locate(path).prefix
    except NotFoundError:
        if storage.isfile(path):  # a MetaGraphDef under another name (read_meta_graph checks it)
            return path
        raise
    meta = naming.meta_graph_filename(prefix)
    if not storage.isfile(meta):
        raise NotFoundError(f"checkpoint {prefix} has no .meta file (looked for {os.path.basename(meta)})",
                            path=path)
    return meta


def summarize(path: str | os.PathLike, *, locate: Locate | None = None) -> dict:
    """`ckptkit meta`'s digest of a SavedModel (directory or saved_model.pb), a `.meta`
    file, or the `.meta` of a checkpoint prefix or directory (resolved by `locate`: see
    `find_meta_graph`)."""
    if is_saved_model(path):
        return summarize_saved_model(path)
    summary = summarize_meta_graph(find_meta_graph(path, locate=locate))
    return {"kind": "meta_graph", **summary}
