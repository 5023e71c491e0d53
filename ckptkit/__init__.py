"""ckptkit: TensorFlow checkpoints in plain Python (numpy + protobuf), no TensorFlow needed.

The public API is imported lazily (PEP 562), so that `ckptkit --help` and other
commands start without paying for numpy and protobuf until they need them.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import (CheckpointError, DataLossError, InvalidArgumentError, NotFoundError,
                     TensorNotFoundError, UnsupportedError)

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
    "ExponentialMovingAverage": "ema",
    "build_meta_graph": "metagraph", "write_meta_graph": "metagraph", "read_meta_graph": "metagraph",
    "summarize_meta_graph": "metagraph",
    "SlicedTensor": "format.slices", "TensorSlice": "format.slices",
    "ObjectGraph": "objectgraph",
    "rename_keys": "edit", "remove_keys": "edit", "apply_ema": "edit",
    "DirectoryLockedError": "format.lock", "ConcurrentModificationError": "format.commit",
}

__all__ = ["CheckpointError", "DataLossError", "InvalidArgumentError", "NotFoundError",
           "TensorNotFoundError", "UnsupportedError", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ckptkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs: the eager view of the same names
    from .dtypes import DType, as_dtype
    from .reader import (CheckpointReader, NewCheckpointReader, list_variables, load,
                         load_checkpoint, load_variable)
    from .edit import apply_ema, remove_keys, rename_keys
    from .ema import ExponentialMovingAverage
    from .format.slices import SlicedTensor, TensorSlice
    from .format.commit import ConcurrentModificationError
    from .format.lock import DirectoryLockedError
    from .objectgraph import ObjectGraph
    from .metagraph import build_meta_graph, read_meta_graph, summarize_meta_graph, write_meta_graph
    from .saver import Saver
    from .state import (checkpoint_exists, get_checkpoint_mtimes, get_checkpoint_state, latest_checkpoint,
                        remove_checkpoint, update_checkpoint_state)
    from .writer import save
