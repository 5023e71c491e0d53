"""ckptkit: TensorFlow checkpoints in plain Python (numpy + protobuf), no TensorFlow needed."""
from .dtypes import DType, as_dtype
from .errors import (CheckpointError, DataLossError, InvalidArgumentError, NotFoundError,
                     TensorNotFoundError, UnsupportedError)
from .reader import (CheckpointReader, NewCheckpointReader, list_variables, load, load_checkpoint,
                     load_variable)
from .state import checkpoint_exists, get_checkpoint_state, latest_checkpoint
from .writer import save

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "CheckpointReader", "DType", "DataLossError", "InvalidArgumentError",
    "NewCheckpointReader", "NotFoundError", "TensorNotFoundError", "UnsupportedError", "as_dtype",
    "checkpoint_exists", "get_checkpoint_state", "latest_checkpoint", "list_variables", "load",
    "load_checkpoint", "load_variable", "save",
]
