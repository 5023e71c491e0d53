"""Snappy-compressed table blocks, as TF 1.x and early 2.x builds wrote V2 indexes too.

Two real files written by released TF builds (shared/testdata, TF Serving's test data;
opt-in, marked `testdata`) must read in a default install with TF's values. Multi-block snappy indexes are built
here with the tests' own snappy encoder (helpers.snappy_compress: every element kind,
short and long literals, copies with 1-, 2- and 4-byte offsets), checked against the
cramjam decoder and read by TF and by ckptkit alike.
"""
from __future__ import annotations

import os
import pathlib

import cramjam  # a runtime dependency of ckptkit (the snappy decoder)
import numpy as np
import pytest
from helpers import snappy_compress

import ckptkit
from ckptkit.formats import bundle, table
from ckptkit.formats.coding import FIXED32, crc32c, mask_crc

SAVED_MODEL_VARIABLES = pathlib.Path("tf-serving/saved_model_half_plus_two_cpu/00000123/variables/variables")
V1_EXPORT = pathlib.Path("tf-serving/bad_half_plus_two/00000123/export")
SNAPPY = 1  # the block trailer's compression type for snappy (table_format.h kSnappyCompression)


@pytest.mark.testdata
def test_testdata_is_there(testdata):
    assert (testdata / SAVED_MODEL_VARIABLES).with_suffix(".index").is_file(), testdata
    assert (testdata / V1_EXPORT).is_file()


@pytest.mark.testdata
def test_saved_model_with_snappy_index_reads_with_tfs_values(tf, testdata):
    prefix = str(testdata / SAVED_MODEL_VARIABLES)
    expected = {"a": 0.5, "b": 2.0, "a2": 0.5, "c": 3.0, "c2": 3.0}  # as the testdata README says
    got = ckptkit.load(prefix)
    assert {k: float(v) for k, v in got.items()} == expected
    assert all(v.dtype == np.float32 and v.shape == () for v in got.values())
    reader = tf.train.load_checkpoint(prefix)
    assert {k: float(reader.get_tensor(k)) for k in reader.get_variable_to_shape_map()} == expected
    index = table.TableReader.open(bundle.index_filename(prefix))
    assert any(index.data[off + size] == SNAPPY for off, size in index._handles), "not a snappy file?"


@pytest.mark.testdata
def test_tf0_v1_export_reads_with_tfs_values(tf, testdata):
    export = str(testdata / V1_EXPORT)
    got = ckptkit.load(export)
    assert {k: float(v) for k, v in got.items()} == {"Variable": 0.5, "Variable_1": 2.0}
    reader = tf.train.load_checkpoint(export)
    assert {k: float(reader.get_tensor(k)) for k in reader.get_variable_to_shape_map()} == \
        {"Variable": 0.5, "Variable_1": 2.0}


class SnappyTableWriter(table.TableWriter):
    """A TableWriter whose blocks are snappy-compressed where that saves 1/8, as
    LevelDB's TableBuilder (and TF's table_builder.cc) decides."""

    def _write_block(self, block):
        contents = block.finish()
        block.reset()
        compressed = snappy_compress(contents)
        kind = SNAPPY if len(compressed) < len(contents) - len(contents) // 8 else table.NO_COMPRESSION
        body = compressed if kind == SNAPPY else contents
        trailer = bytes([kind])
        self.file.write(body)
        self.file.write(trailer + FIXED32.pack(mask_crc(crc32c(trailer, crc32c(body)))))
        handle = (self.offset, len(body))
        self.offset += len(body) + table.BLOCK_TRAILER_SIZE
        return handle


@pytest.mark.parametrize("data", [
    b"", b"a", b"abcd" * 3, bytes(range(256)) * 300, b"x" * 100_000,
    os.urandom(70) + b"0123456789" * 9000 + os.urandom(70) + b"0123456789",  # copies from 90 KB back
    np.random.default_rng(1).integers(0, 4, 200_000, dtype=np.uint8).tobytes(),
])
def test_the_snappy_encoder_is_what_snappy_decodes(data):
    encoded = snappy_compress(data)
    assert bytes(cramjam.snappy.decompress_raw(encoded)) == data
    kinds = {b & 3 for b in _tags(encoded)}
    if len(data) > 1000:
        assert kinds >= {0, 2} or kinds >= {0, 1}, kinds


def _tags(encoded: bytes):
    """The element tags of a snappy stream (to see which kinds an encoding used)."""
    pos = 0
    while encoded[pos] & 0x80:
        pos += 1
    pos += 1
    while pos < len(encoded):
        tag = encoded[pos]
        yield tag
        kind = tag & 3
        if kind == 0:
            n = tag >> 2
            if n < 60:
                pos += 1 + n + 1
            else:
                size = n - 59
                pos += 1 + size + int.from_bytes(encoded[pos + 1:pos + 1 + size], "little") + 1
        else:
            pos += {1: 2, 2: 3, 3: 5}[kind]


def test_every_snappy_element_kind_is_exercised():
    encoded = snappy_compress(os.urandom(70_000) + b"abcdefgh" * 20 + os.urandom(100) + b"abcdefghijkl"
                              + os.urandom(70_000)[:10] + b"z" * 3000)
    big = snappy_compress(b"Q" * 5 + os.urandom(70_000) + b"Q" * 5)
    tags = list(_tags(encoded)) + list(_tags(big))
    assert {t & 3 for t in tags} == {0, 1, 2, 3}
    assert any(t & 3 == 0 and t >> 2 >= 60 for t in tags)  # a long literal


def test_multi_block_snappy_index_reads_exactly_in_tf_and_ckptkit(tmp_path, tf):
    prefix = str(tmp_path / "model")
    rng = np.random.default_rng(7)
    values = {f"layer_{i:04d}/kernel": rng.standard_normal((3, i % 5 + 1)).astype(np.float32)
              for i in range(1500)}
    values["names"] = np.array([b"snappy", b"", b"\xff" * 100], dtype=object)
    ckptkit.save(prefix, values)
    index = bundle.BundleIndex(prefix)
    items = sorted((bundle.encode_key(k), v) for k, v in index.raw_items())
    with open(bundle.index_filename(prefix), "wb") as f:
        writer = SnappyTableWriter(f, block_size=4096)  # many blocks (TF writes 256 KiB ones)
        writer.add(b"", index.header.SerializeToString())
        for key, value in items:
            writer.add(key, value)
        writer.finish()
    compressed = table.TableReader.open(bundle.index_filename(prefix))
    kinds = [compressed.data[off + size] for off, size in compressed._handles]
    assert len(kinds) > 10 and kinds.count(SNAPPY) > 10
    got = ckptkit.load(prefix)
    reader = tf.train.load_checkpoint(prefix)
    assert sorted(got) == sorted(reader.get_variable_to_shape_map()) == sorted(values)
    for name, value in values.items():
        ours, theirs = got[name], reader.get_tensor(name)
        if value.dtype == object:
            assert list(ours) == list(theirs) == list(value)
        else:
            np.testing.assert_array_equal(ours, value)
            np.testing.assert_array_equal(theirs, value)
