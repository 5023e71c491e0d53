"""Indexes holding entries that look like partitioned-variable slice keys but lie.

Issue 25 saw `rename --regex` end in `internal error: KeyError` over an index whose junk
entries look like slice keys. Each case here is a small bundle (valid table checksums,
written by ckptkit's own table writer) with a partitioned variable `p` (two slices) or a
plain `v`, plus junk: a slice no full entry lists, a listed slice that is missing, slices
of a name with no full entry, truncated or over-long slice keys, a name followed by
NUL-separated fields. Every command that lists or edits it ends with exit 0, or exit 1
and one line on stderr naming the file; never a traceback. (A slice key no full entry
lists is a tensor of its own, binary name and all, as in TF's CheckpointReader.) Hand-worked expectations:
the two good slices of `p` hold 0..3.
"""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from crc32c import crc32c
from helpers import hostile_v2, time_limit

import ckptkit
from ckptkit.cli import cli
from ckptkit.formats import bundle, slices
from ckptkit.formats.coding import mask_crc
from ckptkit.proto.tensor_bundle_pb2 import BundleEntryProto

DATA = np.arange(4, dtype=np.float32)
FLOAT = 1


def _half(first: int) -> BundleEntryProto:
    """The slice entry of DATA[first:first + 2] (8 bytes at offset 4 * first)."""
    part = DATA[first:first + 2].tobytes()
    return bundle.make_entry(FLOAT, (2,), 0, 4 * first, 8, mask_crc(crc32c(part)))


def _slice_key(name: str, start: int, length: int = 2) -> bytes:
    return slices.encode_tensor_name_slice(name, slices.TensorSlice([(start, length)]))


def _full(*starts: int) -> BundleEntryProto:
    entry = BundleEntryProto(dtype=FLOAT)
    entry.shape.dim.add(size=4)
    for start in starts:
        entry.slices.add().CopyFrom(slices.TensorSlice([(start, 2)]).to_proto())
    return entry


PLAIN = bundle.make_entry(FLOAT, (4,), 0, 0, 16, mask_crc(crc32c(DATA.tobytes())))
GOOD = {"p": _full(0, 2), _slice_key("p", 0): _half(0), _slice_key("p", 2): _half(2)}
CASES = {
    "a slice no full entry lists": {**GOOD, _slice_key("p", 1): _half(0)},
    "a listed slice missing": {"p": _full(0, 2), _slice_key("p", 0): _half(0)},
    "slices of a name with no full entry": {"v": PLAIN, _slice_key("p", 0): _half(0), _slice_key("p", 2): _half(2)},
    "a truncated slice key": {**GOOD, _slice_key("p", 0)[:-1]: _half(0)},
    "an over-long slice key": {**GOOD, _slice_key("p", 0) + b"\x01\xff": _half(0)},
    "a name then NUL-separated fields": {"v": PLAIN, b"\x00\x01v\x00\x01": _half(0), b"v\x00\x01\x02": _half(0)},
    "a bare NUL": {"v": PLAIN, b"\x00": _half(0)},
}
COMMANDS = [
    ["ls", "{p}"], ["verify", "{p}"], ["show", "{p}", "--all"],
    ["rename", "-c", "{p}", "--regex", "(.*)", r"x/\1"],
    ["rename", "-c", "{p}", "--glob", "*", "y/*"],
    ["rename", "-c", "{p}", "p", "w", "-o", "{out}"],
    ["rm", "-c", "{p}", "--include", "*"],
    ["rm", "-c", "{p}", "--compact", "--include", "p*"],
    ["convert", "{p}", "{out}.npz"],
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(a for a in c if "{" not in a))
def test_junk_slice_keys_end_cleanly(tmp_path, case, command):
    prefix = hostile_v2(tmp_path, CASES[case], data=DATA.tobytes())
    args = [a.replace("{p}", prefix).replace("{out}", str(tmp_path / "out")) for a in command]
    with time_limit(20):
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "internal error" not in lines[0], lines
        assert str(tmp_path) in lines[0], lines  # names the checkpoint (or the output it cannot hold the key)


def test_the_good_partitioned_variable_reads_whole(tmp_path):
    """The baseline of the cases above: `p` assembled from its two slices."""
    prefix = hostile_v2(tmp_path, GOOD, data=DATA.tobytes())
    assert np.array_equal(ckptkit.load(prefix)["p"], DATA)
