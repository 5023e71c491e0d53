"""Checkpoints in the engines users already run: adapters from ckptkit's reader and
writer to another framework's own interfaces.

- `dcp`: torch.distributed.checkpoint's StorageReader/StorageWriter plug-ins, so that
  `dcp.load` fills DTensors sharded any way straight from a TF checkpoint (each rank
  reading only its windows) and `dcp.save` writes a TF V2 checkpoint, one data shard
  per rank, published in one commit (public name: `ckptkit.dcp`).

Each module imports its framework at the top: import one only when that framework is
wanted (`import ckptkit` never imports these).
"""
