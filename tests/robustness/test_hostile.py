"""Hostile input: lying sizes, state files aimed outside, FIFOs, pickles.

A checkpoint or state file may come from anyone. Whatever it claims, ckptkit must
refuse it with a CheckpointError before allocating what it claims (peak memory is
measured with tracemalloc, which sees numpy's allocations), never hang on it, never
run code from it, and never delete a file outside the directory a Saver manages.
"""
from __future__ import annotations

import ast
import logging
import os
import pathlib
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from helpers import MEMORY_LIMIT, bounded_memory, hostile_v2, time_limit

import ckptkit
from ckptkit.cli import cli
from ckptkit.errors import CheckpointError, DataLossError, NotFoundError, UnsupportedError
from ckptkit.formats import bundle, slices
from ckptkit.formats.coding import crc32c, encode_varint, mask_crc
from ckptkit.formats.table import TableWriter
from ckptkit.ops.convert import read_npz
from ckptkit.proto import saved_tensor_slice_pb2, tensor_pb2
from ckptkit.tf1.state import checkpoint_files, read_state_file, remove_checkpoint

PACKAGE = pathlib.Path(ckptkit.__file__).parent
def refused(prefix: str, match: str | None = None, seconds: float = 10,
            memory: int = MEMORY_LIMIT) -> CheckpointError:
    """Read every tensor of `prefix`; it must raise a CheckpointError, cheaply and promptly."""
    with time_limit(seconds), bounded_memory(memory), pytest.raises(CheckpointError, match=match) as info:
        ckptkit.load(prefix)
    return info.value


# --------------------------------------------------------------------------- V2: lying entries

FLOAT, INT8, STRING = 1, 6, 7

HOSTILE_ENTRIES = {
    # shape and size agree (4 TiB) but the shard has 16 bytes
    "claims more than the shard": (bundle.make_entry(FLOAT, (1 << 20, 1 << 20), 0, 0, 4 << 40, 0),
                                   "past the end of the shard"),
    "2^62 elements": (bundle.make_entry(INT8, (1 << 31, 1 << 31), 0, 0, 1 << 62, 0), "past the end"),
    "2^62 elements, small size": (bundle.make_entry(FLOAT, (1 << 62,), 0, 0, 8, 0), "does not match shape"),
    "2^64 bytes of float32": (bundle.make_entry(FLOAT, (1 << 62,), 0, 0, 0, 0), "does not match shape"),
    "offset near 2^63": (bundle.make_entry(FLOAT, (2,), 0, (1 << 63) - 5, 8, 0), "past the end"),
    "negative offset": (bundle.make_entry(FLOAT, (2,), 0, -8, 8, 0), "past the end"),
    "negative dimension": (bundle.make_entry(FLOAT, (4,), 0, 0, 16, 0), "invalid tensor shape"),
    "300 dimensions": (bundle.make_entry(FLOAT, (1,) * 300, 0, 0, 4, 0), "invalid tensor shape"),
    "shard 2^31": (bundle.make_entry(FLOAT, (1,), (1 << 31) - 1, 0, 4, 0), "shard"),
    "2^40 strings in 16 bytes": (bundle.make_entry(STRING, (1 << 40,), 0, 0, 16, 0), "too small"),
    "2^62 strings": (bundle.make_entry(STRING, (1 << 31, 1 << 31), 0, 0, (1 << 62) + 4, 0), "past the end"),
}
HOSTILE_ENTRIES["negative dimension"][0].shape.dim[0].size = -4


@pytest.mark.parametrize("case", sorted(HOSTILE_ENTRIES))
def test_lying_entries_are_refused_before_allocating(tmp_path, case):
    entry, match = HOSTILE_ENTRIES[case]
    refused(hostile_v2(tmp_path, {"x": entry}), match)


def string_shard(lengths_bytes: bytes, payload: bytes = b"") -> tuple[bytes, int]:
    """Data of a 1-element string tensor with the given raw varint bytes (crcs correct for it)."""
    body = lengths_bytes + b"\0\0\0\0" + payload
    return body, mask_crc(crc32c(body))


def test_huge_string_length(tmp_path):
    data, crc = string_shard(encode_varint(1 << 60), b"abc")
    refused(hostile_v2(tmp_path, {"x": bundle.make_entry(STRING, (1,), 0, 0, len(data), crc)}, data),
            "string lengths")


def test_string_length_past_64_bits(tmp_path):
    raw = b"\xff" * 9 + b"\x7f"  # 10 bytes: a 70-bit value, no valid varint64
    data, crc = string_shard(raw)
    refused(hostile_v2(tmp_path, {"x": bundle.make_entry(STRING, (1,), 0, 0, len(data), crc)}, data))


def sliced_entry(dtype: int, shape, tslices) -> bundle.BundleEntryProto:
    full = bundle.make_entry(dtype, tuple(shape), 0, 0, 0, 0)
    for tslice in tslices:
        full.slices.append(tslice.to_proto())
    return full


def test_sliced_entry_claiming_a_huge_tensor(tmp_path):
    whole = slices.TensorSlice([(0, 1 << 40)])
    entries = {"x": sliced_entry(FLOAT, (1 << 40,), [whole]),
               bundle.decode_key(slices.encode_tensor_name_slice("x", whole)):
                   bundle.make_entry(FLOAT, (1 << 40,), 0, 0, 4 << 40, 0)}
    refused(hostile_v2(tmp_path, entries), "past the end")


def test_huge_number_of_slices_listed(tmp_path):
    """5 x 10^4 slices listed, none stored: refused promptly (pairwise checks: an hour).

    Memory here is proportional to the index (Python objects per listed slice, ~1 KB
    each), not to anything the file claims: bounded by 2 KB per slice.
    """
    n = 50_000
    tslices = [slices.TensorSlice([(i, 1)]) for i in range(n)]
    refused(hostile_v2(tmp_path, {"x": sliced_entry(FLOAT, (n,), tslices)}), "missing from the index",
            seconds=20, memory=2048 * n)


def test_huge_number_of_overlapping_slices(tmp_path, monkeypatch):
    """Overlaps among many slices are found without comparing every pair, on both code paths."""
    n = 25_000
    tslices = [slices.TensorSlice([(i, 1), (0, slices.FULL)]) for i in range(n)]
    tslices.append(slices.TensorSlice([(n - 7, 3), (0, slices.FULL)]))
    tslices.append(slices.TensorSlice([(n, 1), (0, slices.FULL)]))
    prefix = hostile_v2(tmp_path, {"x": sliced_entry(FLOAT, (n + 1, 3), tslices)})
    refused(prefix, "overlap", memory=2048 * n)
    monkeypatch.setattr(slices, "_GRID_CELLS", 1)  # force the sweep path
    refused(prefix, "overlap", memory=2048 * n)


def test_many_legit_slices_read_back(tmp_path):
    """20000 slices of one variable: written, read back whole, in a few seconds."""
    value = np.arange(20_000 * 2, dtype=np.int32).reshape(20_000, 2)
    prefix = ckptkit.save(str(tmp_path / "many"), {"v": slices.SlicedTensor.split(value, 20_000)})
    with time_limit(30):
        np.testing.assert_array_equal(ckptkit.load(prefix)["v"], value)


def test_tiling_checks_agree_on_random_slices():
    """The grid and sweep overlap checks give the same verdict as a pairwise check."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        shape = tuple(int(d) for d in rng.integers(1, 6, size=int(rng.integers(1, 4))))
        boxes = []
        for _ in range(int(rng.integers(1, 7))):
            ext = []
            for dim in shape:
                a = int(rng.integers(0, dim))
                ext.append((a, int(rng.integers(1, dim - a + 1))))
            boxes.append(slices.TensorSlice(ext))
        bounds = [b.bounds(shape) for b in boxes]
        pairwise = any(all(a0 < b1 and b0 < a1 for (a0, a1), (b0, b1) in zip(bounds[i], bounds[j], strict=True))
                       for i in range(len(bounds)) for j in range(i))
        grid = slices._find_overlap(bounds, len(shape)) is not None
        old = slices._GRID_CELLS
        slices._GRID_CELLS = 0
        try:
            sweep = slices._find_overlap(bounds, len(shape)) is not None
        finally:
            slices._GRID_CELLS = old
        assert grid == sweep == pairwise, (shape, [b.spec() for b in boxes])


# --------------------------------------------------------------------------- V1: lying metadata

def write_v1(path: str, tensors: list[tuple[str, list[int], int, list, tensor_pb2.TensorProto]]) -> None:
    """A V1 table: metadata for each (name, shape, dtype, slices, data), then the slices' data."""
    meta = saved_tensor_slice_pb2.SavedTensorSlices()
    meta.meta.versions.producer = 1
    records = []
    for name, shape, dtype, tslices, proto in tensors:
        ssm = meta.meta.tensor.add(name=name, type=dtype)
        for d in shape:
            ssm.shape.dim.add(size=d)
        for tslice in tslices:
            ssm.slice.append(tslice.to_proto())
            record = saved_tensor_slice_pb2.SavedTensorSlices()
            record.data.name = name
            record.data.slice.CopyFrom(tslice.to_proto())
            record.data.data.CopyFrom(proto)
            records.append((slices.encode_tensor_name_slice(name, tslice), record.SerializeToString()))
    with open(path, "wb") as f:
        table = TableWriter(f)
        for key, value in [(b"", meta.SerializeToString())] + sorted(records):
            table.add(key, value)
        table.finish()


def test_v1_metadata_claiming_a_huge_shape(tmp_path):
    path = str(tmp_path / "v1.ckpt")
    small = tensor_pb2.TensorProto(dtype=FLOAT, float_val=[1.0, 2.0])
    write_v1(path, [("ok", [2], FLOAT, [slices.TensorSlice.full(1)], small),
                    ("huge", [1 << 62], FLOAT, [slices.TensorSlice.full(1)], small),
                    ("wide", [1 << 31, 1 << 31], FLOAT, [slices.TensorSlice.full(2)], small)])
    with ckptkit.CheckpointReader(path) as reader:
        np.testing.assert_array_equal(reader["ok"], [1.0, 2.0])
        for name in ("huge", "wide"):
            with time_limit(10), bounded_memory(), pytest.raises(DataLossError, match="more than") as info:
                reader.get_tensor(name)
            assert "v1.ckpt" in str(info.value) and name in str(info.value)


def test_v1_metadata_claiming_an_empty_shape_numpy_cannot_hold(tmp_path):
    """[0, 2^62] of float32: zero elements, so no byte count refutes it, but numpy's byte
    count of the non-zero dims overflows (its ValueError escaped from every command)."""
    path = str(tmp_path / "v1.ckpt")
    small = tensor_pb2.TensorProto(dtype=FLOAT, float_val=[1.0, 2.0])
    write_v1(path, [("ok", [2], FLOAT, [slices.TensorSlice.full(1)], small),
                    ("empty", [0, 1 << 62], FLOAT, [slices.TensorSlice.full(2)], tensor_pb2.TensorProto(dtype=FLOAT))])
    with ckptkit.CheckpointReader(path) as reader:
        assert reader.get_variable_to_shape_map()["empty"] == [0, 1 << 62]
        with pytest.raises(UnsupportedError, match=r"too large for a numpy array") as info:
            reader.get_tensor("empty")
        assert "v1.ckpt" in str(info.value) and "'empty'" in str(info.value)
    with pytest.raises(UnsupportedError, match="empty"):
        ckptkit.load(path)
    for args in (["verify", path], ["convert", path, str(tmp_path / "o.npz")], ["stats", path],
                 ["rm", "-c", path, "ok", "-o", str(tmp_path / "out")]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, args
        assert "too large for a numpy array" in result.output and "internal error" not in result.output, args


def test_v1_tensor_proto_lying_about_its_contents(tmp_path):
    path = str(tmp_path / "v1.ckpt")
    raw = tensor_pb2.TensorProto(dtype=FLOAT, tensor_content=b"\0" * 12)  # 3 floats for 4
    few = tensor_pb2.TensorProto(dtype=FLOAT, float_val=[1.0])           # 1 value for 4
    strings = tensor_pb2.TensorProto(dtype=STRING, string_val=[b"a"])     # 1 string for 4
    write_v1(path, [("raw", [4], FLOAT, [slices.TensorSlice.full(1)], raw),
                    ("few", [4], FLOAT, [slices.TensorSlice.full(1)], few),
                    ("strings", [4], STRING, [slices.TensorSlice.full(1)], strings)])
    with ckptkit.CheckpointReader(path) as reader:
        for name in reader:
            with bounded_memory(), pytest.raises(DataLossError, match="slice holds"):
                reader.get_tensor(name)


def test_npz_header_claiming_a_huge_array(tmp_path):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }"
    header = header.ljust(117) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(64)
    path = str(tmp_path / "huge.npz")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", npy)
    with time_limit(10), bounded_memory(), pytest.raises(CheckpointError, match="x"):
        read_npz(path)


# --------------------------------------------------------------------------- state files aimed elsewhere

def make_ckpt(prefix: str, value: float = 1.0) -> str:
    """A complete checkpoint at `prefix` (V2 files + .meta) to use as a decoy or a real one."""
    ckptkit.Saver(max_to_keep=None).save({"v": np.float32(value)}, prefix, write_state=False)
    return prefix


def write_state(directory, model: str, paths: list[str]) -> None:
    """A `checkpoint` state file naming exactly these (possibly hostile) paths."""
    state = ckptkit.tf1.state.CheckpointState(model_checkpoint_path=model, all_model_checkpoint_paths=paths)
    (pathlib.Path(directory) / "checkpoint").write_bytes(text_format.MessageToString(state).encode())


@pytest.fixture
def layout(tmp_path):
    """managed/ (a Saver's directory) beside outside/ holding decoy checkpoints."""
    managed, outside = tmp_path / "managed", tmp_path / "outside"
    managed.mkdir()
    outside.mkdir()
    decoys = {name: make_ckpt(str(outside / name)) for name in ("rel", "abs", "link", "passwd")}
    (outside / "passwd").write_text("root:x:0:0\n")  # a V1-looking name: the file PREFIX itself
    os.symlink(outside, managed / "linked")  # a subdirectory that leads outside
    os.symlink(outside, managed / "evil")  # a prefix that is itself a symlink to a directory outside
    files = {p: p.read_bytes() for p in outside.iterdir()}
    return managed, outside, decoys, files


def assert_untouched(outside, files) -> None:
    assert {p: p.read_bytes() for p in outside.iterdir()} == files


def test_saver_never_prunes_outside_its_directory(layout, caplog):
    managed, outside, decoys, files = layout
    hostile = ["../outside/rel", str(outside / "abs"), "linked/link", "evil",
               "../../" * 30 + str(outside / "passwd")[1:], "../outside/passwd"]
    write_state(managed, hostile[-1], hostile)
    state = ckptkit.get_checkpoint_state(str(managed))
    saver = ckptkit.Saver(max_to_keep=1)
    saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
    assert len(saver.last_checkpoints) == 5  # all but "evil" (a directory) exist, via ../ or symlinks
    with caplog.at_level(logging.WARNING):
        for step in range(8):
            saver.save({"v": np.float32(step)}, str(managed / "model"), global_step=step)
    assert_untouched(outside, files)
    assert "refusing to delete a checkpoint outside" in caplog.text
    assert os.path.islink(managed / "evil") and os.path.islink(managed / "linked")
    assert ckptkit.latest_checkpoint(str(managed)) == str(managed / "model-7")
    # TF's policy pops one checkpoint per save: the 5 hostile ones were refused (and dropped from
    # the list), then model-0..2 were deleted as usual
    assert sorted(n for n in os.listdir(managed) if n.endswith(".index")) == [
        f"model-{step}.index" for step in range(3, 8)]


def test_remove_checkpoint_refuses_or_removes_only_links(layout):
    managed, outside, decoys, files = layout
    for prefix in ("../outside/rel", str(outside / "abs"), str(managed / "linked" / "link")):
        path = prefix if os.path.isabs(prefix) else str(managed / prefix)
        with pytest.raises(CheckpointError, match="outside"):
            remove_checkpoint(path, root=str(managed))
    # V1 naming: the prefix file itself is "the checkpoint"; here it is a symlink to a directory
    assert remove_checkpoint(str(managed / "evil"), ckptkit.tf1.state.V1, root=str(managed)) == [
        str(managed / "evil")]
    assert not os.path.lexists(managed / "evil")
    # a file of a checkpoint in the directory that is a symlink to an outside file: the link goes
    os.symlink(outside / "abs.index", managed / "m.index")
    os.symlink(outside / "abs.data-00000-of-00001", managed / "m.data-00000-of-00001")
    removed = remove_checkpoint(str(managed / "m"), root=str(managed))
    assert sorted(removed) == [str(managed / "m.data-00000-of-00001"), str(managed / "m.index")]
    assert_untouched(outside, files)
    with pytest.raises(CheckpointError, match="NUL"):
        remove_checkpoint(str(managed / "m\0x"), root=str(managed))


def test_reading_follows_a_state_file_outside(layout):
    """Documented: readers follow state paths anywhere (TF does); only deletion is confined."""
    managed, outside, decoys, files = layout
    write_state(managed, "../outside/rel", ["../outside/rel"])
    assert ckptkit.latest_checkpoint(str(managed)) == str(managed / "../outside/rel")
    assert float(ckptkit.load(str(managed))["v"]) == 1.0
    write_state(managed, str(outside / "abs"), [str(outside / "abs")])
    assert float(ckptkit.load(str(managed))["v"]) == 1.0
    assert_untouched(outside, files)


@pytest.mark.parametrize("path", [
    "a\0b", "../x\0/../../etc", "/*/*/*/*/*/*/*/*/*/*", "[!a]*/" * 2000 + "x", "line\nbreak",
    "x" * (10 << 20), "ab/" * (3 << 20), "", b'model_checkpoint_path: "\\377\\376"', b"\xff\xfe junk"])
def test_odd_model_checkpoint_paths(tmp_path, path):
    """NUL bytes, globs, newlines, 10 MB paths, bad UTF-8: a CheckpointError or "no checkpoint", promptly."""
    if isinstance(path, bytes):
        (tmp_path / "checkpoint").write_bytes(path)
    else:
        write_state(tmp_path, path, [path] if path else [])
    with time_limit(10):
        try:
            latest = ckptkit.latest_checkpoint(str(tmp_path))
        except CheckpointError:
            latest = None
        assert latest is None
        with pytest.raises(CheckpointError):
            ckptkit.CheckpointReader(str(tmp_path))
        saver = ckptkit.Saver(max_to_keep=1)
        try:
            state = ckptkit.get_checkpoint_state(str(tmp_path))
        except CheckpointError:
            state = None
        if state is not None:
            saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
            assert saver.last_checkpoints == []
        for step in range(3):  # a Saver still works in this directory, and overwrites the junk
            saver.save({"v": np.float32(step)}, str(tmp_path / "model"), global_step=step)
    assert ckptkit.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model-2")


def test_checkpoint_name_with_a_newline_round_trips(tmp_path):
    saver = ckptkit.Saver(max_to_keep=2)
    for step in range(3):
        saver.save({"v": np.float32(step)}, str(tmp_path / "odd\nname"), global_step=step)
    assert ckptkit.latest_checkpoint(str(tmp_path)) == str(tmp_path / "odd\nname-2")
    assert float(ckptkit.load(str(tmp_path))["v"]) == 2.0
    assert not checkpoint_files(str(tmp_path / "odd\nname-0"))


def test_state_file_that_is_not_a_file(tmp_path):
    fifo = tmp_path / "fifo_dir"
    fifo.mkdir()
    os.mkfifo(fifo / "checkpoint")
    with time_limit(5), pytest.raises(DataLossError, match="not a regular file"):
        ckptkit.latest_checkpoint(str(fifo))
    with time_limit(5), pytest.raises(CheckpointError):
        ckptkit.CheckpointReader(str(fifo))
    folder = tmp_path / "dir_dir"
    (folder / "checkpoint").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="checkpoint state file is a directory"):
        ckptkit.get_checkpoint_state(str(folder))
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "checkpoint", "wb") as f:
        f.truncate(100 << 20)  # sparse: 100 MB on paper
    with bounded_memory(), pytest.raises(DataLossError, match="implausibly large"):
        read_state_file(str(big / "checkpoint"))


def test_fifos_where_checkpoint_files_belong(tmp_path):
    """A FIFO named like a V1 file or V2 index is "not a checkpoint", not a hang."""
    os.mkfifo(tmp_path / "v1-00000-of-00001")
    os.mkfifo(tmp_path / "v2.index")
    for path in ("v1-00000-of-00001", "v1", "v2", "v2.index"):
        with time_limit(5), pytest.raises(NotFoundError):
            ckptkit.CheckpointReader(str(tmp_path / path))


def test_fifo_as_data_shard(tmp_path):
    prefix = ckptkit.save(str(tmp_path / "m"), {"x": np.zeros(3, np.float32)})
    os.remove(prefix + ".data-00000-of-00001")
    os.mkfifo(prefix + ".data-00000-of-00001")
    with time_limit(1), pytest.raises(CheckpointError):
        ckptkit.load(prefix)


def test_fifo_as_meta_graph(tmp_path):
    os.mkfifo(tmp_path / "m.meta")
    with time_limit(1), pytest.raises(CheckpointError):
        ckptkit.read_meta_graph(str(tmp_path / "m.meta"))


# --------------------------------------------------------------------------- no code execution

FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def test_package_source_never_unpickles_or_evaluates():
    """No pickle/marshal import, no eval/exec/compile, no np.load without allow_pickle=False."""
    problems = []
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20
    for source in sources:
        if source.name.endswith("_pb2.py"):
            continue  # generated by protoc: descriptor setup only
        tree = ast.parse(source.read_text(), str(source))
        for node in ast.walk(tree):
            where = f"{source.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                problems += [f"{where} imports {a.name}" for a in node.names
                             if a.name.split(".")[0] in FORBIDDEN_MODULES]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
                problems.append(f"{where} imports from {node.module}")
            elif isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if isinstance(func, ast.Name) and name in FORBIDDEN_CALLS or isinstance(func, ast.Attribute) \
                        and name in FORBIDDEN_CALLS and ast.unparse(func.value) == "builtins":
                    problems.append(f"{where} calls {name}")  # (re.compile is fine: an attribute)
                if name == "load" and isinstance(func, ast.Attribute) and ast.unparse(func.value) in ("np", "numpy"):
                    flags = {k.arg: k.value for k in node.keywords}
                    value = flags.get("allow_pickle")
                    if not (isinstance(value, ast.Constant) and value.value is False):
                        problems.append(f"{where} calls np.load without allow_pickle=False")
                for keyword in node.keywords:
                    if keyword.arg == "allow_pickle" and not (
                            isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                        problems.append(f"{where} passes allow_pickle={ast.unparse(keyword.value)}")
            elif isinstance(node, ast.Attribute) and node.attr in ("loads", "load") and \
                    isinstance(node.value, ast.Name) and node.value.id in FORBIDDEN_MODULES:
                problems.append(f"{where} uses {node.value.id}.{node.attr}")
    assert not problems, "\n".join(problems)


class _Payload:
    """Unpickling this creates the file `marker`: proof that code from the file ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_convert_refuses_object_npz_without_unpickling(tmp_path):
    marker = str(tmp_path / "code-ran")
    npz = str(tmp_path / "evil.npz")
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)
    np.savez(npz, weights=np.ones(3, np.float32), evil=payload)  # savez pickles object arrays
    # sanity: this file really would run code when unpickled
    with np.load(npz, allow_pickle=True) as check:
        check["evil"]
    assert os.path.exists(marker)
    os.remove(marker)

    result = CliRunner().invoke(cli, ["convert", npz, str(tmp_path / "out.ckpt")])
    assert result.exit_code == 1, result.output
    assert "evil" in result.output and "unpickling" in result.output
    assert "Traceback" not in result.output
    assert not os.path.exists(marker)
    assert not any(n.startswith("out.ckpt") for n in os.listdir(tmp_path))
    with pytest.raises(CheckpointError, match="unpickling"):
        read_npz(npz)
    assert not os.path.exists(marker)


# --------------------------------------------------------------------------- text protobufs nested deeply

def _deeply_nested_meta_graph_text(depth: int = 3000) -> str:
    """A text MetaGraphDef whose one attr nests `depth` NameAttrList/AttrValue pairs."""
    inner = 'func { name: "f" ' + 'attr { key: "a" value { func { name: "f" ' * depth + "} } }" * depth + " }"
    return ('meta_info_def { tags: "serve" } graph_def { node { name: "x" op: "NoOp" '
            f'attr {{ key: "a" value {{ {inner} }} }} }} }}')


def test_deeply_nested_text_meta_and_pbtxt_are_data_loss(tmp_path):
    meta = tmp_path / "model.meta"
    meta.write_text(_deeply_nested_meta_graph_text())
    saved_model = tmp_path / "sm"
    saved_model.mkdir()
    (saved_model / "saved_model.pbtxt").write_text(f"meta_graphs {{ {_deeply_nested_meta_graph_text()} }}")
    for path, file in ((meta, meta), (saved_model, saved_model / "saved_model.pbtxt")):
        result = CliRunner().invoke(cli, ["meta", str(path)])
        assert result.exit_code == 1, result.output
        assert result.output == f"ckptkit: error: {file}: cannot parse text protobuf: messages nested too deeply\n"
