"""Edits of V2 checkpoints as index rewrites: rename, remove, swap in moving averages.

A tensor's bytes never move for a rename or a removal: each BundleEntryProto (dtype,
shape, shard, offset, size, crc32c) is carried over byte for byte under its new key,
and only the small `.index` file is rewritten (atomically: temp file, fsync, rename).
That makes edits of multi-gigabyte checkpoints instant and leaves the data shards,
and every checksum, untouched. The price of `remove_keys` is that the removed tensors'
bytes stay in the shard until `compact` rewrites the shards with live data only.

With `output=`, the edited checkpoint is written under a new prefix instead: a new
index plus the data shards its entries reference, hard-linked (same filesystem) or
copied under the new names. Every edit holds the directory lock from before it reads
the index until it publishes, and publishes through `storage.Commit` (temp
names, a journal where several files change, renames, the index last), so a
hard-linked shard is never modified in place, the source checkpoint never changes,
and a crash leaves the old checkpoint or the new one.

Partitioned variables (entries with `slices`) store their data under binary slice
keys derived from the variable's name; renaming or removing them needs those keys
re-encoded, which is not supported yet (UnsupportedError).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager

from . import storage
from .errors import (
    CheckpointError,
    ConcurrentModificationError,
    InvalidArgumentError,
    TensorNotFoundError,
    UnsupportedError,
)
from .format import bundle
from .format.slices import is_slice_key  # re-exported: part of this module's API
from .locate import resolve_prefix
from .storage import Commit, locked_directory
from .storage.base import copy_range
from .storage.lock import EDIT_WAIT_SECONDS

__all__ = ["rename_keys", "remove_keys", "apply_ema", "ema_mapping", "compact", "is_slice_key"]

Renamer = Mapping[str, str] | Callable[[str], str | None]
Progress = Callable[[int], None]



class _Edit:
    """An index as (key, serialized entry) pairs, read under the directory lock, checked,
    and then published (in place, or under `output` with the data shards linked)."""

    def __init__(self, prefix: str, output: str | None) -> None:
        self.prefix = prefix
        self.target = prefix if output is None else output
        self.in_place = storage.abspath(self.target) == storage.abspath(prefix)
        index_path = bundle.index_filename(prefix)
        if not storage.isfile(index_path):
            raise UnsupportedError("only V2 checkpoints (.index + .data) can be edited; rewrite a "
                                   "V1 checkpoint (or a .npz/.safetensors file) first with "
                                   "`ckptkit convert OLD NEW`", path=prefix)
        self.read_as = storage.of(index_path).identity(index_path)
        self.index = bundle.BundleIndex(prefix)
        self.data = bundle.BundleData(self.index)
        self.items = dict(self.index.raw_items())

    def close(self) -> None:
        self.data.close()

    def require(self, key: str) -> None:
        if key not in self.items:
            raise TensorNotFoundError("tensor not found in checkpoint", path=self.prefix, key=key)

    def refuse_sliced(self, key: str, what: str) -> None:
        if is_slice_key(key) or self.index.entry(key).slices:
            raise UnsupportedError(f"cannot {what} a partitioned (sliced) variable yet",
                                   path=self.prefix, key=key)

    def data_entries(self, items: Mapping[str, bytes]) -> list[tuple[str, bundle.BundleEntryProto]]:
        """(source key, entry) of every entry of the source index still in `items` (whose
        values are the source's serialized entries, under old or new keys) that stores
        bytes, each checked by `BundleData.checked` — the same checks a read makes, so an
        edit never trusts a lying index further than a read does."""
        live = {id(v) for v in items.values()}
        out = []
        for key in [k for k, v in self.items.items() if id(v) in live]:
            entry = self.data.checked(key, known_dtype=False).entry
            if not entry.slices:  # a partitioned variable's own entry holds no bytes
                out.append((key, entry))
        return out

    def write(self, items: Mapping[str, bytes], progress: Progress | None = None) -> str:
        """Publish `items` as the index of the target; return the target prefix."""
        n = self.index.num_shards
        directory = os.path.dirname(self.target)
        with Commit(directory) as tx:
            tx.guard(bundle.index_filename(self.prefix), self.read_as)
            if not self.in_place:
                shards = sorted({entry.shard_id for _, entry in self.data_entries(items)})
                new = set()
                for s in shards:
                    new.add(bundle.data_filename(self.target, s, n))
                    tx.link(self.data.shard_path(s), bundle.data_filename(self.target, s, n),
                            progress=progress)
                for old in bundle.existing_data_files(self.target):
                    if old not in new:
                        tx.delete_after(old)
            bundle.write_index(self.target, self.index.header, items.items(),
                               out=tx.file(bundle.index_filename(self.target)))
            tx.publish()
        return self.target


@contextmanager
def _editing(prefix: str | os.PathLike, output: str | os.PathLike | None,
             lock_timeout: float | None) -> Iterator[_Edit]:
    """Lock the checkpoint's directory (and the output's), then read the index.

    Reading under the lock means no ckptkit writer can replace the index between this
    read and the edit's publication; `Commit.guard` catches any other program.
    """
    given, prefix = prefix, resolve_prefix(prefix)
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
        # Again, under the lock: a Saver may have pruned or replaced what `given` named.
        now = resolve_prefix(given)
        if os.path.dirname(now) != os.path.dirname(prefix):
            raise ConcurrentModificationError("changed by another program while waiting for its lock; "
                                              "nothing was written, run it again", path=os.fspath(given))
        edit = _Edit(now, target)
        stack.callback(edit.close)
        yield edit


def _plan_renames(edit: _Edit, renamer: Renamer) -> dict[str, str]:
    """{old: new} for every key that changes name (explicit keys must exist)."""
    if isinstance(renamer, Mapping):
        for old in renamer:
            edit.require(old)
        pairs = dict(renamer)
    elif callable(renamer):
        pairs = {}
        for key in edit.items:
            if is_slice_key(key):
                continue
            new = renamer(key)
            if new is not None:
                pairs[key] = new
    else:
        raise InvalidArgumentError(f"expected a mapping or a function, got {type(renamer).__name__}")
    mapping = {}
    for old, new in pairs.items():
        if not isinstance(new, str) or not new:
            raise InvalidArgumentError(f"new name must be a non-empty string, got {new!r}",
                                       path=edit.prefix, key=old)
        if new != old:
            edit.refuse_sliced(old, "rename")
            mapping[old] = new
    return mapping


def _apply_renames(edit: _Edit, mapping: dict[str, str], overwrite: bool) -> dict[str, bytes]:
    """The new index items, after checking every collision before anything is written."""
    sources: dict[str, str] = {}
    for old, new in mapping.items():
        if new in sources:
            raise InvalidArgumentError(f"both {sources[new]!r} and {old!r} would be renamed to {new!r}",
                                       path=edit.prefix, key=new)
        sources[new] = old
    for new, old in sources.items():
        if new in edit.items and new not in mapping:
            if not overwrite:
                raise InvalidArgumentError(
                    f"cannot rename {old!r} to {new!r}: that key already exists "
                    "(overwrite=True, or ckptkit rename --overwrite, replaces it)", path=edit.prefix, key=new)
            edit.refuse_sliced(new, "overwrite")
    items = {k: v for k, v in edit.items.items() if k not in mapping and k not in sources}
    for old, new in mapping.items():
        items[new] = edit.items[old]
    return items


def rename_keys(prefix: str | os.PathLike, mapping_or_fn: Renamer, *, overwrite: bool = False,
                output: str | os.PathLike | None = None, dry_run: bool = False,
                progress: Progress | None = None,
                lock_timeout: float | None = EDIT_WAIT_SECONDS) -> dict[str, str]:
    """Rename tensors by rewriting the index; return {old: new} for every key renamed.

    `mapping_or_fn` is a {old: new} mapping (every old key must exist) or a function
    called with every key that returns its new name (None or the same name: unchanged).
    Renames happen at once, so `{"a": "b", "b": "a"}` swaps. A new name that is an
    existing key not itself renamed away is refused (InvalidArgumentError) unless
    `overwrite=True`, which drops that tensor. All checks happen before any write.
    `dry_run=True` checks and returns the mapping, writing nothing.
    Every edit holds the directory lock, waiting up to `lock_timeout` seconds for it.
    """
    with _editing(prefix, output, lock_timeout) as edit:
        mapping = _plan_renames(edit, mapping_or_fn)
        items = _apply_renames(edit, mapping, overwrite)
        if not dry_run and (mapping or output is not None):
            edit.write(items, progress)
    return mapping


def remove_keys(prefix: str | os.PathLike, names: Iterable[str], *,
                output: str | os.PathLike | None = None, progress: Progress | None = None,
                lock_timeout: float | None = EDIT_WAIT_SECONDS) -> list[str]:
    """Drop tensors from the index; return the names removed.

    The removed tensors' bytes stay in the data shards (nothing references them any
    more); `compact(prefix, remove=names)` removes and reclaims in one commit.
    """
    names = _names(names)
    with _editing(prefix, output, lock_timeout) as edit:
        edit.write(_without(edit, names), progress)
    return names


def _names(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([names] if isinstance(names, str) else names))


def _without(edit: _Edit, names: list[str]) -> dict[str, bytes]:
    """The index items without `names` (each must exist and not be partitioned)."""
    for name in names:
        edit.require(name)
        edit.refuse_sliced(name, "remove")
    gone = set(names)
    return {k: v for k, v in edit.items.items() if k not in gone}


def ema_mapping(keys: Iterable[str], ema_name: str = "ExponentialMovingAverage") -> dict[str, str]:
    """{shadow key: variable} for every `VAR/<ema_name>` key: what EMA restore implies.

    This is `ExponentialMovingAverage.variables_to_restore()` seen from the checkpoint:
    each averaged variable restores from its shadow, every other key from itself.
    """
    suffix = "/" + ema_name
    return {k: k[: -len(suffix)] for k in keys
            if k.endswith(suffix) and len(k) > len(suffix) and not is_slice_key(k)}


def apply_ema(prefix: str | os.PathLike, *, output: str | os.PathLike | None = None,
              ema_name: str = "ExponentialMovingAverage", progress: Progress | None = None,
              lock_timeout: float | None = EDIT_WAIT_SECONDS) -> dict[str, str]:
    """Make the inference checkpoint: each variable takes its moving average's entry.

    `v` gets `v/ExponentialMovingAverage`'s entry (bytes untouched) and the shadow keys
    disappear; tensors without an average stay as they are. Returns {shadow: variable}.
    """
    with _editing(prefix, output, lock_timeout) as edit:
        mapping = ema_mapping(edit.items, ema_name)
        if not mapping:
            raise InvalidArgumentError(f"no moving averages in checkpoint (no key ends in '/{ema_name}')",
                                       path=edit.prefix)
        for old in mapping:
            edit.refuse_sliced(old, "rename")
        edit.write(_apply_renames(edit, mapping, overwrite=True), progress)
    return mapping


def compact(prefix: str | os.PathLike, *, remove: Iterable[str] = (),
            output: str | os.PathLike | None = None, progress: Progress | None = None,
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
    names = _names(remove)
    with _editing(prefix, output, lock_timeout) as edit:
        return _compact(edit, _without(edit, names), progress)


def _compact(edit: _Edit, items: Mapping[str, bytes], progress: Progress | None) -> int:
    """Publish `items` (source entries) with freshly written shards; return bytes freed."""
    by_shard: dict[int, list[tuple[str, bundle.BundleEntryProto]]] = {}
    for key, entry in edit.data_entries(items):
        by_shard.setdefault(entry.shard_id, []).append((key, entry))
    new_key = {id(v): k for k, v in items.items()}
    out_items = dict(items)
    n = edit.index.num_shards
    freed = 0
    with Commit(os.path.dirname(edit.target)) as tx:
        tx.guard(bundle.index_filename(edit.prefix), edit.read_as)
        new = set()
        for shard in sorted(by_shard):
            out = tx.shard(bundle.data_filename(edit.target, shard, n))
            new.add(out.path)
            freed += edit.data.shard_size(shard)
            source = edit.data.shard_handle(shard)
            for key, checked in sorted(by_shard[shard], key=lambda ke: ke[1].offset):
                entry = bundle.BundleEntryProto()
                entry.CopyFrom(checked)  # the reader's cached entry stays as read
                entry.offset = out.offset
                copy_range(source, checked.offset, checked.size, out, path=edit.data.shard_path(shard), key=key,
                           progress=progress)
                out_items[new_key[id(edit.items[key])]] = entry.SerializeToString()
            freed -= out.offset
            out.close()
        for old in bundle.existing_data_files(edit.target):
            if old not in new:
                if edit.in_place:
                    freed += _size(old)
                tx.delete_after(old)
        bundle.write_index(edit.target, edit.index.header, out_items.items(),
                           out=tx.file(bundle.index_filename(edit.target)))
        tx.publish()
    return freed


def _size(path: str) -> int:
    try:
        return storage.of(path).size(path)
    except CheckpointError:
        return 0
