"""Peak memory of ckptkit.save and of reading every tensor back, each in a fresh process.

Reports peak RSS beyond what the process held before the operation (the caller's
arrays included in that baseline). Target: never more than the largest tensor + 64 MiB.

    python bench/bench_mem.py            # 1 GiB in 64 float32 tensors (16 MiB each)
    python bench/bench_mem.py --gib 0.5 --tensors 8
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

CHILD = r"""
import os, resource, sys
import numpy as np
import ckptkit
what, prefix, gib, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
per = int(gib * (1 << 30)) // n // 4
def rss_peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
def anon():  # private memory now (mapped file pages excluded)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("RssAnon:"))
if what == "save":
    tensors = {f"t{i:03d}": np.full(per, i, np.float32) for i in range(n)}
    ckptkit.save(prefix + "-warm", {"x": np.zeros(3, np.float32)})  # imports, thread start
    before, anon0 = rss_peak(), anon()
    ckptkit.save(prefix, tensors)
else:
    reader = ckptkit.CheckpointReader(prefix, mmap=(what == "views"))
    reader.get_tensor(next(iter(reader)))
    before, anon0 = rss_peak(), anon()
    for name in reader:
        reader.get_tensor(name)  # each result dropped before the next read
print(rss_peak() - before, per * 4, anon() - anon0)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--tensors", type=int, default=64)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="ckptkit-mem-")
    prefix = os.path.join(scratch, "ck")
    try:
        print(f"# peak RSS beyond the baseline: {args.tensors} float32 tensors, {args.gib:g} GiB")
        for what in ("save", "read", "views"):
            out = subprocess.run([sys.executable, "-c", CHILD, what, prefix, str(args.gib), str(args.tensors)],
                                 check=True, capture_output=True, text=True).stdout.split()
            extra, largest, private = int(out[0]), int(out[1]), int(out[2])
            print(f"  {what:<6} peak RSS +{extra / (1 << 20):7.1f} MiB, private memory at the end "
                  f"+{private / (1 << 20):6.1f} MiB  (largest tensor {largest / (1 << 20):.0f} MiB; "
                  f"target <= {largest / (1 << 20) + 64:.0f} MiB)")
        print("  (views: RSS counts the shard's mapped page-cache pages, which are clean, shared and\n"
              "   reclaimable; the private memory column is what the views cost the process)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
