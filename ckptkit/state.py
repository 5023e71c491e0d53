"""The `checkpoint` state file: which checkpoints a directory holds, and the latest.

A text-format CheckpointState (`python/checkpoint/checkpoint_management.py` in TF).
Relative paths in it resolve against the state file's own directory. Better than TF:
when a directory was moved or copied and the file still names absolute paths into
the old place, a path that no longer exists resolves to the checkpoint of the same
name in this directory, if there is one.
"""
from __future__ import annotations

import os

from google.protobuf import text_format

from .errors import DataLossError
from .format import bundle
from .format.files import write_file_atomic
from .proto.checkpoint_state_pb2 import CheckpointState

__all__ = ["CheckpointState", "checkpoint_exists", "get_checkpoint_state", "latest_checkpoint",
           "read_state_file", "write_state_file"]

STATE_FILENAME = "checkpoint"


def checkpoint_exists(prefix: str | os.PathLike) -> bool:
    """True if a V2 checkpoint (its .index) or a V1 file exists at `prefix`."""
    prefix = os.fspath(prefix)
    if os.path.isfile(bundle.index_filename(prefix)):
        return True
    if os.path.isfile(prefix):
        return True
    import glob  # noqa: PLC0415 - rare path: sharded V1 files
    return bool(glob.glob(glob.escape(prefix) + "-?????-of-?????"))


def read_state_file(path: str | os.PathLike) -> CheckpointState | None:
    """Parse a state file as stored (paths untouched); None if it does not exist."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    state = CheckpointState()
    try:
        text_format.Parse(text.decode("utf-8"), state)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise DataLossError(f"checkpoint state file is not parseable: {exc}", path=path) from None
    return state


def write_state_file(path: str | os.PathLike, state: CheckpointState) -> None:
    """Write a state file atomically, in the text format TF writes."""
    write_file_atomic(os.fspath(path), text_format.MessageToString(state).encode("utf-8"))


def _resolve(directory: str, path: str) -> str:
    if not os.path.isabs(path):
        return os.path.join(directory, path)
    if not checkpoint_exists(path):
        # The directory may have moved since this absolute path was written.
        local = os.path.join(directory, os.path.basename(path))
        if checkpoint_exists(local):
            return local
    return path


def get_checkpoint_state(checkpoint_dir: str | os.PathLike,
                         latest_filename: str | None = None) -> CheckpointState | None:
    """The directory's CheckpointState with every path resolved, or None if it has none."""
    checkpoint_dir = os.fspath(checkpoint_dir)
    state = read_state_file(os.path.join(checkpoint_dir, latest_filename or STATE_FILENAME))
    if state is None:
        return None
    if not state.model_checkpoint_path:
        raise DataLossError("checkpoint state file has no model_checkpoint_path",
                            path=os.path.join(checkpoint_dir, latest_filename or STATE_FILENAME))
    state.model_checkpoint_path = _resolve(checkpoint_dir, state.model_checkpoint_path)
    resolved = [_resolve(checkpoint_dir, p) for p in state.all_model_checkpoint_paths]
    del state.all_model_checkpoint_paths[:]
    state.all_model_checkpoint_paths.extend(resolved)
    return state


def latest_checkpoint(checkpoint_dir: str | os.PathLike, latest_filename: str | None = None) -> str | None:
    """The prefix of the directory's latest checkpoint, or None if there is none on disk."""
    state = get_checkpoint_state(checkpoint_dir, latest_filename)
    if state is not None and checkpoint_exists(state.model_checkpoint_path):
        return state.model_checkpoint_path
    return None
