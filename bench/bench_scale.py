#!/usr/bin/env python3
"""Passes over many tensors stay linear: each command on N small tensors, for two N.

A quadratic pass shows as a time that grows 16x when N grows 4x (a linear one: about 4x).
Each row is a fresh process (`python -m ckptkit ...`, start-up included), the median of
`--repeat` runs, beside numpy's own `np.load(...).files` for the `.npz` listing.

    python bench/bench_scale.py                    # N = 5,000 and 20,000 (~1 min)
    python bench/bench_scale.py --sizes 2000 8000 --repeat 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ckptkit  # the checkout's, as the commands below run it

COMMANDS = (["ls"], ["stats"], ["verify"], ["diff", "{prefix}", "{prefix}"])


def timed(argv: list[str], repeat: int) -> float:
    """Median seconds of `argv` in fresh processes (it must succeed)."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def numpy_listing(path: str) -> None:
    with np.load(path) as data:
        _ = data.files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[5000, 20000], metavar=("N1", "N2"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            tensors = {f"layer{i // 100}/w{i % 100}": np.full(4, i, np.float32) for i in range(n)}
            prefix = ckptkit.save(os.path.join(tmp, f"m{n}"), tensors)
            npz = os.path.join(tmp, f"m{n}.npz")
            np.savez(npz, **{k.replace("/", "_"): v for k, v in tensors.items()})
            for command in COMMANDS:
                argv = [a.format(prefix=prefix) for a in command] + ([] if len(command) > 1 else [prefix])
                rows.setdefault(f"ckptkit {command[0]}", []).append(
                    timed([sys.executable, "-m", "ckptkit", *argv], args.repeat))
            rows.setdefault("ckptkit ls (.npz)", []).append(
                timed([sys.executable, "-m", "ckptkit", "ls", npz], args.repeat))
            rows.setdefault("numpy np.load(.npz).files (in-process)", []).append(
                statistics.median(_in_process(numpy_listing, npz) for _ in range(args.repeat)))
    n1, n2 = args.sizes
    print(f"{'what':44} {f'N={n1:,}':>10} {f'N={n2:,}':>10} {'ratio':>7}  (linear: {n2 / n1:.0f}x)")
    for name, (a, b) in rows.items():
        print(f"{name:44} {a:9.2f}s {b:9.2f}s {b / a:6.1f}x")


def _in_process(fn: Callable[[str], None], path: str) -> float:
    start = time.perf_counter()
    fn(path)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
