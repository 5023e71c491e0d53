"""TF's checkpoint management on the `checkpoint` state file: update it, prune, list files.

The functions of TF's `python/checkpoint/checkpoint_management.py` that Savers and
users call. The file itself (parsing, resolving the paths it records, writing it
atomically) is `formats/state_file.py`; its reading functions are re-exported here,
as TF's module offers them beside the writing ones.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence

from .. import storage
from ..errors import InvalidArgumentError
from ..formats import naming
from ..formats.naming import meta_graph_filename  # re-exported: part of this module's API
from ..formats.state_file import (
    STATE_FILENAME,
    check_state_file_path,
    checkpoint_exists,
    get_checkpoint_state,
    latest_checkpoint,
    read_state_file,
    recorded_latest,
    resolve_checkpoint_path,
    write_state_file,
)
from ..proto.checkpoint_state_pb2 import CheckpointState
from ..proto.saver_pb2 import SaverDef
from ..storage import locked_directory

__all__ = ["STATE_FILENAME", "CheckpointState", "V1", "V2", "check_state_file_path", "checkpoint_exists",
           "checkpoint_files", "generate_checkpoint_state_proto", "get_checkpoint_mtimes", "get_checkpoint_state",
           "latest_checkpoint", "meta_graph_filename", "read_state_file", "recorded_latest", "remove_checkpoint",
           "resolve_checkpoint_path", "update_checkpoint_state", "write_state_file"]

V1 = SaverDef.V1  # SaverDef.CheckpointFormatVersion: V1 is one file at PREFIX (LEGACY too)
V2 = SaverDef.V2  # PREFIX.index + PREFIX.data-SSSSS-of-NNNNN

_log = logging.getLogger(__name__)

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
