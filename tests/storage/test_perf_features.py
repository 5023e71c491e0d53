"""Functional tests of the fast paths: streamed direct-I/O writes, chunked reads, mmap
views, vectorized string lengths, the listing's entry-head cache. No timings here
(bench/ measures); these check that every fast path gives TF's bytes and TF's answers.
"""
from __future__ import annotations

import errno
import fcntl
import os
import tracemalloc

import numpy as np
import pytest

import ckptkit
from ckptkit.errors import DataLossError
from ckptkit.formats import bundle
from ckptkit.formats.coding import VarintError, crc32c, crc32c_combine, decode_varints, encode_varint, encode_varints

MIB = 1 << 20


def _tf_save(tf, prefix, tensors):
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])


def _files_equal(a, b, num_shards=1):
    for suffix in [".index"] + [f".data-{s:05d}-of-{num_shards:05d}" for s in range(num_shards)]:
        with open(f"{a}{suffix}", "rb") as fa, open(f"{b}{suffix}", "rb") as fb:
            assert fa.read() == fb.read(), suffix


def _big_tensors():
    rng = np.random.default_rng(7)
    return {  # sizes straddle the 8 MiB chunk and the 4 KiB direct-I/O alignment
        "a/odd": rng.standard_normal(2 * MIB + 3, dtype=np.float32),
        "b/bytes": rng.integers(0, 255, 4099, dtype=np.uint8),
        "c/f64": rng.standard_normal((1000, 1311)),
        "d/scalar": np.float32(3.5),
        "e/empty": np.zeros((0, 4), np.float32),
        "f/strings": np.array([b"x" * n for n in (0, 1, 127, 128, 16383, 16384, 300_000)], dtype=object),
    }


@pytest.mark.parametrize("direct", [True, False])
def test_streamed_writes_are_byte_identical_to_tf(tf, tmp_path, monkeypatch, direct):
    if not direct:
        monkeypatch.delattr(os, "O_DIRECT", raising=False)
    tensors = _big_tensors()
    ckptkit.save(tmp_path / "ours", tensors)
    _tf_save(tf, tmp_path / "tf", tensors)
    _files_equal(tmp_path / "ours", tmp_path / "tf")
    reader = tf.train.load_checkpoint(str(tmp_path / "ours"))
    for name, value in tensors.items():
        assert np.array_equal(reader.get_tensor(name), value), name


def test_non_contiguous_and_converted_inputs(tf, tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    tensors = {"fortran": np.asfortranarray(base), "strided": base[:, ::2], "big_endian": base.astype(">f4"),
               "list": [[1, 2], [3, 4]]}
    ckptkit.save(tmp_path / "ours", tensors)
    reader = tf.train.load_checkpoint(str(tmp_path / "ours"))
    for name, value in tensors.items():
        assert np.array_equal(reader.get_tensor(name), np.asarray(value)), name


def _is_direct(fd):
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0))


def test_direct_io_refused_at_write_falls_back(tmp_path, monkeypatch):
    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no O_DIRECT on this platform")
    real = os.pwrite
    refused = []

    def pwrite(fd, data, offset):
        if _is_direct(fd):
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(bundle.os, "pwrite", pwrite)
    value = np.random.default_rng(1).standard_normal(5 * MIB, dtype=np.float32)  # 20 MiB: several chunks
    ckptkit.save(tmp_path / "ck", {"v": value, "w": value[:7]})
    monkeypatch.undo()
    assert refused == [0]  # refused once, then plain writes
    with ckptkit.CheckpointReader(tmp_path / "ck") as reader:
        assert np.array_equal(reader.get_tensor("v"), value)
        assert np.array_equal(reader.get_tensor("w"), value[:7])


def test_write_error_in_writer_thread_surfaces_and_keeps_old_checkpoint(tmp_path, monkeypatch):
    old = {"v": np.ones(3, np.float32)}
    ckptkit.save(tmp_path / "ck", old)
    before = sorted(os.listdir(tmp_path))
    real = os.pwrite

    def pwrite(fd, data, offset):
        if offset >= 8 * MIB:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(bundle.os, "pwrite", pwrite)
    big = np.zeros(6 * MIB, np.float32)  # 24 MiB
    with pytest.raises(ckptkit.StorageError) as info:  # a CheckpointError and an OSError, errno kept
        ckptkit.save(tmp_path / "ck", {"v": big})
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert isinstance(info.value, ckptkit.CheckpointError) and "No space left on device" in str(info.value)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == before  # no temp files left, old files in place
    assert np.array_equal(ckptkit.load(tmp_path / "ck")["v"], old["v"])


def test_varints_vectorized_match_scalar():
    rng = np.random.default_rng(3)
    values = [0, 1, 127, 128, 16383, 16384, 2**32 - 1, 2**32, 2**63, 2**64 - 1]
    numbers, shifts = rng.integers(0, 2**63, 500, dtype=np.int64), rng.integers(0, 63, 500)
    values += [int(x) >> int(s) for x, s in zip(numbers, shifts, strict=True)]
    encoded = encode_varints(values)
    assert encoded == b"".join(encode_varint(v) for v in values)
    decoded, end = decode_varints(b"ab" + encoded + b"tail", len(values), 2)
    assert decoded.tolist() == values and end == 2 + len(encoded)
    assert encode_varints([]) == b"" and decode_varints(b"", 0)[1] == 0
    with pytest.raises(VarintError):
        decode_varints(encoded[:-1], len(values))
    with pytest.raises(VarintError):
        decode_varints(b"\xff" * 10 + b"\x02", 1)


def test_damaged_string_lengths_are_data_loss(tmp_path):
    ckptkit.save(tmp_path / "ck", {"s": np.array([b"abc", b"de"], dtype=object)})
    data = tmp_path / "ck.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[0] = 0x83  # first length: a varint that never ends inside the lengths
    data.write_bytes(bytes(raw))
    with ckptkit.CheckpointReader(tmp_path / "ck") as reader, pytest.raises(DataLossError):
        reader.get_tensor("s")


# --------------------------------------------------------------------------- mmap views

def test_mmap_views_are_read_only_checked_and_outlive_close(tmp_path):
    tensors = _big_tensors()
    ckptkit.save(tmp_path / "ck", tensors)
    with ckptkit.CheckpointReader(tmp_path / "ck", mmap=True) as reader:
        views = {name: reader.get_tensor(name) for name in tensors}
        owned = reader.get_tensor("a/odd", copy=True)
    for name, value in tensors.items():
        assert np.array_equal(views[name], value), name
    assert not views["a/odd"].flags.writeable and owned.flags.writeable
    assert views["f/strings"].dtype == object  # strings are always decoded copies
    plain = ckptkit.CheckpointReader(tmp_path / "ck")
    view = plain.get_tensor("c/f64", copy=False)
    assert not view.flags.writeable and np.array_equal(view, tensors["c/f64"])
    assert plain.get_tensor("c/f64").flags.writeable
    plain.close()
    assert float(view.sum()) == float(tensors["c/f64"].sum())  # still mapped after close


def test_mmap_views_verify_crc_unless_told_not_to(tmp_path):
    value = np.arange(5000, dtype=np.float32)
    ckptkit.save(tmp_path / "ck", {"v": value})
    data = tmp_path / "ck.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[4 * 1234] ^= 0x40
    data.write_bytes(bytes(raw))
    for mapped in (True, False):
        with ckptkit.CheckpointReader(tmp_path / "ck", mmap=mapped) as reader, \
                pytest.raises(DataLossError, match="checksum"):
            reader.get_tensor("v")
    with ckptkit.CheckpointReader(tmp_path / "ck", mmap=True, verify=False) as reader:
        got = reader.get_tensor("v")
        assert got[1234] != value[1234] and np.array_equal(np.delete(got, 1234), np.delete(value, 1234))


def test_mmap_reads_tf_written_bundles(tf, tmp_path):
    tensors = {"x": np.arange(12, dtype=np.int64).reshape(3, 4), "y": np.float16([1.5, 2.5])}
    _tf_save(tf, tmp_path / "tf", tensors)
    with ckptkit.CheckpointReader(tmp_path / "tf", mmap=True) as reader:
        for name, value in tensors.items():
            got = reader[name]
            assert got.dtype == value.dtype and np.array_equal(got, value)


# --------------------------------------------------------------------------- listing fast path

def test_listing_matches_tf_for_many_shapes_and_dtypes(tf, tmp_path):
    tensors = {"scalar": np.float32(1), "vec": np.zeros(200, np.int32), "rank5": np.zeros((1, 2, 3, 1, 2), np.uint8),
               "wide": np.zeros((1, 70000), np.bool_), "empty": np.zeros((0,), np.float64),
               "str": np.array([b"a"], dtype=object), "c64": np.zeros(2, np.complex64)}
    tensors.update({f"same/{i:03d}": np.zeros((3, 4), np.float32) for i in range(300)})
    _tf_save(tf, tmp_path / "tf", tensors)
    theirs = tf.train.load_checkpoint(str(tmp_path / "tf"))
    ours = ckptkit.CheckpointReader(tmp_path / "tf")
    assert ours.get_variable_to_shape_map() == theirs.get_variable_to_shape_map()
    assert {k: v.name for k, v in ours.get_variable_to_dtype_map().items()} == \
        {k: v.name for k, v in theirs.get_variable_to_dtype_map().items()}
    index = ours._index
    for key in index.keys():
        entry = index.entry(key)
        assert index.meta(key) == (entry.dtype, bundle.shape_of(entry))


def _index_with(tmp_path, entries, num_shards=1):
    prefix = str(tmp_path / "crafted")
    bundle.write_index(prefix, bundle.make_header(num_shards), entries).commit()
    open(bundle.data_filename(prefix, 0, num_shards), "wb").close()
    return prefix


def test_listing_falls_back_to_protobuf_for_unusual_entries(tmp_path):
    plain = bundle.make_entry(1, (2, 3), 0, 0, 24, 0).SerializeToString()
    # A second shape field after the usual ones: protobuf merges it (dims 2, 3, 7).
    merged = plain + b"\x12\x04\x12\x02\x08\x07"
    # dtype after shape: not TF's field order, same meaning.
    swapped = plain[2:2 + 2 + plain[3]] + plain[:2] + plain[2 + 2 + plain[3]:]
    prefix = _index_with(tmp_path, [("a", plain), ("b", merged), ("c", swapped)])
    reader = ckptkit.CheckpointReader(prefix)
    assert reader.get_variable_to_shape_map() == {"a": [2, 3], "b": [2, 3, 7], "c": [2, 3]}
    assert {k: v.name for k, v in reader.get_variable_to_dtype_map().items()} == \
        {"a": "float32", "b": "float32", "c": "float32"}


def test_listing_still_rejects_bad_shards_and_shapes(tmp_path):
    bad_shard = bundle.make_entry(1, (2,), 3, 0, 8, 0).SerializeToString()
    reader_prefix = _index_with(tmp_path, [("v", bad_shard)])
    with pytest.raises(DataLossError, match="shard"):
        ckptkit.CheckpointReader(reader_prefix).get_variable_to_shape_map()
    negative = bundle.make_entry(1, (2,), 0, 0, 8, 0)
    negative.shape.dim[0].size = -5
    (tmp_path / "crafted.index").unlink()
    prefix = _index_with(tmp_path, [("v", negative.SerializeToString())])
    with pytest.raises(DataLossError, match="shape"):
        ckptkit.CheckpointReader(prefix).get_variable_to_shape_map()


# --------------------------------------------------------------------------- memory

def test_save_copies_one_tensor_at_a_time(tmp_path):
    """Inputs that need converting are converted one by one while writing (peak: one copy)."""
    tensors = {f"t{i}": np.asfortranarray(np.ones((512, 1024), np.float64)) for i in range(8)}  # 4 MiB each
    tracemalloc.start()
    try:
        ckptkit.save(tmp_path / "ck", tensors)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * 4 * MIB, peak


def test_read_holds_no_more_than_the_tensor(tmp_path):
    tensors = {f"t{i}": np.ones(MIB, np.float32) for i in range(8)}  # 4 MiB each
    ckptkit.save(tmp_path / "ck", tensors)
    with ckptkit.CheckpointReader(tmp_path / "ck") as reader:
        tracemalloc.start()
        try:
            for name in reader:
                reader.get_tensor(name)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 2 * 4 * MIB, peak



def test_crc32c_combine_matches_whole_crc():
    rng = np.random.default_rng(5)
    for len_a, len_b in [(0, 0), (5, 0), (0, 7), (100, 8 * MIB), (3, 8 * MIB + 5)]:
        a, b = rng.bytes(len_a), rng.bytes(len_b)
        assert crc32c_combine(crc32c(a), crc32c(b), len_b) == crc32c(a + b)
