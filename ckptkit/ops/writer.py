"""`ckptkit.save`: numpy (or anything array-like) to a TF V2 checkpoint."""
from __future__ import annotations

import os
from collections.abc import Mapping

from .. import storage
from ..formats import bundle

__all__ = ["save"]


def save(prefix: str | os.PathLike, tensors: Mapping[str, object], *, num_shards: int = 1) -> str:
    """Write `tensors` ({name: array-like}) as a V2 checkpoint at `prefix`; return the prefix.

    Writes `prefix.index` and `prefix.data-*-of-*` (no `.meta`, no state file: see
    `Saver` for those). Strings (str or bytes, or object arrays of them) become
    DT_STRING tensors. The write is atomic: a crash leaves the old checkpoint or none.
    """
    prefix = storage.fspath(prefix)
    bundle.write_bundle(prefix, tensors, num_shards=num_shards)
    return prefix
