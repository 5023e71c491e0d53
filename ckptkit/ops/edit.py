"""Edits of V2 checkpoints as index rewrites: rename, remove, swap in moving averages.

A tensor's bytes never move for a rename or a removal: each BundleEntryProto (dtype,
shape, shard, offset, size, crc32c) is carried over byte for byte under its new key,
and only the small `.index` file is rewritten (atomically: temp file, fsync, rename).
That makes edits of multi-gigabyte checkpoints instant and leaves the data shards,
and every checksum, untouched. The price of `remove_keys` is that the removed tensors'
bytes stay in the shard until `compact` rewrites the shards with live data only.

Every file of the checkpoint stays consistent with the index, in the same commit:
- TF2 (object-based) checkpoints: the object graph `_CHECKPOINTABLE_OBJECT_GRAPH` is
  edited with the keys (objectgraph_edit.py) and rewritten; as a string tensor it lives
  in a data shard, so an edit that changes it rewrites the shard holding it (live
  entries copied, the new graph appended; TF writes it into the first shard). Names
  may be object paths (`optimizer`, `model/layer_with_weights-0/kernel`).
- TF1 checkpoints with a `.meta`: its Saver's `tensor_names` constants are rewritten
  (meta_edit.py); where that is not possible the edit refuses naming the `.meta`, and
  `drop_meta=True` (`--drop-meta`) deletes it in the same commit instead.

With `output=`, the edited checkpoint is written under a new prefix instead: a new
index plus the data shards its entries reference, hard-linked (same filesystem) or
copied under the new names, and the `.meta` (rewritten, or linked when unchanged).
Every edit holds the directory lock from before it reads the index until it publishes,
and publishes through `storage.Commit` (temp names, a journal where several files
change, renames, the index last), so a hard-linked shard is never modified in place,
the source checkpoint never changes, and a crash leaves the old checkpoint or the new one.

A V1 checkpoint (or a `.npz`/`.safetensors`/Keras file) cannot be edited in place; with
`output=` the edit's one commit writes the tensors it keeps, read one at a time, into a
new V2 bundle under the output's name (`_CopyEdit`).

Partitioned variables (entries with `slices`) store their data under binary slice
keys derived from the variable's name: renaming or removing the variable renames or
removes every slice key with it (re-encoded by formats/slices.py).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import numpy as np

from .. import selection, storage
from ..errors import (
    CheckpointError,
    ConcurrentModificationError,
    DataLossError,
    InvalidArgumentError,
    TensorNotFoundError,
    UnsupportedError,
)
from ..formats import bundle, registry, values
from ..formats.bundle_writer import BundleWriter, drop_stale
from ..formats.naming import meta_graph_filename
from ..formats.objectgraph import OBJECT_GRAPH_KEY
from ..formats.slices import TensorSlice, encode_tensor_name_slice, is_slice_key  # is_slice_key: re-exported
from ..location import Location, locate, resolve_prefix
from ..reader import CheckpointReader
from ..storage import Commit, locked_directory
from ..storage.base import Progress
from ..storage.lock import EDIT_WAIT_SECONDS
from ..tf1.meta_edit import rewrite_meta
from ..tf2.objectgraph_edit import GraphEditor
from .convert import check_destination

__all__ = ["rename_keys", "remove_keys", "remove_and_compact", "apply_ema", "ema_mapping", "compact",
           "is_slice_key"]

Renamer = Mapping[str, str] | Callable[[str], str | None]

# A changed object graph is written by rewriting the shard holding it when that shard's
# other live bytes are at most this; else into a new shard of its own (see _Edit.publish).
GRAPH_SHARD_COPY_LIMIT = 64 << 20


@dataclass
class _Change:
    """What an edit does: the new index items (source entries under their new keys), the
    key renames and removals (for the `.meta`), and the new object graph, if any."""

    items: dict[str, bytes]
    renamed: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    graph: bytes | None = None


class _Edit:
    """An index as (key, serialized entry) pairs, read under the directory lock, checked,
    and then published (in place, or under `output` with the data shards linked), with
    the object graph and the `.meta` that go with it."""

    def __init__(self, prefix: str, output: str | None) -> None:
        self.prefix = prefix
        self.target = prefix if output is None else output
        self.in_place = storage.abspath(self.target) == storage.abspath(prefix)
        index_path = bundle.index_filename(prefix)
        if not storage.isfile(index_path):
            raise UnsupportedError("only V2 checkpoints (.index + .data) can be edited in place; a V1 "
                                   "checkpoint (or a .npz/.safetensors file) is edited into a new V2 one "
                                   "with an output prefix (-o OUT)", path=prefix)
        self.read_as = storage.of(index_path).identity(index_path)
        self.meta_path = meta_graph_filename(prefix)
        self.meta_as = storage.of(self.meta_path).identity(self.meta_path)
        self.index = bundle.BundleIndex(prefix)
        self.data = bundle.BundleReader(self.index)
        self.items = dict(self.index.raw_items())
        self._graph: GraphEditor | None = None

    def close(self) -> None:
        self.data.close()

    def graph(self) -> GraphEditor | None:
        """A fresh editor of the stored object graph (None for TF1 checkpoints)."""
        if OBJECT_GRAPH_KEY not in self.items:
            return None
        value = self._read(OBJECT_GRAPH_KEY)
        data = value.item() if value.shape == () else None
        if not isinstance(data, bytes):
            raise DataLossError("the object graph is not a string scalar", path=self.prefix,
                                key=OBJECT_GRAPH_KEY)
        return GraphEditor(data, path=self.prefix)

    def _read(self, key: str) -> np.ndarray:
        return self.data.read(key)

    def require(self, key: str) -> None:
        if key not in self.items:
            raise TensorNotFoundError("tensor not found in checkpoint", path=self.prefix, key=key)

    def slice_keys(self, key: str, *, missing_ok: bool = False) -> list[str]:
        """The keys a partitioned variable's slices are stored under ([] for a plain tensor);
        a slice the full-shape entry lists but the index lacks is a DataLossError (as a read
        reports it), never a KeyError halfway through an edit. `missing_ok` (removing the
        variable, which repairs such an index): the slices there are."""
        if is_slice_key(key):
            return []
        found = []
        for proto in self.index.entry(key).slices:
            tslice = TensorSlice.from_proto(proto, path=self.prefix, key=key)
            slice_key = bundle.decode_key(encode_tensor_name_slice(key, tslice))
            if slice_key not in self.items:
                if missing_ok:
                    continue
                raise DataLossError(f"slice {tslice.spec()} is listed but missing from the index",
                                    path=self.index.path, key=key)
            found.append(slice_key)
        return found

    def keys(self) -> list[str]:
        """Tensor names, as a reader lists them (no slice keys)."""
        return [k for k in self.items if not is_slice_key(k)]

    def data_entries(self, items: Mapping[str, bytes]) -> list[tuple[str, bundle.BundleEntryProto]]:
        """(source key, entry) of every entry of the source index still in `items` (whose
        values are the source's serialized entries, under old or new keys) that stores
        bytes, each checked by `BundleReader.checked` — the same checks a read makes, so an
        edit never trusts a lying index further than a read does."""
        live = {id(v) for v in items.values()}
        out = []
        for key in [k for k, v in self.items.items() if id(v) in live]:
            entry = self.data.checked(key, known_dtype=False).entry
            if not entry.slices:  # a partitioned variable's own entry holds no bytes
                out.append((key, entry))
        return out

    def new_meta(self, change: _Change, drop_meta: bool) -> bytes | None | bool:
        """The `.meta` to publish: new bytes, None (unchanged or absent), False (delete it)."""
        if self.meta_as is None:
            return None
        if drop_meta:
            return False
        if change.graph is not None or OBJECT_GRAPH_KEY in change.items:
            return None  # a TF2 checkpoint's .meta (rare) holds no Saver keys ckptkit edits
        data = storage.of(self.meta_path).read_bytes(self.meta_path, "meta graph file")
        try:
            return rewrite_meta(data, change.renamed, set(change.removed), path=self.meta_path)
        except CheckpointError as exc:
            raise UnsupportedError(f"{exc.message}; its Saver would still name keys this edit changes. "
                                   "--drop-meta (drop_meta=True) deletes the .meta in the same commit",
                                   path=self.meta_path) from None

    def publish(self, change: _Change, progress: Progress | None = None, *, compact: bool = False,
                drop_meta: bool = False) -> int:
        """Publish `change` at the target in one commit; return the data bytes freed.

        Shards are rewritten (live entries copied, in offset order, checksums carried over)
        when `compact`. A changed object graph is written into the shard holding the old
        one, rewritten, when that shard's other live bytes are few (at most
        `GRAPH_SHARD_COPY_LIMIT`: TF2 checkpoints of small models, or a shard an earlier
        edit made for the graph); else into a new shard of its own (the others keep their
        bytes and are linked under the `-of-N+1` names), so a rename in a big TF2
        checkpoint copies no tensor. Other shards the index references stay (in place)
        or are linked (under `output`).
        """
        meta = self.new_meta(change, drop_meta)
        items = dict(change.items)
        graph_shard = None
        if change.graph is not None:
            graph_shard = self.index.entry(OBJECT_GRAPH_KEY).shard_id
            items.pop(OBJECT_GRAPH_KEY, None)
        by_shard: dict[int, list[tuple[str, bundle.BundleEntryProto]]] = {}
        if compact or graph_shard is not None or not self.in_place:  # else: only the index changes
            for key, entry in self.data_entries(items):
                by_shard.setdefault(entry.shard_id, []).append((key, entry))
        n = new_n = self.index.num_shards
        if graph_shard is not None and not compact:
            if sum(e.size for _, e in by_shard.get(graph_shard, [])) > GRAPH_SHARD_COPY_LIMIT:
                graph_shard, new_n = n, n + 1
        rewrite = set(by_shard) if compact else set()
        if graph_shard is not None:
            rewrite.add(graph_shard)
        new_key = {id(v): k for k, v in items.items()}
        freed = 0
        with Commit(os.path.dirname(self.target)) as tx:
            tx.guard(bundle.index_filename(self.prefix), self.read_as)
            if self.meta_as is not None:
                tx.guard(self.meta_path, self.meta_as)
            writer = BundleWriter(tx, self.target, new_n, header=self.index.header, new_shards=False,
                                  progress=progress)
            for shard in sorted(set(by_shard) | rewrite):
                if shard not in rewrite:
                    if not self.in_place or new_n != n:
                        writer.link_shard(shard, self.data.shard_path(shard))
                    else:
                        writer.keep_shard(shard)
                    continue
                writer.new_shard(shard)
                source = self.data.shard_handle(shard) if by_shard.get(shard) else None
                for key, checked in sorted(by_shard.get(shard, []), key=lambda ke: ke[1].offset):
                    assert source is not None  # opened above: this shard has entries
                    moved = new_key[id(self.items[key])]
                    del items[moved]  # (the others are carried over as they are)
                    writer.copy_entry(moved, checked, source, self.data.shard_path(shard), shard=shard)
                if shard == graph_shard:
                    writer.add(OBJECT_GRAPH_KEY, np.array(change.graph, dtype=object), shard=shard)
                freed += (self.data.shard_size(shard) if shard < n else 0) - writer.offset(shard)
            target_meta = meta_graph_filename(self.target)
            if not self.in_place:  # an old checkpoint at the output: its .meta (unless
                drop_stale(tx, self.target)  # replaced below) and V1 file go too
            if isinstance(meta, bytes):
                tx.file(target_meta).write(meta)
            elif meta is False:
                if self.in_place or storage.exists(target_meta):
                    tx.delete_after(target_meta)
            elif self.meta_as is not None and not self.in_place:
                tx.link(self.meta_path, target_meta, what="meta graph file")
            for key, value in items.items():
                writer.add_entry(key, value)
            stale = writer.finish(drop_stale_shards=compact or not self.in_place or new_n != n)
            if self.in_place and new_n == n:  # (else their bytes live on under new names)
                freed += sum(_size(old) for old in stale)
            tx.publish()
        return freed


class _CopyEdit(_Edit):
    """An edit of a checkpoint that is no V2 bundle (V1, `.npz`, `.safetensors`, Keras),
    into `output` only, in one commit: the commit's `BundleWriter` writes each tensor the
    edit keeps, read one at a time through a CheckpointReader (checked as every read
    is), under its new name into a new data shard, in the source's key order; a changed
    object graph comes last. `items` holds, under each name, the UTF-8 source name of
    the tensor it stands for (what the planning moves between keys). No `.meta` is
    carried over (a V1 Saver's graph restores V1 files). The commit fails if a source
    file changed meanwhile."""

    def __init__(self, location: Location, output: str) -> None:
        self.prefix, self.target, self.in_place = location.prefix, output, False
        self.reader = CheckpointReader(location)
        # Guarded by the commit, which compares identities as its own store sees them: a
        # source on another store is not (each of its reads is checked).
        store = storage.of(output)
        self.source_as = {p: store.identity(p) for p in self.reader.files if storage.of(p) is store}
        self.meta_as = None
        self.items = {name: name.encode() for name in self.reader}

    def close(self) -> None:
        self.reader.close()

    def _read(self, key: str) -> np.ndarray:
        return np.asarray(self.reader.get_tensor(key), dtype=object)

    def slice_keys(self, key: str, *, missing_ok: bool = False) -> list[str]:
        return []  # a reader of these formats gives partitioned variables whole

    def publish(self, change: _Change, progress: Progress | None = None, *, compact: bool = False,
                drop_meta: bool = False) -> int:
        """Write `change` at the target in one commit; return 0 (the source is untouched:
        nothing is freed; every tensor written is live, so `compact` changes nothing)."""
        items = {k: v.decode() for k, v in change.items.items()}
        if change.graph is not None:
            items.pop(OBJECT_GRAPH_KEY, None)
        dtypes, shapes = self.reader.get_variable_to_dtype_map(), self.reader.get_variable_to_shape_map()
        with Commit(os.path.dirname(self.target)) as tx:
            for path, before in self.source_as.items():
                tx.guard(path, before)
            writer = BundleWriter(tx, self.target, progress=progress)
            for key, name in sorted(items.items(), key=lambda kn: bundle.encode_key(kn[1])):
                read = functools.partial(self.reader.get_tensor, name)
                writer.add(key, values.Deferred(dtypes[name], tuple(shapes[name]), read))
            if change.graph is not None:
                writer.add(OBJECT_GRAPH_KEY, np.array(change.graph, dtype=object))
            drop_stale(tx, self.target)  # an old checkpoint's .meta (and V1 file) at the output
            writer.finish()
            tx.publish()
        return 0


@contextmanager
def _editing(prefix: str | os.PathLike | Location, output: str | os.PathLike | None,
             lock_timeout: float | None, overwrite: bool = False) -> Iterator[_Edit]:
    """Lock the checkpoint's directory (and the output's), then read the index.

    Reading under the lock means no ckptkit writer can replace the index between this
    read and the edit's publication; `Commit.guard` catches any other program. An
    output other than the checkpoint itself that already exists is refused, under the
    lock and before anything is written, unless `overwrite`.
    """
    location = locate(prefix)  # once: a Location passed down is not resolved again
    prefix = location.prefix
    target = None if output is None else storage.fspath(output)
    if target is not None:
        if not os.path.basename(target):
            raise InvalidArgumentError("output prefix must name a checkpoint, not a directory", path=target)
        storage.of(target).makedirs(os.path.dirname(target))
    directories = {storage.of(p).realpath(os.path.dirname(p) or os.curdir)
                   for p in (prefix, target) if p is not None}
    with ExitStack() as stack:
        for directory in sorted(directories):  # one order for everyone: no lock-order deadlock
            stack.enter_context(locked_directory(directory, lock_timeout))
        # Again, under the lock: a Saver may have pruned what was resolved (then the path
        # is resolved again: a pruned prefix is not found, a directory names its new latest).
        now = prefix
        if not registry.get(location.format).holds(prefix):
            now = resolve_prefix(location.given or prefix)
        if os.path.dirname(now) != os.path.dirname(prefix):
            raise ConcurrentModificationError("changed by another program while waiting for its lock; "
                                              "nothing was written, run it again",
                                              path=location.given or prefix)
        if target is not None and not (storage.abspath(target) == storage.abspath(now)
                                       and storage.isfile(bundle.index_filename(now))):
            check_destination(target, make_parents=True, exist_ok=overwrite)
        if not storage.isfile(bundle.index_filename(now)) and target is not None:
            if now != prefix:  # found again: what it is now (its format; --raw-names carried)
                location = location._replace(prefix=now, format=next(
                    f.name for f in registry.FORMATS if f.holds(now)))
            edit: _Edit = _CopyEdit(location, target)
        else:
            edit = _Edit(now, target)
        stack.callback(edit.close)
        yield edit


# --------------------------------------------------------------------------- renames

def _plan_renames(edit: _Edit, renamer: Renamer) -> tuple[dict[str, str], dict[str, str]]:
    """({old key: new key}, {old object path: new path}) for everything that changes name.

    Mapping keys that are not tensor names but object paths of a TF2 checkpoint's graph
    rename objects. Partitioned variables bring their slice keys along.
    """
    objects: dict[str, str] = {}
    if isinstance(renamer, Mapping):
        pairs = {}
        graph = None
        for old, new in renamer.items():
            if old in edit.items and not is_slice_key(old):
                pairs[old] = new
                continue
            graph = graph or edit.graph()
            if graph is None:
                edit.require(old)
            else:
                graph.object_keys(old)  # raises naming `old` if it is no object either
                objects[old] = new
    elif callable(renamer):
        pairs = {}
        for key in edit.keys():
            if key == OBJECT_GRAPH_KEY:
                continue  # a pattern never means the graph, which TF reads by this name
            renamed = renamer(key)
            if renamed is not None:
                pairs[key] = renamed
    else:
        raise InvalidArgumentError(f"expected a mapping or a function, got {type(renamer).__name__}")
    mapping = {}
    for old, new in [*pairs.items(), *objects.items()]:
        if not isinstance(new, str) or not new:
            raise InvalidArgumentError(f"new name must be a non-empty string, got {new!r}",
                                       path=edit.prefix, key=old)
    for old, new in pairs.items():
        if new != old:
            if old == OBJECT_GRAPH_KEY:
                raise InvalidArgumentError("the object graph keeps its key (TF reads it by name)",
                                           path=edit.prefix, key=old)
            mapping[old] = new
            slices = edit.slice_keys(old)
            if slices:
                new_slices = [bundle.decode_key(encode_tensor_name_slice(new, TensorSlice.from_proto(p)))
                              for p in edit.index.entry(old).slices]
                mapping.update(zip(slices, new_slices, strict=True))
    return mapping, {o: n for o, n in objects.items() if n.strip("/") != o.strip("/")}


def _check_collisions(edit: _Edit, mapping: Mapping[str, str], overwrite: bool) -> list[str]:
    """Refuse two keys renamed to one, and (unless `overwrite`) a rename onto a key that
    stays; return the keys `overwrite` drops. Every check precedes any write."""
    sources: dict[str, str] = {}
    for old, new in mapping.items():
        if new in sources:
            raise InvalidArgumentError(f"both {sources[new]!r} and {old!r} would be renamed to {new!r}",
                                       path=edit.prefix, key=new)
        sources[new] = old
    dropped = []
    for new, old in sources.items():
        if new in edit.items and new not in mapping:
            if not overwrite:
                raise InvalidArgumentError(
                    f"cannot rename {old!r} to {new!r}: that key already exists "
                    "(overwrite=True, or ckptkit rename --overwrite, replaces it)", path=edit.prefix, key=new)
            if edit.slice_keys(new) or edit.slice_keys(old):
                raise UnsupportedError("cannot overwrite with or onto a partitioned variable",
                                       path=edit.prefix, key=new)
            dropped.append(new)
    return dropped


def _renamed(edit: _Edit, mapping: dict[str, str], overwrite: bool,
             objects: Mapping[str, str] | None = None) -> _Change:
    """The change of renaming keys `mapping` (and objects), the graph following: a key
    renamed onto an existing one (`overwrite`) hands its value to the object that saved
    the existing key, and the renamed key's own object no longer saves it (as EMA
    restore does); keys of renamed objects follow them."""
    graph = edit.graph()
    canonical: dict[str, str] = {}
    data = None
    if graph is not None:
        dropped = set(_check_collisions(edit, mapping, overwrite))
        graph.remove_keys([old for old, new in mapping.items() if new in dropped])
        graph.rename_keys({old: new for old, new in mapping.items() if new not in dropped})
        for old, new in (objects or {}).items():
            graph.rename_object(old, new)
        data, canonical, _ = graph.finish()
        for old, new in canonical.items():
            source = next((o for o, n in mapping.items() if n == old), old)
            mapping[source] = new
    dropped_keys = _check_collisions(edit, mapping, overwrite)
    items = {k: v for k, v in edit.items.items() if k not in mapping and k not in dropped_keys}
    for old, new in mapping.items():
        items[new] = edit.items[old]
    return _Change(items, renamed=dict(mapping), removed=[k for k in dropped_keys if k not in mapping],
                   graph=data)


def rename_keys(prefix: str | os.PathLike | Location, mapping_or_fn: Renamer, *, overwrite: bool = False,
                output: str | os.PathLike | None = None, dry_run: bool = False,
                progress: Progress | None = None, drop_meta: bool = False,
                lock_timeout: float | None = EDIT_WAIT_SECONDS) -> dict[str, str]:
    """Rename tensors by rewriting the index; return {old: new} for every key renamed.

    `mapping_or_fn` is a {old: new} mapping (every old key must exist) or a function
    called with every key that returns its new name (None or the same name: unchanged).
    Renames happen at once, so `{"a": "b", "b": "a"}` swaps. A new name that is an
    existing key not itself renamed away is refused (InvalidArgumentError) unless
    `overwrite=True`, which drops that tensor. All checks happen before any write.
    In a TF2 checkpoint a mapping's old name may be an object path
    (`{"model/dense": "model/encoder"}`): the object's edge is renamed and the keys of
    everything under it follow. A partitioned variable's slice keys follow its name.
    The object graph and the `.meta` are rewritten in the same commit (see the module
    docstring; `drop_meta=True` deletes the `.meta` instead).
    `dry_run=True` checks and returns the mapping, writing nothing.
    `overwrite=True` also lets the edit replace an existing checkpoint at `output` (see
    `remove_keys`): one word for "replace what is already there", as `--overwrite`.
    Every edit holds the directory lock, waiting up to `lock_timeout` seconds for it.
    """
    with _editing(prefix, output, lock_timeout, overwrite) as edit:
        mapping, objects = _plan_renames(edit, mapping_or_fn)
        change = _renamed(edit, mapping, overwrite, objects)
        if not dry_run and (change.renamed or change.graph is not None or output is not None):
            edit.publish(change, progress, drop_meta=drop_meta)
    return {k: v for k, v in change.renamed.items() if not is_slice_key(k)}


# --------------------------------------------------------------------------- removals

def _removal(edit: _Edit, names: Iterable[str], glob: Iterable[str], regex: Iterable[str],
             optimizer: bool, exclude: Iterable[str] = ()) -> _Change:
    """The change of removing `names` (keys, or object paths of a TF2 graph), the keys
    `glob`/`regex` select, and with `optimizer` the optimizer's state (TF1 slot keys by
    the usual optimizers' names; TF2 the optimizer objects), less the keys the `exclude`
    globs match (each must match a key; a key an object being removed takes along
    cannot be kept, and says so)."""
    names = _names(names)
    keys = edit.keys()
    graph = edit.graph()
    objects: list[str] = []
    chosen: list[str] = []
    for name in names:
        if name in edit.items and not is_slice_key(name):
            chosen.append(name)
        elif graph is not None:
            graph.object_keys(name)  # raises naming it if it is no object either
            objects.append(name)
        else:
            edit.require(name)
    chosen += selection.by_glob(keys, glob, path=edit.prefix, what="include glob")
    chosen += selection.by_regex(keys, list(regex), path=edit.prefix)
    if optimizer:
        if graph is not None:
            found = graph.optimizers()
            objects += [p for p in found if p not in objects]
        else:
            found = selection.optimizer_keys(keys)
            chosen += found
    chosen = list(dict.fromkeys(chosen))
    exclude = list(exclude)
    kept = set(selection.by_glob(keys, exclude, path=edit.prefix, what="exclude glob"))
    if kept:
        chosen = [k for k in chosen if k not in kept]
        if not chosen and not objects:
            raise InvalidArgumentError(f"nothing left to remove: the exclude globs {exclude} match "
                                       "every tensor selected", path=edit.prefix)
    if not chosen and not objects:  # (only --optimizer can select nothing: it found none)
        return _Change(dict(edit.items))
    if OBJECT_GRAPH_KEY in chosen:
        raise InvalidArgumentError("removing the object graph would leave a TF2 checkpoint TF cannot read "
                                   "by object (convert to a name-based checkpoint instead)",
                                   path=edit.prefix, key=OBJECT_GRAPH_KEY)
    renames: dict[str, str] = {}
    data = None
    if graph is not None:
        graph.remove_keys(chosen)
        for path in objects:
            graph.remove_object(path)
        data, renames, unreachable = graph.finish()
        chosen += [k for k in unreachable if k in edit.items and k not in chosen]
        if taken := [k for k in chosen if k in kept]:
            raise InvalidArgumentError("cannot keep it (an exclude glob matches it): it goes with the object "
                                       "removed (exclude the object's other keys by name instead)",
                                       path=edit.prefix, key=taken[0])
    removed = []
    for key in chosen:
        edit.require(key)
        removed += [key, *edit.slice_keys(key, missing_ok=True)]
    gone = set(removed)
    items = {k: v for k, v in edit.items.items() if k not in gone and k not in renames}
    for old, new in renames.items():
        if new in items:
            raise InvalidArgumentError(f"{old!r} would follow its object to {new!r}, which exists",
                                       path=edit.prefix, key=new)
        items[new] = edit.items[old]
    return _Change(items, renamed=renames, removed=removed, graph=data)


def remove_keys(prefix: str | os.PathLike | Location, names: Iterable[str] = (), *,
                glob: Iterable[str] = (), regex: Iterable[str] = (), optimizer: bool = False,
                exclude: Iterable[str] = (),
                output: str | os.PathLike | None = None, progress: Progress | None = None,
                dry_run: bool = False, drop_meta: bool = False, overwrite: bool = False,
                lock_timeout: float | None = EDIT_WAIT_SECONDS) -> list[str]:
    """Drop tensors from the index; return the tensor names removed.

    `names` are keys or, in a TF2 checkpoint, object paths (`optimizer`): an object
    takes with it what only it reaches (its variables, their slots) and the graph is
    rewritten. `glob` (fnmatch, `*` crosses `/`) and `regex` (re.fullmatch) select keys
    by pattern; `optimizer=True` selects the optimizer's state (see `selection`);
    `exclude` globs then keep the keys they match (each must match a key).
    A partitioned variable goes with all its slices. The removed tensors' bytes stay in
    the data shards (nothing references them any more); `compact(prefix, remove=names)`
    removes and reclaims in one commit. `dry_run=True` returns the names, writing nothing.
    `optimizer=True` on a checkpoint without optimizer state removes nothing (returns
    []; in place, nothing is written), so that running it twice is no error.
    An `output` that already holds a checkpoint is refused (AlreadyExistsError) unless
    `overwrite=True`; then its old `.meta` and data shards the edit does not publish
    are deleted in the same commit (as for every edit with an `output`).
    """
    with _editing(prefix, output, lock_timeout, overwrite) as edit:
        change = _removal(edit, names, glob, regex, optimizer, exclude)
        if not dry_run and (change.removed or change.graph is not None or output is not None):
            edit.publish(change, progress, drop_meta=drop_meta)
    return [k for k in change.removed if not is_slice_key(k)]


def _names(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([names] if isinstance(names, str) else names))


def ema_mapping(keys: Iterable[str], ema_name: str = "ExponentialMovingAverage") -> dict[str, str]:
    """{shadow key: variable} for every `VAR/<ema_name>` key: what EMA restore implies.

    This is `ExponentialMovingAverage.variables_to_restore()` seen from the checkpoint:
    each averaged variable restores from its shadow, every other key from itself.
    """
    suffix = "/" + ema_name
    return {k: k[: -len(suffix)] for k in keys
            if k.endswith(suffix) and len(k) > len(suffix) and not is_slice_key(k)}


def apply_ema(prefix: str | os.PathLike | Location, *, output: str | os.PathLike | None = None,
              ema_name: str = "ExponentialMovingAverage", progress: Progress | None = None,
              drop_meta: bool = False, overwrite: bool = False,
              lock_timeout: float | None = EDIT_WAIT_SECONDS) -> dict[str, str]:
    """Make the inference checkpoint: each variable takes its moving average's entry.

    `v` gets `v/ExponentialMovingAverage`'s entry (bytes untouched) and the shadow keys
    disappear; tensors without an average stay as they are. Returns {shadow: variable}.
    A `.meta`'s Saver stops restoring the shadow variables (meta_edit.py). An existing
    checkpoint at `output` is replaced only with `overwrite=True` (see `remove_keys`).
    """
    with _editing(prefix, output, lock_timeout, overwrite) as edit:
        mapping = ema_mapping(edit.items, ema_name)
        if not mapping:
            raise InvalidArgumentError(f"no moving averages in checkpoint (no key ends in '/{ema_name}')",
                                       path=edit.prefix)
        change = _renamed(edit, dict(mapping), True)
        # The shadow keys are gone and their variables' keys hold the averages: for the
        # Saver, the shadows are removed and nothing is renamed.
        change.removed, change.renamed = list(mapping), {}
        edit.publish(change, progress, drop_meta=drop_meta)
    return mapping


def compact(prefix: str | os.PathLike | Location, *, remove: Iterable[str] = (),
            output: str | os.PathLike | None = None, progress: Progress | None = None,
            drop_meta: bool = False, overwrite: bool = False,
            lock_timeout: float | None = EDIT_WAIT_SECONDS) -> int:
    """Rewrite the data shards holding only the bytes the index references; return bytes freed.

    `remove` names tensors to drop first, in the same commit: the checkpoint is then
    either untouched or both without them and compacted, never one without the other.
    Entries keep their shard and order; only offsets change, and checksums are carried
    over (the bytes are the same). Each entry is checked against its shard first, as a
    read would be; only shards some entry references are read or written, and data
    files of the prefix that no entry references any more are deleted. Published with
    the commit protocol: the prefix names the old checkpoint or the new one, never none.
    """
    return remove_and_compact(prefix, remove, output=output, progress=progress, drop_meta=drop_meta,
                              overwrite=overwrite, lock_timeout=lock_timeout)[1]


def remove_and_compact(prefix: str | os.PathLike | Location, names: Iterable[str] = (), *,
                       glob: Iterable[str] = (), regex: Iterable[str] = (), optimizer: bool = False,
                       exclude: Iterable[str] = (),
                       output: str | os.PathLike | None = None, progress: Progress | None = None,
                       drop_meta: bool = False, overwrite: bool = False,
                       lock_timeout: float | None = EDIT_WAIT_SECONDS) -> tuple[list[str], int]:
    """`remove_keys` (same selection and `overwrite` arguments) and `compact` in one
    commit; return (tensor names removed, data bytes freed)."""
    with _editing(prefix, output, lock_timeout, overwrite) as edit:
        names = _names(names)
        if names or glob or regex or optimizer:
            change = _removal(edit, names, glob, regex, optimizer, exclude)
        else:
            change = _Change(dict(edit.items))
        freed = edit.publish(change, progress, compact=True, drop_meta=drop_meta)
    return [k for k in change.removed if not is_slice_key(k)], freed


def _size(path: str) -> int:
    try:
        return storage.of(path).size(path)
    except CheckpointError:
        return 0
