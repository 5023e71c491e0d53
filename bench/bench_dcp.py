"""A TF checkpoint loaded into DTensors on N ranks: ckptkit.dcp.StorageReader (each rank
reads its own windows) against the usual way (rank 0 reads every tensor whole, then
scatters each rank its shard).

Writes a checkpoint of `--gib` GiB with ckptkit (16 float32 tensors of 4096 columns,
loaded as DTensors: 8 sharded on dim 0, 5 on dim 1, 3 small ones replicated),
then runs each contender `--repeat` times on `--ranks` CPU ranks (gloo, subprocesses
started by tests/integrations/dcp_worker.py), in alternating order. Per rank it prints
the bytes read from data files and the seconds the load took (in the rank, after
process start and process-group set-up; medians over the rounds). The page cache is
warm (every file read once before the first round) unless `--cold`: then the
checkpoint's files are pushed out of it (posix_fadvise DONTNEED, page_cache.py) before
each contender's run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integrations"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dcp_worker import launch  # the tests' rank launcher
from page_cache import evict

import ckptkit

COLUMNS = 4096


def tensors(gib: float) -> dict[str, tuple[tuple[int, ...], str, str]]:
    """name -> (shape, dtype, placement): 16 tensors of `gib` GiB in all, rows a multiple of 8
    (13 sharded tensors of `rows` rows, 3 replicated ones of rows/64)."""
    rows = max(64, int(gib * (1 << 30) / 4 / COLUMNS / (13 + 3 / 64)) // 64 * 64)
    found = {}
    for i in range(16):
        placement = "shard0" if i < 8 else "shard1" if i < 13 else "replicate"
        shape = (rows if placement != "replicate" else max(8, rows // 64), COLUMNS)
        found[f"layer{i:02d}/kernel"] = (shape, "float32", placement)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=0.5)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="evict the checkpoint from the page cache before each run")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench_dcp-")
    try:
        specs = tensors(args.gib)
        prefix = os.path.join(work, "ckpt", "model.ckpt")
        rng = np.random.default_rng(0)
        ckptkit.save(prefix, {k: rng.standard_normal(shape, dtype=np.float32) for k, (shape, _, _) in specs.items()})
        total = sum(os.path.getsize(os.path.join(work, "ckpt", n)) for n in os.listdir(os.path.join(work, "ckpt")))
        files = [os.path.join(work, "ckpt", n) for n in os.listdir(os.path.join(work, "ckpt"))]
        if not args.cold:
            for path in files:  # warm: the save wrote with O_DIRECT, past the page cache
                with open(path, "rb") as f:
                    while f.read(64 << 20):
                        pass
        print(f"checkpoint: {total / (1 << 30):.2f} GiB, {len(specs)} tensors, {args.ranks} ranks, "
              f"page cache {'cold' if args.cold else 'warm'}")
        jobs = [{"key": k, "shape": list(shape), "dtype": dtype, "placement": placement}
                for k, (shape, dtype, placement) in specs.items()]
        found: dict[str, list[list[dict]]] = {"load": [], "scatter": []}
        for round_ in range(args.repeat):
            for mode in (["load", "scatter"] if round_ % 2 == 0 else ["scatter", "load"]):
                out = os.path.join(work, f"{mode}-{round_}")
                job = {"mode": mode, "path": prefix, "out": out, "tensors": jobs, "save_locals": False}
                if args.cold:
                    evict(files, drop_caches=False)
                codes = launch(job, args.ranks, timeout=1800)
                if codes != [0] * args.ranks:
                    raise SystemExit(f"{mode}: ranks exited with {codes}")
                facts = []
                for r in range(args.ranks):
                    with open(os.path.join(out, f"rank{r}.json")) as f:
                        facts.append(json.load(f))
                found[mode].append(facts)
        names = {"load": "dcp.load + ckptkit.dcp.StorageReader", "scatter": "rank 0 reads all, then scatters"}
        for mode, rounds in found.items():
            print(f"\n{names[mode]}")
            for r in range(args.ranks):
                seconds = [facts[r]["seconds"] for facts in rounds]
                in_read = statistics.median(facts[r]["read_seconds"] for facts in rounds)
                read = rounds[-1][r]["data_bytes"]
                print(f"  rank {r}: {read / (1 << 20):8.1f} MiB read ({read / total:5.1%}), "
                      f"{statistics.median(seconds):6.2f} s [{min(seconds):.2f} .. {max(seconds):.2f}]"
                      + (f", {in_read:.2f} s of it in read_data" if mode == "load" else ""))
            slowest = [max(facts[r]["seconds"] for r in range(args.ranks)) for facts in rounds]
            print(f"  slowest rank: {statistics.median(slowest):.2f} s (median)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
