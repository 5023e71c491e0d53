"""Average checkpoints: the element-wise mean of several, as tensor2tensor's
`avg_checkpoints` and OpenNMT's `average_models` make it (an ensemble in one model).

Float tensors (float16, bfloat16, float32, float64, float8) and complex ones are summed
in float64 (complex128), divided by the count and stored in their own dtype. Everything
else — integers (`global_step`, an optimizer's `iter`), bools and strings (the TF2
object graph `_CHECKPOINTABLE_OBJECT_GRAPH`) — is taken from the last checkpoint given,
the newest one in `--last N` order. Every checkpoint must hold the same keys with the
same dtypes and shapes; the first difference is refused, naming the key.

Memory stays bounded: each tensor is read a chunk at a time from every checkpoint
(`CheckpointReader.iter_chunks`, crc32c checked across the whole entry) and the mean
streamed into the new data shard (`values.Deferred.chunks`), so averaging 1 GiB
tensors costs a few chunks, not N tensors. Partitioned variables stored with the same
slices everywhere are averaged slice by slice and written partitioned as they were;
read whole where the inputs differ in partitioning (or are V1), and written unpartitioned.

The result is written by a `BundleWriter` (formats/bundle_writer.py) in one commit
(temp files, the index after the data); the last checkpoint's `.meta` graph, if it has
one, is published beside it in the same commit, after the index (hard-linked or copied), so a TF1 user can
`import_meta_graph` and restore the average as they would the original. No
`checkpoint` state file is written. An existing output is replaced only with
`overwrite=True`, its old `.meta` and surplus data shards going in that same commit.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack

import numpy as np

from .. import dtypes as _dtypes
from .. import storage
from ..errors import InvalidArgumentError, NotFoundError
from ..formats import naming, values
from ..formats.bundle_writer import BundleWriter, drop_stale, write_tensors
from ..formats.slices import SlicedTensor, TensorSlice
from ..location import Location, locate
from ..reader import CheckpointReader
from ..storage.base import Progress
from ..tf1.state import get_checkpoint_state
from .convert import check_destination

__all__ = ["average_checkpoints", "last_checkpoints"]


AVERAGED = ("float", "complex")  # DType.category values that are averaged
AVERAGE_CHUNK_BYTES = 1 << 20  # per checkpoint and step: float64 sums of a chunk stay a few MiB


def last_checkpoints(directory: str | os.PathLike, n: int) -> list[str]:
    """The `n` newest checkpoints of `directory`, oldest first, from its `checkpoint`
    state file (`all_model_checkpoint_paths`, which TF's Saver and CheckpointManager keep
    oldest to newest). Fewer than `n` listed is an InvalidArgumentError: an average of
    fewer checkpoints than asked for is not what was asked for."""
    directory = storage.fspath(directory)
    if not isinstance(n, int) or n < 1:
        raise InvalidArgumentError(f"--last needs a positive count, got {n!r}", path=directory)
    state = get_checkpoint_state(directory, strict=True)
    if state is None:
        raise NotFoundError("no 'checkpoint' state file here to say which checkpoints are newest",
                            path=directory)
    paths = list(state.all_model_checkpoint_paths)
    if state.model_checkpoint_path not in paths:
        paths.append(state.model_checkpoint_path)
    if len(paths) < n:
        raise InvalidArgumentError(f"asked for the last {n} checkpoints; the state file lists {len(paths)}",
                                   path=directory)
    return paths[-n:]


def _mean_chunks(readers: Sequence[CheckpointReader], name: str, part: TensorSlice | None,
                 dtype: _dtypes.DType, chunk_bytes: int, progress: Progress | None) -> Iterator[np.ndarray]:
    """The element-wise mean of `name` over `readers`, a chunk at a time, in `dtype`.

    One reader: its values as they are (what integers and strings take from the last).
    Equal dtypes and element counts give every reader the same chunk boundaries.
    """
    streams = [r.iter_chunks(name, chunk_bytes, part=part, in_order=True) for r in readers]
    if len(streams) == 1:
        for piece in streams[0]:
            if progress is not None:
                progress(piece.nbytes if piece.dtype.kind != "O" else 0)
            yield piece
        return
    wide = np.complex128 if dtype.category == "complex" else np.float64
    count = len(streams)
    for pieces in zip(*streams, strict=True):
        total = pieces[0].astype(wide)
        for piece in pieces[1:]:
            total += piece.astype(wide)
        total /= count
        if progress is not None:
            progress(sum(p.nbytes for p in pieces))
        yield total.astype(dtype.numpy)


def _joined(chunks: Callable[[], Iterable[np.ndarray]], dtype: _dtypes.DType, shape: tuple[int, ...]) -> np.ndarray:
    """The whole tensor from its chunks (for writers that take whole arrays)."""
    parts = list(chunks())
    if not parts:
        return np.empty(shape, dtype=dtype.numpy)
    return np.concatenate(parts).reshape(shape)


def _deferred(readers: Sequence[CheckpointReader], name: str, part: TensorSlice | None, dtype: _dtypes.DType,
              shape: tuple[int, ...], chunk_bytes: int, progress: Progress | None) -> values.Deferred:
    chunks = functools.partial(_mean_chunks, readers, name, part, dtype, chunk_bytes, progress)
    if dtype.is_string:  # no chunked layout for strings: the last checkpoint's value, whole
        return values.Deferred(dtype, shape, lambda: readers[-1].get_tensor(name))
    return values.Deferred(dtype, shape, functools.partial(_joined, chunks, dtype, shape), chunks)


def _check_same(readers: Sequence[CheckpointReader]) -> None:
    """Same keys, dtypes and shapes in every checkpoint; else name the first difference."""
    last = readers[-1]
    dtypes, shapes = last.get_variable_to_dtype_map(), last.get_variable_to_shape_map()
    for reader in readers[:-1]:
        for key in reader:
            if key not in last:
                raise InvalidArgumentError(f"in {reader.prefix} but not in {last.prefix}: every checkpoint "
                                           "averaged must hold the same tensors", path=reader.prefix, key=key)
        for key in last:
            if key not in reader:
                raise InvalidArgumentError(f"in {last.prefix} but not in {reader.prefix}: every checkpoint "
                                           "averaged must hold the same tensors", path=reader.prefix, key=key)
        their_dtypes, their_shapes = reader.get_variable_to_dtype_map(), reader.get_variable_to_shape_map()
        for key in last:
            if their_dtypes[key] != dtypes[key] or their_shapes[key] != shapes[key]:
                raise InvalidArgumentError(
                    f"{their_dtypes[key].name}{their_shapes[key]} here, {dtypes[key].name}{shapes[key]} in "
                    f"{last.prefix}: averaged tensors must agree in dtype and shape", path=reader.prefix, key=key)


def _shared_slices(readers: Sequence[CheckpointReader], name: str) -> list[TensorSlice]:
    """The slices every (V2) checkpoint stores `name` as, when they all agree; else []."""
    if any(r.format != "v2" for r in readers):
        return []
    first = readers[-1].slices(name)
    if all(r.slices(name) == first for r in readers[:-1]):
        return first
    return []


def _plan(readers: Sequence[CheckpointReader], chunk_bytes: int, progress: Progress | None) -> tuple[dict, int]:
    """{name: what `write_tensors` writes} and how many tensors are averaged."""
    last = readers[-1]
    dtypes, shapes = last.get_variable_to_dtype_map(), last.get_variable_to_shape_map()
    plan: dict[str, values.Deferred | SlicedTensor] = {}
    averaged = 0
    for name in last:
        dtype, shape = dtypes[name], tuple(shapes[name])
        sources = readers if dtype.category in AVERAGED else readers[-1:]
        averaged += dtype.category in AVERAGED
        slices = _shared_slices(sources, name)
        if slices:
            plan[name] = SlicedTensor(shape, [
                (s, _deferred(sources, name, s, dtype, s.shape_in(shape), chunk_bytes, progress)) for s in slices])
        else:
            plan[name] = _deferred(sources, name, None, dtype, shape, chunk_bytes, progress)
    return plan, averaged


def average_checkpoints(paths: Sequence[str | os.PathLike | Location], output: str | os.PathLike, *,
                        progress: Progress | None = None, chunk_bytes: int = AVERAGE_CHUNK_BYTES,
                        overwrite: bool = False) -> dict:
    """Write at `output` the element-wise mean of the checkpoints `paths`, two or more
    (see the module docstring for what is averaged and what is taken from the last one).

    Each of `paths` is resolved once (a Location is taken as it is).
    An existing checkpoint at `output` is refused (AlreadyExistsError) unless `overwrite`.
    Returns {"output", "inputs" (the resolved prefixes), "tensors", "averaged", "copied",
    "meta" (the .meta written beside the output, or None)}.
    """
    output = storage.fspath(output)
    if len(paths) < 2:
        raise InvalidArgumentError(f"averaging needs two or more checkpoints, got {len(paths)}", path=output)
    check_destination(output, make_parents=True)
    with ExitStack() as stack:
        readers = [stack.enter_context(CheckpointReader(locate(p))) for p in paths]
        for reader in readers:
            if storage.abspath(reader.prefix) == storage.abspath(output):
                raise InvalidArgumentError("the output would replace one of the checkpoints averaged; "
                                           "write it under another prefix", path=output)
        check_destination(output, make_parents=True, exist_ok=overwrite)
        _check_same(readers)
        plan, averaged = _plan(readers, chunk_bytes, progress)
        meta = _write(output, plan, readers[-1].prefix)
    return {"output": output, "inputs": [r.prefix for r in readers], "tensors": len(plan),
            "averaged": averaged, "copied": len(plan) - averaged, "meta": meta}


def _write(output: str, plan: dict, source_prefix: str) -> str | None:
    """The average at `output`, in one commit: its bundle, then the `.meta` of
    `source_prefix` published beside it (after its index, as a Saver does; hard-linked or
    copied), or without one an old `.meta` at the output (of another graph) deleted.
    Returns the `.meta` published, or None."""
    storage.of(output).makedirs(os.path.dirname(output))
    with storage.Commit(os.path.dirname(output)) as tx:
        writer = BundleWriter(tx, output)
        write_tensors(writer, plan)
        writer.finish()
        drop_stale(tx, output)
        source, target = naming.meta_graph_filename(source_prefix), naming.meta_graph_filename(output)
        published: str | None = target
        try:
            tx.link(source, target, what="meta graph")
        except NotFoundError:
            published = None
        tx.publish()
    return published
