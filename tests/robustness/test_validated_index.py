"""The validated view of an index entry (BundleData.checked): hostile entries with VALID
index checksums, read through every path (CheckpointReader.get_tensor, ckptkit.load,
`ckptkit verify`), must give a CheckpointError naming the file and key, promptly and
without allocating what they claim; valid-but-odd ones (num_shards = 30000, empty
tensors of huge shape) read like TF. Also: V1 records with both tensor_content and
float_val, big-endian bundles, corrupt snappy blocks — each compared with TF.
"""
from __future__ import annotations

import os
import struct

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import bounded_memory, snappy_compress, time_limit, write_snappy_table

import ckptkit
from ckptkit.cli import cli
from ckptkit.errors import CheckpointError, DataLossError, NotFoundError, UnsupportedError
from ckptkit.formats import bundle
from ckptkit.formats.coding import crc32c, encode_varints, mask_crc
from ckptkit.formats.slices import TensorSlice, encode_tensor_name_slice
from ckptkit.formats.table import TableReader, TableWriter
from ckptkit.proto import saved_tensor_slice_pb2
from ckptkit.reader import CheckpointReader

FLOAT, INT8, STRING = 1, 6, 7
DATA = np.arange(4, dtype=np.float32)  # 16 bytes: the one tensor of every plain case


def plant(tmp_path, entries: dict, *, num_shards: int = 1, shards=(0,), data: bytes = DATA.tobytes(),
          endianness: int = bundle.LITTLE, name: str = "ckpt") -> str:
    """A bundle whose index (valid table checksums) holds `entries` {key: BundleEntryProto}."""
    prefix = str(tmp_path / name)
    for shard in shards:
        with open(bundle.data_filename(prefix, shard, num_shards), "wb") as f:
            f.write(data)
    items = [(bundle.encode_key(k), e.SerializeToString()) for k, e in entries.items()]
    bundle.write_index(prefix, bundle.make_header(num_shards, endianness), items).commit()
    return prefix


def good_entry(shard: int = 0, offset: int = 0, size: int = 16, shape=(4,), dtype: int = FLOAT):
    return bundle.make_entry(dtype, shape, shard, offset, size, mask_crc(crc32c(DATA.tobytes())))


def every_path_refuses(prefix: str, key: str, error=CheckpointError, match: str | None = None) -> None:
    """get_tensor, load and `ckptkit verify` all refuse `key` with one clean error."""
    with time_limit(10), bounded_memory():
        with pytest.raises(error, match=match) as info:
            with CheckpointReader(prefix) as reader:
                reader.get_tensor(key)
        assert info.value.key == key and info.value.path, str(info.value)
        with pytest.raises(error, match=match):
            ckptkit.load(prefix)
        result = CliRunner().invoke(cli, ["verify", prefix], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckptkit: error: "), result.stderr
    assert "internal error" not in result.output and "Traceback" not in result.output


# --------------------------------------------------------------------------- offsets and sizes

@pytest.mark.parametrize("offset, size", [(-1, 16), (-(1 << 63), 16), (0, -1), (0, -(1 << 63)),
                                          ((1 << 63) - 1, 16), (1, 16), (16, 16), ((1 << 63) - 16, 16)])
def test_offset_and_size_out_of_the_shard(tmp_path, offset, size):
    prefix = plant(tmp_path, {"x": good_entry(offset=offset, size=size)})
    every_path_refuses(prefix, "x", DataLossError)


@pytest.mark.parametrize("size", [(1 << 63) - 1, 1 << 40, 17])
def test_size_not_matching_the_shape(tmp_path, size):
    every_path_refuses(plant(tmp_path, {"x": good_entry(size=size)}), "x", DataLossError, "does not match")


def test_dev_zero_shard_claiming_8_gib(tmp_path):
    prefix = str(tmp_path / "ckpt")
    os.symlink("/dev/zero", bundle.data_filename(prefix, 0, 1))
    entry = bundle.make_entry(FLOAT, (1 << 31,), 0, 0, 8 << 30, 0)
    bundle.write_index(prefix, bundle.make_header(1), [(b"x", entry.SerializeToString())]).commit()
    every_path_refuses(prefix, "x", DataLossError, "not a regular file")


# --------------------------------------------------------------------------- shards

@pytest.mark.parametrize("shard", [1, 5, (1 << 31) - 1, -1])
def test_bad_shard_id(tmp_path, shard):
    every_path_refuses(plant(tmp_path, {"x": good_entry(shard=shard)}), "x", DataLossError, "shard")


def sliced_entries(slice_shard: int) -> dict:
    """A [4] float tensor in two slices; the second slice's entry names `slice_shard`."""

    full = bundle.BundleEntryProto(dtype=FLOAT)
    full.shape.dim.add(size=4)
    out = {"x": full}
    for i, (tslice, shard) in enumerate(((TensorSlice([(0, 2)]), 0), (TensorSlice([(2, 2)]), slice_shard))):
        full.slices.append(tslice.to_proto())
        part = DATA[2 * i:2 * i + 2].tobytes()
        out[bundle.decode_key(encode_tensor_name_slice("x", tslice))] = bundle.make_entry(
            FLOAT, (2,), shard, 8 * i, 8, mask_crc(crc32c(part)))
    return out


def test_sliced_entry_reads(tmp_path):
    prefix = plant(tmp_path, sliced_entries(0))
    np.testing.assert_array_equal(ckptkit.load(prefix)["x"], DATA)
    with CheckpointReader(prefix) as reader:
        assert reader._backend.data.referenced_shards() == [0]


@pytest.mark.parametrize("shard", [1, 7, (1 << 31) - 1, -3])
def test_bad_shard_id_in_a_slice_entry(tmp_path, shard):
    every_path_refuses(plant(tmp_path, sliced_entries(shard)), "x", DataLossError, "shard")


def test_missing_shard(tmp_path):
    prefix = plant(tmp_path, {"x": good_entry(shard=1)}, num_shards=2, shards=(0,))
    every_path_refuses(prefix, "x", NotFoundError, "not found")


def test_missing_shard_of_a_slice(tmp_path):
    prefix = plant(tmp_path, sliced_entries(1), num_shards=2, shards=(0,))
    every_path_refuses(prefix, "x", NotFoundError, "not found")


def test_shard_that_is_a_directory(tmp_path):
    prefix = plant(tmp_path, {"x": good_entry()}, shards=())
    os.mkdir(bundle.data_filename(prefix, 0, 1))
    every_path_refuses(prefix, "x", CheckpointError, "directory")


def test_fifo_shard_does_not_hang(tmp_path):
    prefix = plant(tmp_path, {"x": good_entry()}, shards=())
    os.mkfifo(bundle.data_filename(prefix, 0, 1))
    every_path_refuses(prefix, "x", DataLossError, "not a regular file")  # under a 10 s guard


@pytest.mark.parametrize("num_shards", [30000, 10 ** 9, (1 << 31) - 1])
def test_huge_num_shards_drives_nothing(tf, tmp_path, num_shards):
    """TF reads a header claiming 30000 shards when the entries name existing ones; so do
    we, opening only the shard an entry names and allocating nothing per claimed shard."""
    prefix = plant(tmp_path, {"x": good_entry()}, num_shards=num_shards)
    with time_limit(10), bounded_memory(4 << 20):
        with CheckpointReader(prefix) as reader:
            np.testing.assert_array_equal(reader.get_tensor("x"), DATA)
            assert reader._backend.data.referenced_shards() == [0]
            assert reader.files == [prefix + ".index", bundle.data_filename(prefix, 0, num_shards)]
        result = CliRunner().invoke(cli, ["verify", prefix], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    if num_shards == 30000:
        np.testing.assert_array_equal(tf.train.load_checkpoint(prefix).get_tensor("x"), DATA)


def test_huge_num_shards_with_a_missing_shard(tmp_path):
    prefix = plant(tmp_path, {"x": good_entry(shard=12345)}, num_shards=10 ** 9)
    every_path_refuses(prefix, "x", NotFoundError)


# --------------------------------------------------------------------------- shapes

def test_empty_tensor_of_huge_shape(tf, tmp_path):
    """[0, 2**62] is a valid TF shape (0 elements); numpy builds it for int8 but not for
    float32 (2^64 bytes of non-zero dims): that one is UnsupportedError, never numpy's
    ValueError. [2**62, 4, 0] overflows int64 before the 0: invalid in TF too."""
    entries = {"f": bundle.make_entry(FLOAT, (0, 1 << 62), 0, 0, 0, mask_crc(0)),
               "i": bundle.make_entry(INT8, (0, 1 << 62), 0, 0, 0, mask_crc(0))}
    prefix = plant(tmp_path, entries)
    with CheckpointReader(prefix) as reader:
        got = reader.get_tensor("i")
        assert got.shape == (0, 1 << 62) and got.dtype == np.int8
        assert reader.get_variable_to_shape_map()["f"] == [0, 1 << 62]
    every_path_refuses(prefix, "f", UnsupportedError, "too large for a numpy array")
    bad = plant(tmp_path, {"x": bundle.make_entry(INT8, (1 << 62, 4, 0), 0, 0, 0, mask_crc(0))}, name="bad")
    with pytest.raises(DataLossError, match="invalid tensor shape"):
        ckptkit.load(bad)
    # (TF 2.21 itself aborts the process on this entry: a CHECK failure, not a Status.)


@pytest.mark.parametrize("rank, error", [(65, UnsupportedError), (254, UnsupportedError),
                                         (255, DataLossError), (300, DataLossError)])
def test_rank_beyond_numpy(tmp_path, rank, error):
    """Rank 65..254 is a valid TF tensor that no numpy array can be (UnsupportedError);
    above 254 TF refuses the shape too (DataLossError)."""
    prefix = plant(tmp_path, {"x": good_entry(shape=(1,) * rank, size=4)})
    every_path_refuses(prefix, "x", error)


def test_rank_64_reads(tmp_path):
    prefix = plant(tmp_path, {"x": good_entry(shape=(1,) * 62 + (2, 2))})
    assert ckptkit.load(prefix)["x"].shape == (1,) * 62 + (2, 2)


def test_unknown_dtype(tmp_path):
    prefix = plant(tmp_path, {"x": good_entry(dtype=21)})  # DT_VARIANT
    every_path_refuses(prefix, "x", UnsupportedError, "DataType")
    with CheckpointReader(prefix) as reader:  # edits may still copy its bytes
        checked = reader._backend.data.checked("x", known_dtype=False)
        assert checked.dtype is None and checked.entry.size == 16
        assert reader._backend.data.referenced_shards() == [0]


def test_checked_entry_contract(tmp_path):
    prefix = plant(tmp_path, {"x": good_entry(), "y": good_entry(offset=8, size=8, shape=(2,))})
    with CheckpointReader(prefix) as reader:
        data = reader._backend.data
        entry = data.checked_entry("y")
        assert (entry.shard_id, entry.offset, entry.size) == (0, 8, 8)
        found = data.checked("x")
        assert found.shape == (4,) and found.count == 4 and found.dtype.name == "float32"
        assert data.shard_size(0) == 16
        with pytest.raises(DataLossError, match="shard 3 of 1"):
            data.shard_size(3)
        with pytest.raises(ckptkit.TensorNotFoundError):
            data.checked_entry("nope")


# --------------------------------------------------------------------------- V1: typed values, never tensor_content

def rewrite_v1(src: str, dst: str, mutate) -> None:
    entries = []
    for key, value in TableReader.open(src):
        if key:
            msg = saved_tensor_slice_pb2.SavedTensorSlices()
            msg.ParseFromString(bytes(value))
            mutate(msg.data.data)
            value = msg.SerializeToString()
        entries.append((bytes(key), bytes(value)))
    with open(dst, "wb") as f:
        table = TableWriter(f)
        for key, value in entries:
            table.add(key, value)
        table.finish()


V1_VALUES = {"f": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.array([1, -2, 3], np.int32),
             "l": np.array([2 ** 40, -1], np.int64), "d": np.array([0.5, -1.25])}


@pytest.fixture
def v1_file(tf, tmp_path):
    path = str(tmp_path / "v1.ckpt")
    names = sorted(V1_VALUES)
    tf.raw_ops.Save(filename=path, tensor_names=names, data=[tf.constant(V1_VALUES[n]) for n in names])
    return path


def test_v1_typed_values_win_over_tensor_content(tf, v1_file, tmp_path):
    def add_content(proto):
        proto.tensor_content = (np.arange(6) * 100 + 7).astype(np.int8).tobytes() * 8

    both = str(tmp_path / "both.ckpt")
    rewrite_v1(v1_file, both, add_content)
    tf_reader = tf.train.load_checkpoint(both)
    with CheckpointReader(both) as reader:
        for name, value in V1_VALUES.items():
            np.testing.assert_array_equal(tf_reader.get_tensor(name), value)
            np.testing.assert_array_equal(reader.get_tensor(name), value)


def test_v1_tensor_content_alone_is_refused_like_tf(tf, v1_file, tmp_path):
    def content_only(proto):
        value = V1_VALUES[[k for k in V1_VALUES if len(getattr(proto, _field(k)))][0]]
        proto.tensor_content = value.tobytes()
        for field in ("float_val", "int_val", "int64_val", "double_val"):
            proto.ClearField(field)

    only = str(tmp_path / "only.ckpt")
    rewrite_v1(v1_file, only, content_only)
    tf_reader = tf.train.load_checkpoint(only)
    for name in V1_VALUES:
        with pytest.raises(Exception, match="not found"):
            tf_reader.get_tensor(name)
        with pytest.raises(DataLossError, match="holds 0 values"):
            ckptkit.load_variable(only, name)


def _field(name: str) -> str:
    return {"f": "float_val", "i": "int_val", "l": "int64_val", "d": "double_val"}[name]


# --------------------------------------------------------------------------- big-endian bundles

BIG_NUMERIC = {"f32": np.arange(5, dtype=np.float32) * 1.5, "i64": np.array([1, -2, 2 ** 40]),
               "c64": np.array([1 + 2j, 3 - 4j], np.complex64), "bf16": np.array([1.5, -2], ml_dtypes.bfloat16),
               "f16": np.array([0.5, 65504], np.float16), "u8": np.arange(3, dtype=np.uint8),
               "b": np.array([True, False])}
STRINGS = np.array([b"alpha", b"", "\u00e9".encode(), b"x" * 300], dtype=object)


def big_endian_bundle(tmp_path, name: str, lengths_order: str, checksum_order: str) -> str:
    """A bundle as a big-endian host writes it: numbers byte-swapped, string lengths
    checksummed as uint32 in `lengths_order`, their checksum stored in `checksum_order`."""
    prefix = str(tmp_path / name)
    data, entries = bytearray(), []
    for key, value in BIG_NUMERIC.items():
        if value.dtype.kind == "c":
            raw = value.view(value.real.dtype).astype(value.real.dtype.newbyteorder(">")).tobytes()
        else:
            raw = value.view(np.uint8).reshape(-1, value.dtype.itemsize)[:, ::-1].tobytes()
        enum = ckptkit.dtypes.as_dtype(value.dtype).enum
        entries.append((key, bundle.make_entry(enum, value.shape, 0, len(data), len(raw),
                                               mask_crc(crc32c(raw))).SerializeToString()))
        data += raw
    lengths = np.array([len(s) for s in STRINGS], dtype=np.uint64)
    lengths_crc = crc32c(lengths.astype(lengths_order + "u4").tobytes())
    checksum = struct.pack(checksum_order + "I", mask_crc(lengths_crc))
    body = encode_varints(lengths) + checksum + b"".join(STRINGS)
    crc = crc32c(b"".join(STRINGS), crc32c(checksum, lengths_crc))
    entries.append(("s", bundle.make_entry(STRING, STRINGS.shape, 0, len(data), len(body),
                                           mask_crc(crc)).SerializeToString()))
    data += body
    with open(bundle.data_filename(prefix, 0, 1), "wb") as f:
        f.write(data)
    bundle.write_index(prefix, bundle.make_header(1, bundle.BIG), entries).commit()
    return prefix


def test_big_endian_bundle_reads_like_tf(tf, tmp_path):
    """TF (tensor_bundle.cc ReadStringTensor, need_to_swap_bytes): varint lengths are
    byte-order free; the lengths are checksummed as big-endian uint32 and the stored
    checksum is a big-endian fixed32; numbers are byte-swapped after their crc."""
    prefix = big_endian_bundle(tmp_path, "big", ">", ">")
    tf_reader = tf.train.load_checkpoint(prefix)
    with CheckpointReader(prefix) as reader:
        for key, value in BIG_NUMERIC.items():
            got = reader.get_tensor(key)
            assert got.dtype == value.dtype
            np.testing.assert_array_equal(got.astype(np.float64) if key == "bf16" else got, value.astype(
                np.float64) if key == "bf16" else value)
            np.testing.assert_array_equal(np.asarray(tf_reader.get_tensor(key)).astype(got.dtype), got)
        assert list(reader.get_tensor("s")) == list(STRINGS) == list(tf_reader.get_tensor("s"))


@pytest.mark.parametrize("lengths_order, checksum_order", [("<", "<"), (">", "<"), ("<", ">")])
def test_big_endian_header_refuses_little_endian_string_checksums(tf, tmp_path, lengths_order, checksum_order):
    prefix = big_endian_bundle(tmp_path, "mixed", lengths_order, checksum_order)
    with pytest.raises(Exception, match="length checksum does not match"):
        tf.train.load_checkpoint(prefix).get_tensor("s")
    every_path_refuses(prefix, "s", DataLossError, "checksum mismatch in string lengths")
    with CheckpointReader(prefix) as reader:  # the numbers are fine
        np.testing.assert_array_equal(reader.get_tensor("f32"), BIG_NUMERIC["f32"])


# --------------------------------------------------------------------------- snappy

def test_corrupt_snappy_block_is_data_loss(tf, tmp_path):
    path = str(tmp_path / "plain.ckpt")
    tf.raw_ops.Save(filename=path, tensor_names=["a"], data=[tf.constant(np.arange(50, dtype=np.float32))])
    entries = [(bytes(k), bytes(v)) for k, v in TableReader.open(path)]
    for i, junk in enumerate([lambda b: b[:1] + b"\xff" * (len(b) - 1),        # bad copy offsets
                              lambda b: b"\xff\xff\xff\xff\x0f" + b[5:],      # claims 4 GiB
                              lambda b: b"\x80" * 11,                         # varint past 64 bits
                              lambda b: b[:len(b) // 2]]):                    # truncated
        bad = str(tmp_path / f"snappy{i}.ckpt")
        write_snappy_table(bad, entries, lambda data, f=junk: f(snappy_compress(data)))
        with time_limit(10), bounded_memory(), pytest.raises(DataLossError, match="snappy") as info:
            ckptkit.load(bad)
        assert bad in str(info.value)
