"""Edits of a TF2 object graph that keep it consistent with the index it is saved in.

TF restores an object-based checkpoint by walking `_CHECKPOINTABLE_OBJECT_GRAPH`: it
matches its Python objects to graph nodes by edge names from the root and reads each
attribute from the `checkpoint_key` the node records. A key renamed or removed in the
index alone therefore breaks `tf.train.Checkpoint.read` ("Key ... not found"), and
`verify` used to say OK. Every edit of a TF2 checkpoint goes through `GraphEditor`,
whose result is written in the same commit as the index (see ops/edit.py).

Rules (TF's, from python/checkpoint/{graph_view,save_util,util}.py):
- removing an object removes every edge to it; what is then unreachable from the root
  goes (with its keys): variables another object still reaches (a Keras 3 model's
  weights, shared with its optimizer) stay, the slot variables of a removed optimizer
  or of a removed variable go. Nodes are renumbered as TF numbers them: breadth first
  from the root, then slot variables in order of their optimizers.
- a key still named as TF names it (`<object path>/.ATTRIBUTES/<attribute>`) follows its
  object when the object's path changes (renaming an edge, or removing the optimizer
  through which BFS reached a Keras 3 weight); other keys keep their names.
- `has_checkpoint_values` is recomputed as TF does: an object with attributes, slot
  variables or a registered saver, and everything that reaches one.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from ..errors import DataLossError, InvalidArgumentError, TensorNotFoundError
from ..formats.objectgraph import (
    ATTRIBUTES,
    OBJECT_GRAPH_KEY,
    Node,
    ObjectGraph,
    attribute_key,
    escape_local_name,
    mark_checkpoint_values,
    split_path,
    unescape_local_name,
)
from ..proto import trackable_object_graph_pb2

_Graph = trackable_object_graph_pb2.TrackableObjectGraph

__all__ = ["GraphEditor", "graph_problems"]


class GraphEditor:
    """A private copy of a TrackableObjectGraph, edited alongside the index."""

    def __init__(self, data: bytes, *, path: str | None = None) -> None:
        self.path = path
        try:
            self.before = ObjectGraph.from_bytes(data)
        except DataLossError as exc:
            raise DataLossError(exc.message, path=path, key=OBJECT_GRAPH_KEY) from None
        self.proto = trackable_object_graph_pb2.TrackableObjectGraph()
        self.proto.CopyFrom(self.before.proto)
        self._structure_changed = False
        self._changed = False

    # ---- queries
    def graph(self) -> ObjectGraph:
        """The graph as edited so far (paths recomputed)."""
        copy = trackable_object_graph_pb2.TrackableObjectGraph()
        copy.CopyFrom(self.proto)
        return ObjectGraph(copy)

    def keys(self) -> set[str]:
        return {a.checkpoint_key for node in self.proto.nodes for a in node.attributes}

    def object_keys(self, path: str) -> list[str]:
        """Every key saved by the object at `path` (any path that leads to it), by the objects
        below it and by their optimizer slots: what `ls`/`show` mean by an object path."""
        graph = self.graph()
        node = self._find(graph, path)
        return [a.checkpoint_key for n in graph.subtree(node) for a in n.attributes]

    def _find(self, graph: ObjectGraph, path: str) -> Node:
        try:
            return graph.find(path)
        except KeyError:
            raise TensorNotFoundError("neither a tensor nor an object path in the checkpoint's object graph",
                                      path=self.path, key=path) from None

    def optimizers(self) -> list[str]:
        """Display paths of the optimizers reachable from the root (TF's slot-keeping ones,
        Keras 3's, and any object an edge names `optimizer`)."""
        graph = self.graph()
        placement = graph.display_placement()
        out = []
        for node_id, (parent, name, shown) in placement.items():
            if parent is not None and graph.is_optimizer(graph.nodes[node_id], name):
                if not graph.is_optimizer(graph.nodes[parent], placement[parent][1]):  # not one inside another
                    out.append(shown)
        return out

    # ---- key edits (the index changes; the graph follows)
    def rename_keys(self, mapping: Mapping[str, str]) -> None:
        """Rename attributes' keys. TF restores an object's tensors from
        `<first attribute's key up to .ATTRIBUTES/><attribute name>` (restore.py,
        `_extract_saveable_name`), so every key of an object must stay
        `<one prefix>/.ATTRIBUTES/<attribute>`: other names are refused, naming the form."""
        for node in self.proto.nodes:
            touched = False
            for a in node.attributes:
                if a.checkpoint_key in mapping:
                    a.checkpoint_key = mapping[a.checkpoint_key]
                    self._changed = touched = True
            if touched:
                self._check_attribute_keys(node)

    def _check_attribute_keys(self, node: _Graph.TrackableObject) -> None:
        prefixes = set()
        for a in node.attributes:
            suffix = f"{ATTRIBUTES}/{escape_local_name(a.name)}"
            key = a.checkpoint_key
            at = key.find(ATTRIBUTES + "/")
            if not key.endswith("/" + suffix) or at != len(key) - len(suffix):
                raise InvalidArgumentError(
                    f"TF2 restores this object's {a.name} from a key of the form "
                    f"'<path>/{suffix}' (one <path> per object): rename to such a key, or rename the "
                    "object path instead", path=self.path, key=key)
            prefixes.add(key[:at])
        if len(prefixes) > 1:
            raise InvalidArgumentError(f"TF2 reads all of one object's tensors under one prefix, not "
                                       f"{sorted(prefixes)}", path=self.path, key=node.attributes[0].checkpoint_key)

    def remove_keys(self, keys: Iterable[str]) -> None:
        """Drop the attributes saving `keys` (their objects stay, holding nothing)."""
        gone = set(keys)
        for node in self.proto.nodes:
            kept = [a for a in node.attributes if a.checkpoint_key not in gone]
            if len(kept) != len(node.attributes):
                del node.attributes[:]
                node.attributes.extend(kept)
                self._structure_changed = True

    # ---- object edits (the graph changes; the index follows)
    def remove_object(self, path: str) -> None:
        """Remove the object at `path`: every edge to it and every slot reference to or of it."""
        graph = self.graph()
        target = self._find(graph, path).id
        if target == 0:
            raise InvalidArgumentError("cannot remove the root object", path=self.path, key=path)
        for node in self.proto.nodes:
            kept = [c for c in node.children if c.node_id != target]
            if len(kept) != len(node.children):
                del node.children[:]
                node.children.extend(kept)
            slots = [s for s in node.slot_variables
                     if target not in (s.original_variable_node_id, s.slot_variable_node_id)]
            if len(slots) != len(node.slot_variables):
                del node.slot_variables[:]
                node.slot_variables.extend(slots)
        self._structure_changed = True

    def rename_object(self, old: str, new: str) -> None:
        """Move the edge `old` ends with to `new`: the same object under another name, or
        under another (existing) parent object."""
        graph = self.graph()
        try:
            parent, name = graph.edge_to(old)
        except KeyError:
            raise TensorNotFoundError("neither a tensor nor an object path in the checkpoint's object graph",
                                      path=self.path, key=old) from None
        parts = split_path(new)
        if not parts:
            raise InvalidArgumentError("the new object path is empty", path=self.path, key=new)
        new_parent = self._find(graph, "/".join(parts[:-1]))
        new_name = unescape_local_name(parts[-1])
        if new_name in new_parent.children:
            raise InvalidArgumentError(f"cannot rename object {old!r} to {new!r}: that object exists",
                                       path=self.path, key=new)
        child_id = parent.children[name].id
        source = self.proto.nodes[parent.id]
        if new_parent.id == parent.id:
            for ref in source.children:
                if ref.local_name == name:
                    ref.local_name = new_name
        else:
            kept = [c for c in source.children if c.local_name != name]
            del source.children[:]
            source.children.extend(kept)
            self.proto.nodes[new_parent.id].children.add(node_id=child_id, local_name=new_name)
        self._structure_changed = True

    # ---- the result
    def finish(self) -> tuple[bytes | None, dict[str, str], list[str]]:
        """(new graph bytes, or None if nothing changed; {old key: new key} for keys that
        follow their object; keys of objects no longer reachable). Call once, after every edit."""
        if not (self._changed or self._structure_changed):
            return None, {}, []
        removed: list[str] = []
        old_of_new = list(range(len(self.proto.nodes)))
        if self._structure_changed:
            keep = _reachable(self.proto)
            if len(keep) != len(self.proto.nodes):
                removed = [a.checkpoint_key for i, node in enumerate(self.proto.nodes) if i not in keep
                           for a in node.attributes]
                old_of_new = _tf_order(self.proto, keep)
                self.proto = _renumbered(self.proto, old_of_new)
            if any(n.HasField("has_checkpoint_values") for n in self.before.proto.nodes):
                mark_checkpoint_values(self.proto)
        after = ObjectGraph(self.proto)
        renames: dict[str, str] = {}
        for new_id, old_id in enumerate(old_of_new):
            was, now = self.before.nodes[old_id].path, after.nodes[new_id].path
            if was is None or now is None or was == now:
                continue
            for a in self.proto.nodes[new_id].attributes:
                if a.checkpoint_key == attribute_key(was, a.name):
                    renames[a.checkpoint_key] = attribute_key(now, a.name)
                    a.checkpoint_key = renames[a.checkpoint_key]
        return self.proto.SerializeToString(deterministic=True), renames, removed


def _slot_refs(proto: _Graph) -> Iterable[tuple[int, int, int]]:
    """(optimizer, original variable, slot variable) node ids."""
    for opt_id, node in enumerate(proto.nodes):
        for ref in node.slot_variables:
            yield opt_id, ref.original_variable_node_id, ref.slot_variable_node_id


def _reachable(proto: _Graph) -> set[int]:
    """Node ids reachable from the root by edges, and slot variables whose optimizer and
    variable both are (and what those reach)."""
    if not proto.nodes:
        return set()
    seen = {0}
    queue = deque([0])
    while True:
        while queue:
            for ref in proto.nodes[queue.popleft()].children:
                if ref.node_id not in seen:
                    seen.add(ref.node_id)
                    queue.append(ref.node_id)
        for opt, var, slot in _slot_refs(proto):
            if opt in seen and var in seen and slot not in seen:
                seen.add(slot)
                queue.append(slot)
        if not queue:
            return seen


def _tf_order(proto: _Graph, keep: set[int]) -> list[int]:
    """Old ids of the kept nodes in TF's numbering: breadth first, then slot variables."""
    order, placed = [0], {0}
    queue = deque([0])
    while queue:
        for ref in proto.nodes[queue.popleft()].children:
            if ref.node_id in keep and ref.node_id not in placed:
                placed.add(ref.node_id)
                order.append(ref.node_id)
                queue.append(ref.node_id)
    for node_id in list(order):
        for ref in proto.nodes[node_id].slot_variables:
            if ref.slot_variable_node_id in keep and ref.slot_variable_node_id not in placed:
                placed.add(ref.slot_variable_node_id)
                order.append(ref.slot_variable_node_id)
    order += sorted(keep - placed)  # reached only through a slot variable's own children
    return order


def _renumbered(proto: _Graph, old_of_new: list[int]) -> _Graph:
    new_of_old = {old: new for new, old in enumerate(old_of_new)}
    out = trackable_object_graph_pb2.TrackableObjectGraph()
    for old in old_of_new:
        node = out.nodes.add()
        node.CopyFrom(proto.nodes[old])
        del node.children[:]
        for ref in proto.nodes[old].children:
            if ref.node_id in new_of_old:
                node.children.add().CopyFrom(ref)
                node.children[-1].node_id = new_of_old[ref.node_id]
        del node.slot_variables[:]
        for ref in proto.nodes[old].slot_variables:
            if ref.original_variable_node_id in new_of_old and ref.slot_variable_node_id in new_of_old:
                node.slot_variables.add().CopyFrom(ref)
                node.slot_variables[-1].original_variable_node_id = new_of_old[ref.original_variable_node_id]
                node.slot_variables[-1].slot_variable_node_id = new_of_old[ref.slot_variable_node_id]
    return out


def graph_problems(graph: ObjectGraph, keys: Iterable[str]) -> list[tuple[str, str]]:
    """(key, message) for each way the object graph and the index disagree: an attribute
    whose checkpoint_key is not in the index, a key no object reachable from the root
    saves (other than the graph itself and partitioned variables' slice keys)."""
    present = set(keys)
    problems = []
    saved = set()
    for node in graph.nodes:
        for a in node.attributes:
            if node.path is not None:
                saved.add(a.checkpoint_key)
            if a.checkpoint_key not in present:
                where = node.path if node.path is not None else f"<node {node.id}>"
                problems.append((a.checkpoint_key, f"the object graph's {where or '<root>'} "
                                                   f"attribute {a.name} names a key that is not in the index"))
    for key in sorted(present - saved):
        if key != OBJECT_GRAPH_KEY and not key.startswith("\x00"):
            problems.append((key, "no object reachable in the object graph saves this key"))
    return problems

