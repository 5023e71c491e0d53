"""Edits of hostile indexes: compact and -o check every entry as a read does.

Each index here has valid checksums (written by ckptkit's own table writer) but lies:
offsets and sizes past or before the shard, shard ids that do not exist, shards that
are missing, directories, FIFOs or /dev/zero, and headers claiming 30,000 or 10^9
shards. Every edit must fail with a CheckpointError naming the file, promptly, with
bounded memory, writing nothing (no temp file, no output), and leave the source as it
was; the CLI prints one line and exits 1.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import bounded_memory, hostile_v2, time_limit

import ckptkit
from ckptkit.cli import cli
from ckptkit.errors import CheckpointError
from ckptkit.formats import bundle, slices
from ckptkit.ops import edit
from ckptkit.proto.tensor_bundle_pb2 import BundleEntryProto
from ckptkit.storage import files
from ckptkit.storage.journal import JOURNAL_SUFFIX

FLOAT = 1


def entry(shape=(2,), shard=0, offset=0, size=8):
    return bundle.make_entry(FLOAT, shape, shard, offset, size, 0)


CASES = {
    "negative offset": ({"x": entry(offset=-8)}, 1, None),
    "offset near 2^63": ({"x": entry(offset=(1 << 63) - 5)}, 1, None),
    "size past the shard": ({"x": entry(shape=(1 << 20, 1 << 11), size=8 << 30)}, 1, None),
    "negative size": ({"x": entry(size=-8)}, 1, None),
    "shard id out of range": ({"x": entry(shard=7)}, 1, None),
    "missing shard": ({"x": entry(shard=1)}, 2, "delete shard 1"),
    "shard is a directory": ({"x": entry()}, 1, "directory"),
    "shard is a FIFO": ({"x": entry()}, 1, "fifo"),
    "shard is /dev/zero, entry claims 8 GiB": ({"x": entry(shape=(1 << 31,), size=8 << 30)}, 1, "zero"),
    "10^9 shards in the header": ({"x": entry(shard=5)}, 10**9, "none"),
}


def make(tmp_path, case) -> str:
    entries, num_shards, twist = CASES[case]
    prefix = hostile_v2(tmp_path, entries, num_shards=min(num_shards, 2))
    if num_shards > 2:  # rewrite the header only: no 30,000 files on disk
        items = [(k, v) for k, v in bundle.BundleIndex(prefix).raw_items()]
        for name in os.listdir(tmp_path):
            if ".data-" in name:
                os.unlink(tmp_path / name)
        bundle.write_index(prefix, bundle.make_header(num_shards), items).commit()
    shard0 = bundle.data_filename(prefix, 0, num_shards)
    if twist == "delete shard 1":
        os.unlink(bundle.data_filename(prefix, 1, 2))
    elif twist == "directory":
        os.unlink(shard0)
        os.mkdir(shard0)
    elif twist == "fifo":
        os.unlink(shard0)
        os.mkfifo(shard0)
    elif twist == "zero":
        os.unlink(shard0)
        os.symlink("/dev/zero", shard0)
    return prefix


def snapshot(directory) -> dict:
    return {n: os.lstat(os.path.join(directory, n)).st_mtime_ns for n in sorted(os.listdir(directory))}


def run_edit(name: str, prefix: str, out: str):
    if name == "compact":
        return edit.compact(prefix)
    if name == "compact -o":
        return edit.compact(prefix, output=out)
    if name == "rename -o":
        return edit.rename_keys(prefix, {"x": "y"}, output=out)
    if name == "rm -o":
        return edit.remove_keys(prefix, [], output=out)
    raise AssertionError(name)


EDITS = ["compact", "compact -o", "rename -o", "rm -o"]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", EDITS)
def test_edits_refuse_lying_indexes_and_write_nothing(tmp_path, case, name):
    src = tmp_path / "src"
    src.mkdir()
    prefix = make(src, case)
    out_dir = tmp_path / "out"
    before = snapshot(src)
    with time_limit(10), bounded_memory(16 << 20), pytest.raises(CheckpointError) as info:
        run_edit(name, prefix, str(out_dir / "model"))
    assert str(src) in str(info.value) or "x" in str(info.value)
    assert snapshot(src) == before
    if out_dir.exists():
        assert os.listdir(out_dir) == []
    leftovers = [n for n in os.listdir(src) if files.is_temp_name(n) or n.endswith(JOURNAL_SUFFIX)]
    assert leftovers == []


@pytest.mark.parametrize("case", ["negative offset", "shard is a FIFO", "10^9 shards in the header"])
def test_cli_rm_compact_on_a_lying_index_prints_one_line(tmp_path, case):
    entries, num_shards, twist = CASES[case]
    CASES["with a good tensor"] = ({**entries, "good": entry(offset=8)}, num_shards, twist)
    try:
        prefix = make(tmp_path, "with a good tensor")
    finally:
        del CASES["with a good tensor"]
    result = CliRunner().invoke(cli, ["rm", "-c", prefix, "--compact", "good"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckptkit: error: ") and "internal" not in lines[0]


def test_compact_of_a_header_claiming_30000_shards_writes_only_the_referenced_one(tmp_path, tf):
    """TF reads such a checkpoint (it opens shards lazily); so does a compacted copy."""
    prefix = str(tmp_path / "model")
    ckptkit.save(prefix, {"x": np.arange(4, dtype=np.float32)})
    index = bundle.BundleIndex(prefix)
    raw = dict(index.raw_items())
    e = index.entry("x")
    e.shard_id = 29999
    raw["x"] = e.SerializeToString()
    os.rename(bundle.data_filename(prefix, 0, 1), bundle.data_filename(prefix, 29999, 30000))
    bundle.write_index(prefix, bundle.make_header(30000), raw.items()).commit()
    np.testing.assert_array_equal(tf.train.load_checkpoint(prefix).get_tensor("x"), np.arange(4))
    edit.compact(prefix, output=str(tmp_path / "out" / "model"))
    assert sorted(os.listdir(tmp_path / "out")) == ["model.data-29999-of-30000", "model.index"]
    np.testing.assert_array_equal(tf.train.load_checkpoint(str(tmp_path / "out" / "model")).get_tensor("x"),
                                  np.arange(4))


def test_a_partitioned_variable_whose_slice_entry_is_missing(tmp_path):
    """Its full-shape entry ([2^40, 2]) lists a slice the index lacks: renaming it is one
    DataLossError naming the key (it was an internal KeyError), nothing written; removing
    it is what repairs such an index, so rm works."""
    full = BundleEntryProto(dtype=1)
    full.shape.dim.add(size=1 << 40)
    full.shape.dim.add(size=2)
    full.slices.append(slices.TensorSlice.full(2).to_proto())
    prefix = hostile_v2(tmp_path, {"p": full, "ok": BundleEntryProto(dtype=1, size=0)})
    before = sorted(os.listdir(tmp_path))
    for args in (["rename", "-c", prefix, "p", "q"], ["rename", "-c", prefix, "p", "q", "-o", str(tmp_path / "o")],
                 ["rename", "-c", prefix, "--regex", "(.*)", r"x\1"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, args
        assert result.output == (f"ckptkit: error: {bundle.index_filename(prefix)}: key 'p': slice -:- is listed "
                                 "but missing from the index\n"), args
    assert sorted(os.listdir(tmp_path)) == before
    assert edit.remove_keys(prefix, ["p"]) == ["p"]
    assert ckptkit.list_variables(prefix) == [("ok", [])]
