"""Waiting for checkpoints: TF's `tf.train.checkpoints_iterator` and `wait_for_new_checkpoint`.

An evaluation job follows a training job's directory: each new latest checkpoint (per
the `checkpoint` state file, and only once its files exist) is handed out once. As
TF's (python/training/checkpoint_utils.py), a checkpoint that is superseded between two
polls is skipped: the iterator yields the latest, not every one.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator

from .state import latest_checkpoint

__all__ = ["checkpoints_iterator", "wait_for_new_checkpoint"]

_log = logging.getLogger(__name__)


def wait_for_new_checkpoint(checkpoint_dir: str | os.PathLike, last_checkpoint: str | None = None,
                            seconds_to_sleep: float = 1, timeout: float | None = None) -> str | None:
    """Poll `checkpoint_dir` until its latest checkpoint is not `last_checkpoint`; return it.

    Returns None when `timeout` (seconds) would pass before the next poll. A state
    file that does not parse counts as no checkpoint (logged), as in TF.
    """
    _log.info("Waiting for new checkpoint at %s", checkpoint_dir)
    stop_time = time.time() + timeout if timeout is not None else None
    while True:
        path = latest_checkpoint(checkpoint_dir)
        if path is None or path == last_checkpoint:
            if stop_time is not None and time.time() + seconds_to_sleep > stop_time:
                return None
            time.sleep(seconds_to_sleep)
        else:
            _log.info("Found new checkpoint at %s", path)
            return path


def checkpoints_iterator(checkpoint_dir: str | os.PathLike, min_interval_secs: float = 0,
                         timeout: float | None = None,
                         timeout_fn: Callable[[], bool] | None = None) -> Iterator[str]:
    """Yield each new latest checkpoint of `checkpoint_dir`, at most one per `min_interval_secs`.

    Without `timeout` it waits forever. With it, a wait that times out ends the
    iteration, unless `timeout_fn` is given: then it is called after each wait (and
    each yield), and the iteration ends when it returns True.
    """
    path = None
    while True:
        new_path = wait_for_new_checkpoint(checkpoint_dir, path, timeout=timeout)
        if new_path:
            start = time.time()
            path = new_path
            yield path
            remaining = start + min_interval_secs - time.time()
            if remaining > 0:
                time.sleep(remaining)
        elif timeout_fn is None:
            _log.info("Timed-out waiting for a checkpoint (without timeout_fn).")
            return
        if timeout_fn is not None and timeout_fn():
            _log.info("Done. No new checkpoints will be generated.")
            return
