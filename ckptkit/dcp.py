"""TF checkpoints in torch.distributed.checkpoint: `dcp.load(state_dict,
storage_reader=ckptkit.dcp.StorageReader(path))` and `dcp.save(state_dict,
storage_writer=ckptkit.dcp.StorageWriter(prefix))`.

Importing this module imports torch (`import ckptkit` does not); the plug-ins live in
`ckptkit.integrations.dcp`, whose module doc says how they read and write.
"""
from __future__ import annotations

from .integrations.dcp import Rename, StorageReader, StorageWriter

__all__ = ["Rename", "StorageReader", "StorageWriter"]
