"""average, merge and stats of hostile indexes: every entry checked as a read checks it.

The lying indexes of test_edit_hostile (offsets and sizes outside the shard, shard ids
that do not exist, missing, directory, FIFO and /dev/zero shards, 10^9 shards): each
command fails with a CheckpointError, promptly, in bounded memory, writing nothing.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import bounded_memory, time_limit
from test_edit_hostile import CASES, make, snapshot

import ckptkit
from ckptkit.errors import CheckpointError
from ckptkit.ops import average, merge, stats
from ckptkit.storage import files
from ckptkit.storage.journal import JOURNAL_SUFFIX


def run_command(name: str, prefix: str, good: str, out: str):
    if name == "stats":
        return stats.checkpoint_stats(prefix)
    if name == "average":
        return average.average_checkpoints([good, prefix], out)
    if name == "merge":
        return merge.merge_checkpoints([good, prefix], out)
    raise AssertionError(name)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", ["stats", "average", "merge"])
def test_surgery_refuses_lying_indexes_and_writes_nothing(tmp_path, case, name):
    src = tmp_path / "src"
    src.mkdir()
    prefix = make(src, case)
    good = ckptkit.save(os.fspath(tmp_path / "good" / "model"),
                        {"x": np.ones(2, np.float32)} if name == "average" else {"y": np.ones(2, np.float32)})
    out_dir = tmp_path / "out"
    before = snapshot(src)
    with time_limit(10), bounded_memory(16 << 20), pytest.raises(CheckpointError) as info:
        run_command(name, prefix, good, os.fspath(out_dir / "model"))
    assert str(src) in str(info.value)
    assert snapshot(src) == before
    if out_dir.exists():
        assert os.listdir(out_dir) == []
    for directory in (src, out_dir):
        if directory.exists():
            assert [n for n in os.listdir(directory) if files.is_temp_name(n) or n.endswith(JOURNAL_SUFFIX)] == []
