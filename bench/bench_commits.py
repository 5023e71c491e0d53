"""Small saves, where the commit protocol's fixed costs show: a Saver in a training loop
(60 saves of a 256 KiB checkpoint with a `.meta`, max_to_keep=5, so each save past the
fifth prunes one) and one `ckptkit.save` of 20,000 tiny tensors (per-tensor overhead of
the bundle writer). Prints the median and [min .. max] of `--repeat` rounds, each in a
fresh temporary directory. Compare checkouts by running it with PYTHONPATH set to each.
Not a test: nothing here asserts a time.

    PYTHONPATH=. python bench/bench_commits.py --repeat 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import ckptkit


def saver_ms_per_save(directory: str, saves: int = 60) -> float:
    saver = ckptkit.Saver(max_to_keep=5)
    values = {"w": np.ones((256, 256), np.float32), "b": np.zeros(256, np.float32)}
    start = time.perf_counter()
    for step in range(saves):
        saver.save(values, os.path.join(directory, "model"), global_step=step)
    return (time.perf_counter() - start) / saves * 1000


def many_tensors_ms(directory: str, count: int = 20_000) -> float:
    values = {f"layer_{i}/w": np.full(16, i, np.float32) for i in range(count)}
    start = time.perf_counter()
    ckptkit.save(os.path.join(directory, "many"), values)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {"Saver.save, ms per save": [], "save 20k tiny tensors, ms": []}
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as directory:
            rows["Saver.save, ms per save"].append(saver_ms_per_save(directory))
            rows["save 20k tiny tensors, ms"].append(many_tensors_ms(directory))
    print(f"ckptkit from {os.path.dirname(ckptkit.__file__)}")
    for label, values in rows.items():
        print(f"{label}: {statistics.median(values):.1f} [{min(values):.1f} .. {max(values):.1f}]")


if __name__ == "__main__":
    main()
