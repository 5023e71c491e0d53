"""The `checkpoint` state file: which checkpoints a directory holds, and the latest.

A text-format CheckpointState (`python/checkpoint/checkpoint_management.py` in TF).
Relative paths in it resolve against the state file's own directory. Better than TF:
when a directory was moved or copied and the file still names absolute paths into
the old place, a path that no longer exists resolves to the checkpoint of the same
name in this directory, if there is one.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence

from google.protobuf import text_format

from . import storage
from .errors import CheckpointError, DataLossError, InvalidArgumentError, InvalidStateError, NotFoundError
from .format import naming
from .format.naming import meta_graph_filename  # re-exported: part of this module's API
from .proto.checkpoint_state_pb2 import CheckpointState
from .proto.saver_pb2 import SaverDef
from .storage import locked_directory, write_file

__all__ = ["CheckpointState", "V1", "V2", "check_state_file_path", "checkpoint_exists", "checkpoint_files",
           "generate_checkpoint_state_proto", "get_checkpoint_mtimes", "get_checkpoint_state",
           "latest_checkpoint", "meta_graph_filename", "read_state_file", "recorded_latest", "remove_checkpoint",
           "resolve_checkpoint_path", "update_checkpoint_state", "write_state_file"]

STATE_FILENAME = "checkpoint"
V1 = SaverDef.V1  # SaverDef.CheckpointFormatVersion: V1 is one file at PREFIX (LEGACY too)
V2 = SaverDef.V2  # PREFIX.index + PREFIX.data-SSSSS-of-NNNNN

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


# --------------------------------------------------------------------------- writing the state

def _path_list(paths: Iterable[str | os.PathLike] | None) -> list[str]:
    if paths is None:
        return []
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise InvalidArgumentError("all_model_checkpoint_paths must be a list of paths, not one path")
    return [os.fspath(p) for p in paths]


def generate_checkpoint_state_proto(save_dir: str | os.PathLike, model_checkpoint_path: str | os.PathLike,
                                    all_model_checkpoint_paths: Iterable[str] | None = None,
                                    all_model_checkpoint_timestamps: Sequence[float] | None = None,
                                    last_preserved_timestamp: float | None = None) -> CheckpointState:
    """The CheckpointState TF would write for these arguments (TF's function of the same name).

    The latest path is appended to the list when it is not already its last element.
    When `save_dir` is relative, relative paths are rewritten relative to it (they were
    given relative to the working directory), so that the file is correct wherever it is
    later read from. The caller's list is not modified (TF's is).
    """
    save_dir = storage.fspath(save_dir) or os.curdir  # TF's relpath(p, "") fails; "" means here
    model = storage.fspath(model_checkpoint_path)
    paths = _path_list(all_model_checkpoint_paths)
    if not paths or paths[-1] != model:
        paths.append(model)
    timestamps = list(all_model_checkpoint_timestamps or [])
    if timestamps and len(timestamps) != len(paths):
        raise InvalidArgumentError(
            f"checkpoint timestamps, if provided, must match checkpoint paths "
            f"(got {len(paths)} paths {paths} and {len(timestamps)} timestamps)", path=save_dir)
    if not storage.isabs(save_dir):
        if not storage.isabs(model):
            model = os.path.relpath(model, save_dir)
        paths = [p if storage.isabs(p) else os.path.relpath(p, save_dir) for p in paths]
    state = CheckpointState(model_checkpoint_path=model, all_model_checkpoint_paths=paths,
                            all_model_checkpoint_timestamps=timestamps)
    if last_preserved_timestamp is not None:
        state.last_preserved_timestamp = last_preserved_timestamp
    return state


def update_checkpoint_state(save_dir: str | os.PathLike, model_checkpoint_path: str | os.PathLike,
                            all_model_checkpoint_paths: Iterable[str] | None = None,
                            latest_filename: str | None = None,
                            all_model_checkpoint_timestamps: Sequence[float] | None = None,
                            last_preserved_timestamp: float | None = None,
                            save_relative_paths: bool = False) -> None:
    """Atomically rewrite the state file `save_dir/latest_filename` (default `checkpoint`).

    TF's `update_checkpoint_state_internal`: with `save_relative_paths`, absolute paths
    are written relative to `save_dir`; `all_model_checkpoint_paths` is oldest first and
    gets the latest appended if it is not its last element. Raises InvalidArgumentError
    (TF: ValueError/RuntimeError) when the timestamps don't match the paths or the
    latest checkpoint would be the state file itself, and — stricter than TF — when
    `latest_filename` has path components (the state file lives in `save_dir`).
    """
    save_dir = storage.fspath(save_dir)
    latest_filename = latest_filename or STATE_FILENAME
    if os.path.split(latest_filename)[0] or latest_filename in (os.curdir, os.pardir):
        raise InvalidArgumentError(f"latest_filename {latest_filename!r} must not contain path components",
                                   path=save_dir)
    state_path = storage.join(save_dir, latest_filename)
    model = storage.fspath(model_checkpoint_path)
    paths = _path_list(all_model_checkpoint_paths)
    if save_relative_paths:
        start = save_dir or os.curdir
        model = storage.relpath(model, start)
        paths = [storage.relpath(p, start) for p in paths]
    state = generate_checkpoint_state_proto(save_dir, model, paths, all_model_checkpoint_timestamps,
                                            last_preserved_timestamp)
    if state.model_checkpoint_path == state_path:
        raise InvalidArgumentError(f"save path {model!r} conflicts with the path of the checkpoint "
                                   "state file; use a different save path", path=state_path)
    write_state_file(state_path, state)  # checks the directory first


# --------------------------------------------------------------------------- files of a checkpoint

def _name_pattern(prefix: str, checkpoint_format_version: int, meta_graph_suffix: str) -> re.Pattern:
    """A regex matching exactly the file names (no directory) of one checkpoint."""
    base = os.path.basename(prefix)
    meta = re.escape(os.path.basename(meta_graph_filename(prefix, meta_graph_suffix)))
    if checkpoint_format_version == V2:
        own = naming.v2_file_regex(base)
    else:  # V1: the file PREFIX itself; TF globs it, which only matters for `-?????-of-N` shards
        own = "".join(r"\d" if c == "?" else re.escape(c) for c in base)
    return re.compile(f"(?:{own}|{meta})")


def checkpoint_files(prefix: str | os.PathLike, checkpoint_format_version: int = V2,
                     meta_graph_suffix: str = "meta") -> list[str]:
    """The files on disk that belong to checkpoint `prefix`, found in its directory only.

    A file counts if its name is one TF gives that checkpoint (`.index`, `.data-*-of-*`,
    `.meta`, or the V1 file) and it is a regular file or a symlink (never a directory).
    """
    prefix = storage.fspath(prefix)
    directory, base = os.path.split(prefix)
    if not base:
        return []
    pattern = _name_pattern(prefix, checkpoint_format_version, meta_graph_suffix)
    return sorted(storage.join(directory, name) for name, kind in storage.of(prefix).entries(directory)
                  if pattern.fullmatch(name) and kind in ("file", "link"))


def remove_checkpoint(checkpoint_prefix: str | os.PathLike, checkpoint_format_version: int = V2,
                      meta_graph_suffix: str = "meta", *, root: str | os.PathLike | None = None) -> list[str]:
    """Delete the files of one checkpoint; return the paths deleted.

    As TF's `remove_checkpoint`, but safe against hostile or stale state files: only
    the files `checkpoint_files` lists are deleted, so nothing outside the prefix's own
    directory and nothing that is not a file of this checkpoint. A symlink is removed
    itself; its target is never touched. With `root` (the directory a Saver manages),
    a prefix whose directory is not `root` (`../x`, `/elsewhere/y`, a symlinked
    subdirectory) is refused with InvalidArgumentError and nothing is deleted.
    """
    prefix = storage.fspath(checkpoint_prefix)
    if "\0" in prefix:
        raise InvalidArgumentError("checkpoint path contains a NUL byte", path=repr(prefix))
    directory = os.path.dirname(prefix)
    store = storage.of(prefix)
    if root is not None and not storage.same_directory(directory, storage.fspath(root)):
        shown = os.fspath(root) or os.curdir
        raise InvalidArgumentError(f"refusing to delete a checkpoint outside {shown!r}", path=prefix)
    removed = []
    with locked_directory(directory):
        # The index goes first: from then on the checkpoint no longer exists for any
        # reader, so a crash part-way leaves orphan data files, never a half checkpoint.
        files = sorted(checkpoint_files(prefix, checkpoint_format_version, meta_graph_suffix),
                       key=lambda p: not p.endswith(naming.INDEX_SUFFIX))
        for path in files:
            if not store.remove(path):  # on a symlink: removes the link, not its target
                _log.warning("%s: already deleted, perhaps by another process", path)
                continue
            removed.append(path)
        if removed:
            store.sync_directory(directory)
    return removed


def get_checkpoint_mtimes(checkpoint_prefixes: Iterable[str | os.PathLike]) -> list[float]:
    """Modification times (seconds since the Epoch) of the checkpoints that exist.

    TF's function: V2's `.index` first, else the V1 file; checkpoints not found are
    skipped, so the result may be shorter than the input. Whole seconds, as TF's local
    filesystem reports them (its `mtime_nsec` is `st_mtime * 1e9`): a Saver recovering
    its list then makes the same keep/delete decisions as TF's.
    """
    mtimes = []
    for prefix in checkpoint_prefixes:
        prefix = storage.fspath(prefix)
        for candidate in (naming.index_filename(prefix), prefix):
            if "\0" in candidate:
                continue
            directory, base = os.path.split(candidate)
            names = storage.match(directory, base) if naming.V1_SHARD_GLOB.search(base) else [candidate]
            found = None
            for name in names:
                store = storage.of(name)
                if store.kind(name) in ("file", "other"):
                    found = store.mtime(name)
                    if found is not None:
                        break
            if found is not None:
                mtimes.append(float(int(found)))
                break
    return mtimes
