"""The listing's fast path (one regex fullmatch per entry, dtype and shape decoded once per
distinct head; bundle_index.plain_entry) must say exactly what protobuf says of the same
bytes: for entries in TF's layout, for every mutation of them, for any shard count."""
from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptkit.errors import DataLossError
from ckptkit.formats import bundle


def protobuf_meta(value: bytes, num_shards: int):
    """(dtype, shape) as the full protobuf parse gives it, or DataLossError: the reference."""
    try:
        entry = bundle.BundleEntryProto.FromString(value)
    except Exception:  # noqa: BLE001 - protobuf raises DecodeError or others by backend
        return DataLossError
    if not entry.slices and not 0 <= entry.shard_id < num_shards:
        return DataLossError
    try:
        return entry.dtype, bundle.shape_of(entry)
    except DataLossError:
        return DataLossError


@st.composite
def entries(draw) -> bytes:
    shape = tuple(draw(st.lists(st.integers(0, 1 << 40), max_size=5)))
    value = bundle.make_entry(draw(st.integers(1, 30)), shape, draw(st.integers(0, 200)),
                              draw(st.integers(0, 1 << 40)), draw(st.integers(0, 1 << 40)),
                              draw(st.integers(0, (1 << 32) - 1))).SerializeToString()
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "append"]))
        pos = draw(st.integers(0, len(value)))
        if kind == "flip" and pos < len(value):
            value = value[:pos] + bytes([draw(st.integers(0, 255))]) + value[pos + 1:]
        elif kind == "insert":
            value = value[:pos] + draw(st.binary(min_size=1, max_size=3)) + value[pos:]
        elif kind == "delete":
            value = value[:pos] + value[pos + 1:]
        else:  # a field protobuf merges into what came before: dtype, shape, shard again
            value += draw(st.sampled_from([b"\x08\x02", b"\x12\x00", b"\x12\x04\x12\x02\x08\x07", b"\x18\x01",
                                           b"\x18\xff\x01", b"\x20\x01", b"\x3a\x00"]))
    return value


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(entries(), min_size=1, max_size=6), num_shards=st.sampled_from([1, 2, 3, 127, 128, 129, 300]))
def test_listing_agrees_with_protobuf(values, num_shards):
    keys = [f"k{i}" for i in range(len(values))]
    expected = {k: protobuf_meta(v, num_shards) for k, v in zip(keys, values, strict=True)}
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "ckpt")
        items = [(bundle.encode_key(k), v) for k, v in zip(keys, values, strict=True)]
        bundle.write_index(prefix, bundle.make_header(num_shards), items).commit()
        index = bundle.BundleIndex(prefix)
        if DataLossError in expected.values():  # the listing refuses the first bad entry
            try:
                got = index.metas()
            except DataLossError:
                return
            raise AssertionError(f"listed {got}, protobuf refuses one of {expected}")
        assert index.metas() == expected
        for key in keys:  # one at a time, as `get_variable_to_*` on one name would
            assert bundle.BundleIndex(prefix).meta(key) == expected[key]
