"""`ckptkit.Checkpoint`: TF2's `tf.train.Checkpoint` for nested dicts of numpy values.

`Checkpoint(model={"dense": {"kernel": k, "bias": b}}, step=np.int64(7))` stands for
the object tree TF builds from `tf.train.Checkpoint(model=m, step=v)`: each Mapping is
a trackable object whose keys are its attribute names, each other value a variable.
`write` stores it as TF does — one `<path>/.ATTRIBUTES/VARIABLE_VALUE` tensor per
variable, plus the `TrackableObjectGraph` under `_CHECKPOINTABLE_OBJECT_GRAPH` — so
TF's `tf.train.Checkpoint(model=m, step=v).read(prefix).assert_consumed()` succeeds.

What TF writes, reproduced here byte for byte (tests/interop/test_checkpoint_api.py):
the root's keyword arguments in sorted order, then `save_counter` once it exists
(created by `save`, `restore` or a CheckpointManager's save, as TF creates it); every
object's children in attribute (insertion) order; node ids in breadth-first order from
the root; each variable's attribute `VARIABLE_VALUE` with `full_name` "Variable" (the
name TF gives an unnamed eager variable; "save_counter" for the counter); and
`has_checkpoint_values` true on every object that holds or leads to a tensor.

Reading goes the other way: the object graph, not the keys, says which tensor is
which object, so any TF2 checkpoint reads back into the nested dict its objects form.
"""
from __future__ import annotations

import logging
import os
import re
import types
from collections import deque
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import numpy as np

from .. import storage
from ..errors import CheckpointError, InvalidArgumentError
from ..formats import bundle
from ..formats.objectgraph import ATTRIBUTES, OBJECT_GRAPH_KEY, escape_local_name, mark_checkpoint_values
from ..proto.trackable_object_graph_pb2 import TrackableObjectGraph
from ..reader import CheckpointReader
from ..storage import locked_directory
from ..storage.lock import SAVER
from ..tf1.state import STATE_FILENAME, check_state_file_path, update_checkpoint_state

__all__ = ["ATTRIBUTES_KEY", "SAVE_COUNTER", "VARIABLE_VALUE", "Checkpoint", "build_object_graph", "read_tree"]

_log = logging.getLogger(__name__)

SAVE_COUNTER = "save_counter"
ROOT = "root"  # TF's Checkpoint(root=obj) adds the edge obj.root -> obj
VARIABLE_VALUE = "VARIABLE_VALUE"
VARIABLE_FULL_NAME = "Variable"  # the name of an unnamed variable in TF 2 (eager)
# In a nested dict, the key holding an object's own tensors other than one plain
# VARIABLE_VALUE ({attribute name: array}): a name no TF object attribute can have.
ATTRIBUTES_KEY = ATTRIBUTES


def _path(parent: str, local_name: str) -> str:
    escaped = escape_local_name(local_name)
    return f"{parent}/{escaped}" if parent else escaped


def _attribute_key(path: str, name: str) -> str:
    return f"{path}/{ATTRIBUTES}/{name}"


# In the nested dicts, ATTRIBUTES_KEY holds an object's own tensors. A child object whose
# local name is dots then "ATTRIBUTES" (TF allows `.ATTRIBUTES`) is keyed with one dot more,
# so `.ATTRIBUTES` is `..ATTRIBUTES`, `..ATTRIBUTES` is `...ATTRIBUTES`: one-to-one, and
# every other name is its own key.
_DOTTED_ATTRIBUTES = re.compile(r"\.+ATTRIBUTES")


def dict_key(local_name: str) -> str:
    """The nested-dict key of a child object named `local_name` (see _DOTTED_ATTRIBUTES)."""
    return "." + local_name if _DOTTED_ATTRIBUTES.fullmatch(local_name) else local_name


def local_name(key: str) -> str:
    """The child object's local name for a nested-dict key other than ATTRIBUTES_KEY."""
    return key[1:] if key != ATTRIBUTES_KEY and _DOTTED_ATTRIBUTES.fullmatch(key) else key


def build_object_graph(children: Mapping[str, Any], full_names: Mapping[str, str] | None = None,
                       root: Mapping[str, Any] | None = None) -> tuple[TrackableObjectGraph, dict[str, Any]]:
    """The TrackableObjectGraph TF writes for a root object with `children`, and its tensors.

    `children` maps the root's attribute names to nested Mappings (objects) or
    array-likes (variables). A Mapping's `ATTRIBUTES_KEY` entry, if any, holds tensors
    of that object itself ({attribute name: array}). The same Mapping or ndarray
    object reached twice is one node with two edges, as one TF object shared by two
    parents is (cycles are fine too). `full_names` overrides the full_name of the
    root's direct variable children (TF: "save_counter" for the counter). `root`: the
    Mapping that stands for the root object itself, where other objects hold it too.
    Returns (graph, {checkpoint key: value}).
    """
    full_names = full_names or {}
    graph = TrackableObjectGraph()
    tensors: dict[str, Any] = {}
    node_of: dict[int, int] = {}  # id(Mapping or ndarray) -> node id: shared objects are one node
    queue: deque[tuple[Any, str, int, str | None]] = deque()  # (object, path, node id, full name)

    def add_node(value: Any, path: str, full_name: str | None) -> int:
        if isinstance(value, (Mapping, np.ndarray)):
            found = node_of.get(id(value))
            if found is not None:
                return found
            node_of[id(value)] = len(graph.nodes)
        graph.nodes.add()
        queue.append((value, path, len(graph.nodes) - 1, full_name))
        return len(graph.nodes) - 1

    def check_name(name: Any, parent: str) -> str:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"object attribute names must be non-empty strings, got {name!r}",
                                       key=parent or None)
        return name

    graph.nodes.add()  # the root
    if root is not None:
        node_of[id(root)] = 0
    queue.append((None, "", 0, None))
    while queue:  # breadth first: TF numbers nodes in the order it first reaches them
        value, path, node_id, full_name = queue.popleft()
        proto = graph.nodes[node_id]
        if node_id == 0 or isinstance(value, Mapping):
            source = children if node_id == 0 else value
            items = [(local_name(check_name(n, path)), v) for n, v in source.items() if n != ATTRIBUTES_KEY]
            own = source.get(ATTRIBUTES_KEY)
            if own is not None:
                if not isinstance(own, Mapping):
                    raise InvalidArgumentError(f"{ATTRIBUTES_KEY!r} must map attribute names to arrays",
                                               key=path)
                for name, tensor in own.items():
                    key = _attribute_key(path, check_name(name, path))
                    _leaf_check(tensor, key)
                    proto.attributes.add(name=name, full_name=VARIABLE_FULL_NAME, checkpoint_key=key)
                    tensors[key] = tensor
        else:
            key = _attribute_key(path, VARIABLE_VALUE)
            _leaf_check(value, key)
            tensors[key] = value
            proto.attributes.add(name=VARIABLE_VALUE, full_name=full_name or VARIABLE_FULL_NAME,
                                 checkpoint_key=key)
            continue
        for name, child in items:
            child_name = full_names.get(name) if node_id == 0 else None
            proto.children.add(node_id=add_node(child, _path(path, name), child_name), local_name=name)
    mark_checkpoint_values(graph)
    return graph, tensors


def make_directories(directory: str, path: str) -> None:
    """Make `directory` and its parents, as TF's bundle writer does."""
    if not directory:
        return
    try:
        storage.of(path).makedirs(directory)
    except OSError as exc:  # a file in the way, no permission
        raise CheckpointError(f"cannot create directory {directory!r}: {exc.strerror or exc}", path=path) from None


def _leaf_check(value: Any, key: str) -> None:
    if value is None:
        raise InvalidArgumentError("None is no value to save", key=key)
    if isinstance(value, (list, tuple)) and any(isinstance(v, Mapping) for v in value):
        raise InvalidArgumentError("a list of objects: use a dict {'0': ..., '1': ...} (TF's names for "
                                   "list items)", key=key)
    if not isinstance(value, np.ndarray):
        try:
            np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged lists, objects numpy can't take
            raise InvalidArgumentError(f"not an array: {exc}", key=key) from None


def read_tree(reader: CheckpointReader) -> dict[str, Any]:
    """The nested dict of a TF2 checkpoint's objects, from its object graph.

    Every object an edge reaches from the root: a variable (no children, one
    VARIABLE_VALUE tensor) is its array; any other object a dict of its children by
    local name, with its own tensors, if it has any, under `ATTRIBUTES_KEY`. An object
    reached by several edges is the same Python object at each place (a dict's cycles
    stay cycles). Optimizer slot variables of TF's legacy optimizers hang off no edge
    and are not included (`CheckpointReader` reads them by key). A child object named
    `.ATTRIBUTES` (TF allows one) is keyed `..ATTRIBUTES` (see `dict_key`), so the tree
    writes back as the same objects.
    """
    graph = reader.object_graph()
    if graph is None:
        raise InvalidArgumentError("not a TF2 object-based checkpoint (no object graph); "
                                   "read its tensors with ckptkit.load", path=reader.prefix)
    values: dict[int, Any] = {}
    order = []
    queue = deque([graph.root])
    seen = {graph.root.id}
    while queue:  # breadth first, so no recursion however deep the graph
        node = queue.popleft()
        order.append(node)
        if not node.children and [a.name for a in node.attributes] == [VARIABLE_VALUE]:
            values[node.id] = reader.get_tensor(node.attributes[0].checkpoint_key)
            continue
        values[node.id] = {}
        for child in node.children.values():
            if child.id not in seen:
                seen.add(child.id)
                queue.append(child)
    for node in order:
        out = values[node.id]
        if isinstance(out, dict):
            for name, child in node.children.items():
                if not (node is graph.root and name == ROOT and child is graph.root):
                    out[dict_key(name)] = values[child.id]  # (TF's Checkpoint(root=obj) adds obj.root = obj: left out)
            if node.attributes:
                out[ATTRIBUTES_KEY] = {a.name: reader.get_tensor(a.checkpoint_key) for a in node.attributes}
    return values[graph.root.id]


_Assignment = tuple[MutableMapping, str, Any, bool]  # (into, name, value, in place)


def _assignments(held: MutableMapping, new: Mapping, seen: set[tuple[int, int]], prefix: str) -> list[_Assignment]:
    """What merging `new` into `held` does (`_assign` does it): arrays of the same dtype and shape are assigned in place
    (as TF assigns a variable), other entries replaced, dicts merged, missing keys added.

    A held array whose shape or dtype differs from the checkpoint's tensor is an
    InvalidArgumentError naming its key, as TF's restore refuses an incompatible tensor:
    planned first, so that it is raised before anything is assigned."""
    assignments: list[_Assignment] = []
    work: list[tuple[MutableMapping, Mapping, str, bool]] = [(held, new, "", False)]
    while work:
        into, source, path, own_attributes = work.pop()
        if (id(into), id(source)) in seen:
            continue
        seen.add((id(into), id(source)))
        for name, value in source.items():
            current = into.get(name)
            if isinstance(value, dict) and isinstance(current, MutableMapping):
                attributes = name == ATTRIBUTES_KEY and not own_attributes
                work.append((current, value, path if attributes else _path(path, local_name(name)), attributes))
            elif isinstance(value, np.ndarray) and isinstance(current, np.ndarray):
                if current.shape != value.shape or current.dtype != value.dtype:
                    key = (_attribute_key(path, name) if own_attributes
                           else _attribute_key(_path(path, local_name(name)), VARIABLE_VALUE))
                    raise InvalidArgumentError(
                        f"incompatible tensor with shape {list(value.shape)} and dtype {value.dtype} for a held "
                        f"array of shape {list(current.shape)} and dtype {current.dtype}", path=prefix, key=key)
                assignments.append((into, name, value, current.flags.writeable))
            else:
                assignments.append((into, name, value, False))
    return assignments


def _assign(assignments: list[_Assignment]) -> None:
    for into, name, value, in_place in assignments:
        if in_place:
            into[name][...] = value
        else:
            into[name] = value


class _on_class_too:  # noqa: N801 - a decorator, named like one
    """A method that, looked up on the class, runs on a fresh instance: `Checkpoint.read(p)`."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self._method = method
        self.__doc__ = method.__doc__

    def __get__(self, obj: Any, owner: type) -> Callable[..., Any]:
        return types.MethodType(self._method, obj if obj is not None else owner())


class Checkpoint:
    """Save and read TF2 object-based checkpoints of nested dicts of arrays.

    `Checkpoint(root=None, **kwargs)`, as TF's: each keyword argument becomes an
    attribute of the root object (`ckpt.model`); `root`, a Mapping, gives the root's
    own attributes instead (its keys in their order, then the keyword arguments).
    Values are nested Mappings (objects) and anything `numpy.asarray` takes
    (variables); write `np.float32(1)` rather than `1.0` where TF's variable is float32
    (a Python float is numpy's float64, an int int64).

    `write(prefix)` writes a checkpoint; `save(prefix)` counts saves (`save_counter`)
    and writes `prefix-N` and the directory's `checkpoint` state file, as TF does.
    `read(path)` and `restore(path)` return the checkpoint's objects as a nested
    dict and assign them into the objects this Checkpoint holds (see `read`).
    """

    _root: Mapping[str, Any] | None
    _kwargs: dict[str, Any]
    _save_counter: int | None      # None until created (TF creates the counter lazily)
    _pending_counter: int | None   # a count read before the counter existed

    def __init__(self, root: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if root is not None and not isinstance(root, Mapping):
            raise InvalidArgumentError(f"root must be a Mapping of attribute names to values, "
                                       f"not {type(root).__name__}")
        for name in kwargs:
            if root is not None and name in root and root[name] is not kwargs[name]:
                raise InvalidArgumentError(f"cannot create a Checkpoint with keyword argument {name!r} "
                                           f"if root[{name!r}] already exists")
        if SAVE_COUNTER in kwargs or (root is not None and SAVE_COUNTER in root):
            raise InvalidArgumentError(f"{SAVE_COUNTER!r} is the Checkpoint's own counter; "
                                       "choose another name")
        object.__setattr__(self, "_root", root)
        object.__setattr__(self, "_kwargs", {name: kwargs[name] for name in sorted(kwargs)})  # TF sorts them
        object.__setattr__(self, "_save_counter", None)
        object.__setattr__(self, "_pending_counter", None)

    # ------------------------------------------------------------------ the objects
    def _children(self) -> dict[str, Any]:
        """The root object's attributes in TF's order: root's own, then the keyword
        arguments sorted (with `root` itself among them when given), then save_counter."""
        children: dict[str, Any] = dict(self._root) if self._root is not None else {}
        extra = dict(self._kwargs)
        if self._root is not None:
            extra[ROOT] = self._root
        for name in sorted(extra):
            children.setdefault(name, extra[name])
        if self._save_counter is not None:
            children[SAVE_COUNTER] = np.int64(self._save_counter)
        return children

    def __getattr__(self, name: str) -> Any:
        kwargs = self.__dict__.get("_kwargs", {})
        if name in kwargs:
            return kwargs[name]
        root = self.__dict__.get("_root")
        if root is not None and name in root:
            return root[name]
        if root is not None and name == ROOT:
            return root
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        elif name in (SAVE_COUNTER, ROOT):
            raise AttributeError(f"{name} can't be set")
        else:  # as TF: assigning an attribute adds (or replaces) a dependency
            self._kwargs[name] = value

    def __delattr__(self, name: str) -> None:
        if name in self._kwargs:
            del self._kwargs[name]
        else:
            object.__delattr__(self, name)

    def to_dict(self) -> dict[str, Any]:
        """The root's attributes (not save_counter, nor TF's `root` self-edge), as held:
        the objects themselves."""
        children = self._children()
        children.pop(SAVE_COUNTER, None)
        if self._root is not None and children.get(ROOT) is self._root:
            del children[ROOT]
        return children

    @property
    def save_counter(self) -> int:
        """How many times `save` ran (restored by `restore`); 0 before the first."""
        return self._save_counter or 0

    def _create_save_counter(self) -> None:
        """TF's _maybe_create_save_counter: from then on, the counter is saved too."""
        if self._save_counter is None:
            self._save_counter = self._pending_counter or 0
            self._pending_counter = None

    def _next_save_counter(self) -> int:
        self._create_save_counter()
        self._save_counter = self.save_counter + 1
        return self._save_counter

    def __repr__(self) -> str:
        return f"<ckptkit.Checkpoint {list(self.to_dict())} save_counter={self._save_counter}>"

    # ------------------------------------------------------------------ writing
    def object_graph(self) -> tuple[TrackableObjectGraph, dict[str, Any]]:
        """(TrackableObjectGraph, {checkpoint key: value}) that `write` would store now."""
        return build_object_graph(self._children(), {SAVE_COUNTER: SAVE_COUNTER}, root=self._root)

    def _write(self, file_prefix: str) -> str:
        graph, tensors = self.object_graph()
        tensors[OBJECT_GRAPH_KEY] = np.array(graph.SerializeToString(), dtype=object)
        bundle.write_bundle(file_prefix, tensors, keep_order=True)  # TF: objects breadth-first, graph last
        return file_prefix

    def write(self, file_prefix: str | os.PathLike) -> str:
        """Write a checkpoint at `file_prefix` (its directories made as needed); return it.

        As TF's `write`: no save counting, no state file. Atomic: a crash leaves the old
        checkpoint at that prefix, or none, never a partial one.
        """
        return self._write(storage.fspath(file_prefix))

    def save(self, file_prefix: str | os.PathLike, *, lock_timeout: float | None = 0.0) -> str:
        """Count a save and write `file_prefix-N`; then name it in the `checkpoint` state file.

        As TF's `save`: N is the new `save_counter`, which the checkpoint stores; the
        state file in the prefix's directory then names this checkpoint alone (with a
        relative path). Use a CheckpointManager to keep several. The bundle and state
        file are written holding the directory's lock as a Saver (`lock_timeout`:
        seconds to wait for another saver there; None waits as long as it takes).
        """
        file_prefix = storage.fspath(file_prefix)
        directory = os.path.dirname(file_prefix)
        number = self._next_save_counter()  # TF counts first: a failed save still uses its number
        path = f"{file_prefix}-{number}"
        make_directories(directory, path)
        check_state_file_path(os.path.join(directory, STATE_FILENAME))  # fail before writing anything
        with locked_directory(directory, lock_timeout, role=SAVER):
            self._write(path)
            update_checkpoint_state(directory, path, [path], save_relative_paths=True)
        return path

    # ------------------------------------------------------------------ reading
    @_on_class_too
    def read(self, save_path: str | os.PathLike | None) -> dict[str, Any]:
        """The checkpoint's objects as a nested dict; also assigned into what this Checkpoint holds.

        Returns the root's attributes (not save_counter) as `read_tree` builds them.
        Then, as TF assigns restored values to its variables: a held numpy array of the
        same dtype and shape receives the value in place (so every reference to it sees
        it), a held array of another shape or dtype is an InvalidArgumentError (TF refuses
        an incompatible tensor) raised before anything is assigned, a held dict is merged
        into recursively, and anything else — other values, and attributes the Checkpoint
        did not hold — is set to the checkpoint's value.
        Held values the checkpoint lacks are left as they are. The checkpoint's
        save_counter is restored into this Checkpoint's counter. `save_path` None
        reads nothing and returns {} (TF: a no-op, for `restore(manager.latest_checkpoint)`
        before the first save). On the class, `Checkpoint.read(path)` reads into a fresh
        Checkpoint: the way to load a TF2 checkpoint as a tree.
        """
        if save_path is None:
            return {}
        with CheckpointReader(storage.fspath(save_path), as_prefix=True) as reader:
            tree = read_tree(reader)
            prefix = reader.prefix
        counter = tree.pop(SAVE_COUNTER, None)
        seen: set[tuple[int, int]] = set()
        if self._root is None:
            plan = _assignments(self._kwargs, tree, seen, prefix)
        else:  # the root's own attributes go into it (if it can take them)
            plan = _assignments(self._kwargs, {k: v for k, v in tree.items() if k in self._kwargs}, seen, prefix)
            if isinstance(self._root, MutableMapping):
                plan += _assignments(self._root, {k: v for k, v in tree.items() if k not in self._kwargs}, seen,
                                     prefix)
        _assign(plan)
        if isinstance(counter, np.ndarray) and counter.shape == () and counter.dtype.kind in "iu":
            value = int(counter)
            if self._save_counter is None:
                self._pending_counter = value  # TF's deferred restoration: applied when created
            else:
                self._save_counter = value
        return tree

    @_on_class_too
    def restore(self, save_path: str | os.PathLike | None) -> dict[str, Any]:
        """`read`, then the save counter exists (TF's restore creates it), so a later
        `write` stores it and `save` numbers on from the restored count."""
        tree = self.read(save_path)
        self._create_save_counter()
        return tree
