"""ckptkit: TensorFlow checkpoints in plain Python (numpy + protobuf), no TensorFlow needed.

The public API is imported lazily (PEP 562), so that `ckptkit --help` and other
commands start without paying for numpy and protobuf until they need them.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    AlreadyExistsError,
    CheckpointChangedError,
    CheckpointError,
    ConcurrentModificationError,
    DataLossError,
    InvalidArgumentError,
    InvalidStateError,
    NoCheckpointError,
    NotFoundError,
    StorageError,
    TensorNotFoundError,
    UnsupportedError,
)

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "DType": "dtypes", "as_dtype": "dtypes",
    "CheckpointReader": "reader", "NewCheckpointReader": "reader", "load_checkpoint": "reader",
    "list_variables": "reader", "load_variable": "reader", "load": "reader",
    "checkpoint_exists": "tf1.state", "get_checkpoint_state": "tf1.state", "latest_checkpoint": "tf1.state",
    "update_checkpoint_state": "tf1.state", "remove_checkpoint": "tf1.state", "get_checkpoint_mtimes": "tf1.state",
    "save": "ops.writer",
    "Saver": "tf1.saver",
    "Checkpoint": "tf2.checkpoint", "CheckpointManager": "tf2.manager",
    "checkpoints_iterator": "tf1.poll", "wait_for_new_checkpoint": "tf1.poll",
    "ExponentialMovingAverage": "tf1.ema",
    "build_meta_graph": "tf1.metagraph", "write_meta_graph": "tf1.metagraph", "read_meta_graph": "tf1.metagraph",
    "summarize_meta_graph": "tf1.metagraph",
    "SlicedTensor": "formats.slices", "TensorSlice": "formats.slices",
    "ObjectGraph": "formats.objectgraph",
    "rename_keys": "ops.edit", "remove_keys": "ops.edit", "apply_ema": "ops.edit",
    "DirectoryLockedError": "storage.lock",
}

__all__ = ["AlreadyExistsError", "CheckpointChangedError", "CheckpointError", "ConcurrentModificationError",
           "DataLossError", "InvalidArgumentError", "InvalidStateError", "NoCheckpointError",
           "NotFoundError", "StorageError", "TensorNotFoundError", "UnsupportedError", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ckptkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs: the eager view of the same names (`x as x`: re-exported)
    from .dtypes import DType as DType
    from .dtypes import as_dtype as as_dtype
    from .formats.objectgraph import ObjectGraph as ObjectGraph
    from .formats.slices import SlicedTensor as SlicedTensor
    from .formats.slices import TensorSlice as TensorSlice
    from .ops.edit import apply_ema as apply_ema
    from .ops.edit import remove_keys as remove_keys
    from .ops.edit import rename_keys as rename_keys
    from .ops.writer import save as save
    from .reader import CheckpointReader as CheckpointReader
    from .reader import NewCheckpointReader as NewCheckpointReader
    from .reader import list_variables as list_variables
    from .reader import load as load
    from .reader import load_checkpoint as load_checkpoint
    from .reader import load_variable as load_variable
    from .storage.lock import DirectoryLockedError as DirectoryLockedError
    from .tf1.ema import ExponentialMovingAverage as ExponentialMovingAverage
    from .tf1.metagraph import build_meta_graph as build_meta_graph
    from .tf1.metagraph import read_meta_graph as read_meta_graph
    from .tf1.metagraph import summarize_meta_graph as summarize_meta_graph
    from .tf1.metagraph import write_meta_graph as write_meta_graph
    from .tf1.poll import checkpoints_iterator as checkpoints_iterator
    from .tf1.poll import wait_for_new_checkpoint as wait_for_new_checkpoint
    from .tf1.saver import Saver as Saver
    from .tf1.state import checkpoint_exists as checkpoint_exists
    from .tf1.state import get_checkpoint_mtimes as get_checkpoint_mtimes
    from .tf1.state import get_checkpoint_state as get_checkpoint_state
    from .tf1.state import latest_checkpoint as latest_checkpoint
    from .tf1.state import remove_checkpoint as remove_checkpoint
    from .tf1.state import update_checkpoint_state as update_checkpoint_state
    from .tf2.checkpoint import Checkpoint as Checkpoint
    from .tf2.manager import CheckpointManager as CheckpointManager
