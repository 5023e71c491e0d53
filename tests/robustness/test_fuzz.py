"""Fuzzing every file of real TF checkpoints: the original values, or a CheckpointError.

TF writes the checkpoints in the test session: a V2 checkpoint from a sharded TF1
Saver on two CPU devices (two data shards merged by MergeV2Checkpoints; float, int,
bool, half, string variables, a partitioned variable, global_step; its .meta and
`checkpoint` state file) and a legacy V1 checkpoint (several table blocks, strings,
a partitioned variable). Each file is damaged hundreds of times (seeded): bit flips,
truncation, zeroed and random ranges, appended junk. After each damage, everything
is read back through ckptkit with a wall-clock guard. The outcome must be the
original tensors (TF's own reader gives the expected values) or a CheckpointError:
never another exception, never a hang, never a silently different value.

The `.meta` and `checkpoint` files carry no checksum (in TF either), so damage there
may parse into a different graph or path; for them the rule is "a result or a
CheckpointError", and whatever checkpoint the state then names still reads whole
or fails cleanly.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from helpers import same, time_limit

import ckptkit
from ckptkit.errors import CheckpointError
from ckptkit.formats.table import FOOTER_SIZE, TableReader, decode_handle

SEED = 1234
CASES_PER_FILE = 1500
CASE_SECONDS = 5


# --------------------------------------------------------------------------- TF-written checkpoints

@pytest.fixture(scope="module")
def tf_v1(tf, tf1, tmp_path_factory):
    """A TF1 Saver's legacy V1 file, large enough for several table blocks."""
    directory = str(tmp_path_factory.mktemp("tf_v1"))
    rng = np.random.default_rng(SEED + 1)
    with tf.Graph().as_default():
        for i in range(3):  # 3 x 120 KB: the 256 KB blocks cut between them
            tf1.Variable(rng.standard_normal(30_000).astype(np.float32), name=f"big{i}")
        tf1.Variable(np.arange(12, dtype=np.int64).reshape(3, 4), name="ids")
        tf1.Variable(b"text", name="s")
        part = tf1.get_variable("part", shape=[6, 2], initializer=tf1.random_normal_initializer(seed=SEED),
                                partitioner=tf1.fixed_size_partitioner(2))
        saver = tf1.train.Saver(write_version=tf1.train.SaverDef.V1, save_relative_paths=True)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            path = saver.save(sess, os.path.join(directory, "old.ckpt"))
            whole_part = sess.run(part.as_tensor())
    # TF 2.x lists a V1 checkpoint's partitioned tensor but cannot read it back whole:
    # its value comes from the session that saved it, the rest from TF's reader.
    reader = tf.train.load_checkpoint(path)
    expected = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k != "part"}
    expected["part"] = whole_part
    return directory, path, expected


# --------------------------------------------------------------------------- damage

def damage(original: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One random damage: (kind, damaged bytes)."""
    n = len(original)
    kind = ["flip", "flips", "truncate", "zero", "random", "junk", "zero+junk"][int(rng.integers(0, 7))]
    out = bytearray(original)
    if kind == "flip":
        bit = int(rng.integers(0, 8 * n))
        out[bit // 8] ^= 1 << (bit % 8)
    elif kind == "flips":
        for bit in rng.integers(0, 8 * n, size=int(rng.integers(2, 9))):
            out[int(bit) // 8] ^= 1 << (int(bit) % 8)
    elif kind == "truncate":
        out = out[:int(rng.integers(0, n))]
    elif kind in ("zero", "random", "zero+junk"):
        start = int(rng.integers(0, n))
        stop = min(n, start + int(rng.choice([1, 4, 16, 64, 1024])))
        out[start:stop] = bytes(stop - start) if kind != "random" else rng.bytes(stop - start)
        if kind == "zero+junk":
            out += rng.bytes(int(rng.integers(1, 64)))
    else:
        out += rng.bytes(int(rng.integers(1, 300)))
    return kind, bytes(out)


class Tally:
    """Outcome counts per (file, damage kind), for the figures printed at the end."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], list[int]] = {}

    def add(self, name: str, kind: str, detected: bool) -> None:
        row = self.counts.setdefault((name, kind), [0, 0])
        row[0 if detected else 1] += 1

    def report(self) -> str:
        cases = sum(a + b for a, b in self.counts.values())
        caught = sum(a for a, _ in self.counts.values())
        per_file: dict[str, list[int]] = {}
        for (name, _), (a, b) in self.counts.items():
            row = per_file.setdefault(name, [0, 0])
            row[0] += a
            row[1] += b
        lines = [f"{cases} damaged reads: {caught} CheckpointError, {cases - caught} intact values"]
        lines += [f"  {name}: {a} errors, {b} intact" for name, (a, b) in sorted(per_file.items())]
        return "\n".join(lines)


def read_checkpoint(prefix: str) -> dict:
    with ckptkit.CheckpointReader(prefix) as reader:
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
        values = {k: reader.get_tensor(k) for k in reader}
    for key, value in values.items():
        assert list(value.shape) == shapes[key] and dtypes[key].name in (value.dtype.name, "string"), key
    return values


def assert_original(got: dict, expected: dict, what: str) -> None:
    assert set(got) == set(expected), what
    for key, value in expected.items():
        assert same(got[key], value), f"{what}: {key} differs silently"


def fuzz_file(path: str, cases: int, rng, tally: Tally, check, strict_kinds=()) -> None:
    """Damage `path` `cases` times, run `check()` after each, restore it after each.

    `check` returns normally (values verified) or raises CheckpointError. Damage of a
    kind in `strict_kinds` that changed the bytes must be detected.
    """
    with open(path, "rb") as f:
        original = f.read()
    name = os.path.basename(path)
    try:
        for case in range(cases):
            kind, damaged = damage(original, rng)
            with open(path, "wb") as f:
                f.write(damaged)
            detected = False
            try:
                with time_limit(CASE_SECONDS):
                    check()
            except CheckpointError:
                detected = True
            except Exception as exc:  # that is the point of the test
                raise AssertionError(f"{name} case {case} ({kind}): {type(exc).__name__}: {exc}") from exc
            if kind in strict_kinds and damaged[:len(original)] != original and not detected:
                raise AssertionError(f"{name} case {case} ({kind}): damage went unnoticed")
            tally.add(name, kind, detected)
    finally:
        with open(path, "wb") as f:
            f.write(original)


@pytest.fixture(scope="module")
def tally():
    t = Tally()
    yield t
    print("\n" + t.report())


# --------------------------------------------------------------------------- the fuzz tests

def test_pristine_checkpoints_read_like_tf(tf_v2, tf_v1):
    for _, prefix, expected in (tf_v2, tf_v1):
        assert_original(read_checkpoint(prefix), expected, prefix)
    assert ckptkit.latest_checkpoint(tf_v2[0]) == tf_v2[1]
    ckptkit.read_meta_graph(tf_v2[1] + ".meta")


@pytest.mark.parametrize("suffix, strict", [
    (".index", ()),  # the footer's padding is not covered by a crc: flips there change nothing
    (".data-00000-of-00002", ("flip", "flips", "truncate", "zero", "random", "zero+junk")),
    (".data-00001-of-00002", ("flip", "flips", "truncate", "zero", "random", "zero+junk")),
])
def test_fuzz_v2_files(tf_v2, tally, suffix, strict):
    directory, prefix, expected = tf_v2
    rng = np.random.default_rng([SEED, len(suffix), ord(suffix[-1])])
    fuzz_file(prefix + suffix, CASES_PER_FILE, rng, tally,
              lambda: assert_original(read_checkpoint(prefix), expected, suffix), strict)


def test_fuzz_v1_file(tf_v1, tally):
    directory, path, expected = tf_v1
    fuzz_file(path, CASES_PER_FILE, np.random.default_rng(SEED + 2), tally,
              lambda: assert_original(read_checkpoint(path), expected, "V1"))


def test_fuzz_meta_graph(tf_v2, tally):
    """No checksum in a .meta: a MetaGraphDef (maybe a different one) or a CheckpointError."""
    directory, prefix, _ = tf_v2

    def check():
        ckptkit.read_meta_graph(prefix + ".meta")
        ckptkit.summarize_meta_graph(prefix + ".meta")  # and what `ckptkit meta` shows of it

    fuzz_file(prefix + ".meta", CASES_PER_FILE, np.random.default_rng(SEED + 3), tally, check)


def test_fuzz_state_file(tf_v2, tally):
    """No checksum in `checkpoint`: whatever it names reads whole, or it is a CheckpointError."""
    directory, prefix, expected = tf_v2

    def check():
        state = ckptkit.get_checkpoint_state(directory)
        latest = ckptkit.latest_checkpoint(directory)
        assert latest is None or state is not None
        values = read_checkpoint(directory)  # NotFoundError when the damaged path names nothing
        assert_original(values, expected, "via the state file")

    fuzz_file(os.path.join(directory, "checkpoint"), CASES_PER_FILE, np.random.default_rng(SEED + 4),
              tally, check)


def test_v1_data_block_damage_is_always_caught(tf_v1, tmp_path):
    """V1 files have only block crcs: a flipped bit anywhere inside any block (data, index,
    metaindex) or its trailer is a CheckpointError, for every block of the file."""
    _, pristine, expected = tf_v1
    path = str(tmp_path / "old.ckpt")
    shutil.copy(pristine, path)
    with open(path, "rb") as f:
        original = f.read()
    table = TableReader(original, path)
    blocks = list(table._handles)
    assert len(blocks) >= 2, "the fixture should span several data blocks"
    rng = np.random.default_rng(SEED + 5)
    checked = 0
    blocks += _footer_handles(original)
    for offset, size in blocks:
        # every byte of small blocks; a sample of 1000 positions (and both ends) of big ones
        span = range(offset, offset + size + 5)
        positions = span if len(span) <= 1000 else sorted({offset, offset + size + 4,
                                                          *map(int, rng.choice(span, 1000, replace=False))})
        for pos in positions:
            damaged = bytearray(original)
            damaged[pos] ^= 1 << int(rng.integers(0, 8))
            with open(path, "wb") as f:
                f.write(damaged)
            with time_limit(CASE_SECONDS), pytest.raises(CheckpointError):
                read_checkpoint(path)
            checked += 1
    assert checked > 1000
    print(f"\nV1: {checked} bit flips in {len(blocks)} blocks (data, metaindex, index), all caught")
    with open(path, "wb") as f:
        f.write(original)
    assert_original(read_checkpoint(path), expected, "restored")


def _footer_handles(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of the table's metaindex and index blocks, from its footer."""
    footer = len(data) - FOOTER_SIZE
    meta_offset, meta_size, pos = decode_handle(data, footer)
    offset, size, _ = decode_handle(data, pos)
    return [(meta_offset, meta_size), (offset, size)]
