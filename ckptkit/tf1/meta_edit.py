"""Rewrite a TF1 `.meta` so that its Saver restores what an edited checkpoint holds.

`tf.compat.v1.train.Saver` builds (saver.py, BaseSaverBuilder) a `save/` subgraph:
`SaveV2(prefix, tensor_names, shape_and_slices, *tensors)` and
`RestoreV2(prefix, tensor_names, shape_and_slices)` whose i-th output feeds an `Assign`
(ref variables) or `Identity` -> `AssignVariableOp` (resource variables), all gathered
by the control inputs of `restore_all`. The checkpoint keys are the string constants
`tensor_names`. After an edit of the index:
- a renamed key is renamed in every `tensor_names` constant (a partitioned variable's
  name appears once per partition; each is renamed);
- a removed key leaves every `tensor_names` constant with the entries of its
  `shape_and_slices` and `dtypes`; `SaveV2` loses that input, `RestoreV2` that output
  (later outputs shift down), and the nodes fed by it (the Assign chain) go, with the
  control inputs naming them. The variable stays in the graph, uninitialised after a
  restore: `import_meta_graph(...)` + `restore(...)` works, and running the variable
  would say it was not restored.
Savers this module does not recognize (a `tensor_names` that is not a constant, the
per-tensor `Restore`/`RestoreSlice` ops of TF 0.x) make the rewrite refuse
(UnsupportedError): the caller names the `.meta` and `--drop-meta`.
"""
from __future__ import annotations

from collections.abc import Mapping

from ..errors import DataLossError, UnsupportedError
from ..proto import meta_graph_pb2, node_def_pb2

__all__ = ["rewrite_meta"]

_SAVE_OPS = {"SaveV2": "dtypes", "SaveSlices": "T"}
_RESTORE_OPS = {"RestoreV2": "dtypes"}
_OLD_RESTORE_OPS = {"Restore", "RestoreSlice"}


def _split(tensor: str) -> tuple[str, int]:
    name, _, index = tensor.partition(":")
    return name, int(index) if index else 0


def _strings(node: node_def_pb2.NodeDef) -> list[bytes]:
    return list(node.attr["value"].tensor.string_val)


def _set_strings(node: node_def_pb2.NodeDef, values: list[bytes]) -> None:
    tensor = node.attr["value"].tensor
    del tensor.string_val[:]
    tensor.string_val.extend(values)
    if len(tensor.tensor_shape.dim) == 1:
        tensor.tensor_shape.dim[0].size = len(values)
    shapes = node.attr.get("_output_shapes")
    if shapes is not None and shapes.list.shape and len(shapes.list.shape[0].dim) == 1:
        shapes.list.shape[0].dim[0].size = len(values)


def rewrite_meta(data: bytes, renamed: Mapping[str, str], removed: set[str], *, path: str) -> bytes | None:
    """The `.meta` bytes with the Saver's keys renamed and removed; None when nothing in it
    names an affected key (the file can stay as it is)."""
    mg = meta_graph_pb2.MetaGraphDef()
    try:
        mg.ParseFromString(data)
    except Exception:  # noqa: BLE001 - DecodeError, or others from the C backend
        raise DataLossError("cannot parse the MetaGraphDef", path=path) from None
    nodes = {n.name: n for n in mg.graph_def.node}
    old = {k.encode("utf-8", "surrogateescape"): v.encode("utf-8", "surrogateescape") for k, v in renamed.items()}
    gone = {k.encode("utf-8", "surrogateescape") for k in removed}
    changed = False
    dropped_outputs: dict[str, list[int]] = {}   # RestoreV2 node -> output indices removed
    consts: dict[str, list[bytes]] = {}           # tensor_names const -> its original names
    for node in mg.graph_def.node:
        if node.op in _OLD_RESTORE_OPS:
            raise UnsupportedError(f"its Saver restores with {node.op} ops ({node.name}), which ckptkit does "
                                   "not rewrite", path=path)
        if node.op not in _SAVE_OPS and node.op not in _RESTORE_OPS:
            continue
        if len(node.input) < 3:
            raise UnsupportedError(f"{node.op} node {node.name} has {len(node.input)} inputs", path=path)
        names_node = nodes.get(_split(node.input[1])[0])
        slices_node = nodes.get(_split(node.input[2])[0])
        if names_node is None or slices_node is None or names_node.op != "Const" or slices_node.op != "Const":
            raise UnsupportedError(f"{node.op} node {node.name}: its tensor_names or shape_and_slices is "
                                   "not a constant", path=path)
        names = consts.setdefault(names_node.name, _strings(names_node))
        drop = [i for i, n in enumerate(names) if n in gone]
        if not drop and not any(n in old for n in names):
            continue
        changed = True
        if drop:
            attr = (_SAVE_OPS | _RESTORE_OPS)[node.op]
            kept_types = [t for i, t in enumerate(node.attr[attr].list.type) if i not in drop]
            del node.attr[attr].list.type[:]
            node.attr[attr].list.type.extend(kept_types)
            if node.op in _SAVE_OPS:
                inputs = list(node.input)
                data_inputs = [x for x in inputs[3:] if not x.startswith("^")]
                controls = [x for x in inputs[3:] if x.startswith("^")]
                kept = [x for i, x in enumerate(data_inputs) if i not in drop]
                del node.input[:]
                node.input.extend(inputs[:3] + kept + controls)
            else:
                dropped_outputs[node.name] = drop
                shapes = node.attr.get("_output_shapes")
                if shapes is not None and len(shapes.list.shape) == len(names):
                    kept_shapes = [sh for i, sh in enumerate(shapes.list.shape) if i not in drop]
                    del shapes.list.shape[:]
                    shapes.list.shape.extend(kept_shapes)
    if not changed:
        return None
    for name, names in consts.items():
        kept_idx = [i for i, n in enumerate(names) if n not in gone]
        _set_strings(nodes[name], [old.get(names[i], names[i]) for i in kept_idx])
    # shape_and_slices constants, parallel to the names they came with
    done = set()
    for node in mg.graph_def.node:
        if node.op in _SAVE_OPS or node.op in _RESTORE_OPS:
            slices_name = _split(node.input[2])[0]
            names = consts[_split(node.input[1])[0]]
            if slices_name not in done:
                done.add(slices_name)
                specs = _strings(nodes[slices_name])
                if len(specs) == len(names):
                    _set_strings(nodes[slices_name], [s for s, n in zip(specs, names, strict=True) if n not in gone])
    _drop_restored(mg, dropped_outputs)
    return mg.SerializeToString(deterministic=True)


def _drop_restored(mg: meta_graph_pb2.MetaGraphDef, dropped_outputs: dict[str, list[int]]) -> None:
    """Remove the nodes fed by dropped RestoreV2 outputs (transitively), renumber the later
    outputs, and drop control inputs that named a removed node."""
    if not dropped_outputs:
        return
    shift = {name: sorted(drop) for name, drop in dropped_outputs.items()}
    removed: set[str] = set()
    grew = True
    while grew:  # a node goes if a data input is a dropped output or a removed node
        grew = False
        for node in mg.graph_def.node:
            if node.name in removed:
                continue
            for x in node.input:
                if x.startswith("^"):
                    continue
                src, index = _split(x)
                if src in removed or index in shift.get(src, ()):
                    removed.add(node.name)
                    grew = True
                    break
    kept = [n for n in mg.graph_def.node if n.name not in removed]
    for node in kept:
        inputs = []
        for x in node.input:
            src, index = _split(x.lstrip("^"))
            if src in removed:
                continue
            if not x.startswith("^") and src in shift:
                index -= sum(1 for d in shift[src] if d < index)
                x = src if index == 0 else f"{src}:{index}"
            inputs.append(x)
        del node.input[:]
        node.input.extend(inputs)
    del mg.graph_def.node[:]
    mg.graph_def.node.extend(kept)
