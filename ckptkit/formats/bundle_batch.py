"""Many tensors of a V2 bundle in few large reads (what `load` and `get_tensors` do).

Plain numeric entries that `BundleReader.plans` could plan are read shard by shard in
offset order, neighbours coalesced into runs read with one call each, runs spread over
the store's reader threads (`reader_pool`, shared by every reader); the rest go through
`BundleReader.read_full` one by one.
"""
from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataLossError
from .bundle_index import gc_paused
from .coding import crc32c

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from ..storage.base import ReadHandle
    from .bundle import BundleReader, Plan

__all__ = ["read_many", "reader_pool"]

_RUN_GAP = 64 << 10  # bytes between two tensors that a batched read reads through rather than seek


def read_many(reader: BundleReader, keys: Iterable[str], verify: bool = True) -> dict[str, np.ndarray]:
    """{key: new array} for `keys` (in their order), each crc32c checked unless not `verify`.

    Planned tensors are read shard by shard in offset order. Small ones in large
    sequential runs: byte ranges at most `_RUN_GAP` apart coalesced into one read of
    at most the store's `piece_bytes`, then each tensor's bytes checked and copied
    out into its own (aligned) array. Runs and tensors of up to one piece are tasks
    for the store's `read_threads` threads, so one thread's crc32c and copies overlap
    another's read, and only that many runs are in memory at once; bigger tensors are
    read one after the other, each in pieces by those threads (`BundleReader.read_planned`).
    Entries without a plan (partitioned, strings, big-endian, unusual layouts) go
    through `read_full`. A damaged tensor is a DataLossError naming it.
    """
    with gc_paused():  # 100k small results and their bookkeeping: see gc_paused
        return _read_many(reader, list(keys), verify)

def _read_many(reader: BundleReader, keys: list[str], verify: bool) -> dict[str, np.ndarray]:
    planned: list[tuple[int, int, str, Plan]] = []
    others: list[str] = []
    unique = list(dict.fromkeys(keys))  # a name asked for twice is read once
    for key, plan in zip(unique, reader.plans(unique), strict=True):
        if plan is None:
            others.append(key)
        else:
            planned.append((plan[6], plan[1], key, plan))
    planned.sort()  # by shard and offset (then key: unique), so plans are never compared
    for handle in {id(item[3][7]): item[3][7] for item in planned}.values():
        _advise_sequential(handle)
    tasks, big = _batch(planned)
    out: dict[str, np.ndarray] = {}
    if tasks:
        threads = max(run[0][1][7].read_threads for run in tasks)
        read = functools.partial(_read_run, reader, verify=verify)
        for done in (reader_pool(threads).map(read, tasks) if len(tasks) > 1 else map(read, tasks)):
            out.update(done)
    for key, plan in big:
        out[key] = reader.read_planned(key, plan, verify)
    for key in others:
        out[key] = reader.read_full(key, verify=verify)
    return {key: out[key] for key in keys}

def _batch(planned: list[tuple[int, int, str, Plan]]) \
        -> tuple[list[list[tuple[str, Plan]]], list[tuple[str, Plan]]]:
    """(runs, big): runs are lists of (key, plan) read with one call each, big the
    (key, plan)s of tensors larger than one piece."""
    runs: list[list[tuple[str, Plan]]] = []
    big: list[tuple[str, Plan]] = []
    run: list[tuple[str, Plan]] = []
    start = end = -1
    for shard, offset, key, plan in planned:
        size, limit = plan[2], plan[7].piece_bytes
        if size > limit:
            big.append((key, plan))
            continue
        if run and (shard != run[0][1][6] or not end <= offset <= end + _RUN_GAP
                    or offset + size - start > limit):
            runs.append(run)
            run = []
        if not run:
            start = offset
        run.append((key, plan))
        end = offset + size
    if run:
        runs.append(run)
    return runs, big

def _read_run(reader: BundleReader, run: list[tuple[str, Plan]], verify: bool) -> list[tuple[str, np.ndarray]]:
    """The tensors of one run: one read of their byte range, then each checked and copied."""
    if len(run) == 1:
        key, plan = run[0]
        return [(key, reader.read_planned(key, plan, verify))]
    first_key, first = run[0]
    _, start, _, _, _, _, shard, handle = first
    last = run[-1][1]
    buf = np.empty(last[1] + last[2] - start, np.uint8)
    handle.read_exactly(buf.data, start, first_key)
    out = []
    for key, (_, offset, size, crc, dtype, shape, _, _) in run:
        part = buf[offset - start:offset - start + size]
        if verify and crc32c(part) != crc:
            raise DataLossError("checksum mismatch in tensor data", path=reader.shard_path(shard), key=key)
        out.append((key, part.view(dtype).reshape(shape).copy()))
    return out


def _advise_sequential(handle: ReadHandle) -> None:
    """Tell the kernel a local shard is about to be read front to back (a batch reads it in
    offset order): it reads ahead further, so a cold read keeps the disk busy while the
    threads check and copy. A hint: refused or unsupported, nothing changes."""
    fd = handle.fileno()
    advise = getattr(os, "posix_fadvise", None)
    if fd is None or advise is None:
        return
    try:
        advise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except OSError:
        pass


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()


def _forget_pools() -> None:
    """In a forked child the parent's reader threads do not exist, but its executors still
    count them: a read handed to one would wait forever. The child makes its own."""
    global _POOL_LOCK
    _POOLS.clear()
    _POOL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def reader_pool(threads: int) -> ThreadPoolExecutor:
    """Threads shared by every reader of a kind of store (they idle between reads; created
    on first use): 2 for local disks, more for stores where each read waits on a network."""
    with _POOL_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 - only big reads need it

            pool = _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ckptkit-read")
        return pool
