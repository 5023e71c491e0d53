"""Reading a checkpoint over HTTP (loopback) beside reading the same files locally.

Writes a checkpoint of `--gib` GiB (64 float32 tensors) with ckptkit, serves its
directory over HTTP with range requests — nginx when it is installed (`--server nginx`,
the default when found), else the test suite's Python server — and times, in this
process (warm page cache on the server side, the first round discarded):

- `ckptkit.load(local prefix)`            every tensor, crc32c checked
- `ckptkit.load(http://.../prefix)`       the same through fsspec range requests
- raw: `urllib` GET of the whole data shard (what the wire alone costs)
- listing (`CheckpointReader(...).keys()`) over HTTP, with the bytes the server sent

Prints medians and [min .. max] of `--repeat` rounds.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "storage"))
from servers import free_port, http_server  # the tests' own range server

import ckptkit

_NGINX_CONF = """
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


@contextlib.contextmanager
def nginx(root: str):
    work = tempfile.mkdtemp(prefix="ckptkit-nginx-")
    port = free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(_NGINX_CONF.format(dir=work, port=port, root=root))
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", work, "-g", "daemon off;"])
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            except urllib.error.HTTPError:
                break  # it answers (403/404 on the root)
            except OSError:
                time.sleep(0.05)
                continue
            break
        yield f"http://127.0.0.1:{port}", None
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def timed(fn, repeat: int) -> list[float]:
    fn()  # warm-up round, discarded
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def show(name: str, times: list[float], base: float | None = None) -> None:
    med = statistics.median(times)
    ratio = f"  {med / base:.2f}x local" if base else ""
    print(f"{name:<44} {med * 1e3:8.0f} ms [{min(times) * 1e3:.0f} .. {max(times) * 1e3:.0f}]{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--server", choices=["nginx", "python"],
                        default="nginx" if shutil.which("nginx") else "python")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="ckptkit-bench-remote-")
    os.chmod(root, 0o755)  # nginx workers run as another user
    try:
        n = 64
        per = int(args.gib * (1 << 30)) // 4 // n
        rng = np.random.default_rng(0)
        values = {f"layer{i:02d}/kernel": rng.standard_normal(per, dtype=np.float32) for i in range(n)}
        prefix = os.path.join(root, "model.ckpt")
        ckptkit.save(prefix, values)
        del values
        serve = nginx(root) if args.server == "nginx" else http_server(root)
        with serve as (url, counter):
            print(f"{args.gib:g} GiB in {n} tensors, server: {args.server}, {os.cpu_count()} cores")
            local = timed(lambda: ckptkit.load(prefix), args.repeat)
            show("load, local files", local)
            base = statistics.median(local)
            show("load over HTTP (fsspec range requests)", timed(lambda: ckptkit.load(f"{url}/model.ckpt"),
                                                                 args.repeat), base)
            shard = f"{url}/model.ckpt.data-00000-of-00001"
            show("raw GET of the data shard (urllib)", timed(lambda: urllib.request.urlopen(shard).read(),
                                                            args.repeat), base)

            def listing():
                with ckptkit.CheckpointReader(f"{url}/model.ckpt") as reader:
                    return list(reader)

            if counter is not None:
                counter["bytes"] = 0
            show("list over HTTP", timed(listing, args.repeat))
            if counter is not None:
                index = os.path.getsize(prefix + ".index")
                print(f"  bytes sent per listing: {counter['bytes'] // (args.repeat + 1)} (index: {index})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
