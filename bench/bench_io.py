"""Benchmarks: ckptkit against TensorFlow (and safetensors, and raw file I/O) in one run.

Prints medians, [min .. max] and ratios; contenders run interleaved, round by round; the figures we
measured are recorded in bench/README.md.
Not a test: nothing here asserts a time.

    python bench/bench_io.py            # 1 GiB in 64 float32 tensors, 100k-variable listing
    python bench/bench_io.py --gib 0.25 --repeat 5
    python bench/bench_mem.py           # peak memory of save and read (separate processes)
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import ckptkit
from ckptkit.ops import edit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


SPREAD: dict[str, tuple[float, float]] = {}


def interleaved(contenders: dict, repeat: int, setup=None) -> dict[str, float]:
    """Median seconds per contender, run in rounds with a rotating order.

    Alternating keeps one contender from always paying for another's leftovers (dirty
    pages, freed page cache); the spread (min..max) goes to SPREAD for the report.
    """
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeat):
        for n in names[r % len(names):] + names[:r % len(names)]:
            if setup is not None:
                setup()
            start = time.perf_counter()
            contenders[n]()
            times[n].append(time.perf_counter() - start)
    for n, ts in times.items():
        SPREAD[n] = (min(ts), max(ts))
    return {n: statistics.median(ts) for n, ts in times.items()}


def report(rows: list[tuple[str, float, str]]) -> None:
    width = max(len(name) for name, _, _ in rows)
    for name, seconds, extra in rows:
        lo, hi = SPREAD.get(name, (seconds, seconds))
        print(f"  {name:<{width}}  {seconds * 1000:9.1f} ms  [{lo * 1000:7.1f} .. {hi * 1000:7.1f}]  {extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0, help="data size for write/read (GiB)")
    parser.add_argument("--tensors", type=int, default=64)
    parser.add_argument("--small-vars", type=int, default=100_000, help="variables for the listing bench")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--safetensors", action="store_true", help="also time safetensors save/load")
    args = parser.parse_args()

    import tensorflow as tf  # noqa: PLC0415 - slow to import: not before the arguments are checked

    scratch = tempfile.mkdtemp(prefix="ckptkit-bench-", dir=args.dir)
    try:
        per = int(args.gib * (1 << 30)) // args.tensors // 4
        rng = np.random.default_rng(0)
        tensors = {f"layer_{i:03d}/kernel": rng.standard_normal(per, dtype=np.float32)
                   for i in range(args.tensors)}
        total = sum(a.nbytes for a in tensors.values())
        gib = total / (1 << 30)
        print(f"# write/read: {args.tensors} float32 tensors, {gib:.3f} GiB; median of {args.repeat}")
        names = sorted(tensors)
        tf_tensors = [tf.constant(tensors[n]) for n in names]

        ours, theirs, raw = (os.path.join(scratch, n) for n in ("ours", "tf", "raw.bin"))

        def write_raw(sync: bool):
            with open(raw, "wb") as f:
                for n in names:
                    f.write(tensors[n])
                if sync:
                    f.flush()
                    os.fsync(f.fileno())

        # os.sync() before each timed write: every contender starts with no dirty pages
        # queued, so none pays for another's writeback.
        contenders = {"ckptkit.save (fsync'd)": lambda: ckptkit.save(ours, tensors),
                      "tf.raw_ops.SaveV2": lambda: tf.raw_ops.SaveV2(
                          prefix=theirs, tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=tf_tensors),
                      "raw file write": lambda: write_raw(False),
                      "raw file write + fsync": lambda: write_raw(True)}
        load_file = None
        if args.safetensors:
            from safetensors.numpy import load_file, save_file  # noqa: PLC0415 - optional package
            st_path = os.path.join(scratch, "x.safetensors")
            contenders["safetensors save_file"] = lambda: save_file(tensors, st_path)
        t = interleaved(contenders, args.repeat, os.sync)
        report([(n, sec, f"{gib / sec:5.2f} GiB/s") for n, sec in t.items()])
        t_ours, t_tf = t["ckptkit.save (fsync'd)"], t["tf.raw_ops.SaveV2"]
        t_raw, t_raw_sync = t["raw file write"], t["raw file write + fsync"]
        print(f"  write ratio ckptkit/TF = {t_ours / t_tf:.2f}  (target <= 0.6); "
              f"ckptkit/raw = {t_ours / t_raw:.2f}, ckptkit/(raw+fsync) = {t_ours / t_raw_sync:.2f}  (target <= 1.25)")

        def read_ours():
            with ckptkit.CheckpointReader(theirs) as r:
                for n in names:
                    r.get_tensor(n)

        def read_tf():
            r = tf.train.load_checkpoint(theirs)
            for n in names:
                r.get_tensor(n)

        def read_views():
            with ckptkit.CheckpointReader(theirs, mmap=True) as r:
                for n in names:
                    r.get_tensor(n)  # crc32c checked: every page of the view is touched

        contenders = {"ckptkit get_tensor (crc checked)": read_ours,
                      "TF load_checkpoint + get_tensor": read_tf,
                      "ckptkit mmap views (crc checked)": read_views}
        if load_file is not None:
            contenders["safetensors load_file"] = lambda: load_file(st_path)
        t = interleaved(contenders, args.repeat)
        print("# read (page cache warm: the files were just written)")
        report([(n, sec, f"{gib / sec:5.2f} GiB/s") for n, sec in t.items()])
        t_read_ours, t_read_tf = t["ckptkit get_tensor (crc checked)"], t["TF load_checkpoint + get_tensor"]
        print(f"  read ratio ckptkit/TF = {t_read_ours / t_read_tf:.2f}  (target <= 0.4); "
              f"mmap views/TF = {t['ckptkit mmap views (crc checked)'] / t_read_tf:.2f}")

        state = {"name": "layer_000/kernel"}

        def rename_once():
            new = "renamed/kernel" if state["name"] == "layer_000/kernel" else "layer_000/kernel"
            edit.rename_keys(ours, {state["name"]: new})
            state["name"] = new

        t_rename = interleaved({"ckptkit edit.rename_keys": rename_once}, max(args.repeat, 5))[
            "ckptkit edit.rename_keys"]
        print(f"# rename one key in the {gib:.2f} GiB checkpoint (index rewrite only)")
        report([("ckptkit edit.rename_keys", t_rename, "(target <= 50 ms)")])

        print(f"# listing a TF-written checkpoint of {args.small_vars} small variables (in-process, after import)")
        small = {f"scope_{i // 1000:03d}/var_{i:06d}": tf.constant([float(i)]) for i in range(args.small_vars)}
        many = os.path.join(scratch, "many")
        keys = sorted(small)
        tf.raw_ops.SaveV2(prefix=many, tensor_names=keys, shape_and_slices=[""] * len(keys),
                          tensors=[small[k] for k in keys])

        def list_ours():
            r = ckptkit.CheckpointReader(many)
            r.get_variable_to_shape_map()
            r.get_variable_to_dtype_map()

        def list_tf():
            r = tf.train.load_checkpoint(many)
            r.get_variable_to_shape_map()
            r.get_variable_to_dtype_map()

        t = interleaved({"ckptkit shape+dtype maps": list_ours, "TF shape+dtype maps": list_tf}, args.repeat)
        t_list_ours, t_list_tf = t["ckptkit shape+dtype maps"], t["TF shape+dtype maps"]
        report([(n, sec, "") for n, sec in t.items()])
        print(f"  list ratio ckptkit/TF = {t_list_ours / t_list_tf:.2f}  (target <= 0.5)")

        print("# whole-process start-up (target <= 0.3 s)")
        small_ckpt = ckptkit.save(os.path.join(scratch, "small"), {"v": np.zeros(3, np.float32)})
        exe = [sys.executable, "-m", "ckptkit"]
        rows = []
        for label, argv in (("ckptkit --help", exe + ["--help"]), ("ckptkit ls small", exe + ["ls", small_ckpt])):
            t = interleaved({label: lambda argv=argv: subprocess.run(argv, check=True, capture_output=True)},
                            max(args.repeat, 5))[label]
            rows.append((label, t, ""))
        report(rows)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
