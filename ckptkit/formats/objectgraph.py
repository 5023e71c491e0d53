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
Because breadth first can reach a model's variable through its optimizer first (Keras 3
keys weights `optimizer/_trainable_variables/N`), it also gives each object a friendly
path avoiding optimizers (`display_placement`, `friendly_names`): what `ls --tree` draws
and `convert`/`diff --friendly-names` name tensors by.
Facts from TF's `python/checkpoint/{graph_view,util,save_util_v1}.py`.
"""
from __future__ import annotations

import heapq
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import DataLossError
from ..proto import trackable_object_graph_pb2

if TYPE_CHECKING:
    from ..reader import CheckpointReader

__all__ = ["OBJECT_GRAPH_KEY", "Attribute", "SlotVariable", "Node", "ObjectGraph", "escape_local_name",
           "unescape_local_name", "attribute_key", "friendly_names"]

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_ESCAPE = "."
ATTRIBUTES = _ESCAPE + "ATTRIBUTES"
OPTIMIZER_SLOT = _ESCAPE + "OPTIMIZER_SLOT"


def escape_local_name(name: str) -> str:
    """TF's escaping of one path component, so names may hold `/` and `.`."""
    return name.replace(_ESCAPE, _ESCAPE + _ESCAPE).replace("/", _ESCAPE + "S")


def unescape_local_name(name: str) -> str:
    """The inverse of `escape_local_name`: `..` -> `.`, `.S` -> `/`."""
    return re.sub(r"\.(.)", lambda m: {".": ".", "S": "/"}.get(m.group(1), m.group(0)), name)


def split_path(path: str) -> list[str]:
    """An object path's escaped components (`a/b.Sc` -> ['a', 'b.Sc']); the root is []."""
    return [part for part in path.strip("/").split("/") if part]


def attribute_key(path: str, attribute: str) -> str:
    """The checkpoint key TF gives attribute `attribute` of the object at `path`."""
    return f"{_join(path, ATTRIBUTES)}/{escape_local_name(attribute)}"


# Keras 3 optimizers keep no slot_variables in the graph: their per-variable state is
# lists parallel to `_trainable_variables` (`_momentums`, `_velocities`, ...).
_KERAS_TRAINABLE = "_trainable_variables"
_KERAS_NOT_SLOTS = frozenset({"_variables", _KERAS_TRAINABLE, "_trainable_variables_indices"})


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

    def __init__(self, proto: trackable_object_graph_pb2.TrackableObjectGraph) -> None:
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
        except Exception:  # noqa: BLE001 - DecodeError, or others from the C backend
            raise DataLossError("object graph is not a parseable TrackableObjectGraph",
                                key=OBJECT_GRAPH_KEY) from None
        return cls(proto)

    @classmethod
    def from_reader(cls, reader: CheckpointReader) -> ObjectGraph | None:
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

    def find(self, path: str) -> Node:
        """The object `path` leads to by following edges from the root (escaped local names
        joined by `/`), whichever path it is: `model/_functional/_operations/1/_kernel`
        finds a Keras 3 kernel whose keys are under the optimizer. KeyError if none."""
        node = self.root
        for part in split_path(path):
            child = node.children.get(unescape_local_name(part))
            if child is None:
                raise KeyError(f"no object at path {path!r}")
            node = child
        return node

    def edge_to(self, path: str) -> tuple[Node, str]:
        """(parent, local name) of the last edge of `path` (not the root)."""
        parts = split_path(path)
        if not parts:
            raise KeyError("the root has no edge to it")
        parent = self.find("/".join(parts[:-1]))
        name = unescape_local_name(parts[-1])
        if name not in parent.children:
            raise KeyError(f"no object at path {path!r}")
        return parent, name

    def is_optimizer(self, node: Node, local_name: str | None = None) -> bool:
        """An optimizer: it keeps slot variables (TF's and Keras 2's), or it looks like a Keras
        3 optimizer (`_iterations` and `_trainable_variables` children), or an edge names it
        `optimizer`."""
        return bool(node.slot_variables or local_name == "optimizer"
                    or {"_iterations", _KERAS_TRAINABLE} <= set(node.children))

    def subtree(self, node: Node) -> list[Node]:
        """`node` and every object reachable from it by edges, plus the slot variables of those
        variables (TF's and Keras 3's): what an object path names in `ls` and `rm`."""
        seen, out, queue = {node.id}, [], deque([node])
        while queue:
            current = queue.popleft()
            out.append(current)
            more = list(current.children.values())
            more += [self.nodes[s.id] for s in self.slot_nodes(current)]
            for child in more:
                if child.id not in seen:
                    seen.add(child.id)
                    queue.append(child)
        return out

    def slot_nodes(self, variable: Node) -> list[Node]:
        return [n for _, n in self.slots_of(variable)]

    def slots_of(self, variable: Node) -> list[tuple[str, Node]]:
        """(slot name, slot node) of `variable`: TF's slot_variables, and Keras 3's state
        lists parallel to `_trainable_variables` (`_momentums/3` belongs to
        `_trainable_variables/3`; named after the list, `momentums`)."""
        out = []
        for name, sv in variable.slots.items():
            slot = next((n for n in self.nodes if n.path == sv.slot), None)
            if slot is not None:
                out.append((name, slot))
        return out + self._keras_slots().get(variable.id, [])

    def _keras_slots(self) -> dict[int, list[tuple[str, Node]]]:
        cached = getattr(self, "_keras_slot_cache", None)
        if cached is not None:
            return cached
        out: dict[int, list[tuple[str, Node]]] = {}
        for opt in self.nodes:
            if not {"_iterations", _KERAS_TRAINABLE} <= set(opt.children):
                continue
            trainable = list(opt.children[_KERAS_TRAINABLE].children.values())
            for list_name, child in opt.children.items():
                if list_name in _KERAS_NOT_SLOTS or child.attributes or not child.children:
                    continue
                items = list(child.children.values())
                if len(items) != len(trainable) or not all(n.attributes and not n.children for n in items):
                    continue
                for var, slot in zip(trainable, items, strict=True):
                    out.setdefault(var.id, []).append((list_name.lstrip("_"), slot))
        self._keras_slot_cache = out
        return out

    def optimizer_ids(self) -> set[int]:
        """Ids of the optimizers: objects keeping slot variables (TF's, Keras 2's), shaped like
        a Keras 3 optimizer (`_iterations` and `_trainable_variables` children), or that an
        edge names `optimizer`."""
        ids = {n.id for n in self.nodes if n.slot_variables or {"_iterations", _KERAS_TRAINABLE} <= set(n.children)}
        return ids | {c.id for n in self.nodes for name, c in n.children.items() if name == "optimizer"}

    def display_placement(self) -> dict[int, tuple[int | None, str, str]]:
        """{node id: (parent id, local name, friendly path)} for every object an edge reaches.

        An object reachable by several paths is named by the best one: the fewest
        optimizers passed through (a variable the model and the optimizer share - Keras 3
        keys model weights `optimizer/_trainable_variables/0/...` - gets its layer's path),
        then the fewest edges, then the first in TF's own order (breadth first, children in
        listed order): a path differs from TF's (`Node.path`) only where TF's passes
        through an optimizer and another does not. Each best path extends its parent's, so
        the placement is a tree (`ls --tree` draws it) and these are the names
        `friendly_names` gives.
        """
        cached: dict[int, tuple[int | None, str, str]] | None = getattr(self, "_placement_cache", None)
        if cached is not None:
            return cached
        optimizers = self.optimizer_ids()
        placed: dict[int, tuple[int | None, str, str]] = {}
        # Dijkstra on (optimizers passed, edges, positions of the edges in their lists): each
        # cost only grows along a path, and a better path to a parent stays better extended
        # by the same edge. With no optimizer on the way this is TF's breadth-first order.
        heap: list[tuple[tuple[int, int, tuple[int, ...]], int, int | None, str]] = \
            [((0, 0, ()), 0, None, "")] if self.nodes else []
        while heap:
            (through, length, order), node_id, parent, local_name = heapq.heappop(heap)
            if node_id in placed:
                continue
            path = "" if parent is None else _join(placed[parent][2], escape_local_name(local_name))
            placed[node_id] = (parent, local_name, path)
            step = through + (node_id in optimizers)
            for i, (name, child) in enumerate(self.nodes[node_id].children.items()):
                if child.id not in placed:
                    heapq.heappush(heap, ((step, length + 1, (*order, i)), child.id, node_id, name))
        self._placement_cache = placed
        return placed

    def friendly_paths(self) -> dict[int, str]:
        """{node id: friendly path} (`display_placement`'s), and for a slot variable no edge
        reaches TF's form over friendly paths: `<variable>/.OPTIMIZER_SLOT/<optimizer>/<slot>`."""
        paths = {node_id: path for node_id, (_, _, path) in self.display_placement().items()}
        for opt, obj in zip(self.nodes, self.proto.nodes, strict=True):
            for ref in obj.slot_variables:
                var, slot = ref.original_variable_node_id, ref.slot_variable_node_id
                if slot not in paths and var in paths and opt.id in paths:
                    paths[slot] = _join(paths[var], f"{OPTIMIZER_SLOT}/{paths[opt.id]}/"
                                                    f"{escape_local_name(ref.slot_name)}")
        return paths

    # ---- rendering (plain data; the CLI draws it)
    def format_tree(self, shapes: dict[str, Any] | None = None, dtypes: dict[str, str] | None = None,
                    start: Node | None = None) -> dict:
        """The object tree as nested plain dicts, the one tree `ckptkit ls --tree` shows.

        Each object appears once, where `display_placement` puts it (TF's breadth-first
        naming, optimizers last); any other edge to it is a leaf `{"name", "ref": <its
        display path>}`. Node dict keys: `name`, `path` (display path), `attributes`
        ([{name, full_name, checkpoint_key[, dtype, shape]}]), `slots` (on variables:
        [{slot_name, optimizer, checkpoint_key[, dtype, shape]}]), `children`.
        `shapes`/`dtypes` ({checkpoint key: ...}, e.g. the reader's maps) add those.
        `start` draws the subtree of one object instead of the whole graph.
        """
        shapes, dtypes = shapes or {}, dtypes or {}
        placement = self.display_placement()

        def described(d: dict[str, Any], key: str | None) -> dict[str, Any]:
            if key in dtypes:
                d["dtype"] = str(dtypes[key])
            if key in shapes:
                d["shape"] = list(shapes[key])
            return d

        def slot_owner(slot: Node) -> str:
            for opt in self.nodes:
                for sv in opt.slot_variables:
                    if sv.slot == slot.path:
                        return sv.optimizer
            parent = placement.get(slot.id, (None, "", ""))[0]
            grand = placement.get(parent, (None, "", ""))[0] if parent is not None else None
            return placement[grand][2] if grand is not None and grand in placement else ""

        def build(node: Node, name: str) -> dict:
            d: dict[str, Any] = {"name": name, "path": placement.get(node.id, (None, "", node.path))[2],
                                 "attributes": [described({"name": a.name, "full_name": a.full_name,
                                                           "checkpoint_key": a.checkpoint_key}, a.checkpoint_key)
                                                for a in node.attributes]}
            slots = self.slots_of(node)
            if slots:
                d["slots"] = []
                for slot_name, slot in slots:
                    key = next((a.checkpoint_key for a in slot.attributes if a.name == "VARIABLE_VALUE"),
                               slot.attributes[0].checkpoint_key if slot.attributes else None)
                    d["slots"].append(described({"slot_name": slot_name, "optimizer": slot_owner(slot),
                                                 "checkpoint_key": key}, key))
            d["children"] = []
            for local_name, child in node.children.items():
                if placement.get(child.id, (None,))[0] == node.id and placement[child.id][1] == local_name:
                    d["children"].append(build(child, local_name))
                else:
                    d["children"].append({"name": local_name,
                                          "ref": placement.get(child.id, (None, "", child.path))[2]})
            return d

        node = self.root if start is None else start
        return build(node, "" if start is None else node.name or "")

    def tree_lines(self, shapes: dict[str, Any] | None = None, dtypes: dict[str, str] | None = None,
                   start: Node | None = None) -> list[str]:
        """`format_tree` as indented text lines: an object per line, then its tensors as
        `.ATTRIBUTE dtype[shape]  key` and its optimizer slots as `slot NAME (optimizer)
        dtype[shape]  key`; a second edge to an object is `name -> display path`."""
        return tree_text(self.format_tree(shapes, dtypes, start))

    def __repr__(self) -> str:
        return f"<ObjectGraph: {len(self.nodes)} objects>"


def _described(d: dict) -> str:
    what = d.get("dtype", "") + ("[" + ",".join(map(str, d["shape"])) + "]" if "shape" in d else "")
    return f" {what}" if what else ""


def tree_text(tree: dict, depth: int = 0) -> list[str]:
    """The text form of a `format_tree` dict (one renderer for the library and the CLI)."""
    pad = "  " * depth
    if "ref" in tree:
        return [f"{pad}{tree['name']} -> {tree['ref']}"]
    lines = [f"{pad}{tree['name']}/"] if depth else []
    for a in tree["attributes"]:
        lines.append(f"{pad}  .{a['name']}{_described(a)}  {a['checkpoint_key']}")
    for s in tree.get("slots", []):
        owner = f" ({s['optimizer']})" if s["optimizer"] else ""
        lines.append(f"{pad}  slot {s['slot_name']!r}{owner}{_described(s)}  {s['checkpoint_key']}")
    for c in tree["children"]:
        lines.extend(tree_text(c, depth + 1))
    return lines


_VALUE_SUFFIX = f"/{ATTRIBUTES}/VARIABLE_VALUE"


def friendly_names(keys: Iterable[str], graph: ObjectGraph | None) -> dict[str, str]:
    """{checkpoint key: friendly name}: the one naming `convert --friendly-names` and
    `diff --friendly-names` use.

    With an object graph, a key saved by object O is O's friendly path
    (`ObjectGraph.friendly_paths`) for its VARIABLE_VALUE and
    `<path>/.ATTRIBUTES/<attribute>` for other attributes; a key no reachable object saves
    (the object graph itself) stays as it is. Without one (TF1, .npz, .safetensors) a key
    loses a trailing `/.ATTRIBUTES/VARIABLE_VALUE`. Names stay unique: keys whose
    friendly names would coincide (with each other or with a key left as it is) keep
    their own keys.
    """
    keys = list(keys)
    if graph is None:
        out = {k: k[: -len(_VALUE_SUFFIX)] if k.endswith(_VALUE_SUFFIX) else k for k in keys}
    else:
        paths = graph.friendly_paths()
        named: dict[str, str] = {}
        for node in graph.nodes:
            for a in node.attributes if paths.get(node.id) else ():  # the root's "" names nothing
                named.setdefault(a.checkpoint_key, paths[node.id] if a.name == "VARIABLE_VALUE"
                                 else attribute_key(paths[node.id], a.name))
        out = {k: named.get(k, k) for k in keys}
    while True:  # each round gives at least one key its own name back; all-own names never clash
        claims: dict[str, list[str]] = {}
        for key, name in out.items():
            claims.setdefault(name, []).append(key)
        clashing = [k for ks in claims.values() if len(ks) > 1 for k in ks if out[k] != k]
        if not clashing:
            return out
        for key in clashing:
            out[key] = key


def _join(parent: str | None, name: str) -> str:
    """`parent/name`; a root parent ("" or None) adds no prefix."""
    return f"{parent}/{name}" if parent else name


def mark_checkpoint_values(graph: trackable_object_graph_pb2.TrackableObjectGraph) -> None:
    """TF's `has_checkpoint_values` (`_add_checkpoint_values_check`): true for objects that
    save something and for all their ancestors; present even when false, as TF writes it."""
    parents: dict[int, set[int]] = {}
    marked = set()
    for node_id, node in enumerate(graph.nodes):
        if node.attributes or node.slot_variables or node.HasField("registered_saver"):
            marked.add(node_id)
        for ref in node.children:
            parents.setdefault(ref.node_id, set()).add(node_id)
    todo = list(marked)
    while todo:
        for parent in parents.pop(todo.pop(), ()):
            if parent not in marked:
                marked.add(parent)
                todo.append(parent)
    for node_id, node in enumerate(graph.nodes):
        node.has_checkpoint_values.SetInParent()
        node.has_checkpoint_values.value = node_id in marked
