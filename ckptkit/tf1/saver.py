"""Saver: TF1's `tf.compat.v1.train.Saver` for values held as numpy arrays.

The same sequence of saves leaves the same files and the same `checkpoint` state
file as TF's Saver: names `path-N` (`pad_step_number`: `path-%08d`), a recent list of
`max_to_keep` checkpoints, older ones deleted unless `keep_checkpoint_every_n_hours`
says to keep one. The policy follows TF's `_RecordLastCheckpoint` and
`_MaybeDeleteOldCheckpoints` step for step (including their quirks, e.g. a recovered
list longer than `max_to_keep` stays that long), because users rely on which files
survive.

Deliberately stricter than TF: pruning never deletes a file outside the directory
of the current `save_path` (a hostile or stale state file cannot make it delete
elsewhere); a new checkpoint is complete on disk (bundle and `.meta`) before the
state file names it; a save holds the directory's lock (ckptkit/storage/lock.py), so a second
Saver saving into the same directory at the same time fails clearly instead of
corrupting the state file; and each save first deletes the temp files that crashed
ckptkit writers left in that directory (`storage.files.sweep_stale_temps` says which are
stale: a dead writer's on this machine, or anyone's untouched for an hour).

Crash safety: kill a save at any moment and `latest_checkpoint(dir)` still names a
complete checkpoint (the previous one, or the new one once the state file is
renamed into place); a new Saver, after `recover_last_checkpoints`, carries on.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .. import storage
from ..errors import CheckpointError, InvalidArgumentError, NoCheckpointError
from ..formats import bundle
from ..proto.meta_graph_pb2 import MetaGraphDef
from ..proto.saver_pb2 import SaverDef
from ..reader import CheckpointReader
from ..storage import locked_directory, write_file
from ..storage.lock import SAVER
from .state import (
    V2,
    check_state_file_path,
    checkpoint_exists,
    get_checkpoint_mtimes,
    meta_graph_filename,
    remove_checkpoint,
    update_checkpoint_state,
)

__all__ = ["Saver"]

_log = logging.getLogger(__name__)

VarList = Mapping[str, str] | Iterable[str] | None


def _normalize_var_list(var_list: VarList) -> dict[str, str] | None:
    """{checkpoint key: variable name}, or None for "every value handed to save"."""
    if var_list is None:
        return None
    if isinstance(var_list, Mapping):
        items = list(var_list.items())
    elif isinstance(var_list, (str, bytes)):
        raise InvalidArgumentError(f"var_list must be a list or dict of names, not the string {var_list!r}")
    else:
        names = list(var_list)
        items = [(n, n) for n in names]
        seen = set()
        for name in names:
            if name in seen:  # TF: "At least two variables have the same name: v"
                raise InvalidArgumentError(f"variable {name!r} appears twice in var_list", key=name)
            seen.add(name)
    saved_as: dict[str, str] = {}  # variable name -> its first checkpoint key
    for key, name in items:
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError(f"checkpoint keys must be non-empty strings, got {key!r}")
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"variable names must be non-empty strings, got {name!r}", key=key)
        if name in saved_as:  # TF: "The same saveable will be restored with two names: b"
            raise InvalidArgumentError(f"variable {name!r} would be saved and restored under two names, "
                                       f"{saved_as[name]!r} and {key!r}", key=key)
        saved_as[name] = key
    return dict(items)


def step_number(global_step: Any, what: str = "global_step") -> int:
    """An int from an int or a 0-d integer array (TF evaluates a step tensor and int()s it).

    Floats are refused: a fractional step would silently name the wrong checkpoint.
    Also CheckpointManager's checkpoint_number and step_counter (`what` names it).
    """
    if isinstance(global_step, (bool, np.bool_)):
        raise InvalidArgumentError(f"{what} must be an integer, got {global_step!r}")
    if isinstance(global_step, (int, np.integer)):
        return int(global_step)
    arr = np.asarray(global_step)
    if arr.ndim != 0 or arr.dtype.kind not in "iu":
        raise InvalidArgumentError(f"{what} must be an integer or a 0-d integer array, "
                                   f"got {global_step!r}")
    return int(arr)


class Saver:
    """Save and restore {name: array} mappings as TF V2 checkpoints, with TF's Saver policy.

    `var_list`: None (every value handed to `save`; on restore, every tensor in the
    checkpoint), a list of names, or a dict {checkpoint key: variable name} — so
    `Saver({"v/ExponentialMovingAverage": "v"}).restore(path)` returns {"v": shadow}.
    `lock_timeout`: seconds a save waits for another Saver saving into the same
    directory to finish (0, the default: fail at once with DirectoryLockedError; None:
    wait as long as it takes). `storage_options`: the fsspec store's options (credentials,
    endpoint) when save paths are URLs (`s3://bucket/run/model.ckpt`).
    """

    def __init__(self, var_list: VarList = None, *, max_to_keep: int | None = 5,
                 keep_checkpoint_every_n_hours: float = 10000.0, pad_step_number: bool = False,
                 save_relative_paths: bool = False, sharded: bool = False, num_shards: int = 1,
                 allow_empty: bool = False, lock_timeout: float | None = 0.0,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        if max_to_keep is not None and (isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int)
                                        or max_to_keep < 0):
            raise InvalidArgumentError(f"max_to_keep must be None or an int >= 0, got {max_to_keep!r}")
        if not isinstance(num_shards, int) or num_shards < 1:
            raise InvalidArgumentError(f"num_shards must be an int >= 1, got {num_shards!r}")
        if num_shards > 1 and not sharded:
            raise InvalidArgumentError("num_shards > 1 needs sharded=True")
        self._var_list = _normalize_var_list(var_list)
        if self._var_list is not None and not self._var_list and not allow_empty:
            raise InvalidArgumentError("no variables to save (empty var_list; pass allow_empty=True)")
        self._allow_empty = allow_empty
        # An empty Saver (TF: no variables in the graph) saves and restores nothing. Without
        # a graph that is known from an empty var_list, or once a save had nothing to save.
        self._empty = self._var_list is not None and not self._var_list
        if lock_timeout is not None and (isinstance(lock_timeout, bool) or not isinstance(lock_timeout, (int, float))
                                         or lock_timeout < 0):
            raise InvalidArgumentError(f"lock_timeout must be None or seconds >= 0, got {lock_timeout!r}")
        self._lock_timeout = lock_timeout
        self._storage_options = storage_options
        self._pad_step_number = pad_step_number
        self._save_relative_paths = save_relative_paths
        self._sharded = sharded
        self._num_shards = num_shards
        # A SaverDef holds the policy so that its numbers have TF's precision: max_to_keep
        # is int32 and keep_checkpoint_every_n_hours a float32, which moves the keep times.
        self.saver_def = SaverDef(max_to_keep=max_to_keep or 0,
                                  keep_checkpoint_every_n_hours=keep_checkpoint_every_n_hours,
                                  sharded=sharded, version=V2)
        self._last_checkpoints: list[tuple[str, float]] = []
        self._checkpoints_to_be_deleted: list[tuple[str, float]] = []
        self._next_checkpoint_time = time.time() + self._keep_seconds

    @property
    def _keep_seconds(self) -> float:
        return self.saver_def.keep_checkpoint_every_n_hours * 3600

    # ------------------------------------------------------------------ the recent list
    @property
    def last_checkpoints(self) -> list[str]:
        """The recent checkpoints not yet deleted, oldest first (the state file's list)."""
        return [path for path, _ in self._last_checkpoints]

    def set_last_checkpoints(self, last_checkpoints: list[str]) -> None:
        """Deprecated in TF: set the list with infinite times (so none is ever kept forever)."""
        self._last_checkpoints = [(os.fspath(p), np.inf) for p in last_checkpoints]

    def set_last_checkpoints_with_time(self, last_checkpoints_with_time: list[tuple[str, float]]) -> None:
        """Set the recent list: (prefix, save time in seconds since the Epoch), oldest first."""
        if not isinstance(last_checkpoints_with_time, list):
            raise InvalidArgumentError("last_checkpoints_with_time must be a list of (path, time)")
        self._last_checkpoints = [(os.fspath(p), float(t)) for p, t in last_checkpoints_with_time]

    def recover_last_checkpoints(self, checkpoint_paths: Iterable[str]) -> None:
        """Rebuild the recent list after a restart: the paths that still exist, with their mtimes.

        Typically `get_checkpoint_state(dir).all_model_checkpoint_paths`.
        """
        recovered = []
        for path in checkpoint_paths:
            mtime = get_checkpoint_mtimes([path])
            if mtime:
                recovered.append((os.fspath(path), mtime[0]))
        self.set_last_checkpoints_with_time(recovered)

    def _record_last_checkpoint(self, latest_save_path: str) -> None:
        """TF's _RecordLastCheckpoint: move/append the new path; queue the overflow."""
        if not self.saver_def.max_to_keep:
            return
        self._last_checkpoints = [p for p in self._last_checkpoints if p[0] != latest_save_path]
        self._last_checkpoints.append((latest_save_path, time.time()))
        if len(self._last_checkpoints) > self.saver_def.max_to_keep:
            self._checkpoints_to_be_deleted.append(self._last_checkpoints.pop(0))

    def _maybe_delete_old_checkpoints(self, meta_graph_suffix: str, root: str) -> None:
        """TF's _MaybeDeleteOldCheckpoints: one queued checkpoint, kept if it opens a new N-hour period.

        Deletion is confined to `root`; a refusal or a failure is logged, as TF logs and
        ignores a failed delete.
        """
        if not self._checkpoints_to_be_deleted:
            return
        path, saved_at = self._checkpoints_to_be_deleted.pop(0)
        if saved_at > self._next_checkpoint_time:
            self._next_checkpoint_time += self._keep_seconds
            return
        try:
            remove_checkpoint(path, self.saver_def.version, meta_graph_suffix, root=root)
        except (CheckpointError, OSError) as exc:
            _log.warning("Ignoring: %s", exc)

    # ------------------------------------------------------------------ save / restore
    def _checkpoint_file(self, save_path: str, global_step: Any) -> str:
        if global_step is None:
            return save_path
        step = step_number(global_step)
        return f"{save_path}-{step:08d}" if self._pad_step_number else f"{save_path}-{step}"

    def _tensors(self, values: Mapping[str, Any], save_path: str) -> dict[str, str]:
        """{checkpoint key: variable name} for this save, checked against `values`."""
        if not isinstance(values, Mapping):
            raise InvalidArgumentError(f"values must be a mapping of name -> array, "
                                       f"not {type(values).__name__}", path=save_path)
        saved = self._var_list if self._var_list is not None else {k: k for k in values}
        for key, name in saved.items():
            if name not in values:
                raise InvalidArgumentError(f"values has no variable {name!r} to save",
                                           path=save_path, key=key)
        return saved

    def save(self, values: Mapping[str, Any], save_path: str | os.PathLike, global_step: Any = None,
             latest_filename: str | None = None, meta_graph_suffix: str = "meta",
             write_meta_graph: bool = True, write_state: bool = True) -> str | None:
        """Write a checkpoint of `values` ({variable name: array-like}); return its prefix.

        The prefix is `save_path`, or `save_path-N` with `global_step` (an int or 0-d
        array). Order on disk: data shards and index (renamed into place), `.meta`, then
        the state file, then pruning of checkpoints beyond `max_to_keep` — all while
        holding the directory's lock, after sweeping stale temp files. Returns None
        for an empty Saver made with allow_empty=True (nothing is written).
        """
        with storage.options(self._storage_options):
            return self._save(values, save_path, global_step, latest_filename, meta_graph_suffix,
                              write_meta_graph, write_state)

    def _save(self, values: Mapping[str, Any], save_path: str | os.PathLike, global_step: Any,
              latest_filename: str | None, meta_graph_suffix: str, write_meta_graph: bool,
              write_state: bool) -> str | None:
        if save_path is None:  # TF: TypeError "Expected binary or unicode string, got None"
            raise InvalidArgumentError("can't save when save_path is None")
        save_path = storage.fspath(save_path)
        latest_filename = latest_filename or "checkpoint"
        if os.path.split(latest_filename)[0]:
            raise InvalidArgumentError("'latest_filename' must not contain path components",
                                       path=latest_filename)
        checkpoint_file = self._checkpoint_file(save_path, global_step)
        if global_step is None and os.path.basename(save_path) == latest_filename and not self._sharded:
            raise InvalidArgumentError(f"'latest_filename' collides with 'save_path': "
                                       f"{latest_filename!r} and {save_path!r}", path=save_path)
        saved = self._tensors(values, save_path)
        if not saved:
            if not self._allow_empty:
                raise InvalidArgumentError("no variables to save (pass allow_empty=True)", path=save_path)
            self._empty = True
            return None
        self._empty = False
        parent = os.path.dirname(save_path)
        self._make_parent(parent, save_path)
        # Build (and so validate) the graph before any file is written: a name TF's graph
        # can't hold must fail the save cleanly, not after the data landed.
        graph = self._build_meta_graph(values, saved, checkpoint_file) if write_meta_graph else None
        if write_state:  # a state file that can't be written fails the save before any byte
            check_state_file_path(storage.join(parent, latest_filename))
        with locked_directory(parent, self._lock_timeout, role=SAVER):
            bundle.write_bundle(checkpoint_file, {key: values[name] for key, name in saved.items()},
                                num_shards=self._num_shards)
            if graph is not None:
                write_file(meta_graph_filename(checkpoint_file, meta_graph_suffix),
                           graph.SerializeToString(deterministic=True))
            if write_state:
                self._record_last_checkpoint(checkpoint_file)
                update_checkpoint_state(parent, checkpoint_file, self.last_checkpoints,
                                        latest_filename=latest_filename,
                                        save_relative_paths=self._save_relative_paths)
                self._maybe_delete_old_checkpoints(meta_graph_suffix, root=parent)
        return checkpoint_file

    @staticmethod
    def _make_parent(parent: str, save_path: str) -> None:
        """TF's save creates a missing last directory level, and fails on a deeper miss.

        A parent (or grandparent) that is a regular file fails the same way, before
        anything is written (TF: ValueError "Parent directory of ... doesn't exist").
        """
        store = storage.of(save_path)
        if not parent or not store.hierarchical or store.isdir(parent):  # object stores: no directories
            return
        if store.exists(parent):
            raise InvalidArgumentError(f"parent directory {parent!r} is not a directory, can't save",
                                       path=save_path)
        grandparent = os.path.dirname(parent)
        if grandparent and not store.isdir(grandparent):
            raise InvalidArgumentError("parent directory doesn't exist, can't save", path=save_path)
        try:
            store.mkdir(parent)
        except FileExistsError:  # made meanwhile by another process: fine if a directory
            if not store.isdir(parent):
                raise InvalidArgumentError(f"parent directory {parent!r} is not a directory, can't save",
                                           path=save_path) from None
        except OSError as exc:
            raise CheckpointError(f"cannot create parent directory {parent!r}: {exc.strerror or exc}",
                                  path=save_path) from None

    def _build_meta_graph(self, values: Mapping[str, Any], saved: Mapping[str, str],
                          checkpoint_file: str) -> MetaGraphDef:
        from . import metagraph  # noqa: PLC0415 - lazy: graph building is only needed here
        variables = {}
        for key, name in saved.items():
            if name not in variables:
                arr, dtype = bundle.to_array(values[name], key)
                variables[name] = (dtype, tuple(arr.shape))
        try:
            return metagraph.build_meta_graph(
                variables, dict(saved), max_to_keep=self.saver_def.max_to_keep,
                keep_checkpoint_every_n_hours=self.saver_def.keep_checkpoint_every_n_hours,
                sharded=self._sharded)
        except CheckpointError as exc:  # name the checkpoint the caller was writing
            raise type(exc)(f"{exc.message} (pass write_meta_graph=False to save without a .meta)",
                            path=checkpoint_file, key=exc.key) from None

    def restore(self, save_path: str | os.PathLike) -> dict[str, np.ndarray]:
        """{variable name: array} read from checkpoint `save_path` through the var_list mapping.

        An empty Saver (allow_empty=True, with an empty var_list or whose last save had
        nothing to save) restores nothing and reads nothing, as TF's. A missing key raises
        TensorNotFoundError naming the file and key; a path with no checkpoint raises
        NoCheckpointError (a NotFoundError and, as TF's, a ValueError).
        """
        if save_path is None:
            raise InvalidArgumentError("can't load save_path when it is None")
        save_path = storage.fspath(save_path)
        if self._empty:
            return {}
        with storage.options(self._storage_options):
            if not checkpoint_exists(save_path):
                raise NoCheckpointError("the passed save_path is not a valid checkpoint", path=save_path)
        # TF: PREFIX.index first
        with CheckpointReader(save_path, as_prefix=True, storage_options=self._storage_options) as reader:
            mapping = self._var_list if self._var_list is not None else {k: k for k in reader}
            return {name: reader.get_tensor(key) for key, name in mapping.items()}
