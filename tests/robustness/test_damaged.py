"""Damaged and wrong input: always a CheckpointError naming the file, never a wrong value."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from helpers import assert_same_tensor

import ckptkit
from ckptkit.errors import CheckpointError, DataLossError, NotFoundError, TensorNotFoundError
from ckptkit.formats import bundle

VALUES = {
    "a/kernel": np.arange(24, dtype=np.float32).reshape(4, 6),
    "a/bias": np.array([1.5, -2.5], dtype=np.float64),
    "names": np.array([b"alpha", b"", "ü".encode()], dtype=object),
    "step": np.array(42, dtype=np.int64),
}


@pytest.fixture
def ckpt(tmp_path):
    return ckptkit.save(str(tmp_path / "model.ckpt"), VALUES)


def read_everything(prefix: str) -> dict[str, np.ndarray]:
    with ckptkit.CheckpointReader(prefix) as reader:
        return {k: reader.get_tensor(k) for k in reader}


def assert_original_or_error(prefix: str) -> bool:
    """True if the damage was detected; asserts the values are untouched otherwise."""
    try:
        got = read_everything(prefix)
    except CheckpointError as exc:
        assert os.path.basename(prefix) in str(exc)
        return True
    assert set(got) == set(VALUES)
    for key, value in VALUES.items():
        assert_same_tensor(got[key], value, key)
    return False


def flip_bit(path: str, bit: int) -> None:
    with open(path, "r+b") as f:
        f.seek(bit // 8)
        byte = f.read(1)[0]
        f.seek(bit // 8)
        f.write(bytes([byte ^ (1 << (bit % 8))]))


def test_every_bit_flip_in_index(ckpt):
    index = ckpt + ".index"
    with open(index, "rb") as f:
        original = f.read()
    detected = 0
    for bit in range(len(original) * 8):
        flip_bit(index, bit)
        detected += assert_original_or_error(ckpt)
        with open(index, "wb") as f:
            f.write(original)
    # Only the footer's zero padding may flip unnoticed (it is not covered by a crc).
    assert detected >= (len(original) - 48) * 8


def test_bit_flips_in_data(ckpt):
    data = ckpt + ".data-00000-of-00001"
    with open(data, "rb") as f:
        original = f.read()
    for bit in range(0, len(original) * 8, 7):
        flip_bit(data, bit)
        assert assert_original_or_error(ckpt), f"flip of bit {bit} went unnoticed"
        with open(data, "wb") as f:
            f.write(original)


@pytest.mark.parametrize("suffix", [".index", ".data-00000-of-00001"])
def test_truncation(ckpt, suffix):
    path = ckpt + suffix
    with open(path, "rb") as f:
        original = f.read()
    for length in range(0, len(original)):
        with open(path, "wb") as f:
            f.write(original[:length])
        assert assert_original_or_error(ckpt), f"truncation to {length} went unnoticed"


def test_appended_junk_and_zeroed_ranges(ckpt):
    index = ckpt + ".index"
    with open(index, "rb") as f:
        original = f.read()
    rng = np.random.default_rng(7)
    for _ in range(200):
        damaged = bytearray(original)
        start = int(rng.integers(0, len(original)))
        stop = min(len(original), start + int(rng.integers(1, 40)))
        if rng.integers(0, 2):
            damaged[start:stop] = bytes(stop - start)
        else:
            damaged[start:stop] = rng.bytes(stop - start)
        if rng.integers(0, 4) == 0:
            damaged += rng.bytes(int(rng.integers(1, 100)))
        with open(index, "wb") as f:
            f.write(damaged)
        assert_original_or_error(ckpt)


def test_wrong_magic(ckpt):
    index = ckpt + ".index"
    with open(index, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\x00")
    with pytest.raises(DataLossError, match="magic") as info:
        ckptkit.CheckpointReader(ckpt)
    assert "model.ckpt.index" in str(info.value)


def test_not_a_checkpoint_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(NotFoundError, match="notes.txt"):
        ckptkit.CheckpointReader(str(path))


def test_missing_shard(ckpt):
    os.remove(ckpt + ".data-00000-of-00001")
    reader = ckptkit.CheckpointReader(ckpt)  # the index alone still lists tensors
    assert set(reader) == set(VALUES)
    with pytest.raises(NotFoundError, match=r"model\.ckpt\.data-00000-of-00001"):
        reader.get_tensor("a/kernel")


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(NotFoundError, match="nowhere"):
        ckptkit.load(str(tmp_path / "nowhere"))
    with pytest.raises(NotFoundError, match="no checkpoint found in directory"):
        ckptkit.load(str(tmp_path))


def test_missing_key_is_a_key_error(ckpt):
    reader = ckptkit.CheckpointReader(ckpt)
    with pytest.raises(TensorNotFoundError, match="'nope'") as info:
        reader.get_tensor("nope")
    assert isinstance(info.value, KeyError)
    assert "model.ckpt" in str(info.value)
    assert reader.get("nope") is None  # Mapping protocol
    assert "nope" not in reader


def test_entry_claiming_more_than_the_shard(tmp_path):
    """A hostile index that claims a huge tensor is rejected before allocating it."""

    prefix = ckptkit.save(str(tmp_path / "small"), {"x": np.zeros(4, np.float32)})
    entry = bundle.make_entry(1, (1 << 20, 1 << 20), 0, 0, 4 << 40, 0)
    index = bundle.write_index(prefix, bundle.make_header(1), [("x", entry.SerializeToString())])
    index.commit()
    with pytest.raises(DataLossError, match="past the end of the shard"):
        ckptkit.load(prefix)
    entry = bundle.make_entry(7, (1 << 40,), 0, 0, 8, 0)  # 2^40 strings in 8 bytes
    bundle.write_index(prefix, bundle.make_header(1), [("x", entry.SerializeToString())]).commit()
    with pytest.raises(DataLossError, match="too small"):
        ckptkit.load(prefix)


def test_copy_of_checkpoint_dir_still_reads(ckpt, tmp_path):
    """Sanity check for the fixture: an undamaged copy reads back whole."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in os.listdir(tmp_path):
        if name.startswith("model.ckpt"):
            shutil.copy(tmp_path / name, copy / name)
    assert not assert_original_or_error(str(copy / "model.ckpt"))


def test_directory_without_state_file(tmp_path):
    """One checkpoint and no `checkpoint` file: the directory names it; two: say which exist."""
    first = ckptkit.save(str(tmp_path / "first"), VALUES)
    assert ckptkit.CheckpointReader(str(tmp_path)).prefix == first
    ckptkit.save(str(tmp_path / "second"), VALUES)
    with pytest.raises(NotFoundError, match=r"which of 2 checkpoints to use \(first, second\)"):
        ckptkit.load(str(tmp_path))
