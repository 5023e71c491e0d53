"""One rank of a torch.distributed job for tests/integrations/test_dcp.py (and
bench/bench_dcp.py): `launch(job, world)` starts `world` of these as subprocesses, with
RANK, WORLD_SIZE and INIT_METHOD (a FileStore) set, gloo on CPU, the JSON job on the
command line.

job = {"mode": "load" | "save" | "scatter", "path": ..., "out": directory for results,
       "tensors": [{"key", "shape", "dtype", "placement"}], "storage_options": {...} | None,
       "rename": [[regex, replacement], ...] | None, "overwrite": bool, "kill_after_bytes": int | None,
       "save_locals": bool (default true: write rank{r}.npz)}
placement: "shard0" / "shard1" (a DTensor sharded on that dim), "replicate" (a
replicated DTensor), "plain" (an ordinary tensor, the same on every rank).

load: dcp.load through ckptkit.dcp.StorageReader; writes rank{r}.npz (each key's local
tensor, as float64/int64 where numpy lacks the dtype) and rank{r}.json (bytes of data
files read, seconds). save: the tensors come from `values` (an .npz of full values),
and dcp.save writes them through ckptkit.dcp.StorageWriter; with "kill_after_bytes" the
last rank kills itself (SIGKILL) once it has written that many bytes of its shard.
scatter: the baseline of the benchmark: rank 0 reads every tensor whole with ckptkit and
scatters each rank its shard (torch.distributed.scatter).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

from ckptkit.storage import base


def count_reads() -> dict[str, int]:
    """Count the bytes read from data files (every data read goes through read_exactly)."""
    counted = {"data_bytes": 0}
    original = base.ReadHandle.read_exactly

    def read_exactly(self, buf, offset, key=None):
        if ".data-" in self.path:
            counted["data_bytes"] += len(buf)
        return original(self, buf, offset, key)

    base.ReadHandle.read_exactly = read_exactly  # type: ignore[method-assign]
    return counted


def time_reads(reader_class: type, total: list[float]) -> None:
    """Add the seconds spent in reader_class.read_data (the reads, not DCP's planning) to total[0]."""
    original = reader_class.read_data

    def read_data(self, plan, planner):
        started = time.perf_counter()
        try:
            return original(self, plan, planner)
        finally:
            total[0] += time.perf_counter() - started

    reader_class.read_data = read_data


def placements(placement: str) -> list:
    return {"shard0": [Shard(0)], "shard1": [Shard(1)], "replicate": [Replicate()]}[placement]


def local_offsets(spec: dict, rank: int, world: int) -> list[int]:
    """Where this rank's shard starts: DTensor's Shard splits as torch.chunk does (pieces of
    ceil(n / world), the last ones shorter or empty)."""
    shape = spec["shape"]
    offsets = [0] * len(shape)
    if spec["placement"] in ("shard0", "shard1"):
        dim = int(spec["placement"][-1])
        offsets[dim] = min(rank * -(-shape[dim] // world), shape[dim])
    return offsets


def empty_state(tensors: list[dict], mesh) -> dict:
    state = {}
    for spec in tensors:
        full = torch.zeros(spec["shape"], dtype=getattr(torch, spec["dtype"]))
        state[spec["key"]] = full if spec["placement"] == "plain" else \
            distribute_tensor(full, mesh, placements(spec["placement"]))
    return state


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    if local.dtype == torch.bfloat16:
        local = local.to(torch.float64)
    return local.numpy()


def main() -> None:
    job = json.loads(sys.argv[1])
    dist.init_process_group("gloo", init_method=os.environ["INIT_METHOD"], rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    from ckptkit.dcp import StorageReader, StorageWriter  # noqa: PLC0415 - after the process group

    counted = count_reads()
    started = time.perf_counter()
    in_read = [0.0]
    if job["mode"] == "load":
        state = empty_state(job["tensors"], mesh)
        time_reads(StorageReader, in_read)
        dist.barrier()  # every rank starts the clock together
        started = time.perf_counter()
        rename = [tuple(r) for r in job["rename"]] if job.get("rename") else None
        dcp.load(state, storage_reader=StorageReader(job["path"], rename=rename,
                                                     storage_options=job.get("storage_options")))
    elif job["mode"] == "scatter":
        state = empty_state(job["tensors"], mesh)
        dist.barrier()
        started = time.perf_counter()
        scatter_from_rank0(job, state, rank, world)
    else:
        with np.load(job["values"]) as values:
            state = {}
            for spec in job["tensors"]:
                full = torch.from_numpy(values[spec["key"]].copy()).to(getattr(torch, spec["dtype"]))
                state[spec["key"]] = full if spec["placement"] == "plain" else \
                    distribute_tensor(full, mesh, placements(spec["placement"]))
        if job.get("kill_after_bytes") is not None and rank == world - 1:
            kill_after(job["kill_after_bytes"])
        dcp.save(state, storage_writer=StorageWriter(job["path"], overwrite=job.get("overwrite", False)))
    seconds = time.perf_counter() - started
    dist.barrier()
    out = job["out"]
    if job.get("save_locals", True):  # (the benchmark keeps its gigabytes to itself)
        np.savez(os.path.join(out, f"rank{rank}.npz"), **{k: as_numpy(v) for k, v in state.items()})
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"data_bytes": counted["data_bytes"], "seconds": seconds, "read_seconds": in_read[0],
                   "offsets": {s["key"]: local_offsets(s, rank, world) for s in job["tensors"]}}, f)
    dist.destroy_process_group()


def scatter_from_rank0(job: dict, state: dict, rank: int, world: int) -> None:
    """Rank 0 reads each tensor whole and sends every rank its shard."""
    import ckptkit  # noqa: PLC0415 - the baseline only

    reader = ckptkit.CheckpointReader(job["path"], framework="torch") if rank == 0 else None
    for spec in job["tensors"]:
        target = state[spec["key"]]
        local = target.to_local() if hasattr(target, "to_local") else target
        pieces = None
        if rank == 0:
            assert reader is not None
            full = reader.get_tensor(spec["key"]).contiguous()
            if spec["placement"] in ("shard0", "shard1"):
                pieces = [p.contiguous() for p in full.chunk(world, dim=int(spec["placement"][-1]))]
            else:
                pieces = [full] * world
        dist.scatter(local, pieces, src=0)


def kill_after(limit: int) -> None:
    """SIGKILL this process once its data shard holds `limit` bytes: a rank dying mid-save."""
    from ckptkit.storage import shard_writer  # noqa: PLC0415 - the crash test only

    original = shard_writer.ShardWriter.write

    def write(self, data, crc=0):
        found = original(self, data, crc)
        if self.offset >= limit:
            self.close()  # the bytes so far are on disk, as a crash would leave them
            os.kill(os.getpid(), signal.SIGKILL)
        return found

    shard_writer.ShardWriter.write = write  # type: ignore[method-assign]


def launch(job: dict, world: int, *, timeout: float = 240.0) -> list[int]:
    """Run `job` on `world` ranks (subprocesses of this script); their exit codes. Ranks
    still running after `timeout` seconds (or after another rank died) are killed."""
    os.makedirs(job["out"], exist_ok=True)
    store = os.path.join(job["out"], f"store-{os.getpid()}-{time.monotonic_ns()}")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, WORLD_SIZE=str(world), INIT_METHOD=f"file://{store}", GLOO_SOCKET_IFNAME="lo",
               PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), json.dumps(job)],
                              env=dict(env, RANK=str(r))) for r in range(world)]
    deadline = time.monotonic() + timeout
    codes: list[int | None] = [None] * world
    while None in codes and time.monotonic() < deadline:
        codes = [p.poll() for p in procs]
        if any(c not in (None, 0) for c in codes):  # one died: the others wait on it forever
            deadline = min(deadline, time.monotonic() + 20.0)
        time.sleep(0.1)
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
    return [p.returncode for p in procs]


if __name__ == "__main__":
    main()
