"""SSTable and coding primitives, checked against hand-worked facts and TF-written files."""
from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckptkit.errors import DataLossError
from ckptkit.formats import coding
from ckptkit.formats.table import TableReader, TableWriter, _short_successor, _shortest_separator


def test_crc32c_check_value_and_mask():
    assert coding.crc32c(b"123456789") == 0xE3069283  # the CRC-32C catalogue check value
    for crc in (0, 1, 0xE3069283, 0xFFFFFFFF):
        assert coding.unmask_crc(coding.mask_crc(crc)) == crc
    assert coding.masked_crc32c(b"") == coding.MASK_DELTA  # crc of nothing is 0; mask adds the delta


@pytest.mark.parametrize("value, encoded", [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"),
                                            (300, b"\xac\x02"), (2**64 - 1, b"\xff" * 9 + b"\x01")])
def test_varints(value, encoded):
    assert coding.encode_varint(value) == encoded
    assert coding.decode_varint(encoded + b"junk", 0) == (value, len(encoded))
    with pytest.raises(coding.VarintError):
        coding.decode_varint(encoded[:-1], 0)


def test_varint_past_64_bits_is_refused():
    with pytest.raises(coding.VarintError):
        coding.decode_varint(b"\xff" * 9 + b"\x02", 0)  # 2^64 and more
    with pytest.raises(coding.VarintError):
        coding.decode_varint(b"\xff" * 10 + b"\x01", 0)


def test_index_key_shortening_matches_leveldb_rules():
    assert _shortest_separator(b"the quick brown fox", b"the who") == b"the r"
    assert _shortest_separator(b"abc", b"abcd") == b"abc"   # prefix: unchanged
    assert _shortest_separator(b"ab\xff", b"ac") == b"ab\xff"
    assert _short_successor(b"abc") == b"b"
    assert _short_successor(b"\xff\xffa") == b"\xff\xffb"
    assert _short_successor(b"\xff\xff") == b"\xff\xff"


def write_table(items, **options) -> bytes:
    buf = io.BytesIO()
    writer = TableWriter(buf, **options)
    for key, value in items:
        writer.add(key, value)
    writer.finish()
    return buf.getvalue()


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.binary(max_size=30), st.binary(max_size=200), max_size=300),
       st.sampled_from([64, 1024, 256 * 1024]), st.integers(1, 20))
def test_table_roundtrip(entries, block_size, restart_interval):
    items = sorted(entries.items())
    data = write_table(items, block_size=block_size, restart_interval=restart_interval)
    table = TableReader(data)
    assert [(k, bytes(v)) for k, v in table] == items
    for key, value in items:
        assert table.get(key) == value
    assert table.get(b"\xff" * 40) is None


def test_keys_must_be_increasing():
    with pytest.raises(ValueError):
        write_table([(b"b", b""), (b"a", b"")])


def test_oversized_entry_gets_its_own_block():
    big = b"x" * (600 * 1024)  # >= 2 * block size: flushed before it is added
    data = write_table([(b"a", b"1"), (b"b", big), (b"c", b"2")])
    table = TableReader(data)
    assert table.num_blocks == 3
    assert table.get(b"b") == big


def test_not_a_table():
    with pytest.raises(DataLossError, match="too short"):
        TableReader(b"short")
    with pytest.raises(DataLossError, match="magic"):
        TableReader(b"\0" * 100)
