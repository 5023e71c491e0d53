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
    "checkpoint_exists": "state", "get_checkpoint_state": "state", "latest_checkpoint": "state",
    "update_checkpoint_state": "state", "remove_checkpoint": "state", "get_checkpoint_mtimes": "state",
    "save": "writer",
    "Saver": "saver",
    "Checkpoint": "checkpoint", "CheckpointManager": "manager",
    "checkpoints_iterator": "poll", "wait_for_new_checkpoint": "poll",
    "ExponentialMovingAverage": "ema",
    "build_meta_graph": "metagraph", "write_meta_graph": "metagraph", "read_meta_graph": "metagraph",
    "summarize_meta_graph": "metagraph",
    "SlicedTensor": "format.slices", "TensorSlice": "format.slices",
    "ObjectGraph": "objectgraph",
    "rename_keys": "edit", "remove_keys": "edit", "apply_ema": "edit",
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
    from .checkpoint import Checkpoint as Checkpoint
    from .dtypes import DType as DType
    from .dtypes import as_dtype as as_dtype
    from .edit import apply_ema as apply_ema
    from .edit import remove_keys as remove_keys
    from .edit import rename_keys as rename_keys
    from .ema import ExponentialMovingAverage as ExponentialMovingAverage
    from .format.slices import SlicedTensor as SlicedTensor
    from .format.slices import TensorSlice as TensorSlice
    from .manager import CheckpointManager as CheckpointManager
    from .metagraph import build_meta_graph as build_meta_graph
    from .metagraph import read_meta_graph as read_meta_graph
    from .metagraph import summarize_meta_graph as summarize_meta_graph
    from .metagraph import write_meta_graph as write_meta_graph
    from .objectgraph import ObjectGraph as ObjectGraph
    from .poll import checkpoints_iterator as checkpoints_iterator
    from .poll import wait_for_new_checkpoint as wait_for_new_checkpoint
    from .reader import CheckpointReader as CheckpointReader
    from .reader import NewCheckpointReader as NewCheckpointReader
    from .reader import list_variables as list_variables
    from .reader import load as load
    from .reader import load_checkpoint as load_checkpoint
    from .reader import load_variable as load_variable
    from .saver import Saver as Saver
    from .state import checkpoint_exists as checkpoint_exists
    from .state import get_checkpoint_mtimes as get_checkpoint_mtimes
    from .state import get_checkpoint_state as get_checkpoint_state
    from .state import latest_checkpoint as latest_checkpoint
    from .state import remove_checkpoint as remove_checkpoint
    from .state import update_checkpoint_state as update_checkpoint_state
    from .storage.lock import DirectoryLockedError as DirectoryLockedError
    from .writer import save as save
