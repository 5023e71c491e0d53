"""Partial reads: `reader.get_slice(name)[window]` equals `reader.get_tensor(name)[window]`
(numpy's answer) for every dtype, rank and window, in every format, and reads only the
bytes of the window."""
from __future__ import annotations

import contextlib
import math
import os
import shutil
from unittest import mock

import ml_dtypes
import numpy as np
import pytest
from helpers import NUMERIC_DTYPES, STRINGS, make_v1, random_array, same, save_partitioned_tf1, tf_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckptkit
from ckptkit import storage
from ckptkit.errors import CheckpointError, DataLossError, InvalidArgumentError, TensorNotFoundError
from ckptkit.formats import window
from ckptkit.formats.bundle import decode_key
from ckptkit.formats.slices import SlicedTensor, encode_tensor_name_slice

SHAPES = {0: (), 1: (9,), 2: (6, 7), 3: (4, 5, 3), 4: (3, 2, 4, 5)}
EXTRA_DTYPES = {  # every byte pattern of the one-byte types, as ckptkit stores them
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2,
}


def _values(dtype: str, shape, rng) -> np.ndarray:
    if dtype == "string":
        items = [STRINGS[i % len(STRINGS)][: 50 + i] + bytes([i % 256]) for i in range(math.prod(shape))]
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out.reshape(shape)
    if dtype in EXTRA_DTYPES:
        return rng.integers(0, 256, size=shape, dtype=np.uint8).view(EXTRA_DTYPES[dtype])
    if dtype == "int4":
        return (np.arange(math.prod(shape)) % 16 - 8).astype(ml_dtypes.int4).reshape(shape)
    return random_array(dtype, shape, rng)


ALL_DTYPES = [*NUMERIC_DTYPES, *EXTRA_DTYPES, "int4", "string"]
TENSORS = {f"{dtype}/r{rank}": (dtype, shape) for dtype in ALL_DTYPES for rank, shape in SHAPES.items()}
TENSORS.update({f"{dtype}/empty": (dtype, (3, 0, 2)) for dtype in ("float32", "string")})


@pytest.fixture(scope="module")
def values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(14)
    out = {name: _values(dtype, shape, rng) for name, (dtype, shape) in TENSORS.items()}
    # partitioned (ckptkit-written), along each axis and in a grid; strings too
    grid = rng.standard_normal((7, 6)).astype(np.float32)
    out["part/grid"] = SlicedTensor((7, 6), [("0,3:0,2", grid[:3, :2]), ("0,3:2,4", grid[:3, 2:]),
                                             ("3,4:0,5", grid[3:, :5]), ("3,4:5,1", grid[3:, 5:])])
    out["part/rows"] = SlicedTensor.split(rng.standard_normal((10, 3, 4)), 3)
    out["part/cols"] = SlicedTensor.split(random_array("bfloat16", (5, 8), rng), 3, axis=1)
    out["part/strings"] = SlicedTensor.split(_values("string", (6, 2), rng), 2)
    # pages apart: rows of 5,000 bytes, 2,400 bytes, 200 bytes
    out["wide/int8"] = rng.integers(-128, 128, size=(50, 5000), dtype=np.int8)
    out["wide/f64"] = rng.standard_normal((40, 300))
    out["wide/f32x3"] = rng.standard_normal((6, 30, 50)).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def ckpt(values, tmp_path_factory) -> str:
    return ckptkit.save(os.fspath(tmp_path_factory.mktemp("slices") / "model"), values, num_shards=2)


@st.composite
def windows(draw, shape):
    """A numpy basic index for `shape`: ints, slices of any step, maybe an Ellipsis, maybe short."""
    items = []
    for dim in shape:
        kind = draw(st.sampled_from(["int", "slice", "slice", "all"]))
        if kind == "int" and dim:
            items.append(draw(st.integers(-dim, dim - 1)))
        elif kind == "slice":
            bound = st.none() | st.integers(-dim - 2, dim + 2)
            step = st.none() | st.integers(-4, 4).filter(bool)
            items.append(slice(draw(bound), draw(bound), draw(step)))
        else:
            items.append(slice(None))
    form = draw(st.sampled_from(["plain", "ellipsis", "short"]))
    if form == "short":
        index = tuple(items[:draw(st.integers(0, len(items)))])
    elif form == "ellipsis":
        a = draw(st.integers(0, len(items)))
        b = draw(st.integers(a, len(items)))
        index = (*items[:a], Ellipsis, *items[b:])
    else:
        index = tuple(items)
    if len(index) == 1 and draw(st.booleans()):
        return index[0]  # a bare int, slice or Ellipsis
    return index


def window_of(full: np.ndarray, index) -> np.ndarray:
    """numpy's answer as an array (a 0-d one where numpy gives an element; np.asarray
    would turn a bytes element into an 'S' array, which drops trailing NULs)."""
    full = np.asarray(full)
    found = full[index]
    return found if isinstance(found, np.ndarray) else np.array(found, dtype=full.dtype)


def _check(reader, name, index, want_full=None):
    full = reader.get_tensor(name) if want_full is None else want_full
    got = reader.get_slice(name)[index]
    want = window_of(full, index)
    assert isinstance(got, np.ndarray) and got.flags.c_contiguous, (name, index)
    assert same(got, want), (name, index, got, want)


FIXED_WINDOWS = [(), Ellipsis, 0, -1, slice(1, None), slice(None, None, -1), slice(None, None, 2),
                 (Ellipsis, -1), (Ellipsis, slice(1, 3)), (slice(None), 1), (slice(5, 1, -2), Ellipsis, 0),
                 (slice(0, 0),), (-1, -1, -1, -1), (slice(None), slice(None), slice(None, None, 3))]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_fixed_windows_every_dtype_and_rank(ckpt, values, dtype):
    with ckptkit.CheckpointReader(ckpt) as reader:
        for name in (n for n, (d, _) in TENSORS.items() if d == dtype):
            shape = TENSORS[name][1]
            assert reader.get_slice(name).get_shape() == list(shape)
            assert reader.get_slice(name).get_dtype() == dtype
            for index in FIXED_WINDOWS:
                try:
                    want = window_of(values[name], index)
                except IndexError:  # numpy refuses it too: so must we, with our error
                    with pytest.raises(InvalidArgumentError):
                        reader.get_slice(name)[index]
                    continue
                got = reader.get_slice(name)[index]
                assert same(got, want), (name, index)
                assert same(got, window_of(reader.get_tensor(name), index)), (name, index)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_window_equals_get_tensor_window(ckpt, values, data):
    with ckptkit.CheckpointReader(ckpt) as reader:
        name = data.draw(st.sampled_from(sorted(reader)))
        shape = tuple(reader.get_variable_to_shape_map()[name])
        _check(reader, name, data.draw(windows(shape)))


@contextlib.contextmanager
def small_limits():
    """Pages of 64 bytes, 300-byte scratch reads, 7 runs per batch: small tensors then
    exercise every path of the run reader (gathers, splits, batch edges)."""
    with mock.patch.object(window, "PAGE", 64), mock.patch.object(window, "SCRATCH", 300), \
            mock.patch.object(window, "RUN_BATCH", 7):
        yield


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_window_with_small_pages_and_buffers(ckpt, data):
    with ckptkit.CheckpointReader(ckpt) as reader, small_limits():
        name = data.draw(st.sampled_from(sorted(reader)))
        _check(reader, name, data.draw(windows(tuple(reader.get_variable_to_shape_map()[name]))))


# --------------------------------------------------------------------------- only the bytes needed

@contextlib.contextmanager
def recorded_reads():
    """Every (offset, length) that window.read_ranges reads."""
    calls: list[tuple[int, int]] = []
    real = window.read_ranges

    def spy(source, ranges, *, key):
        ranges = list(ranges)
        calls.extend((offset, len(buf)) for offset, buf in ranges)
        real(source, ranges, key=key)

    with mock.patch.object(window, "read_ranges", spy):
        yield calls


def _assert_reads_only_the_window(calls, start, shape, itemsize, index, page):
    """Every byte of the window read exactly once; nothing outside the tensor; bytes read
    beyond the window only in gaps shorter than a page between window bytes."""
    size = math.prod(shape) * itemsize
    elements = np.arange(math.prod(shape)).reshape(shape)[index].reshape(-1)
    needed = np.zeros(size, dtype=bool)
    for k in range(itemsize):
        needed[elements * itemsize + k] = True
    read = np.zeros(size, dtype=bool)
    for offset, length in calls:
        rel = offset - start
        assert 0 <= rel and rel + length <= size, "read outside the tensor"
        assert not read[rel:rel + length].any(), "a byte read twice"
        assert needed[rel] and needed[rel + length - 1], "a read that starts or ends outside the window"
        read[rel:rel + length] = True
    assert not (needed & ~read).any(), "window bytes not read"
    extra = np.flatnonzero(np.diff(np.concatenate([[0], (read & ~needed).astype(np.int8), [0]])))
    gaps = extra[1::2] - extra[0::2]
    assert (gaps < page).all(), f"gaps of {gaps.max()} bytes read"
    return int(read.sum())


WIDE = ["wide/int8", "wide/f64", "wide/f32x3", "float64/r4", "int16/r3", "bool/r2"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), small=st.booleans())
def test_reads_only_the_window_bytes(ckpt, data, small):
    with ckptkit.CheckpointReader(ckpt) as reader:
        name = data.draw(st.sampled_from(WIDE))
        shape = tuple(reader.get_variable_to_shape_map()[name])
        index = data.draw(windows(shape))
        entry = reader.entry(name)
        itemsize = reader.get_variable_to_dtype_map()[name].numpy.itemsize
        whole = np.arange(math.prod(shape)).reshape(shape)[index].size == math.prod(shape)
        with contextlib.ExitStack() as stack:
            if small:
                stack.enter_context(small_limits())
            calls = stack.enter_context(recorded_reads())
            got = reader.get_slice(name)[index]
        assert same(got, window_of(reader.get_tensor(name), index))
        if whole:  # the whole tensor goes through the ordinary, crc-checked read
            assert calls == []
        else:
            _assert_reads_only_the_window(calls, entry.offset, shape, itemsize, index, 64 if small else window.PAGE)


def test_rows_pages_apart_read_exactly_the_window(ckpt, values):
    # int8 rows of 5,000 bytes; columns 1000..2999 of rows 10..19: 10 runs of 2,000 bytes
    # with 3,000-byte gaps (under a page: gathered) and, at 2000..4999 of rows 3..5, runs
    # 2,000 bytes apart; column 7 of every row: 50 runs of one byte, 4,999 bytes apart.
    with ckptkit.CheckpointReader(ckpt) as reader:
        start = reader.entry("wide/int8").offset
        with recorded_reads() as calls:
            got = reader.get_slice("wide/int8")[:, 7]
        assert same(got, values["wide/int8"][:, 7])
        assert sorted(calls) == [(start + 5000 * row + 7, 1) for row in range(50)]
        with recorded_reads() as calls:
            got = reader.get_slice("wide/int8")[10:20]
        assert same(got, values["wide/int8"][10:20])
        assert calls == [(start + 50000, 50000)]  # consecutive rows: one read


def test_bytes_outside_the_window_are_never_looked_at(ckpt, tmp_path, values):
    """Damage every byte of a tensor but rows 10..19: the window still reads; the
    whole tensor fails its crc32c, through get_tensor and a whole window alike."""
    shutil.copytree(os.path.dirname(ckpt), tmp_path / "copy")
    prefix = os.fspath(tmp_path / "copy" / "model")
    with ckptkit.CheckpointReader(prefix) as reader:
        entry = reader.entry("wide/f64")
        shard = [f for f in reader.files if f.endswith(f"data-{entry.shard_id:05d}-of-00002")][0]
    row = 300 * 8
    with open(shard, "r+b") as f:
        f.seek(entry.offset)
        f.write(b"\xff" * (10 * row))
        f.seek(entry.offset + 20 * row)
        f.write(b"\xff" * (20 * row))
    with ckptkit.CheckpointReader(prefix) as reader:
        assert same(reader.get_slice("wide/f64")[10:20], values["wide/f64"][10:20])
        assert same(reader.get_slice("wide/f64")[12:15, ::-3], values["wide/f64"][12:15, ::-3])
        with pytest.raises(DataLossError, match="checksum"):
            reader.get_tensor("wide/f64")
        with pytest.raises(DataLossError, match="checksum"):
            reader.get_slice("wide/f64")[::-1]
        assert not np.array_equal(reader.get_slice("wide/f64")[9], values["wide/f64"][9])


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("index, message", [
    (6, "index 6 is out of range for dimension 0 of size 6"),
    ((0, -8), "index -8 is out of range for dimension 1 of size 7"),
    ((0, 0, 0), "too many indices: 3 for a tensor of shape"),
    ((Ellipsis, 0, Ellipsis), "single ellipsis"),
    (None, "not supported"), (True, "not supported"), ([0, 1], "not supported"), (1.0, "not supported"),
    (slice(None, None, 0), "step cannot be zero"), (slice(0.5, 2), "bad slice"),
])
def test_bad_windows_are_errors_naming_file_and_key(ckpt, index, message):
    with ckptkit.CheckpointReader(ckpt) as reader:
        with pytest.raises(InvalidArgumentError, match=message) as info:
            reader.get_slice("float32/r2")[index]
        assert info.value.path == ckpt and info.value.key == "float32/r2"
        with pytest.raises(TensorNotFoundError):
            reader.get_slice("nope")


def test_numpy_integers_and_scalars(ckpt, values):
    with ckptkit.CheckpointReader(ckpt) as reader:
        part = reader.get_slice("int64/r2")
        assert part.shape == (6, 7) and part.ndim == 2 and len(part) == 6 and part.dtype.name == "int64"
        assert same(part[np.int64(2), np.int32(-1)], window_of(values["int64/r2"], (2, -1)))
        assert same(reader.get_slice("float32/r0")[()], values["float32/r0"])
        with pytest.raises(InvalidArgumentError):
            reader.get_slice("float32/r0")[0]


def test_mmap_and_unverified_readers(ckpt, values):
    for options in ({"mmap": True}, {"verify": False}):
        with ckptkit.CheckpointReader(ckpt, **options) as reader:
            for name in ("wide/f64", "part/grid", "string/r2"):
                _check(reader, name, (slice(1, 4), slice(None, None, -2)))


# --------------------------------------------------------------------------- TF-written checkpoints

@pytest.fixture(scope="module")
def tf_partitioned(tf, tf1, tmp_path_factory):
    return save_partitioned_tf1(tf, tf1, os.fspath(tmp_path_factory.mktemp("tfpart")), extra_dtypes=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_tf_partitioned_windows_equal_tf_values(tf_partitioned, data):
    path, want = tf_partitioned
    with ckptkit.CheckpointReader(path) as reader:
        name = data.draw(st.sampled_from(sorted(want)))
        _check(reader, name, data.draw(windows(want[name].shape)), want_full=want[name])


def test_tf_partitioned_reads_only_the_slices_it_overlaps(tf_partitioned, tmp_path):
    """Damage slice 0 of a TF-written partitioned variable: windows on the other slices
    read; a window covering slice 0 fails its crc32c (a whole slice is checked)."""
    path, want = tf_partitioned
    shutil.copytree(os.path.dirname(path), tmp_path / "copy")
    prefix = os.fspath(tmp_path / "copy" / os.path.basename(path))
    with ckptkit.CheckpointReader(prefix) as reader:
        first = reader.slices("fixed3_axis0")[0]
        assert first.spec() == "0,3:0,4"  # TF writes every extent explicitly
        entry = reader.entry(decode_key(encode_tensor_name_slice("fixed3_axis0", first)))
        shard = [f for f in reader.files if ".data-" in f and f.endswith(f"{entry.shard_id:05d}-of-"
                                                                          f"{reader.num_shards:05d}")][0]
    with open(shard, "r+b") as f:
        f.seek(entry.offset)
        f.write(b"\x00\xff" * (entry.size // 2))
    with ckptkit.CheckpointReader(prefix) as reader:
        full = want["fixed3_axis0"]  # [7, 4] in slices of rows 0-2, 3-4, 5-6
        assert same(reader.get_slice("fixed3_axis0")[3:], full[3:])
        assert same(reader.get_slice("fixed3_axis0")[-1, ::-1], full[-1, ::-1])
        with pytest.raises(DataLossError, match="slice 0,3:0,4: checksum") as info:
            reader.get_slice("fixed3_axis0")[:4]
        assert info.value.key == "fixed3_axis0"
        with pytest.raises(DataLossError):
            reader.get_tensor("fixed3_axis0")


def test_tf_written_dtypes(tf, dtypes_ckpt):
    want = tf_values(tf, dtypes_ckpt)
    with ckptkit.CheckpointReader(dtypes_ckpt) as reader:
        for name, value in want.items():
            value = np.asarray(value)
            for index in FIXED_WINDOWS:
                try:
                    expected = window_of(value, index)
                except IndexError:
                    continue
                got = reader.get_slice(name)[index]
                if value.dtype.kind in "OS":
                    assert [bytes(x) for x in got.reshape(-1)] == [bytes(x) for x in expected.reshape(-1)]
                else:
                    assert same(got, expected), (name, index)


def test_v1_checkpoints_read_whole_then_window(tf, tf1, tmp_path):
    prefix = make_v1(tf1, os.fspath(tmp_path))
    want = tf_values(tf, prefix)
    with ckptkit.CheckpointReader(prefix) as reader:
        assert reader.format == "v1"
        assert same(reader.get_slice("w")[1, ::-1], window_of(want["w"], (1, slice(None, None, -1))))
        assert reader.get_slice("s")[()].item() == want["s"]
    os.mkdir(tmp_path / "v1part")
    path, values = save_partitioned_tf1(tf, tf1, os.fspath(tmp_path / "v1part"), version="V1")
    with ckptkit.CheckpointReader(path) as reader:
        for name, value in values.items():
            _check(reader, name, (slice(1, None, 2),), want_full=value)


# --------------------------------------------------------------------------- .safetensors and .npz

@pytest.fixture(scope="module")
def reference_safetensors(tmp_path_factory):
    """A .safetensors file written by the safetensors package (the reference writer)."""
    from safetensors.numpy import save_file  # noqa: PLC0415 - test-only dependency

    rng = np.random.default_rng(3)
    tensors = {"f32": rng.standard_normal((20, 700)).astype(np.float32),
               "i64": rng.integers(-(1 << 60), 1 << 60, size=(5, 6, 7)),
               "u8": rng.integers(0, 256, size=(3000,), dtype=np.uint8),
               "f16": rng.standard_normal((4, 3, 2, 5)).astype(np.float16),
               "b": rng.integers(0, 2, size=(6, 9)).astype(bool),
               "scalar": np.array(2.5, dtype=np.float64), "empty": np.zeros((0, 3), np.int32)}
    path = os.fspath(tmp_path_factory.mktemp("st") / "ref.safetensors")
    save_file(tensors, path)
    return path, tensors


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), small=st.booleans())
def test_safetensors_windows_read_only_their_bytes(reference_safetensors, data, small):
    path, tensors = reference_safetensors
    with ckptkit.CheckpointReader(path) as reader:
        assert reader.format == "safetensors"
        name = data.draw(st.sampled_from(sorted(tensors)))
        value = tensors[name]
        index = data.draw(windows(value.shape))
        with contextlib.ExitStack() as stack:
            if small:
                stack.enter_context(small_limits())
            calls = stack.enter_context(recorded_reads())
            got = reader.get_slice(name)[index]
        assert same(got, window_of(value, index))
        if window_of(value, index).size not in (0, value.size):
            st_file = reader._backend.file
            _, _, (begin, _) = st_file.specs[name]
            _assert_reads_only_the_window(calls, st_file.data_start + begin, value.shape, value.itemsize,
                                          index, 64 if small else window.PAGE)


def test_safetensors_agrees_with_the_safetensors_package(reference_safetensors):
    from safetensors import safe_open  # noqa: PLC0415 - test-only dependency

    path, tensors = reference_safetensors
    with ckptkit.CheckpointReader(path) as reader, safe_open(path, framework="np") as ref:
        for name, index in [("f32", slice(2, 4)), ("f32", (slice(None), slice(100, 300))),
                            ("i64", (slice(1, 3), slice(None), slice(2, 5))),
                            ("f16", (slice(1, 3), slice(None), slice(0, 1))), ("u8", slice(5, 2000))]:
            ours, theirs = reader.get_slice(name), ref.get_slice(name)
            assert ours.get_shape() == theirs.get_shape()
            assert same(ours[index], theirs[index]), (name, index)
        # safetensors refuses slice bounds past a dimension; ckptkit clips them, as numpy does
        assert same(reader.get_slice("f16")[:, :, 1:9], tensors["f16"][:, :, 1:9])
        # an empty list: the empty window of the first dimension in all three
        for name in ("f32", "i64"):
            assert same(reader.get_slice(name)[[]], ref.get_slice(name)[[]])
            assert same(reader.get_slice(name)[[]], tensors[name][[]]) and tensors[name][[]].shape[0] == 0


@pytest.fixture(scope="module")
def npz_files(values, tmp_path_factory):
    """The same arrays in an np.savez archive (stored: partial reads) and an
    np.savez_compressed one (read whole), with a big-endian and a Fortran-order member."""
    rng = np.random.default_rng(9)
    arrays = {"f64": values["float64/r3"], "i16": values["wide/int8"].astype(np.int16)[:20, :300],
              "big": rng.integers(-1000, 1000, size=(30, 40)).astype(">i4"),
              "fortran": np.asfortranarray(rng.standard_normal((9, 11))),
              "c128": values["complex128/r4"], "flags": values["bool/r2"],
              "s": np.array([b"ab", b"c", b"def"]), "u": np.array(["x", "yz"])}
    directory = tmp_path_factory.mktemp("npz")
    np.savez(directory / "stored.npz", **arrays)
    np.savez_compressed(directory / "packed.npz", **arrays)
    return os.fspath(directory / "stored.npz"), os.fspath(directory / "packed.npz"), arrays


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), small=st.booleans())
def test_npz_windows(npz_files, data, small):
    stored, packed, arrays = npz_files
    name = data.draw(st.sampled_from(sorted(arrays)))
    value = arrays[name]
    index = data.draw(windows(value.shape))
    want = window_of(value, index)
    if value.dtype.kind in "SU":
        want = np.array([bytes(x) if value.dtype.kind == "S" else x.encode() for x in want.reshape(-1)] or [],
                        dtype=object).reshape(want.shape)
    else:
        want = want.astype(value.dtype.newbyteorder("="))
    for path in (stored, packed):
        with ckptkit.CheckpointReader(path) as reader, contextlib.ExitStack() as stack:
            if small:
                stack.enter_context(small_limits())
            calls = stack.enter_context(recorded_reads())
            got = reader.get_slice(name)[index]
        assert same(got, want), (path, name, index)
        # the member's bytes lie in the stored archive as they are (Fortran order for "fortran")
        start = open(path, "rb").read().find(value.tobytes(order="A"))
        data_reads = [(offset, n) for offset, n in calls if offset >= start]  # not the zip/.npy headers
        if path == packed or want.size in (0, value.size) or name in ("fortran", "s", "u"):
            assert data_reads == []  # read whole, by numpy's zip reader
        else:
            assert start > 0
            _assert_reads_only_the_window(data_reads, start, value.shape, value.itemsize, index,
                                          64 if small else window.PAGE)


def test_a_damaged_window_is_a_checkpoint_error(ckpt, tmp_path):
    """A shard cut short after the reader validated it: the partial read names the file."""
    shutil.copytree(os.path.dirname(ckpt), tmp_path / "copy")
    prefix = os.fspath(tmp_path / "copy" / "model")
    with ckptkit.CheckpointReader(prefix) as reader:
        part = reader.get_slice("wide/int8")
        part[0]  # opens and validates the shard
        entry = reader.entry("wide/int8")
        shard = [f for f in reader.files if f.endswith(f"data-{entry.shard_id:05d}-of-00002")][0]
        os.truncate(shard, entry.offset + 100)
        with pytest.raises(CheckpointError, match="ended early") as info:
            part[10:20, 5]
        assert info.value.key == "wide/int8" and info.value.path == shard


def test_read_errors_name_the_file_and_key(tmp_path):
    (tmp_path / "file").write_bytes(b"12345678")
    handle = storage.LOCAL.open(str(tmp_path / "file"), "the file")
    os.close(handle.fileno())  # the descriptor goes bad under the reader: every read fails (EBADF)
    try:
        with pytest.raises(CheckpointError, match="cannot read the file: Bad file descriptor") as info:
            window.read_ranges(handle, [(0, memoryview(bytearray(4)))], key="k")
        assert info.value.path == str(tmp_path / "file") and info.value.key == "k"
    finally:
        with contextlib.suppress(OSError):
            handle.close()
