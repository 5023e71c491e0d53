"""`ckptkit.CheckpointManager`: TF's `tf.train.CheckpointManager` for a `ckptkit.Checkpoint`.

For the same sequence of saves (and the same clock), the directory ends up with the
same files and the same `checkpoint` state file as TF's manager leaves: checkpoints
`DIR/NAME-N`, numbered by the checkpoint's save counter unless `checkpoint_number` is
given; at most `max_to_keep` of them listed, older ones deleted unless
`keep_checkpoint_every_n_hours` says to preserve one; the state file with
`all_model_checkpoint_timestamps` and `last_preserved_timestamp`. A new manager
recovers the list and timestamps from the state file, as TF's does. The policy follows
TF's `CheckpointManager.__init__`, `save`, `_sweep` and `_record_state` step for step
(python/checkpoint/checkpoint_management.py).

Differences, on purpose: a save holds the directory's lock as a Saver, so two managers
saving into one directory fail clearly (DirectoryLockedError) instead of deleting each
other's checkpoints; deleting never leaves the manager's directory (a state file naming
checkpoints elsewhere cannot make it delete there); and `.meta` files of a deleted
checkpoint go with it.
"""
from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from .. import storage
from ..errors import CheckpointError, InvalidArgumentError
from ..storage import locked_directory
from ..storage.lock import SAVER
from ..tf1.saver import step_number
from ..tf1.state import V2, get_checkpoint_state, remove_checkpoint, update_checkpoint_state
from .checkpoint import Checkpoint, make_directories

__all__ = ["CheckpointManager"]

_log = logging.getLogger(__name__)


def evaluate_step(value: Any, what: str) -> int:
    """An int from a step counter: an int, a 0-d integer array or numpy integer, a
    callable returning one, or an object with `.numpy()` (a TF variable)."""
    if callable(value):
        value = value()
    numpy = getattr(value, "numpy", None)
    if callable(numpy):
        value = numpy()
    return step_number(value, what)


class CheckpointManager:
    """Keep the last `max_to_keep` checkpoints of a `ckptkit.Checkpoint` in `directory`.

    As TF's: `save()` writes `directory/checkpoint_name-N` and returns its prefix;
    `latest_checkpoint` and `checkpoints` (oldest first) say what is kept;
    `restore_or_initialize()` restores the latest checkpoint or calls `init_fn`.
    `step_counter` (with `checkpoint_interval`: save only every that many steps) is
    read at each save: pass a 0-d numpy integer array that your loop updates in place
    (`step[...] += 1`; also held by the Checkpoint, restore assigns into it), a
    callable returning the step, or anything with `.numpy()`. `max_to_keep=None`
    keeps every checkpoint. `lock_timeout`: seconds a save waits for another saver in
    the directory (0: fail at once; None: wait).
    """

    def __init__(self, checkpoint: Checkpoint, directory: str | os.PathLike, max_to_keep: int | None = 5,
                 keep_checkpoint_every_n_hours: float | None = None, checkpoint_name: str = "ckpt",
                 step_counter: Any = None, checkpoint_interval: int | None = None,
                 init_fn: Callable[[], Any] | None = None, last_checkpoint_step: int | None = None,
                 *, lock_timeout: float | None = 0.0) -> None:
        if not isinstance(checkpoint, Checkpoint):
            raise InvalidArgumentError(f"checkpoint must be a ckptkit.Checkpoint, not {type(checkpoint).__name__}")
        if max_to_keep is not None and (isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int)
                                        or max_to_keep <= 0):
            raise InvalidArgumentError(f"Expected a positive integer or `None` for `max_to_keep`, got {max_to_keep!r}")
        if checkpoint_interval is not None and step_counter is None:
            raise InvalidArgumentError("`step_counter` should be passed if `checkpoint_interval` is not None")
        self._checkpoint = checkpoint
        self._max_to_keep = max_to_keep
        self._keep_checkpoint_every_n_hours = keep_checkpoint_every_n_hours
        self._directory = storage.fspath(directory)
        self._checkpoint_prefix = storage.join(self._directory, checkpoint_name)
        self._init_fn = init_fn
        self._step_counter = step_counter
        self._checkpoint_interval = checkpoint_interval
        self._last_checkpoint_step = last_checkpoint_step
        self._lock_timeout = lock_timeout

        recovered = get_checkpoint_state(self._directory)
        now = time.time()
        self._maybe_delete: collections.OrderedDict[str, float] = collections.OrderedDict()
        if recovered is None:
            self._latest_checkpoint: str | None = None
            self._last_preserved_timestamp = now - 1.0
            return
        self._latest_checkpoint = recovered.model_checkpoint_path
        self._last_preserved_timestamp = recovered.last_preserved_timestamp
        if now < self._last_preserved_timestamp:
            _log.warning("time.time() returned a value %f seconds behind the last preserved checkpoint timestamp.",
                         self._last_preserved_timestamp - now)
            self._last_preserved_timestamp = now
        paths = list(recovered.all_model_checkpoint_paths)
        timestamps = list(recovered.all_model_checkpoint_timestamps) or [self._last_preserved_timestamp] * len(paths)
        for path, timestamp in zip(paths, timestamps, strict=False):  # TF zips: a shorter list cuts the other
            timestamp = min(timestamp, now)
            if timestamp > self._last_preserved_timestamp:
                self._maybe_delete[path] = timestamp

    # ------------------------------------------------------------------ what it holds
    @property
    def directory(self) -> str:
        return self._directory

    @property
    def checkpoint(self) -> Checkpoint:
        return self._checkpoint

    @property
    def checkpoint_interval(self) -> int | None:
        return self._checkpoint_interval

    @property
    def latest_checkpoint(self) -> str | None:
        """The prefix of the newest checkpoint (recovered from the state file), or None."""
        return self._latest_checkpoint

    @property
    def checkpoints(self) -> list[str]:
        """The checkpoints kept and not preserved for good, oldest first."""
        return list(self._maybe_delete)

    # ------------------------------------------------------------------ saving
    def _sweep(self) -> list[str]:
        """TF's _sweep, without the deleting: the oldest beyond max_to_keep leave the list
        (unless one opens a new keep period); returns those to delete once the state file
        no longer names them."""
        doomed: list[str] = []
        if not self._max_to_keep:
            return doomed
        while len(self._maybe_delete) > self._max_to_keep:
            path, timestamp = self._maybe_delete.popitem(last=False)
            hours = self._keep_checkpoint_every_n_hours
            if hours and timestamp - hours * 3600.0 >= self._last_preserved_timestamp:
                self._last_preserved_timestamp = timestamp
                continue
            doomed.append(path)
        return doomed

    def _delete(self, paths: list[str]) -> None:
        for path in paths:
            try:
                remove_checkpoint(path, V2, root=self._directory)
            except (CheckpointError, OSError) as exc:  # TF logs a failed delete and goes on
                _log.warning("Ignoring: %s", exc)

    def _record_state(self) -> None:
        assert self._latest_checkpoint is not None
        update_checkpoint_state(self._directory, self._latest_checkpoint, list(self._maybe_delete),
                                all_model_checkpoint_timestamps=list(self._maybe_delete.values()),
                                last_preserved_timestamp=self._last_preserved_timestamp,
                                save_relative_paths=True)

    def save(self, checkpoint_number: Any = None, check_interval: bool = True) -> str | None:
        """Write a checkpoint, record it in the state file and delete what falls out; return its prefix.

        None (nothing written) when `checkpoint_interval` is set and the step counter
        has not moved on by that many steps since the last save (`check_interval=False`:
        only when it has not moved at all). The checkpoint's save counter is incremented
        either way of numbering: `checkpoint_number` (an int, or anything a step counter
        may be) names the file instead of the counter.
        """
        if self._checkpoint_interval is not None:
            current = evaluate_step(self._step_counter, "step_counter")
            if self._last_checkpoint_step is not None:
                if current == self._last_checkpoint_step:
                    return None
                if check_interval and current < self._last_checkpoint_step + self._checkpoint_interval:
                    return None
            self._last_checkpoint_step = current
        counter = self._checkpoint._next_save_counter()
        number = counter if checkpoint_number is None else evaluate_step(checkpoint_number, "checkpoint_number")
        prefix = f"{self._checkpoint_prefix}-{number}"
        make_directories(self._directory, prefix)
        with locked_directory(self._directory, self._lock_timeout, role=SAVER):
            self._checkpoint._write(prefix)
            timestamp = time.time()
            self._maybe_delete.pop(prefix, None)
            self._maybe_delete[prefix] = timestamp
            self._latest_checkpoint = prefix
            # TF records, deletes, records again; here the one state file written names the
            # new checkpoint and only those kept, before any is deleted: a kill in between
            # leaves orphan files (as TF's Saver does), never a state naming a deleted one.
            doomed = self._sweep()
            self._record_state()
            self._delete(doomed)
        return prefix

    def restore_or_initialize(self) -> str | None:
        """Restore the latest checkpoint and return its prefix; else call `init_fn` and return None."""
        if self._latest_checkpoint is not None:
            self._checkpoint.restore(self._latest_checkpoint)
            if self._checkpoint_interval is not None:
                self._last_checkpoint_step = evaluate_step(self._step_counter, "step_counter")
            return self._latest_checkpoint
        if self._init_fn is not None:
            self._init_fn()
        return None

    def sync(self) -> None:
        """TF waits for async saves here; ckptkit's saves are synchronous, so nothing to do."""
