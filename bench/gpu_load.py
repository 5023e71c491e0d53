"""Load a checkpoint onto a device as torch tensors: ckptkit vs safetensors, same bytes.

Writes an N-GiB checkpoint (several float32 tensors, one in memory at a time) and a
.safetensors file holding the same tensors, then times, each in a fresh process:

    ckptkit       ckptkit.load(prefix, framework="torch", device=DEVICE)   (crc32c checked)
    ckptkit-mmap  CheckpointReader(prefix, framework="torch", mmap=True), every tensor
                  (copy-on-write views of the page cache, crc32c checked; --device cpu only)
    safetensors   safetensors.torch.load_file(path, device=DEVICE)

cold: the files' pages are evicted from the page cache first (posix_fadvise DONTNEED on
each file: no privileges needed, and other processes' caches are left alone; with
`--drop-caches`, `echo 3 > /proc/sys/vm/drop_caches` as well, where permitted).
warm: the files were just read, so they are in the page cache.
The clock runs from the call until one byte of every 4 KiB page of every tensor has
been read on the device (so a lazily mapped CPU load pays for its reads, as on first
use) and, on CUDA, torch.cuda.synchronize() returned; process start, imports and CUDA
context creation are outside it. Contenders
alternate order round by round. Prints min / median / max and ckptkit / safetensors.

    python bench/gpu_load.py                          # 8 GiB onto cuda
    python bench/gpu_load.py --device cpu --size 0.5  # where there is no GPU
"""
from __future__ import annotations

import argparse
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
CONTENDERS = ("ckptkit", "ckptkit-mmap", "safetensors")

CHILD = r"""
import json, sys, time
import torch
which, prefix, st_path, device = sys.argv[1:5]
if device.startswith("cuda"):
    torch.zeros(1, device=device)  # CUDA context: outside the clock
import ckptkit, ckptkit.reader, ckptkit.integrations.frameworks, safetensors.torch  # imports: outside the clock
def finish(out):
    # one byte of every 4 KiB page: a lazily mapped load (safetensors onto the CPU) pays for
    # its reads here, as it would on first use; then wait for the device
    for t in out.values():
        t.reshape(-1).view(torch.uint8)[::4096].sum()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
if which == "check":
    a = ckptkit.load(prefix, framework="torch", device=device)
    b = safetensors.torch.load_file(st_path, device=device)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].device == b[k].device for k in a)
    print(json.dumps({"tensors": len(a), "device": str(next(iter(a.values())).device)}))
    sys.exit()
start = time.perf_counter()
if which == "ckptkit":
    out = ckptkit.load(prefix, framework="torch", device=device)
elif which == "ckptkit-mmap":
    with ckptkit.CheckpointReader(prefix, framework="torch", device=device, mmap=True) as reader:
        out = {name: reader[name] for name in reader}
else:
    out = safetensors.torch.load_file(st_path, device=device)
finish(out)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "bytes": sum(t.numel() * t.element_size() for t in out.values())}))
"""


def write_files(directory: str, size_gib: float, tensors: int) -> tuple[str, str]:
    """The checkpoint and the .safetensors file, streamed (one tensor in memory at a time)."""
    import numpy as np  # noqa: PLC0415 - the parent needs numpy only here

    sys.path.insert(0, REPO)
    import ckptkit  # noqa: PLC0415 - from REPO, put on the path just above
    from ckptkit import dtypes  # noqa: PLC0415 - as above
    from ckptkit.formats.bundle import Deferred  # noqa: PLC0415 - as above
    from ckptkit.formats.safetensors import write_safetensors  # noqa: PLC0415 - as above

    per = int(size_gib * (1 << 30)) // tensors // 4
    rows = max(1, per // 4096)
    shape = (rows, per // rows)

    def make(i: int):
        return lambda: np.random.default_rng(i).random(shape, dtype=np.float32)

    values = {f"layer{i:03d}/kernel": Deferred(dtypes.as_dtype("float32"), shape, make(i)) for i in range(tensors)}
    prefix = os.path.join(directory, "model.ckpt")
    st_path = os.path.join(directory, "model.safetensors")
    ckptkit.save(prefix, values)
    write_safetensors(st_path, values)
    return prefix, st_path


def run_child(which: str, prefix: str, st_path: str, device: str) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", CHILD, which, prefix, st_path, device], env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def summary(times: list[float]) -> str:
    return f"{statistics.median(times):7.3f} s  [{min(times):.3f} .. {max(times):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=float, default=8.0, help="GiB of tensor data (default 8)")
    parser.add_argument("--tensors", type=int, default=32, help="number of float32 tensors (default 32)")
    parser.add_argument("--device", default="cuda", help="torch device (default cuda; cpu works anywhere)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of each kind (default 5)")
    parser.add_argument("--dir", help="where to write the files (default: a temp dir, removed after)")
    parser.add_argument("--drop-caches", action="store_true",
                        help="also drop the whole system's page cache before cold runs (root; affects others)")
    args = parser.parse_args()
    directory = args.dir or tempfile.mkdtemp(prefix="ckptkit-gpu-")
    os.makedirs(directory, exist_ok=True)
    try:
        t0 = time.perf_counter()
        prefix, st_path = write_files(directory, args.size, args.tensors)
        files = [os.path.join(directory, n) for n in os.listdir(directory)]
        nbytes = sum(os.path.getsize(f) for f in files if ".data-" in f)
        print(f"# {nbytes / (1 << 30):.2f} GiB in {args.tensors} float32 tensors, written in "
              f"{time.perf_counter() - t0:.1f} s to {directory}")
        check = run_child("check", prefix, st_path, args.device)
        print(f"# device {check['device']}: both loaders give equal tensors ({check['tensors']})")
        results: dict[tuple[str, str], list[float]] = {}
        how = ""
        # mmap=True changes nothing on CUDA (the bytes are copied to the device either way)
        contenders = CONTENDERS if args.device == "cpu" else ("ckptkit", "safetensors")
        for round_ in range(args.repeat):
            order = contenders if round_ % 2 == 0 else contenders[::-1]
            for kind in ("cold", "warm"):
                for which in order:
                    if kind == "cold":
                        how = evict(files, args.drop_caches)
                    else:
                        run_child(which, prefix, st_path, args.device)  # make sure its file is cached
                    got = run_child(which, prefix, st_path, args.device)
                    assert got["bytes"] == nbytes, got
                    results.setdefault((kind, which), []).append(got["seconds"])
        print(f"# cold: {how}; {args.repeat} rounds, fresh process each, order alternating")
        for kind in ("cold", "warm"):
            base = statistics.median(results[(kind, "safetensors")])
            for which in contenders:
                times = results[(kind, which)]
                rate = nbytes / statistics.median(times) / 1e9
                ratio = "" if which == "safetensors" else f"  {statistics.median(times) / base:5.2f}x safetensors"
                print(f"{kind} {which:<13} {summary(times)}  {rate:6.2f} GB/s{ratio}")
    finally:
        if not args.dir:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
