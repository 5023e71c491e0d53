"""What one `ckptkit view PATH` looks at: a checkpoint, or a training run's checkpoints,
resolved once, summarized once (data.checkpoint_summary, cached), and asked for by
index only: the page names a tensor by its row and a checkpoint by its place in the
run, so nothing a request holds is ever used as a path or a key.
"""
from __future__ import annotations

import os
import threading
from typing import Any

from ...location import Location, locate
from ...reader import CheckpointReader
from . import data

__all__ = ["ViewModel"]

STATIC_DETAILS = 2000   # --html embeds the histograms of at most this many tensors (the largest) ...
STATIC_HEATMAPS = 200   # ... and the heat maps of at most this many
STATIC_PAIRS = 64       # ... and "what moved" for at most this many pairs of checkpoints


class ViewModel:
    """The checkpoint(s) behind one page: `path` is a checkpoint (a Location is taken as
    resolved), or a directory that holds a run. `cache=False` recomputes the summaries
    instead of reusing those kept (see data.cache_dir)."""

    def __init__(self, path: str | os.PathLike | Location, *, cache: bool = True) -> None:
        self.title = (path.given or path.prefix) if isinstance(path, Location) else os.fspath(path)
        run = None if isinstance(path, Location) else data.run_checkpoints(path)
        self.locations: list[Location] = [locate(p) for p in run] if run else [locate(path)]
        self.is_run = run is not None
        self.cache = cache
        self._summaries: list[dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._details: dict[int, dict[str, Any]] = {}
        self._moved: dict[tuple[int, int], list[dict[str, Any]]] = {}

    def pending_bytes(self) -> int:
        """Bytes `load` will read (those of checkpoints not summarized before)."""
        return data.pending_bytes(self.locations, cache=self.cache)

    def load(self, progress: data.Progress | None = None) -> ViewModel:
        """Summarizes every checkpoint (data.checkpoint_summary), calling `progress` with
        the bytes read; done once."""
        if self._summaries is None:
            self._summaries = [data.checkpoint_summary(loc, progress, cache=self.cache) for loc in self.locations]
        return self

    @property
    def summaries(self) -> list[dict[str, Any]]:
        return self.load()._summaries or []

    @property
    def summary(self) -> dict[str, Any]:
        """The summary of the checkpoint the table shows: the latest of a run."""
        return self.summaries[-1]

    def page(self, *, served: bool) -> dict[str, Any]:
        """What the page embeds: {"title", "served", "checkpoint", "run"} and, for a
        static page (`served=False`), "details" and "moved" precomputed."""
        out: dict[str, Any] = {"title": self.title, "served": served, "checkpoint": self.summary,
                               "run": data.run_summary(self.summaries) if self.is_run else None}
        if not served:
            out["details"] = self._static_details()
            out["moved"] = self._static_moved()
        return out

    def detail(self, index: int) -> dict[str, Any]:
        """Row `index`'s histogram and heat map (IndexError for no such row)."""
        rows = self.summary["tensors"]
        if not 0 <= index < len(rows):
            raise IndexError(index)
        with self._lock:
            if index not in self._details:
                with CheckpointReader(self.locations[-1]) as reader:
                    self._details[index] = data.tensor_detail(reader, rows[index])
            return self._details[index]

    def moved(self, a: int, b: int) -> list[dict[str, Any]]:
        """What moved from checkpoint `a` to `b` of the run (IndexError for no such one)."""
        n = len(self.locations)
        if not (0 <= a < n and 0 <= b < n):
            raise IndexError((a, b))
        with self._lock:
            if (a, b) not in self._moved:
                self._moved[(a, b)] = data.relative_change(self.locations[a], self.locations[b])
            return self._moved[(a, b)]

    def _static_details(self) -> dict[str, Any]:
        rows = self.summary["tensors"]
        biggest = sorted(range(len(rows)), key=lambda i: (-rows[i]["elements"], i))[:STATIC_DETAILS]
        out: dict[str, Any] = {}
        heatmaps = 0
        with CheckpointReader(self.locations[-1]) as reader:
            for i in sorted(biggest):
                detail = self._details.get(i) or data.tensor_detail(reader, rows[i])
                if detail["heatmap"] is not None:
                    heatmaps += 1
                    if heatmaps > STATIC_HEATMAPS:
                        detail = {**detail, "heatmap": None}
                out[str(i)] = detail
        return out

    def _static_moved(self) -> dict[str, Any]:
        """Each checkpoint against the first and against the one before it (and every pair
        of a short run)."""
        n = len(self.locations)
        if n < 2:
            return {}
        pairs = {(a, b) for a in range(n) for b in range(n) if a != b} if n * (n - 1) <= STATIC_PAIRS else \
            {(0, b) for b in range(1, n)} | {(b - 1, b) for b in range(1, n)}
        return {f"{a},{b}": self.moved(a, b) for a, b in sorted(pairs)[:STATIC_PAIRS]}
