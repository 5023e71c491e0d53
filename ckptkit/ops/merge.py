"""Merge checkpoints written in parts (by parallel workers, or a sharded Saver's devices)
into one, as TF's `MergeV2Checkpoints` op does (`tensor_bundle.cc` MergeBundles).

Nothing is re-encoded: every data shard a part's entries use is published under the
merged prefix hard-linked (or, across filesystems, copied byte for byte), and each
index entry is carried over as it is, re-pointed to its shard's new number. Keys must
be disjoint (a duplicate is refused, naming it and both parts), except a partitioned
variable's own entry, which may come from several parts each holding some of its slices:
as in TF, its slice lists are joined (dtype and shape must agree), and the joined slices
must tile the variable exactly.

Differences from TF's op: the parts are left in place (TF renames their data files into
the merged prefix and deletes their indexes), every entry is validated as a read would
validate it before anything is written, only shards that entries use become shards of
the result (numbered in order of first use, as TF numbers them), and the result is
published through the commit protocol under the locks of every directory involved.
`.meta` files are not merged (TF's op ignores them too).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import ExitStack

from .. import storage
from ..errors import DataLossError, InvalidArgumentError, UnsupportedError
from ..formats import bundle, naming, registry
from ..formats.bundle_writer import BundleWriter, drop_stale
from ..formats.slices import TensorSlice, check_tiling, decode_tensor_name_slice, encode_tensor_name_slice, is_slice_key
from ..reader import resolve_prefix
from ..storage import Commit, locked_directory
from ..storage.base import Progress
from .convert import check_destination

__all__ = ["merge_checkpoints"]



def _shown(key: str) -> str:
    """A key for messages: a slice key as `name[slice spec]` rather than its binary form."""
    if is_slice_key(key):
        try:
            name, tslice = decode_tensor_name_slice(bundle.encode_key(key))
            return f"{name}[{tslice.spec()}]"
        except Exception:  # noqa: BLE001 - an undecodable key shows as it is
            return repr(key)
    return key


class _Merge:
    """The merged index, built part by part: entries, shard renumbering, sources."""

    def __init__(self) -> None:
        self.entries: dict[str, bundle.BundleEntryProto] = {}
        self.owner: dict[str, str] = {}                 # key -> prefix it came from
        self.shards: dict[tuple[int, int], int] = {}    # (part, shard) -> new shard id
        self.sources: list[str] = []                    # shard file of each new shard id
        self.header: bundle.BundleHeaderProto | None = None

    def add(self, part: int, data: bundle.BundleReader) -> None:
        index = data.index
        self._check_header(index)
        for key in index.keys():
            if key in self.entries and not self.entries[key].slices:
                raise InvalidArgumentError(
                    f"{_shown(key)!r} is in both {self.owner[key]} and {index.prefix}: the parts "
                    "to merge must hold disjoint tensors", path=index.prefix, key=key)
            entry = index.entry(key)
            if entry.slices:
                self._add_sliced(key, entry, index)
                continue
            if key in self.entries:  # a partitioned variable's entry there, plain data here
                raise InvalidArgumentError(f"partitioned in {self.owner[key]} but not in {index.prefix}",
                                           path=index.prefix, key=key)
            checked = data.checked(key, known_dtype=False).entry  # as a read would check it
            new = bundle.BundleEntryProto()
            new.CopyFrom(checked)
            where = (part, checked.shard_id)
            if where not in self.shards:
                self.shards[where] = len(self.sources)
                self.sources.append(data.shard_path(checked.shard_id))
            new.shard_id = self.shards[where]
            self.entries[key] = new
            self.owner[key] = index.prefix

    def _check_header(self, index: bundle.BundleIndex) -> None:
        header = index.header
        if self.header is None:
            self.header = header
            return
        if header.endianness != self.header.endianness:
            raise InvalidArgumentError("parts of different byte orders cannot be merged", path=index.path)
        if header.version.SerializeToString() != self.header.version.SerializeToString():
            raise InvalidArgumentError("parts of different bundle format versions cannot be merged",
                                       path=index.path)

    def _add_sliced(self, key: str, entry: bundle.BundleEntryProto, index: bundle.BundleIndex) -> None:
        shape = bundle.shape_of(entry, index.path, key)
        existing = self.entries.get(key)
        if existing is None:
            new = bundle.BundleEntryProto()
            new.CopyFrom(entry)
            self.entries[key] = new
            self.owner[key] = index.prefix
            return
        if existing.dtype != entry.dtype or bundle.shape_of(existing, None, key) != shape:
            raise InvalidArgumentError(f"partitioned with another dtype or shape in {self.owner[key]}",
                                       path=index.prefix, key=key)
        existing.slices.extend(entry.slices)

    def check_partitioned(self, output: str) -> None:
        """Every partitioned variable's joined slices tile it, and each is stored."""
        for key, entry in self.entries.items():
            if not entry.slices:
                continue
            shape = bundle.shape_of(entry, None, key)
            tslices = [TensorSlice.from_proto(p, path=self.owner[key], key=key) for p in entry.slices]
            try:
                check_tiling(shape, tslices, path=output, key=key)
            except DataLossError as exc:
                raise InvalidArgumentError(f"the parts' slices do not make the whole variable: {exc.message}",
                                           path=output, key=key) from None
            for tslice in tslices:
                slice_key = bundle.decode_key(encode_tensor_name_slice(key, tslice))
                found = self.entries.get(slice_key)
                if found is None or found.dtype != entry.dtype or \
                        bundle.shape_of(found, None, key) != tslice.shape_in(shape):
                    raise InvalidArgumentError(f"slice {tslice.spec()} is listed but not stored (or not of "
                                               "the variable's dtype and shape) in any part",
                                               path=self.owner[key], key=key)


def _prefixes(parts: Sequence[str]) -> list[str]:
    prefixes: list[str] = []
    for part in parts:
        prefix = resolve_prefix(part)
        if registry.by_extension(prefix) is not None or \
                not storage.isfile(naming.index_filename(prefix)):
            raise UnsupportedError("only V2 checkpoints (.index + .data) can be merged; rewrite this one "
                                   "first with `ckptkit convert OLD NEW`", path=prefix)
        if any(storage.abspath(prefix) == storage.abspath(p) for p in prefixes):
            raise InvalidArgumentError("given twice", path=prefix)
        prefixes.append(prefix)
    return prefixes


def merge_checkpoints(parts: Sequence[str | os.PathLike], output: str | os.PathLike, *,
                      progress: Progress | None = None, overwrite: bool = False) -> dict:
    """Write at `output` one checkpoint holding every tensor of the checkpoints `parts`.

    An existing checkpoint at `output` is refused (AlreadyExistsError) unless `overwrite`;
    then its old files (a `.meta` of another graph, surplus data shards) are deleted in
    the commit that publishes the merged one.

    Returns {"output", "parts" (resolved prefixes), "tensors" (as TF lists them),
    "shards" (data shards of the result)}.
    """
    output = storage.fspath(output)
    if not parts:
        raise InvalidArgumentError("nothing to merge: give at least one checkpoint", path=output)
    check_destination(output, make_parents=True)
    prefixes = _prefixes([storage.fspath(p) for p in parts])
    for prefix in prefixes:
        if storage.abspath(prefix) == storage.abspath(output):
            raise InvalidArgumentError("the output would replace one of the parts; write it under another "
                                       "prefix", path=output)
    check_destination(output, make_parents=True, exist_ok=overwrite)
    storage.of(output).makedirs(os.path.dirname(output))
    directories = sorted({storage.of(p).realpath(os.path.dirname(p) or os.curdir) for p in [*prefixes, output]})
    with ExitStack() as stack:
        for directory in directories:  # one order for everyone: no lock-order deadlock
            stack.enter_context(locked_directory(directory))
        merged = _Merge()
        read_as = {}
        for i, prefix in enumerate(prefixes):
            index_path = naming.index_filename(prefix)
            read_as[index_path] = storage.of(index_path).identity(index_path)
            data = bundle.BundleReader(bundle.BundleIndex(prefix))
            stack.callback(data.close)
            merged.add(i, data)
        merged.check_partitioned(output)
        _publish(merged, read_as, output, progress)
    visible = [k for k in merged.entries if not is_slice_key(k)]
    return {"output": output, "parts": prefixes, "tensors": len(visible), "shards": max(len(merged.sources), 1)}


def _publish(merged: _Merge, read_as: dict, output: str, progress: Progress | None) -> None:
    """The merged bundle at `output` in one commit: each part's used shard linked under
    its new number, the entries re-pointed to them, the parts' headers' version."""
    assert merged.header is not None  # at least one part was added
    num_shards = max(len(merged.sources), 1)
    with Commit(os.path.dirname(output)) as tx:
        for path, before in read_as.items():
            tx.guard(path, before)
        writer = BundleWriter(tx, output, num_shards, header=merged.header, new_shards=False, progress=progress)
        for shard, source in enumerate(merged.sources):
            writer.link_shard(shard, source)
        if not merged.sources:  # no tensor data at all: TF still writes one (empty) shard
            writer.new_shard(0)
        for key, entry in merged.entries.items():
            writer.add_entry(key, entry)
        writer.finish()
        drop_stale(tx, output)
        tx.publish()
