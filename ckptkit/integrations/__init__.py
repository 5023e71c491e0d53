"""ckptkit inside other engines: framework tensors (torch, jax) from checkpoint bytes,
checkpoints as web pages (`ckptkit view`), and other engines' checkpoint plug-ins.

`frameworks` sits beside the reading layer (a reader hands out framework tensors, jax
arrays sharded over devices among them) and imports its engine lazily, inside the
functions that need it, so that `import ckptkit` never pays for torch or jax. Engines
that drive whole checkpoints build on the layers below them: `view/` (the page, its
numbers and its loopback server) on the operations; `dcp` (torch.distributed.checkpoint's
StorageReader/StorageWriter: `dcp.load` fills DTensors sharded any way straight from a TF
checkpoint, each rank reading only its windows, and `dcp.save` writes a TF V2 checkpoint,
one data shard per rank, published in one commit) on the reader and the storage layer's
commit. `dcp` imports torch at its top: its public name `ckptkit.dcp` is imported only
by those who want it.
"""
