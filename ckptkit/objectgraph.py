"""TF2 object-based checkpoints: the object tree behind the `.ATTRIBUTES` keys.

`tf.train.Checkpoint.save` stores, beside the variables, a serialized
`TrackableObjectGraph` under `_CHECKPOINTABLE_OBJECT_GRAPH` (a DT_STRING scalar). It
lists every tracked object (node 0 is the root): its named edges to children, the
tensors it saved (`attributes`: name, full_name, checkpoint_key) and, for an
optimizer, its slot variables (original variable -> slot name -> slot variable).

TF names each object by the first path breadth-first search from the root reaches
it by (children in their listed order), with each local name escaped (`.` -> `..`,
`/` -> `.S`) and joined by `/`; a slot variable, which no edge reaches, is named
`<variable path>/.OPTIMIZER_SLOT/<optimizer path>/<slot name>`. Its checkpoint keys
are `<object path>/.ATTRIBUTES/<attribute name>`. This module rebuilds those paths,
so `ObjectGraph.walk()` yields each object once, under the path its keys start with.
Facts from TF's `python/checkpoint/{graph_view,util,save_util_v1}.py`.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import DataLossError
from .proto import trackable_object_graph_pb2

__all__ = ["OBJECT_GRAPH_KEY", "Attribute", "SlotVariable", "Node", "ObjectGraph", "escape_local_name"]

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_ESCAPE = "."
ATTRIBUTES = _ESCAPE + "ATTRIBUTES"
OPTIMIZER_SLOT = _ESCAPE + "OPTIMIZER_SLOT"


def escape_local_name(name: str) -> str:
    """TF's escaping of one path component, so names may hold `/` and `.`."""
    return name.replace(_ESCAPE, _ESCAPE + _ESCAPE).replace("/", _ESCAPE + "S")


@dataclass(frozen=True)
class Attribute:
    """One tensor an object saved: `name` (e.g. VARIABLE_VALUE), TF's full_name, its key."""

    name: str
    full_name: str
    checkpoint_key: str


@dataclass(frozen=True)
class SlotVariable:
    """An optimizer slot: `slot_name` of `variable` (a path), kept by `optimizer` (a path)."""

    variable: str
    slot_name: str
    optimizer: str
    slot: str  # the slot variable's own path
    checkpoint_key: str | None  # its VARIABLE_VALUE key, if it saved one


@dataclass
class Node:
    """One tracked object. `children` maps local names to nodes (the graph may share nodes)."""

    id: int
    path: str | None = None  # None: not reachable from the root (TF saved it but nothing names it)
    attributes: list[Attribute] = field(default_factory=list)
    children: dict[str, Node] = field(default_factory=dict)
    slot_variables: list[SlotVariable] = field(default_factory=list)  # on an optimizer
    slots: dict[str, SlotVariable] = field(default_factory=dict)     # on a variable: slot name -> slot
    registered_saver: str | None = None
    has_checkpoint_values: bool | None = None

    @property
    def name(self) -> str:
        """The last component of the path ("" for the root)."""
        return "" if not self.path else self.path.rsplit("/", 1)[-1]

    @property
    def checkpoint_keys(self) -> list[str]:
        return [a.checkpoint_key for a in self.attributes]

    def __repr__(self) -> str:
        return f"<Node {self.id} {self.path!r}: {len(self.children)} children, {len(self.attributes)} attributes>"


class ObjectGraph:
    """A decoded TrackableObjectGraph with TF's object paths."""

    def __init__(self, proto) -> None:
        self.proto = proto
        self.nodes = [Node(i) for i in range(len(proto.nodes))]
        n = len(self.nodes)
        for node, obj in zip(self.nodes, proto.nodes, strict=True):
            for ref in obj.children:
                if not 0 <= ref.node_id < n:
                    raise DataLossError(f"object graph edge {ref.local_name!r} points to node {ref.node_id} "
                                        f"of {n}", key=OBJECT_GRAPH_KEY)
                node.children[ref.local_name] = self.nodes[ref.node_id]
            node.attributes = [Attribute(a.name, a.full_name, a.checkpoint_key) for a in obj.attributes]
            if obj.HasField("registered_saver") and obj.registered_saver.name:
                node.registered_saver = obj.registered_saver.name
            if obj.HasField("has_checkpoint_values"):
                node.has_checkpoint_values = obj.has_checkpoint_values.value
        self._assign_paths()
        self._by_path = {node.path: node for node in self.nodes if node.path is not None}

    # ---- construction
    @classmethod
    def from_bytes(cls, data: bytes) -> ObjectGraph:
        proto = trackable_object_graph_pb2.TrackableObjectGraph()
        try:
            proto.ParseFromString(data)
        except Exception:  # DecodeError, or others from the C backend
            raise DataLossError("object graph is not a parseable TrackableObjectGraph",
                                key=OBJECT_GRAPH_KEY) from None
        return cls(proto)

    @classmethod
    def from_reader(cls, reader) -> ObjectGraph | None:
        """The object graph of a checkpoint reader, or None for a TF1 (name-based) checkpoint."""
        if OBJECT_GRAPH_KEY not in reader:
            return None
        value = reader.get_tensor(OBJECT_GRAPH_KEY)
        try:
            data = value.item() if getattr(value, "shape", None) == () else value
            if not isinstance(data, bytes):
                raise TypeError
        except (TypeError, ValueError):
            raise DataLossError("object graph is not a string scalar", path=getattr(reader, "prefix", None),
                                key=OBJECT_GRAPH_KEY) from None
        try:
            return cls.from_bytes(data)
        except DataLossError as exc:
            raise DataLossError(exc.message, path=getattr(reader, "prefix", None), key=OBJECT_GRAPH_KEY) from None

    def _assign_paths(self) -> None:
        if not self.nodes:
            return
        root = self.nodes[0]
        root.path = ""
        queue = deque([root])
        while queue:  # breadth first, children in listed order: TF's naming rule
            node = queue.popleft()
            for local_name, child in node.children.items():
                if child.path is None:
                    child.path = _join(node.path, escape_local_name(local_name))
                    queue.append(child)
        # Slot variables hang off their optimizer; no edge names them.
        for opt_node, obj in zip(self.nodes, self.proto.nodes, strict=True):
            for ref in obj.slot_variables:
                n = len(self.nodes)
                if not (0 <= ref.original_variable_node_id < n and 0 <= ref.slot_variable_node_id < n):
                    raise DataLossError(f"slot variable {ref.slot_name!r} points past the {n} nodes",
                                        key=OBJECT_GRAPH_KEY)
                var = self.nodes[ref.original_variable_node_id]
                slot = self.nodes[ref.slot_variable_node_id]
                if slot.path is None and var.path is not None and opt_node.path is not None:
                    slot.path = _join(var.path, f"{OPTIMIZER_SLOT}/{opt_node.path}/"
                                                f"{escape_local_name(ref.slot_name)}")
                key = next((a.checkpoint_key for a in slot.attributes if a.name == "VARIABLE_VALUE"),
                           slot.attributes[0].checkpoint_key if slot.attributes else None)
                sv = SlotVariable(variable=var.path or f"<node {var.id}>", slot_name=ref.slot_name,
                                  optimizer=opt_node.path if opt_node.path is not None else f"<node {opt_node.id}>",
                                  slot=slot.path or f"<node {slot.id}>", checkpoint_key=key)
                opt_node.slot_variables.append(sv)
                var.slots[ref.slot_name] = sv

    # ---- queries
    @property
    def root(self) -> Node:
        return self.nodes[0]

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, path: str) -> Node:
        """The object at `path` (as in checkpoint keys: `model/layer_with_weights-0/kernel`)."""
        try:
            return self._by_path[path.strip("/")]
        except KeyError:
            raise KeyError(f"no object at path {path!r}") from None

    def walk(self) -> Iterator[Node]:
        """Every named object once, breadth first from the root (then slot variables)."""
        named = [n for n in self.nodes if n.path is not None]
        order = {id(n): i for i, n in enumerate(self._bfs())}
        named.sort(key=lambda n: order.get(id(n), len(order) + n.id))
        return iter(named)

    def _bfs(self) -> list[Node]:
        seen, out, queue = {0}, [], deque([self.root]) if self.nodes else deque()
        while queue:
            node = queue.popleft()
            out.append(node)
            for child in node.children.values():
                if child.id not in seen:
                    seen.add(child.id)
                    queue.append(child)
        return out

    def variables(self) -> dict[str, dict[str, str]]:
        """{object path: {attribute name: checkpoint key}} for every object that saved tensors."""
        return {n.path: {a.name: a.checkpoint_key for a in n.attributes}
                for n in self.walk() if n.path is not None and n.attributes}  # walk() yields named nodes only

    def slot_map(self) -> dict[str, dict[str, str | None]]:
        """{variable path: {slot name: slot's checkpoint key}}: the optimizer's slots per variable."""
        out: dict[str, dict[str, str | None]] = {}
        for node in self.walk():
            for sv in node.slot_variables:
                out.setdefault(sv.variable, {})[sv.slot_name] = sv.checkpoint_key
        return out

    def key_to_object(self) -> dict[str, tuple[str, str]]:
        """{checkpoint key: (object path, attribute name)}."""
        return {a.checkpoint_key: (n.path, a.name)
                for n in self.walk() if n.path is not None for a in n.attributes}  # walk(): named nodes only

    # ---- rendering helpers (plain data; the CLI draws them)
    def format_tree(self, shapes: dict[str, Any] | None = None) -> dict:
        """The object tree as nested plain dicts (objects, attributes, slots), for tools that
        show the object graph itself; `ckptkit ls --tree` groups keys by scope instead
        (`info.scope_tree`).

        Each object appears once, where breadth-first search first reaches it; a later
        edge to it is a leaf `{"name", "ref": <its path>}`. Node dict keys: `name`,
        `path`, `attributes` ([{name, full_name, checkpoint_key[, shape]}]), `slots`
        ([{slot_name, optimizer, checkpoint_key[, shape]}], on variables), `children`.
        `shapes` ({checkpoint key: shape}, e.g. the reader's shape map) adds shapes.
        """
        shapes = shapes or {}

        def attr(a: Attribute) -> dict:
            d: dict[str, Any] = {"name": a.name, "full_name": a.full_name, "checkpoint_key": a.checkpoint_key}
            if a.checkpoint_key in shapes:
                d["shape"] = list(shapes[a.checkpoint_key])
            return d

        def build(node: Node, name: str) -> dict:
            d: dict[str, Any] = {"name": name, "path": node.path,
                                 "attributes": [attr(a) for a in node.attributes]}
            if node.slots:
                d["slots"] = []
                for sv in node.slots.values():
                    s: dict[str, Any] = {"slot_name": sv.slot_name, "optimizer": sv.optimizer,
                                         "checkpoint_key": sv.checkpoint_key}
                    if sv.checkpoint_key in shapes:
                        s["shape"] = list(shapes[sv.checkpoint_key])
                    d["slots"].append(s)
            d["children"] = []
            for local_name, child in node.children.items():
                if child.path == _join(node.path, escape_local_name(local_name)):
                    d["children"].append(build(child, local_name))
                else:
                    d["children"].append({"name": local_name, "ref": child.path})
            return d

        return build(self.root, "")

    def tree_lines(self, shapes: dict[str, Any] | None = None) -> list[str]:
        """`format_tree` as indented text lines."""
        lines: list[str] = []

        def emit(d: dict, depth: int) -> None:
            pad = "  " * depth
            if "ref" in d:
                lines.append(f"{pad}{d['name']} -> {d['ref']}")
                return
            if depth:
                lines.append(f"{pad}{d['name']}/")
            for a in d["attributes"]:
                shape = f" {a['shape']}" if "shape" in a else ""
                lines.append(f"{pad}  .{a['name']}{shape}  {a['checkpoint_key']}")
            for s in d.get("slots", []):
                shape = f" {s['shape']}" if "shape" in s else ""
                lines.append(f"{pad}  slot {s['slot_name']!r} ({s['optimizer']}){shape}  {s['checkpoint_key']}")
            for c in d["children"]:
                emit(c, depth + 1)

        emit(self.format_tree(shapes), 0)
        return lines

    def __repr__(self) -> str:
        return f"<ObjectGraph: {len(self.nodes)} objects>"


def _join(parent: str | None, name: str) -> str:
    """`parent/name`; a root parent ("" or None) adds no prefix."""
    return f"{parent}/{name}" if parent else name
