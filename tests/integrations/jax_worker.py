"""Sharded jax loads on 4 host devices, for tests/integrations/test_jax_sharding.py: run
as a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4 (jax reads it once,
at start), argv: the checkpoint, a directory for results, and for a URL the store's
storage_options as JSON.

Loads the checkpoint with `ckptkit.load(..., framework="jax", sharding=...)` ("wide"
split by columns, "part" by rows, "bias" replicated, the rest unsharded) and writes
loaded.npz (each array gathered), shards.json (each array's device windows) and reads.json
(the offset and size of every read from a data file, per tensor), errors.json (what a
sharding that does not fit a tensor raises).
"""
from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import ckptkit
from ckptkit.storage import base

reads: list[tuple[str | None, int, int]] = []
_original = base.ReadHandle.read_exactly


def _counted(self, buf, offset, key=None):
    if ".data-" in self.path:
        reads.append((key, offset, len(buf)))
    return _original(self, buf, offset, key)


def main() -> None:
    path, out = sys.argv[1], sys.argv[2]
    options = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    assert len(jax.devices()) == 4, jax.devices()
    mesh = jax.make_mesh((4,), ("x",))
    specs = {"wide": P(None, "x"), "part": P("x", None), "bias": P()}
    base.ReadHandle.read_exactly = _counted  # type: ignore[method-assign]
    loaded = ckptkit.load(path, framework="jax", sharding={k: NamedSharding(mesh, s) for k, s in specs.items()},
                          storage_options=options)
    base.ReadHandle.read_exactly = _original  # type: ignore[method-assign]
    reader = ckptkit.CheckpointReader(path, framework="jax", storage_options=options)
    one = reader.get_tensor("wide", sharding=NamedSharding(mesh, P("x", None)))
    np.savez(os.path.join(out, "loaded.npz"), wide_by_rows=np.asarray(one),
             **{k: np.asarray(v).astype(np.float64) if v.dtype == jax.numpy.bfloat16 else np.asarray(v)
                for k, v in loaded.items()})
    shards = {k: [[list(s.indices(d)[:2]) for s, d in zip(shard.index, v.shape, strict=True)]
                  for shard in v.addressable_shards] for k, v in loaded.items() if k in specs}
    with open(os.path.join(out, "shards.json"), "w") as f:
        json.dump(shards, f)
    with open(os.path.join(out, "reads.json"), "w") as f:
        json.dump(reads, f)
    errors = {}
    try:
        three = jax.sharding.Mesh(np.array(jax.devices()[:3]), ("x",))  # 1024 elements do not split in 3
        reader.get_tensor("bias", sharding=NamedSharding(three, P("x")))
    except ckptkit.InvalidArgumentError as exc:
        errors["bias"] = str(exc)
    with open(os.path.join(out, "errors.json"), "w") as f:
        json.dump(errors, f)


if __name__ == "__main__":
    main()
