"""Edits of V2 checkpoints as index rewrites: rename, remove, swap in moving averages.

A tensor's bytes never move for a rename or a removal: each BundleEntryProto (dtype,
shape, shard, offset, size, crc32c) is carried over byte for byte under its new key,
and only the small `.index` file is rewritten (atomically: temp file, fsync, rename).
That makes edits of multi-gigabyte checkpoints instant and leaves the data shards,
and every checksum, untouched. The price of `remove_keys` is that the removed tensors'
bytes stay in the shard until `compact` rewrites the shards with live data only.

With `output=`, the edited checkpoint is written under a new prefix instead: a new
index plus the data shards hard-linked (same filesystem) or copied under the new
names. Every write, here and in `compact`, goes through temp names and renames, so a
hard-linked shard is never modified in place and the source checkpoint never changes.

Partitioned variables (entries with `slices`) store their data under binary slice
keys derived from the variable's name; renaming or removing them needs those keys
re-encoded, which is not supported yet (UnsupportedError).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Union

from .errors import (DataLossError, InvalidArgumentError, NotFoundError, TensorNotFoundError,
                     UnsupportedError)
from .format import bundle
from .format.files import AtomicFile, fsync_dir, temp_name
from .reader import resolve_prefix

__all__ = ["rename_keys", "remove_keys", "apply_ema", "ema_mapping", "compact", "is_slice_key"]

Renamer = Union[Mapping[str, str], Callable[[str], Union[str, None]]]
Progress = Callable[[int], None]

_COPY_CHUNK = 8 << 20


def is_slice_key(key: str) -> bool:
    """True for the binary keys under which partitioned variables keep their slices.

    TF encodes them with OrderedCode, which starts every such key with the number 0,
    written as a single 0x00 byte; no variable name starts with NUL.
    """
    return key.startswith("\x00")


class _Edit:
    """An index as (key, serialized entry) pairs, checked and then written out."""

    def __init__(self, prefix: str | os.PathLike) -> None:
        self.prefix = resolve_prefix(prefix)
        if not os.path.isfile(bundle.index_filename(self.prefix)):
            raise UnsupportedError("only V2 checkpoints (.index + .data) can be edited; rewrite a "
                                   "V1 checkpoint first with `ckptkit convert OLD NEW`", path=self.prefix)
        self.index = bundle.BundleIndex(self.prefix)
        self.items = dict(self.index.raw_items())

    def require(self, key: str) -> None:
        if key not in self.items:
            raise TensorNotFoundError("tensor not found in checkpoint", path=self.prefix, key=key)

    def refuse_sliced(self, key: str, what: str) -> None:
        if is_slice_key(key) or self.index.entry(key).slices:
            raise UnsupportedError(f"cannot {what} a partitioned (sliced) variable yet",
                                   path=self.prefix, key=key)

    def write(self, items: Mapping[str, bytes], output: str | os.PathLike | None,
              progress: Progress | None = None) -> str:
        """Write `items` as the index of `output` (default: in place); return the prefix."""
        target = self.prefix if output is None else os.fspath(output)
        if os.path.abspath(target) == os.path.abspath(self.prefix):
            index = bundle.write_index(self.prefix, self.index.header, items.items())
            index.commit()
            fsync_dir(os.path.dirname(self.prefix))
            return self.prefix
        _check_output(target)
        n = self.index.num_shards
        shards = [(bundle.data_filename(self.prefix, s, n), bundle.data_filename(target, s, n))
                  for s in range(n)]
        _place_shards(shards, progress)
        index = bundle.write_index(target, self.index.header, items.items())
        index.commit()
        fsync_dir(os.path.dirname(target))
        return target


def _check_output(target: str) -> None:
    if not os.path.basename(target):
        raise InvalidArgumentError("output prefix must name a checkpoint, not a directory", path=target)
    directory = os.path.dirname(target)
    if directory:
        os.makedirs(directory, exist_ok=True)
    try:  # the old index goes first: the prefix never pairs new shards with an old index
        os.unlink(bundle.index_filename(target))
    except FileNotFoundError:
        pass


def _place_shards(shards: list[tuple[str, str]], progress: Progress | None) -> None:
    """Hard-link (or, across filesystems, copy) each source shard to its new name."""
    for src, dst in shards:
        if not os.path.exists(src):
            raise NotFoundError("data shard not found", path=src)
        tmp = temp_name(dst)
        try:
            os.link(src, tmp)
        except OSError:
            _copy_file(src, dst, progress)
            continue
        try:
            os.replace(tmp, dst)
        except BaseException:
            os.unlink(tmp)
            raise
        if progress is not None:
            progress(os.path.getsize(dst))


def _copy_file(src: str, dst: str, progress: Progress | None) -> None:
    with open(src, "rb") as fin, AtomicFile(dst) as out:
        while chunk := fin.read(_COPY_CHUNK):
            out.write(chunk)
            if progress is not None:
                progress(len(chunk))
        out.commit()


def _plan_renames(edit: _Edit, renamer: Renamer) -> dict[str, str]:
    """{old: new} for every key that changes name (explicit keys must exist)."""
    if isinstance(renamer, Mapping):
        for old, new in renamer.items():
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
                progress: Progress | None = None) -> dict[str, str]:
    """Rename tensors by rewriting the index; return {old: new} for every key renamed.

    `mapping_or_fn` is a {old: new} mapping (every old key must exist) or a function
    called with every key that returns its new name (None or the same name: unchanged).
    Renames happen at once, so `{"a": "b", "b": "a"}` swaps. A new name that is an
    existing key not itself renamed away is refused (InvalidArgumentError) unless
    `overwrite=True`, which drops that tensor. All checks happen before any write.
    `dry_run=True` checks and returns the mapping, writing nothing.
    """
    edit = _Edit(prefix)
    mapping = _plan_renames(edit, mapping_or_fn)
    items = _apply_renames(edit, mapping, overwrite)
    if not dry_run and (mapping or output is not None):
        edit.write(items, output, progress)
    return mapping


def remove_keys(prefix: str | os.PathLike, names: Iterable[str], *,
                output: str | os.PathLike | None = None, progress: Progress | None = None) -> list[str]:
    """Drop tensors from the index; return the names removed.

    The removed tensors' bytes stay in the data shards (nothing references them any
    more); call `compact` to rewrite the shards without them.
    """
    if isinstance(names, str):
        names = [names]
    edit = _Edit(prefix)
    names = list(dict.fromkeys(names))
    for name in names:
        edit.require(name)
        edit.refuse_sliced(name, "remove")
    items = {k: v for k, v in edit.items.items() if k not in set(names)}
    edit.write(items, output, progress)
    return names


def ema_mapping(keys: Iterable[str], ema_name: str = "ExponentialMovingAverage") -> dict[str, str]:
    """{shadow key: variable} for every `VAR/<ema_name>` key: what EMA restore implies.

    This is `ExponentialMovingAverage.variables_to_restore()` seen from the checkpoint:
    each averaged variable restores from its shadow, every other key from itself.
    """
    suffix = "/" + ema_name
    return {k: k[: -len(suffix)] for k in keys
            if k.endswith(suffix) and len(k) > len(suffix) and not is_slice_key(k)}


def apply_ema(prefix: str | os.PathLike, *, output: str | os.PathLike | None = None,
              ema_name: str = "ExponentialMovingAverage",
              progress: Progress | None = None) -> dict[str, str]:
    """Make the inference checkpoint: each variable takes its moving average's entry.

    `v` gets `v/ExponentialMovingAverage`'s entry (bytes untouched) and the shadow keys
    disappear; tensors without an average stay as they are. Returns {shadow: variable}.
    """
    edit = _Edit(prefix)
    mapping = ema_mapping(edit.items, ema_name)
    if not mapping:
        raise InvalidArgumentError(f"no moving averages in checkpoint (no key ends in '/{ema_name}')",
                                   path=edit.prefix)
    for old in mapping:
        edit.refuse_sliced(old, "rename")
    items = _apply_renames(edit, mapping, overwrite=True)
    edit.write(items, output, progress)
    return mapping


def compact(prefix: str | os.PathLike, *, output: str | os.PathLike | None = None,
            progress: Progress | None = None) -> int:
    """Rewrite the data shards holding only the bytes the index references; return bytes freed.

    Entries keep their shard and order; only offsets change, and checksums are carried
    over (the bytes are the same). In place, the old index is removed before the new
    shards are renamed in, so the prefix names the old checkpoint, none, or the new one.
    """
    edit = _Edit(prefix)
    target = edit.prefix if output is None else os.fspath(output)
    in_place = os.path.abspath(target) == os.path.abspath(edit.prefix)
    n = edit.index.num_shards
    by_shard: dict[int, list[tuple[str, object]]] = {s: [] for s in range(n)}
    for key in edit.items:
        entry = edit.index.entry(key)
        if entry.size:
            by_shard[entry.shard_id].append((key, entry))
    if not in_place:
        _check_output(target)
    outs = [AtomicFile(bundle.data_filename(target, s, n)) for s in range(n)]
    index = None
    freed = 0
    try:
        items = dict(edit.items)
        for shard, entries in by_shard.items():
            src = bundle.data_filename(edit.prefix, shard, n)
            entries.sort(key=lambda ke: ke[1].offset)
            offset = 0
            with open(src, "rb") as fin:
                freed += os.fstat(fin.fileno()).st_size
                for key, entry in entries:
                    fin.seek(entry.offset)
                    remaining = entry.size
                    while remaining:
                        chunk = fin.read(min(remaining, _COPY_CHUNK))
                        if not chunk:
                            raise DataLossError("data shard ended early", path=src, key=key)
                        outs[shard].write(chunk)
                        remaining -= len(chunk)
                        if progress is not None:
                            progress(len(chunk))
                    entry.offset = offset
                    offset += entry.size
                    items[key] = entry.SerializeToString()
            freed -= offset
        for f in outs:
            f.close()
        index = bundle.write_index(target, edit.index.header, items.items())
        try:
            os.unlink(bundle.index_filename(target))
        except FileNotFoundError:
            pass
        for f in outs:
            f.commit()
        index.commit()
    finally:
        for f in outs:
            f.discard()
        if index is not None:
            index.discard()
    fsync_dir(os.path.dirname(target))
    return freed
