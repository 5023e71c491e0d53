"""The `checkpoint` state file: its bytes, and where the paths it records point from here.

A text-format CheckpointState (`python/checkpoint/checkpoint_management.py` in TF).
Relative paths in it resolve against the state file's own directory. Better than TF:
when a directory was moved or copied and the file still names absolute paths into
the old place, a path that no longer exists resolves to the checkpoint of the same
name in this directory, if there is one. `location` reads it to open a directory;
the Saver semantics built on it (updating it, pruning) are in `tf1/state.py`.
"""
from __future__ import annotations

import logging
import os

from google.protobuf import text_format

from .. import storage
from ..errors import CheckpointError, DataLossError, InvalidArgumentError, InvalidStateError, NotFoundError
from ..proto.checkpoint_state_pb2 import CheckpointState
from ..storage import write_file
from . import naming

STATE_FILENAME = "checkpoint"

_log = logging.getLogger(__name__)


def checkpoint_exists(prefix: str | os.PathLike) -> bool:
    """True if a V2 checkpoint (its .index) or a V1 file exists at `prefix`.

    As TF's `checkpoint_exists_internal`, which globs `PREFIX.index`, then `PREFIX`:
    sharded V1 files (`PREFIX-00000-of-00002`) count only when `prefix` is their
    pattern `PREFIX-?????-of-00002` (what TF's sharded V1 Saver records), never for
    the bare `PREFIX`. Unlike TF, no other glob is expanded and a directory is no
    checkpoint (TF: `checkpoint_exists("some_dir")` is True).
    """
    prefix = storage.fspath(prefix)
    if "\0" in prefix:  # no file can have that name (os functions would raise ValueError)
        return False
    if storage.isfile(naming.index_filename(prefix)):
        return True
    if storage.isfile(prefix):
        return True
    directory, base = os.path.split(prefix)
    if naming.V1_SHARD_GLOB.search(base):  # TF's sharded V1 Saver records `model.ckpt-?????-of-00002`
        return bool(storage.match(directory, base))
    return False


# A real state file is a few hundred bytes per checkpoint listed; anything near this
# is not one, and reading it whole would only cost memory.
MAX_STATE_FILE_BYTES = 64 << 20


def _read_state_bytes(path: str) -> bytes | None:
    """The state file's bytes, None if it does not exist; a CheckpointError if it can't be
    read as a plain file (a FIFO, a directory, unreadable, implausibly large)."""
    try:
        with storage.of(path).open(path, "checkpoint state file") as f:
            if f.size > MAX_STATE_FILE_BYTES:
                raise DataLossError(f"checkpoint state file is implausibly large ({f.size} bytes)", path=path)
            return f.read(MAX_STATE_FILE_BYTES + 1, 0)
    except NotFoundError:
        return None


class _Unparseable(DataLossError):
    """Text that is not a CheckpointState (TF: a ParseError, which it logs and ignores)."""


def _parse_state(data: bytes, path: str) -> CheckpointState:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:  # TF raises UnicodeDecodeError, a ValueError
        raise InvalidStateError(f"checkpoint state file is not UTF-8: {exc}", path=path) from None
    state = CheckpointState()
    try:
        text_format.Parse(text, state)
    except text_format.ParseError as exc:
        raise _Unparseable(f"checkpoint state file is not parseable: {exc}", path=path) from None
    return state


def read_state_file(path: str | os.PathLike) -> CheckpointState | None:
    """Parse a state file as stored (paths untouched); None if it does not exist.

    Strict: text that is not a CheckpointState is a DataLossError (`get_checkpoint_state`
    logs and ignores it, as TF does); bytes that are not UTF-8 an InvalidStateError.
    Hostile files fail cleanly: a FIFO or device is refused without blocking on it
    (opened non-blocking, then checked to be a regular file), a directory or an
    unreadable file is a CheckpointError, and so is a file over MAX_STATE_FILE_BYTES.
    """
    path = storage.fspath(path)
    data = _read_state_bytes(path)
    return None if data is None else _parse_state(data, path)


def check_state_file_path(path: str | os.PathLike) -> None:
    """Raise a CheckpointError naming `path` if a state file could not be written there.

    The file is replaced by a rename, which fails on a directory (and a directory
    named `checkpoint` is no state file anyone should lose), and needs its directory
    to exist. A symlink is replaced itself, as TF does; its target is never written.
    Callers (update_checkpoint_state, a Saver) can check this before writing anything.
    """
    path = storage.fspath(path)
    if "\0" in path:
        raise InvalidArgumentError("checkpoint state file path contains a NUL byte", path=repr(path))
    store = storage.of(path)
    if store.kind(path) == "dir":
        raise CheckpointError("checkpoint state file is a directory; cannot replace it", path=path)
    directory = os.path.dirname(path)
    if directory and store.hierarchical and not store.isdir(directory):  # object stores: no directories
        what = "is not a directory" if store.exists(directory) else "does not exist"
        raise NotFoundError(f"directory for the checkpoint state file {what}", path=directory)


def write_state_file(path: str | os.PathLike, state: CheckpointState) -> None:
    """Write a state file atomically, in the text format TF writes, holding the lock.

    Refused before anything is written (CheckpointError naming the file) when the
    path is a directory or its directory is missing. A failing write (permissions, a
    full disk) raises the OSError, as every writer does, and leaves no temp file.
    """
    path = storage.fspath(path)
    check_state_file_path(path)
    write_file(path, text_format.MessageToString(state).encode("utf-8"))


def _resolve(directory: str, path: str) -> str:
    if not storage.isabs(path):
        return storage.join(directory, path)
    if storage.is_url(path) != storage.is_url(directory) or not checkpoint_exists(path):
        # The directory may have moved since this absolute path was written (a copy of a
        # gs:// directory on a local disk names gs:// paths: the local file wins).
        local = storage.join(directory, os.path.basename(path))
        if checkpoint_exists(local):
            return local
    return path


def resolve_checkpoint_path(checkpoint_dir: str | os.PathLike, path: str) -> str:
    """Where a path recorded in `checkpoint_dir`'s state file points from here.

    Relative: joined to the directory (TF does the same). Absolute but missing while
    the directory holds a checkpoint of the same name: that one (the directory was
    moved or copied; TF would follow the stale path).
    """
    return _resolve(storage.fspath(checkpoint_dir), path)


def get_checkpoint_state(checkpoint_dir: str | os.PathLike, latest_filename: str | None = None,
                         *, strict: bool = False) -> CheckpointState | None:
    """The directory's CheckpointState with every path resolved, or None if it has none.

    As TF: a state file whose text does not parse is logged (a warning on this
    module's logger) and ignored, so a resume loop goes on as if there were none;
    `strict=True` raises that DataLossError instead. A file that parses but names no
    latest checkpoint (empty, or cut at the end of a line), or that is not UTF-8,
    raises InvalidStateError, a ValueError, as TF raises ValueError. A state file
    that can't be read as a plain file (a FIFO, a directory, over
    MAX_STATE_FILE_BYTES) is a CheckpointError either way (TF logs unreadable files
    and ignores them, and blocks on a FIFO).

    Paths may name checkpoints anywhere — absolute, `../other/model`, through
    symlinks — as TF allows, and readers follow them (reading is harmless; a user may
    keep the state file apart from the data). Deleting is another matter: the Saver
    prunes only checkpoints in its own directory (`remove_checkpoint(..., root=)`).
    A path with a NUL byte can name no file and marks the state file as corrupt.
    """
    checkpoint_dir = storage.fspath(checkpoint_dir)
    state = _checked_state(checkpoint_dir, latest_filename, strict)
    if state is None:
        return None
    state.model_checkpoint_path = _resolve(checkpoint_dir, state.model_checkpoint_path)
    resolved = [_resolve(checkpoint_dir, p) for p in state.all_model_checkpoint_paths]
    del state.all_model_checkpoint_paths[:]
    state.all_model_checkpoint_paths.extend(resolved)
    return state


def recorded_latest(checkpoint_dir: str | os.PathLike, *, strict: bool = False) -> tuple[str, str] | None:
    """(as the state file writes it, where it points from here) of the directory's latest
    checkpoint, or None without a state file; checked as `get_checkpoint_state` checks it,
    in one read of the file and without resolving the other paths it lists: what a
    reader opening the directory needs, and what says how it found its checkpoint."""
    checkpoint_dir = storage.fspath(checkpoint_dir)
    state = _checked_state(checkpoint_dir, None, strict)
    if state is None:
        return None
    named = state.model_checkpoint_path
    return named, _resolve(checkpoint_dir, named)


def _checked_state(checkpoint_dir: str, latest_filename: str | None, strict: bool) -> CheckpointState | None:
    """The state file's CheckpointState as written (paths not resolved), checked."""
    state_path = storage.join(checkpoint_dir, latest_filename or STATE_FILENAME)
    try:
        state = read_state_file(state_path)
    except _Unparseable as exc:
        if strict:
            raise
        _log.warning("%s; checkpoint state ignored", exc)
        return None
    if state is None:
        return None
    if not state.model_checkpoint_path:
        raise InvalidStateError("checkpoint state file names no model_checkpoint_path "
                                "(TF: Invalid checkpoint state)", path=state_path)
    if any("\0" in p for p in [state.model_checkpoint_path, *state.all_model_checkpoint_paths]):
        raise DataLossError("checkpoint state file names a path with a NUL byte", path=state_path)
    return state


def latest_checkpoint(checkpoint_dir: str | os.PathLike, latest_filename: str | None = None,
                      *, strict: bool = False) -> str | None:
    """The prefix of the directory's latest checkpoint, or None if there is none on disk.

    None too, with a logged warning, for a state file that does not parse (as TF);
    `strict=True` raises DataLossError instead (see `get_checkpoint_state`).
    """
    state = get_checkpoint_state(checkpoint_dir, latest_filename, strict=strict)
    if state is not None and checkpoint_exists(state.model_checkpoint_path):
        return state.model_checkpoint_path
    return None
