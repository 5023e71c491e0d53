"""Batched reads (`CheckpointReader.get_tensors`, `ckptkit.load`) and get_tensor's read plans.

A batch reads each shard in offset order, small tensors coalesced into runs read with one
call each; a tensor without a plan (partitioned, strings, big-endian, an unusual entry
layout) is read the per-tensor way. Whatever the path, every value must equal what
`get_tensor` gives (dtype, shape, bytes), each result must be an array of its own, a
damaged tensor must be a DataLossError naming it, and a checkpoint replaced meanwhile
must still be read whole.
"""
from __future__ import annotations

import io
import threading
import uuid

import ml_dtypes
import numpy as np
import pytest
from helpers import NUMERIC_DTYPES, random_array, variety

import ckptkit
from ckptkit.errors import DataLossError, TensorNotFoundError
from ckptkit.formats import bundle
from ckptkit.formats.coding import crc32c, mask_crc
from ckptkit.formats.table import TableReader, TableWriter
from ckptkit.storage.local_handle import LocalHandle


def assert_equal_arrays(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
        if value.dtype == object:
            assert got[key].tolist() == value.tolist(), key
        else:
            assert got[key].tobytes() == value.tobytes(), key


def many_tensors(rng) -> dict:
    """Every dtype in several shapes (scalars, empties), strings, a partitioned variable
    and tensors of several sizes, so that runs, big tensors and fallbacks all occur."""
    out = variety(rng)
    for i, dtype in enumerate(NUMERIC_DTYPES):
        out[f"odd/{dtype}"] = random_array(dtype, (i % 4 + 1, 3), rng)  # unaligned offsets after odd sizes
    out["big/a"] = rng.standard_normal((300, 100)).astype(np.float32)
    out["big/b"] = rng.standard_normal(5000).astype(np.float64)
    grid = np.arange(24, dtype=np.float32).reshape(4, 6)
    out["part"] = ckptkit.SlicedTensor((4, 6), [("0,2:-", grid[:2]), ("2,2:-", grid[2:])])
    return out


@pytest.fixture(params=[None, 256], ids=["8MiB-pieces", "256B-pieces"])
def pieces(request, monkeypatch):
    """Local reads in the store's real pieces, and in tiny ones (runs split, big tensors threaded)."""
    if request.param is not None:
        monkeypatch.setattr(LocalHandle, "piece_bytes", request.param)
    return request.param


@pytest.mark.parametrize("num_shards", [1, 3])
def test_get_tensors_equals_get_tensor_for_every_dtype(tmp_path, pieces, num_shards):
    prefix = str(tmp_path / "model")
    ckptkit.save(prefix, many_tensors(np.random.default_rng(1)), num_shards=num_shards)
    with ckptkit.CheckpointReader(prefix) as reader:
        want = {name: reader.get_tensor(name) for name in reader}
    names = list(want)[::-1]  # any order: results come in the order asked
    with ckptkit.CheckpointReader(prefix) as reader:
        got = reader.get_tensors(names)
    assert_equal_arrays(got, {name: want[name] for name in names})
    assert_equal_arrays(ckptkit.load(prefix), want)
    # arrays of their own: writable, aligned, sharing memory with no other result
    numeric = [v for v in got.values() if v.dtype != object and v.size]
    assert all(v.flags.writeable and v.flags.aligned for v in numeric)
    for a, b in zip(numeric, numeric[1:], strict=False):
        assert not np.shares_memory(a, b)


def test_first_and_repeated_get_tensor_agree_with_the_protobuf_path(tmp_path, pieces):
    """A read plan (decoded from the entry bytes) gives what `checked` + `read` give."""
    prefix = str(tmp_path / "model")
    ckptkit.save(prefix, many_tensors(np.random.default_rng(2)))
    reader = ckptkit.CheckpointReader(prefix)
    data = reader._backend.data
    for name in reader:
        first, again = reader.get_tensor(name), reader.get_tensor(name)
        slow = data.read_full(name)
        for value in (first, again):
            assert value.dtype == slow.dtype and value.shape == slow.shape
            assert value.tobytes() == slow.tobytes() if value.dtype != object else value.tolist() == slow.tolist()
        plan = data.plan(name)
        if plan is not None:
            entry = data.checked(name).entry
            assert (plan[1], plan[2], plan[6]) == (entry.offset, entry.size, entry.shard_id)


def test_unusual_entry_layouts_are_read_through_protobuf(tmp_path):
    """Entries not in TF's field order (or with merged fields) have no plan; they still read."""
    prefix = str(tmp_path / "crafted")
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw = a.tobytes()
    plain = bundle.make_entry(1, (2, 3), 0, 0, len(raw), mask_crc(crc32c(raw))).SerializeToString()
    head = 2 + 2 + plain[3]
    swapped = plain[2:head] + plain[:2] + plain[head:]  # shape before dtype: same meaning
    with open(bundle.data_filename(prefix, 0, 1), "wb") as f:
        f.write(raw)
    bundle.write_index(prefix, bundle.make_header(1), [("a", plain), ("b", swapped)]).commit()
    reader = ckptkit.CheckpointReader(prefix)
    assert reader._backend.data.plan("b") is None and reader._backend.data.plan("a") is not None
    got = reader.get_tensors(["a", "b"])
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["b"], a)
    np.testing.assert_array_equal(reader.get_tensor("b"), a)


def test_big_endian_bundle_batches_like_get_tensor(tmp_path):
    prefix = str(tmp_path / "big")
    values = {"f32": np.arange(5, dtype=np.float32) * 1.5, "i64": np.array([1, -2, 2 ** 40]),
              "bf16": np.array([1.5, -2], ml_dtypes.bfloat16), "u8": np.arange(3, dtype=np.uint8)}
    data, entries = bytearray(), []
    for key, value in values.items():
        raw = value.view(np.uint8).reshape(-1, value.dtype.itemsize)[:, ::-1].tobytes()
        enum = ckptkit.dtypes.as_dtype(value.dtype).enum
        entries.append((key, bundle.make_entry(enum, value.shape, 0, len(data), len(raw),
                                               mask_crc(crc32c(raw))).SerializeToString()))
        data += raw
    with open(bundle.data_filename(prefix, 0, 1), "wb") as f:
        f.write(data)
    bundle.write_index(prefix, bundle.make_header(1, bundle.BIG), entries).commit()
    reader = ckptkit.CheckpointReader(prefix)
    got = reader.get_tensors(list(values))
    for key, value in values.items():
        np.testing.assert_array_equal(got[key], value)
        np.testing.assert_array_equal(reader.get_tensor(key), value)
    assert reader._backend.data.plan("f32") is None and reader._backend.data.plan("u8") is not None


def damage(prefix: str, name: str, num_shards: int = 1) -> None:
    """Flip one byte inside tensor `name`'s data."""
    entry = ckptkit.CheckpointReader(prefix).entry(name)
    path = bundle.data_filename(prefix, entry.shard_id, num_shards)
    with open(path, "r+b") as f:
        f.seek(entry.offset + entry.size // 2)
        byte = f.read(1)
        f.seek(entry.offset + entry.size // 2)
        f.write(bytes([byte[0] ^ 0x40]))


@pytest.mark.parametrize("victim", ["t050", "big", "float32/matrix"])
def test_a_damaged_tensor_in_a_batch_is_data_loss_naming_it(tmp_path, pieces, victim):
    prefix = str(tmp_path / "model")
    tensors = {f"t{i:03d}": np.full(7, i, np.float32) for i in range(100)}
    tensors["big"] = np.arange(100_000, dtype=np.int64)
    tensors["float32/matrix"] = np.ones((3, 5), np.float32)
    ckptkit.save(prefix, tensors)
    damage(prefix, victim)
    with pytest.raises(DataLossError, match="checksum") as caught:
        ckptkit.CheckpointReader(prefix).get_tensors(list(tensors))
    assert caught.value.key == victim
    with pytest.raises(DataLossError) as caught:
        ckptkit.load(prefix)
    assert caught.value.key == victim
    with pytest.raises(DataLossError):
        ckptkit.CheckpointReader(prefix).get_tensor(victim)
    # verify=False reads what is there, as get_tensor does
    unchecked = ckptkit.CheckpointReader(prefix, verify=False).get_tensors(list(tensors))
    assert unchecked[victim].tobytes() == ckptkit.CheckpointReader(prefix, verify=False).get_tensor(victim).tobytes()


def test_a_missing_name_is_tensor_not_found(tmp_path):
    prefix = str(tmp_path / "model")
    ckptkit.save(prefix, {"a": np.ones(3)})
    with pytest.raises(TensorNotFoundError) as caught:
        ckptkit.CheckpointReader(prefix).get_tensors(["a", "nope"])
    assert caught.value.key == "nope"


def test_short_reads_are_completed(tmp_path, monkeypatch):
    """A store that returns fewer bytes than asked (as a pipe or a network may) still fills every array."""
    prefix = str(tmp_path / "model")
    tensors = many_tensors(np.random.default_rng(3))
    ckptkit.save(prefix, tensors)
    want = {n: v for n, v in ckptkit.load(prefix).items()}
    real = LocalHandle.readinto

    def readinto(self, buf, offset):
        view = memoryview(buf).cast("B")
        return real(self, view[:7], offset)

    monkeypatch.setattr(LocalHandle, "readinto", readinto)
    reader = ckptkit.CheckpointReader(prefix)
    assert_equal_arrays({n: reader.get_tensor(n) for n in reader}, want)
    assert_equal_arrays(ckptkit.load(prefix), want)


def test_mmap_and_framework_readers_batch_through_get_tensor(tmp_path):
    prefix = str(tmp_path / "model")
    tensors = {f"t{i}": np.full((4, 4), i, np.float32) for i in range(10)}
    ckptkit.save(prefix, tensors)
    with ckptkit.CheckpointReader(prefix, mmap=True) as reader:
        got = reader.get_tensors(list(tensors))
        assert all(not v.flags.writeable for v in got.values())  # views, as get_tensor gives
    assert_equal_arrays(got, tensors)


def test_remote_store_batches_equal_local(tmp_path):
    pytest.importorskip("fsspec")

    prefix = f"memory://ckptkit-tests/{uuid.uuid4().hex[:8]}/model"
    tensors = {k: v for k, v in many_tensors(np.random.default_rng(4)).items()}
    ckptkit.save(prefix, tensors, num_shards=2)
    local = str(tmp_path / "model")
    ckptkit.save(local, tensors, num_shards=2)
    assert_equal_arrays(ckptkit.load(prefix), ckptkit.load(local))


def test_get_tensors_after_a_resave_reads_the_new_checkpoint_whole(tmp_path):
    prefix = str(tmp_path / "model")
    old = {f"t{i}": np.full(8, i, np.float32) for i in range(6)}
    new = {f"t{i}": np.full(8, 10 + i, np.float32) for i in range(6)}
    ckptkit.save(prefix, old, num_shards=3)
    reader = ckptkit.CheckpointReader(prefix)
    ckptkit.save(prefix, new, num_shards=3)
    assert_equal_arrays(reader.get_tensors(list(new)), new)
    assert reader.generation == 1


def test_load_while_a_writer_resaves_never_mixes_saves(tmp_path):
    """A writer re-saves one prefix over and over; every load returns one save whole."""
    prefix = str(tmp_path / "model")

    def values(step: int) -> dict:
        out = {f"small/{i:03d}": np.full(5, step, np.int64) for i in range(200)}
        out["big"] = np.full(300_000, step, np.int64)
        return out

    ckptkit.save(prefix, values(0), num_shards=3)
    stop = threading.Event()

    def writer() -> None:
        step = 0
        while not stop.is_set():
            step += 1
            ckptkit.save(prefix, values(step), num_shards=3)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = set()
        for _ in range(40):
            got = ckptkit.load(prefix)
            steps = {int(v.reshape(-1)[0]) for v in got.values()} | {int(v.reshape(-1)[-1]) for v in got.values()}
            assert len(steps) == 1, steps
            assert len(got) == 201
            seen |= steps
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 1  # the writer did replace the checkpoint under the loads


def test_a_second_reader_reuses_the_decoded_index_only_while_the_file_is_unchanged(tmp_path):
    """Readers of one unchanged index share its decoding; a re-save (a new file) is read anew."""
    prefix = str(tmp_path / "model")
    ckptkit.save(prefix, {"a": np.ones(3, np.float32), "b": np.zeros((2, 2), np.int64)})
    first = ckptkit.CheckpointReader(prefix)
    assert first.get_variable_to_shape_map() == {"a": [3], "b": [2, 2]}
    second = ckptkit.CheckpointReader(prefix)
    assert second._index._raw is first._index._raw  # shared, not decoded again
    shapes = second.get_variable_to_shape_map()
    shapes["a"].append(99)  # the caller's lists are its own
    assert ckptkit.CheckpointReader(prefix).get_variable_to_shape_map()["a"] == [3]
    ckptkit.save(prefix, {"a": np.ones(5, np.float32), "c": np.ones((), np.float64)})
    third = ckptkit.CheckpointReader(prefix)
    assert third._index._raw is not first._index._raw
    assert third.get_variable_to_shape_map() == {"a": [5], "c": []}
    assert {k: v.name for k, v in third.get_variable_to_dtype_map().items()} == {"a": "float32", "c": "float64"}
    np.testing.assert_array_equal(third.get_tensor("a"), np.ones(5, np.float32))
    # the old reader still answers for the checkpoint it opened, and reopens on a read
    assert first.get_variable_to_shape_map() == {"a": [3], "b": [2, 2]}


def test_a_name_asked_for_twice_is_read_once(tmp_path):
    prefix = str(tmp_path / "model")
    tensors = {"a": np.arange(4, dtype=np.float32), "b": np.ones((2, 2), np.int64)}
    ckptkit.save(prefix, tensors)
    got = ckptkit.CheckpointReader(prefix).get_tensors(["b", "a", "b"])
    assert list(got) == ["b", "a"]
    assert_equal_arrays(got, {"b": tensors["b"], "a": tensors["a"]})


def test_remote_indexes_are_decoded_by_every_reader(tmp_path):
    """A remote store's identity of a file may not change with its bytes (no ETag): no reuse there."""
    pytest.importorskip("fsspec")

    prefix = f"memory://ckptkit-tests/{uuid.uuid4().hex[:8]}/model"
    ckptkit.save(prefix, {"a": np.ones(3, np.float32)})
    first = ckptkit.CheckpointReader(prefix)
    assert ckptkit.CheckpointReader(prefix)._index._raw is not first._index._raw


@pytest.mark.parametrize("keys", [[b"a", b"b", b"b"], [b"a", b"c", b"b"]], ids=["duplicate", "descending"])
def test_table_keys_must_strictly_increase(keys):
    """The listing's one-pass order check still refuses duplicates and disorder."""

    out = io.BytesIO()
    writer = TableWriter(out)
    for key in keys:
        writer.last_key = None  # let the writer take keys out of order
        writer.add(key, b"v")
    writer.finish()
    with pytest.raises(DataLossError, match="out of order"):
        list(TableReader(out.getvalue(), "crafted.index"))
