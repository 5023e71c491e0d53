"""What a user waits for: ckptkit beside TensorFlow (and raw I/O) in fresh processes.

Every figure is taken in a child process started for it (cold: imports done, nothing
else warm) and, where it means something, again in the same process (warm). Contenders
run interleaved, round by round with a rotating order; each row prints the median and
[min .. max] and the ratio of the medians. Not a test: nothing here asserts a time.

Rows (issue 16):
  list        first listing of a 100k-variable checkpoint with 7 distinct shapes and
              dtypes, after import (ckptkit.load_checkpoint / tf.train.load_checkpoint,
              then the shape and dtype maps); `list2`: a second reader in the same process
  get         get_tensor on every one of those 100k tiny tensors, results discarded,
              per call (first pass, then a second pass); ckptkit also `get_tensors(all)`
              and `ckptkit.load`
  ls          `python -m ckptkit ls SMALL` as a whole process (a TF1-style checkpoint, and
              a TF2 one, whose object graph is read too), beside `python -c "import numpy"`
              and `python -c pass`. ckptkit's bytecode is compiled first, as installing a
              wheel leaves it: where PYTHONDONTWRITEBYTECODE is set, an editable checkout
              would otherwise compile every module from source in every process.
  read        reading GIB GiB (mixed dtypes and shapes, 16 tensors) into numpy arrays,
              page cache cold (posix_fadvise DONTNEED on the files; `--drop-caches`
              also writes /proc/sys/vm/drop_caches where permitted) and warm, beside raw
              `readinto` of the same bytes into arrays of the same sizes (no crc)
  mem         peak RSS of saving and loading a checkpoint whose largest tensor is
              --big-gib GiB (--mem-total-gib GiB in all), beyond the baseline (target:
              largest tensor + 64 MiB)
  gpu         not measured here without a GPU: see gpu_load.py

    python bench/bench_user.py                       # everything, 2 GiB reads
    python bench/bench_user.py --gib 1 --repeat 5 --only list,get,ls
"""
from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from page_cache import evict  # bench/, beside this script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")

SHAPES = [(), (3,), (4, 5), (7, 2, 3), (16,), (2, 2, 2, 2), (10,)]
DTYPES = ["float32", "float64", "int32", "int64", "float16", "uint8", "bfloat16"]

MAKE = r"""
import sys, numpy as np, ml_dtypes, ckptkit
small, many, big, n, gib = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
shapes, dtypes = SHAPES, DTYPES
def dt(name):
    return ml_dtypes.bfloat16 if name == "bfloat16" else np.dtype(name)
ckptkit.save(small, {f"layer{i}/kernel": np.ones((3, 4), np.float32) for i in range(10)})
ckptkit.Checkpoint(model={f"layer{i}": {"kernel": np.ones((3, 4), np.float32)} for i in range(10)}).write(
    small + "-tf2")
ckptkit.save(many, {f"layer_{i // 10:05d}/v{i % 10}": np.full(shapes[i % 7], i % 100, dt(dtypes[i % 7]))
                    for i in range(n)})
# GIB GiB in 16 tensors of mixed dtypes and shapes, written a few at a time
from ckptkit.formats.bundle import Deferred
from ckptkit import dtypes as kd
kinds = [("float32", 4), ("bfloat16", 2), ("float16", 2), ("int32", 4)]
per = int(gib * (1 << 30)) // 16
tensors = {}
for i in range(16):
    name, size = kinds[i % 4]
    rows = 256 * (1 + i % 3)
    cols = max(1, per // size // rows)
    d = dt(name)
    tensors[f"block_{i:02d}/w"] = Deferred(kd.as_dtype(d), (rows, cols),
                                             lambda rows=rows, cols=cols, d=d, i=i: np.full((rows, cols), i, d))
ckptkit.save(big, tensors)
"""

LIST_CK = r"""
import sys, time, json
import ckptkit
path = sys.argv[1]
t0 = time.perf_counter()
r = ckptkit.load_checkpoint(path); r.get_variable_to_shape_map(); r.get_variable_to_dtype_map()
t1 = time.perf_counter()
r2 = ckptkit.load_checkpoint(path); r2.get_variable_to_shape_map(); r2.get_variable_to_dtype_map()
t2 = time.perf_counter()
print(json.dumps({"list": t1 - t0, "list2": t2 - t1}))
"""

LIST_TF = r"""
import sys, time, json
import tensorflow as tf
path = sys.argv[1]
t0 = time.perf_counter()
r = tf.train.load_checkpoint(path); r.get_variable_to_shape_map(); r.get_variable_to_dtype_map()
t1 = time.perf_counter()
r2 = tf.train.load_checkpoint(path); r2.get_variable_to_shape_map(); r2.get_variable_to_dtype_map()
t2 = time.perf_counter()
print(json.dumps({"list": t1 - t0, "list2": t2 - t1}))
"""

GET = r"""
import sys, time, json
import ml_dtypes  # both sides: TF imports it with itself; its import (0.5 s in 0.7) is not a call's cost
which, path = sys.argv[1], sys.argv[2]
if which == "tf":
    import tensorflow as tf
    r = tf.train.load_checkpoint(path)
else:
    import ckptkit
    r = ckptkit.load_checkpoint(path)
names = list(r.get_variable_to_shape_map())
get = r.get_tensor
out = {}
t0 = time.perf_counter()
for n in names:
    get(n)
t1 = time.perf_counter()
for n in names:
    get(n)
t2 = time.perf_counter()
out["get"], out["get2"] = (t1 - t0) / len(names), (t2 - t1) / len(names)
if which != "tf":
    r = ckptkit.load_checkpoint(path)
    t0 = time.perf_counter()
    if hasattr(r, "get_tensors"):  # absent before issue 16: the bench also runs on older checkouts
        r.get_tensors(names)
        out["get_tensors"] = (time.perf_counter() - t0) / len(names)
    t1 = time.perf_counter()
    ckptkit.load(path)
    out["load"] = (time.perf_counter() - t1) / len(names)
print(json.dumps(out))
"""

READ = r"""
import sys, time, json, os
which, prefix = sys.argv[1], sys.argv[2]
import numpy as np
import ml_dtypes  # both sides: its import (0.5 s in ml_dtypes 0.7) is not reading
if which == "ckptkit":
    import ckptkit
    t0 = time.perf_counter()
    values = ckptkit.load(prefix)
    t1 = time.perf_counter()
    total = sum(v.nbytes for v in values.values())
else:  # the same bytes, tensor by tensor, into new arrays, no crc
    import ckptkit
    r = ckptkit.CheckpointReader(prefix)
    ranges = sorted((e.offset, e.size) for e in (r.entry(n) for n in r))
    data = prefix + ".data-00000-of-00001"
    t0 = time.perf_counter()
    with open(data, "rb", buffering=0) as f:
        values = []
        for offset, size in ranges:
            arr = np.empty(size, np.uint8)
            f.seek(offset)
            view, got = memoryview(arr), 0
            while got < size:
                got += f.readinto(view[got:])
            values.append(arr)
    t1 = time.perf_counter()
    total = sum(v.nbytes for v in values)
print(json.dumps({"read": t1 - t0, "bytes": total}))
"""

MEM = r"""
import os, resource, sys, json
import numpy as np
import ckptkit
what, prefix, big_gib, total_gib = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
n = int(big_gib * (1 << 30)) // 4
held = 0
if what == "save":
    tensors = {"big": np.ones(n, np.float32), "small/a": np.ones((64, 64), np.float32),
               "small/b": np.ones(1000, np.float64)}
    for i in range(int(round(total_gib - big_gib))):  # the rest of the checkpoint, 1 GiB tensors
        tensors[f"rest/{i}"] = np.full(1 << 28, i, np.float32)
    ckptkit.save(prefix + "-warm", {"x": np.zeros(3, np.float32)})
    before = peak()
    ckptkit.save(prefix, tensors)
elif what == "read":  # every tensor, one at a time
    reader = ckptkit.CheckpointReader(prefix + "-warm")
    reader.get_tensor("x")
    reader = ckptkit.CheckpointReader(prefix)
    before = peak()
    for name in reader:
        reader.get_tensor(name)
else:  # load: the result is held, so count what it holds
    ckptkit.load(prefix + "-warm")
    before = peak()
    values = ckptkit.load(prefix)
    held = sum(v.nbytes for v in values.values())
print(json.dumps({"extra": peak() - before - held, "largest": n * 4}))
"""


def child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], env=ENV, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def whole_process(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def rounds(contenders: dict, repeat: int, setup=None) -> dict[str, dict[str, list[float]]]:
    """{contender: {figure: [values]}}; each call returns {figure: value}; rotating order."""
    names = list(contenders)
    found: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for r in range(repeat):
        for n in names[r % len(names):] + names[:r % len(names)]:
            if setup is not None:
                setup()
            for k, v in contenders[n]().items():
                found[n].setdefault(k, []).append(v)
    return found


def fmt(values: list[float], scale: float, unit: str) -> str:
    med = statistics.median(values)
    return f"{med * scale:9.2f} {unit} [{min(values) * scale:.2f} .. {max(values) * scale:.2f}]"


def row(label: str, ours: list[float], theirs: list[float] | None, scale: float, unit: str,
        other: str = "TF", name: str = "ckptkit") -> None:
    text = f"  {label:<46} {name} {fmt(ours, scale, unit)}"
    if theirs:
        ratio = statistics.median(ours) / statistics.median(theirs)
        text += f"   {other} {fmt(theirs, scale, unit)}   ratio {ratio:.2f}x"
    print(text, flush=True)


def machine() -> str:
    model = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    except OSError:
        pass
    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {model}; nproc {os.cpu_count()}; "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=2.0, help="size of the read rows (GiB)")
    parser.add_argument("--vars", type=int, default=100_000, help="variables of the listing/get rows")
    parser.add_argument("--big-gib", type=float, default=1.0, help="largest tensor of the memory rows (GiB)")
    parser.add_argument("--mem-total-gib", type=float, default=None,
                        help="whole checkpoint of the memory rows (GiB; default: the largest tensor alone), "
                             "the rest in 1 GiB tensors")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="list,get,ls,read,mem", help="comma-separated rows to run")
    parser.add_argument("--drop-caches", action="store_true")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    only = set(args.only.split(","))

    scratch = tempfile.mkdtemp(prefix="ckptkit-user-", dir=args.dir)
    small, many, big = (os.path.join(scratch, d, "model.ckpt") for d in ("small", "many", "big"))
    try:
        print(f"# {machine()}")
        make = MAKE.replace("SHAPES", repr(SHAPES)).replace("DTYPES", repr(DTYPES))
        child(make + "\nprint('{}')", small, many, big, str(args.vars), str(args.gib if "read" in only else 0.001))
        print(f"# medians of {args.repeat} fresh processes, [min .. max]; ratio = ckptkit / reference", flush=True)

        if "list" in only:
            found = rounds({"ckptkit": lambda: child(LIST_CK, many), "tf": lambda: child(LIST_TF, many)}, args.repeat)
            row(f"first listing, {args.vars} vars, after import", found["ckptkit"]["list"], found["tf"]["list"],
                1e3, "ms")
            row("second listing, same process", found["ckptkit"]["list2"], found["tf"]["list2"], 1e3, "ms")

        if "get" in only:
            found = rounds({"ckptkit": lambda: child(GET, "ckptkit", many), "tf": lambda: child(GET, "tf", many)},
                           args.repeat)
            ck, tf = found["ckptkit"], found["tf"]
            row("get_tensor per call, first pass", ck["get"], tf["get"], 1e6, "us")
            row("get_tensor per call, second pass", ck["get2"], tf["get2"], 1e6, "us")
            if "get_tensors" in ck:
                row("get_tensors(all names), per tensor", ck["get_tensors"], tf["get"], 1e6, "us")
            row("ckptkit.load(path), per tensor", ck["load"], tf["get"], 1e6, "us")

        if "ls" in only:
            compileall.compile_dir(os.path.join(REPO, "ckptkit"), quiet=1)
            found = rounds({
                "ls": lambda: {"t": whole_process([sys.executable, "-m", "ckptkit", "ls", small])},
                "ls2": lambda: {"t": whole_process([sys.executable, "-m", "ckptkit", "ls", small + "-tf2"])},
                "numpy": lambda: {"t": whole_process([sys.executable, "-c", "import numpy"])},
                "pass": lambda: {"t": whole_process([sys.executable, "-c", "pass"])},
            }, args.repeat)
            row("`ckptkit ls` small checkpoint, whole process", found["ls"]["t"], found["numpy"]["t"], 1e3, "ms",
                other="`python -c 'import numpy'`")
            row("`ckptkit ls` small TF2 checkpoint, whole process", found["ls2"]["t"], found["numpy"]["t"], 1e3,
                "ms", other="`python -c 'import numpy'`")
            row("interpreter start-up alone", found["pass"]["t"], None, 1e3, "ms", name="`python -c pass`")

        if "read" in only:
            files = [big + ".index", big + ".data-00000-of-00001"]
            for kind in ("cold", "warm"):
                def setup(kind=kind):
                    if kind == "cold":
                        evict(files, args.drop_caches)
                found = rounds({"ckptkit": lambda: child(READ, "ckptkit", big),
                                "raw": lambda: child(READ, "raw", big)}, args.repeat, setup)
                gib = found["ckptkit"]["bytes"][0] / (1 << 30)
                row(f"read {gib:.2f} GiB to numpy, {kind}", found["ckptkit"]["read"], found["raw"]["read"],
                    1, "s ", other="raw readinto")

        if "mem" in only:
            prefix = os.path.join(scratch, "mem", "model.ckpt")
            for what in ("save", "read", "load"):
                found = child(MEM, what, prefix, str(args.big_gib), str(args.mem_total_gib or args.big_gib))
                extra, largest = found["extra"] / (1 << 20), found["largest"] / (1 << 20)
                held = "beyond the result it returns" if what == "load" else "beyond the baseline"
                print(f"  peak RSS of {what} {held}: +{extra:.0f} MiB (largest tensor {largest:.0f} MiB; "
                      f"bound {largest + 64:.0f} MiB)", flush=True)

        print("  GPU row (8 GiB onto cuda vs safetensors): no GPU here; see bench/gpu_load.py")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
