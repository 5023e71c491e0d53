"""torch.distributed.checkpoint (DCP) storage plug-ins for TF checkpoints.

`dcp.load(state_dict, storage_reader=StorageReader(path))` fills a state dict of
DTensors (sharded any way over any number of ranks), plain tensors or both straight
from a TF checkpoint; `dcp.save(state_dict, storage_writer=StorageWriter(prefix))`
writes one that TF reads. torch's own `HuggingFaceStorageReader` does the same for
safetensors; this is that for TF's formats, through ckptkit's reader and storage layer
(local paths or any URL, the directory lock, the journaled commit).

Reading. `read_metadata` lists every tensor torch can hold (strings such as the TF2
object graph are left out) as a `TensorStorageMetadata` whose chunks are what the file
stores: one for a plain tensor, one per slice for a partitioned variable, so DCP's
planner asks for each (chunk, window) pair a rank's shards overlap. `read_data` reads
every such window with `CheckpointReader.get_slice`: only its bytes (runs of rows
within a page read together, as the kernel would read them anyway; range requests on
a remote store), and a window that is a whole tensor or a whole slice through the
ordinary read, its crc32c checked. A rank whose DTensor shard is 1/N of a tensor
reads about 1/N of its bytes.

Writing. Every rank streams its own share (DCP's planner gives each chunk, and each
replicated tensor once, to one rank) into one data shard, `PREFIX.data-0000r-of-0000N`,
under a temp name (fsynced, not yet visible). The coordinator's `finish` then builds the
index TF's `MergeV2Checkpoints` would produce (a tensor split over ranks is a
partitioned variable: its full-shape entry listing the slices, one entry per slice; a
tensor written whole is a plain entry) and publishes the shards (hard links of the
temps) and the index in one `storage.Commit` under the directory lock, through a
`BundleWriter` (formats/bundle_writer.py), as every V2 writer does. Until that
commit the old checkpoint at the prefix is untouched, so a rank that dies mid-save
leaves it whole; its temp files are swept by the next writer in the directory.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint import planner as dcp_planner
from torch.distributed.checkpoint import storage as dcp_storage
from torch.futures import Future

from .. import storage
from ..errors import CheckpointError, DataLossError, InvalidArgumentError, UnsupportedError
from ..formats import naming
from ..formats.bundle_writer import BundleWriter, drop_stale, make_entry
from ..formats.coding import mask_crc
from ..formats.slices import TensorSlice, check_tiling
from ..ops.convert import check_destination
from ..reader import CheckpointReader
from ..selection import compile_regex
from ..storage.lock import EDIT_WAIT_SECONDS
from ..storage.shard_writer import ShardWriter
from .frameworks import TORCH_DTYPES

if TYPE_CHECKING:
    from ..proto.types_pb2 import DataType

__all__ = ["StorageReader", "StorageWriter", "Rename", "renamer"]

# TF name -> state-dict key: {name: key} (others keep their names), a function (None:
# keep the name), or (regex, replacement) pairs (the first that fully matches applies).
Rename = Mapping[str, str] | Callable[[str], "str | None"] | Sequence[tuple[str, str]]

_TF_OF_TORCH = {getattr(torch, attr): name for name, attr in TORCH_DTYPES.items() if hasattr(torch, attr)}


def renamer(rename: Rename | None, *, path: str | None = None) -> Callable[[str], str]:
    """`rename` as a function from TF names to state-dict keys (see Rename)."""
    if rename is None:
        return lambda name: name
    if isinstance(rename, Mapping):
        table = dict(rename)
        return lambda name: table.get(name, name)
    if callable(rename):
        fn = rename

        def called(name: str) -> str:
            key = fn(name)
            if key is not None and not isinstance(key, str):
                raise InvalidArgumentError(f"rename returned {key!r}, not a str", path=path, key=name)
            return name if key is None else key

        return called
    rules = []
    for rule in rename:
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and all(isinstance(r, str) for r in rule)):
            raise InvalidArgumentError(f"rename rule {rule!r} is not a (regex, replacement) pair of strings",
                                       path=path)
        rules.append((compile_regex(rule[0], path), rule[1]))

    def by_rules(name: str) -> str:
        for pattern, replacement in rules:
            m = pattern.fullmatch(name)
            if m is not None:
                try:
                    return m.expand(replacement)
                except (re.error, IndexError) as exc:  # a group the regex does not have
                    raise InvalidArgumentError(f"rename replacement {replacement!r} for {pattern.pattern!r}: {exc}",
                                               path=path, key=name) from None
        return name

    return by_rules


def _done(value: Any) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut


class StorageReader(dcp_storage.StorageReader):
    """A DCP storage reader of a TF checkpoint (any format ckptkit reads: V2 bundles with
    partitioned variables, V1, .npz, .safetensors; a local path or a URL).

    `rename` maps TF names to the state dict's keys (see `Rename`); two names mapped
    to one key are an InvalidArgumentError. `storage_options`: the fsspec store's
    options for a URL (credentials, endpoint). `dcp.load(..., checkpoint_id=PATH)`
    replaces `path`.
    """

    def __init__(self, path: str | os.PathLike, *, rename: Rename | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.path = storage.fspath(path)
        self.storage_options = storage_options
        self._rename = rename
        self._reader: CheckpointReader | None = None
        self._names: dict[str, str] = {}  # state-dict key -> TF name

    def _open(self) -> CheckpointReader:
        if self._reader is None:
            self._reader = CheckpointReader(self.path, framework="torch", storage_options=self.storage_options)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        self.close()
        if checkpoint_id is not None:
            self.path = storage.fspath(checkpoint_id)

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        """What the checkpoint holds, read afresh: each load starts here, and a reader kept
        from an earlier load may hold the index of a checkpoint replaced since."""
        self.close()
        reader = self._open()
        to_key = renamer(self._rename, path=reader.prefix)
        refused = reader.unsupported_names()
        shapes = reader.get_variable_to_shape_map()
        tensors: dict[str, dcp_metadata.TensorStorageMetadata] = {}
        names: dict[str, str] = {}
        for name in reader:
            if name in refused:
                continue
            key = to_key(name)
            if key in names:
                raise InvalidArgumentError(f"rename maps both {names[key]!r} and {name!r} to this key",
                                           path=reader.prefix, key=key)
            names[key] = name
            shape = tuple(shapes[name])
            chunks = [dcp_metadata.ChunkStorageMetadata(offsets=torch.Size([lo for lo, _ in b]),
                                                        sizes=torch.Size([hi - lo for lo, hi in b]))
                      for b in (s.bounds(shape) for s in reader.slices(name) or [TensorSlice.full(len(shape))])]
            dtype = getattr(torch, TORCH_DTYPES[reader.tensor_dtype(name).name])
            tensors[key] = dcp_metadata.TensorStorageMetadata(
                properties=dcp_metadata.TensorProperties(dtype=dtype), size=torch.Size(shape), chunks=chunks)
        self._names = names
        return dcp_metadata.Metadata(state_dict_metadata=dict(tensors), storage_data=dict(names))

    def set_up_storage_reader(self, metadata: dcp_metadata.Metadata, is_coordinator: bool, *args: Any,
                              **kwargs: Any) -> None:
        self._names = dict(metadata.storage_data or self._names)

    def prepare_local_plan(self, plan: dcp_planner.LoadPlan) -> dcp_planner.LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[dcp_planner.LoadPlan]) -> list[dcp_planner.LoadPlan]:
        return plans

    def read_data(self, plan: dcp_planner.LoadPlan, planner: dcp_planner.LoadPlanner) -> Future[None]:
        """Each item's window of its chunk, read alone (get_slice) and copied into the
        planner's tensor."""
        reader = self._open()
        for item in plan.items:
            key = item.storage_index.fqn
            if item.type != dcp_planner.LoadItemType.TENSOR or key not in self._names:
                raise UnsupportedError("a TF checkpoint holds tensors only: nothing of this kind is stored under "
                                       "this key", path=reader.prefix, key=key)
            name = self._names[key]
            chunk = tuple(item.storage_index.offset or ())
            window = tuple(slice(c + o, c + o + n)
                           for c, o, n in zip(chunk, item.storage_offsets, item.lengths, strict=True))
            value = reader.get_slice(name)[window]
            target = planner.resolve_tensor(item).detach()
            if tuple(target.size()) != tuple(value.size()):
                raise InvalidArgumentError(f"the state dict's tensor has shape {list(target.size())} where the "
                                           f"window read has {list(value.size())}", path=reader.prefix, key=name)
            target.copy_(value)
            planner.commit_tensor(item, target)
        return _done(None)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        """Whether ckptkit finds a checkpoint at `checkpoint_id`."""
        try:
            CheckpointReader(checkpoint_id).close()
        except CheckpointError:
            return False
        return True


# --------------------------------------------------------------------------- writing

class _Shard(NamedTuple):
    """Which data shard a rank writes (SavePlan.storage_data, set by the coordinator)."""

    shard: int
    num_shards: int


class _Written(NamedTuple):
    """Where a rank put one chunk (WriteResult.storage_data, sent to the coordinator)."""

    shard: int
    temp: str  # the rank's not-yet-published data shard
    offset: int
    size: int
    crc32c: int  # masked, as the index stores it
    dtype: DataType
    shape: tuple[int, ...]


def _tf_dtype(tensor: torch.Tensor, *, path: str, key: str) -> Any:
    from .. import dtypes  # noqa: PLC0415 - numpy-heavy, and only writes need it

    name = _TF_OF_TORCH.get(tensor.dtype)
    if name is None:
        raise UnsupportedError(f"TF checkpoints have no {tensor.dtype}", path=path, key=key)
    return dtypes.as_dtype(name)


class StorageWriter(dcp_storage.StorageWriter):
    """A DCP storage writer of TF V2 checkpoints at the prefix `path` (a local path).

    An existing checkpoint at `path` is refused (AlreadyExistsError) unless `overwrite`;
    then it stays whole until the new one is published (see the module doc). State-dict
    keys become TF names as they are. Only tensors are stored: a state dict holding
    other objects (DCP's BYTE_IO items) is an UnsupportedError naming the key.
    `dcp.save(..., checkpoint_id=PREFIX)` replaces `path`.
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False,
                 lock_timeout: float | None = EDIT_WAIT_SECONDS) -> None:
        super().__init__()
        self.path = storage.fspath(path)
        self.overwrite = overwrite
        self.lock_timeout = lock_timeout
        self.is_coordinator = False

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        if checkpoint_id is not None:
            self.path = storage.fspath(checkpoint_id)

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.is_coordinator = is_coordinator
        if storage.is_url(self.path):
            raise UnsupportedError("StorageWriter writes checkpoints on local (or mounted) filesystems; "
                                   "read URLs with StorageReader", path=self.path)
        check_destination(self.path, make_parents=True, exist_ok=self.overwrite)
        storage.of(self.path).makedirs(os.path.dirname(self.path))

    def prepare_local_plan(self, plan: dcp_planner.SavePlan) -> dcp_planner.SavePlan:
        return plan

    def prepare_global_plan(self, plans: list[dcp_planner.SavePlan]) -> list[dcp_planner.SavePlan]:
        """Data shard r of N for rank r."""
        return [dataclasses.replace(plan, storage_data=_Shard(r, len(plans))) for r, plan in enumerate(plans)]

    def write_data(self, plan: dcp_planner.SavePlan,
                   planner: dcp_planner.SavePlanner) -> Future[list[dcp_storage.WriteResult]]:
        """This rank's items, in plan order, streamed into its data shard's temp file."""
        shard: _Shard = plan.storage_data
        if not plan.items:
            return _done([])  # the coordinator writes an empty shard in its place
        for item in plan.items:  # before any byte is written
            if item.type == dcp_planner.WriteItemType.BYTE_IO:
                raise UnsupportedError("a TF checkpoint stores tensors only, not other objects",
                                       path=self.path, key=item.index.fqn)
        out = ShardWriter(naming.data_filename(self.path, shard.shard, shard.num_shards))
        results = []
        try:
            for item in plan.items:
                key = item.index.fqn
                tensor = planner.resolve_data(item)
                assert isinstance(tensor, torch.Tensor)  # a TENSOR or SHARD item
                dtype = _tf_dtype(tensor, path=self.path, key=key)
                local = tensor.detach().to("cpu").contiguous()
                flat = local.reshape(-1).view(torch.uint8).numpy()
                start = out.offset
                crc = out.write(flat)
                results.append(dcp_storage.WriteResult(
                    index=item.index, size_in_bytes=flat.size,
                    storage_data=_Written(shard.shard, out.atomic.temp, start, flat.size, mask_crc(crc), dtype.enum,
                                          tuple(local.shape))))
            out.close()
        except BaseException:
            out.discard()
            raise
        return _done(results)

    def finish(self, metadata: dcp_metadata.Metadata, results: list[list[dcp_storage.WriteResult]]) -> None:
        """The merged index and every rank's shard, published in one commit."""
        chunks: dict[str, dict[tuple[int, ...], _Written]] = {}
        for rank_results in results:
            for result in rank_results:
                chunks.setdefault(result.index.fqn, {}).setdefault(tuple(result.index.offset or ()),
                                                                   result.storage_data)
        shapes: dict[str, tuple[int, ...]] = {}
        for key, md in metadata.state_dict_metadata.items():
            if not isinstance(md, dcp_metadata.TensorStorageMetadata):
                raise UnsupportedError("a TF checkpoint stores tensors only, not other objects",
                                       path=self.path, key=key)
            shapes[key] = tuple(md.size)
        num_shards = len(results)
        temps = {w.shard: w.temp for found in chunks.values() for w in found.values()}
        directory = os.path.dirname(self.path)
        try:
            with storage.Commit(directory, lock_timeout=self.lock_timeout) as tx:
                writer = BundleWriter(tx, self.path, num_shards, new_shards=False)
                for shard in range(num_shards):
                    if shard in temps:
                        writer.link_shard(shard, temps[shard])
                    else:
                        writer.new_shard(shard)  # a rank with nothing to write: an empty shard, as TF leaves one
                for key, shape in shapes.items():
                    self._add(writer, key, shape, chunks.get(key, {}))
                writer.finish()
                drop_stale(tx, self.path)
                tx.publish()
        finally:
            for temp in temps.values():  # published as hard links (or copies), or given up
                storage.of(temp).remove(temp)

    def _add(self, writer: BundleWriter, key: str, shape: tuple[int, ...],
             found: dict[tuple[int, ...], _Written]) -> None:
        """One tensor's entries: a plain entry when one chunk holds all of it, else TF's
        partitioned-variable layout (`BundleWriter.add_slice_entry`: the full-shape entry
        with its slices, and an entry per slice under the slice's key)."""
        if math.prod(shape):  # chunks without elements hold nothing (an uneven split's last ranks)
            found = {offsets: w for offsets, w in found.items() if math.prod(w.shape)}
        if not found:
            raise DataLossError("no rank wrote this tensor", path=self.path, key=key)
        if len(found) == 1 and next(iter(found.values())).shape == shape:
            w = next(iter(found.values()))
            writer.add_entry(key, make_entry(w.dtype, shape, w.shard, w.offset, w.size, w.crc32c))
            return
        tslices = []
        for offsets, w in sorted(found.items()):
            tslice = TensorSlice.from_index(tuple(slice(o, o + n) for o, n in zip(offsets, w.shape, strict=True)),
                                            shape)
            tslices.append(tslice)
            writer.add_slice_entry(key, shape, tslice,
                                   make_entry(w.dtype, w.shape, w.shard, w.offset, w.size, w.crc32c))
        check_tiling(shape, tslices, path=self.path, key=key)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        """Any local path can take a checkpoint prefix."""
        return not storage.is_url(storage.fspath(checkpoint_id))
