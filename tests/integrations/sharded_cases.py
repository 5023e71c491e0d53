"""The tensors of the sharded-loading tests (test_dcp.py, test_jax_sharding.py) and how
each is loaded."""
from __future__ import annotations

# name -> (shape, dtype, placement when loaded); every sharded dimension divides by 2 and 4
SHARDED = {
    "wide": ((16, 4096), "float32", "shard1"),  # rows of 16 KiB: a rank's columns are runs pages apart
    "part": ((12, 2048), "float32", "shard0"),  # a TF partitioned variable: 3 slices of 4 rows
    "counts": ((8, 8), "int64", "shard0"),
    "half": ((8, 512), "bfloat16", "shard1"),
    "bias": ((1024,), "float32", "replicate"),
    "step": ((), "int64", "plain"),
}
PART_SLICES = 3
