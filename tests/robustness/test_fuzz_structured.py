"""Structure-aware fuzzing of real TF-written checkpoints: lying fields, valid checksums.

tests/test_fuzz.py damages bytes, which the table and data crcs mostly catch. Here the
index is parsed, one BundleEntryProto / BundleHeaderProto field (V2) or one
SavedTensorSlices field (V1) is set to a boundary value (-1, 0, 1, 2^31, 2^63-1, shard
counts, ...), or several fields at once, or random bytes of one proto, and the table is
written again with VALID checksums. Then everything is read (listing, get_tensor of
every key, load, verify) under a wall-clock guard and a tracemalloc peak bound (the
checkpoint's size plus a constant). The outcome must be the original value, the same
bytes reinterpreted as the lying index says (a permuted shape, a same-size dtype, a
byte-swapped header: TF returns those too), or a CheckpointError: never another
exception, never a hang, never an unbounded allocation. A few hundred cases are also
read by TF (in a subprocess: TF aborts the process on some invalid shapes); wherever
both return a value, the values must be equal.

Seeds are fixed: a failure names its case number and mutation, and reproduces.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from helpers import same, subprocess_env, time_limit

import ckptkit
from ckptkit.errors import CheckpointError
from ckptkit.formats import bundle
from ckptkit.formats.table import TableReader, TableWriter
from ckptkit.ops import edit, info
from ckptkit.proto import saved_tensor_slice_pb2, tensor_bundle_pb2

SEED = 4321
CASE_SECONDS = 5
MEMORY_SLACK = 8 << 20  # peak traced bytes a case may use beyond the checkpoint's size
TF_CASES = int(os.environ.get('FUZZ_TF_CASES', 300))         # mutated V2 checkpoints TF reads too
RANDOM_V2_CASES = 1500
RANDOM_V1_CASES = 1500
EDIT_CASES = 300

INTS = [-1, 0, 1, 2, 3, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 62, 2 ** 63 - 1, -(2 ** 63)]
SHARDS = [-1, 0, 1, 2, 3, 30000, 10 ** 9, 2 ** 31 - 1]
DTYPES = [0, 1, 2, 3, 4, 6, 7, 9, 10, 14, 17, 19, 20, 21, 23, 25, 30, 31, 101, 107, 2 ** 31 - 1, -1]
INT32_FIELDS = {"shard_id", "dtype", "num_shards", "endianness", "producer", "min_consumer"}
UINT32_FIELDS = {"crc32c"}


# --------------------------------------------------------------------------- outcomes

def reinterpretations(value: np.ndarray) -> list[bytes]:
    """The byte strings a lying-but-consistent index may make of `value`: as stored, and
    byte-swapped (a header that claims the other byte order)."""
    if value.dtype.kind == "O":
        return []
    raw = np.ascontiguousarray(value)
    out = [raw.tobytes()]
    for size in (2, 4, 8):
        if raw.nbytes % size == 0:
            out.append(raw.view(np.uint8).reshape(-1, size)[:, ::-1].tobytes())
    return out


def acceptable(got: np.ndarray, expected: np.ndarray) -> bool:
    if same(got, expected):
        return True
    got = np.asarray(got)
    if got.dtype.kind == "O" or expected.dtype.kind == "O":  # the same strings, reshaped
        return got.dtype == expected.dtype and list(got.reshape(-1)) == list(expected.reshape(-1))
    return np.ascontiguousarray(got).tobytes() in reinterpretations(expected)


class Outcomes:
    def __init__(self) -> None:
        self.counts = {"values": 0, "errors": 0}
        self.errors: dict[str, int] = {}

    def add(self, error: CheckpointError | None) -> None:
        if error is None:
            self.counts["values"] += 1
        else:
            self.counts["errors"] += 1
            name = type(error).__name__
            self.errors[name] = self.errors.get(name, 0) + 1

    def __str__(self) -> str:
        return f"{self.counts} {self.errors}"


def read_everything(prefix: str, expected: dict[str, np.ndarray]) -> dict[str, object]:
    """{key: array or CheckpointError} for every listed key; plus load and verify, which
    must agree. Any other exception propagates (the test fails on it)."""
    results: dict[str, object] = {}
    with ckptkit.CheckpointReader(prefix) as reader:
        shapes = reader.get_variable_to_shape_map()
        reader.get_variable_to_dtype_map()
        reader.debug_string()
        for key in reader:
            try:
                value = reader.get_tensor(key)
            except CheckpointError as exc:
                results[key] = exc
                continue
            assert list(value.shape) == shapes[key], key
            results[key] = value
    report = info.verify_checkpoint(prefix)
    assert {k for k, _ in report.errors} == {k for k, v in results.items() if isinstance(v, CheckpointError)}
    try:
        loaded = ckptkit.load(prefix)
    except CheckpointError:
        assert report.errors
    else:
        assert not report.errors and set(loaded) == set(results)
    return results


def run_case(prefix: str, expected: dict, budget: int, what: str, outcomes: Outcomes) -> dict | None:
    """Read `prefix` under the guards; check the outcome; return the values (or None)."""
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        with time_limit(CASE_SECONDS):
            results = read_everything(prefix, expected)
    except CheckpointError as exc:
        outcomes.add(exc)
        return None
    except Exception as exc:  # that is the point of the test
        raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from exc
    peak = tracemalloc.get_traced_memory()[1] - base
    assert peak < budget, f"{what}: peak allocation {peak} bytes (budget {budget})"
    for key, value in results.items():
        if isinstance(value, CheckpointError):
            outcomes.add(value)
            continue
        outcomes.add(None)
        if key in expected:
            assert acceptable(value, expected[key]), f"{what}: {key!r} differs from the original"
    return results


@pytest.fixture
def traced():
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------- V2 mutations

def v2_index(prefix: str) -> list[tuple[bytes, bytes]]:
    return [(bytes(k), bytes(v)) for k, v in TableReader.open(prefix + ".index")]


def write_table(path: str, items: list[tuple[bytes, bytes]]) -> None:
    with open(path, "wb") as f:
        table = TableWriter(f)
        for key, value in items:
            table.add(key, value)
        table.finish()


def entry_mutations(entry: tensor_bundle_pb2.BundleEntryProto, shard_len: int):
    """(description, mutate(proto)) for each field of an entry, one boundary value each."""
    for value in DTYPES:
        yield f"dtype={value}", lambda e, v=value: setattr(e, "dtype", v)
    for value in SHARDS:
        yield f"shard_id={value}", lambda e, v=value: setattr(e, "shard_id", v)
    offsets = INTS + [entry.offset - 1, entry.offset + 1, shard_len, shard_len - entry.size + 1]
    for value in offsets:
        yield f"offset={value}", lambda e, v=value: setattr(e, "offset", v)
    for value in INTS + [entry.size - 1, entry.size + 1, entry.size * 2]:
        yield f"size={value}", lambda e, v=value: setattr(e, "size", v)
    for value in (0, 1, 2 ** 32 - 1, entry.crc32c ^ 1):
        yield f"crc32c={value}", lambda e, v=value: setattr(e, "crc32c", v)
    dims = [d.size for d in entry.shape.dim]
    for i in range(len(dims)):
        for value in INTS + [dims[i] - 1, dims[i] + 1]:
            yield f"dim[{i}]={value}", lambda e, i=i, v=value: setattr(e.shape.dim[i], "size", v)
    if len(dims) == 2:
        yield "dims swapped", lambda e: (setattr(e.shape.dim[0], "size", dims[1]),
                                         setattr(e.shape.dim[1], "size", dims[0]))
    yield "dim appended 1", lambda e: e.shape.dim.add(size=1)
    yield "dim appended 0", lambda e: e.shape.dim.add(size=0)
    yield "rank 65", lambda e: [e.shape.dim.add(size=1) for _ in range(65 - len(dims))]
    yield "rank 255", lambda e: [e.shape.dim.add(size=1) for _ in range(255 - len(dims))]
    yield "shape [0, 2^62]", lambda e: (e.shape.ClearField("dim"), e.shape.dim.add(size=0),
                                        e.shape.dim.add(size=2 ** 62))
    yield "unknown_rank", lambda e: setattr(e.shape, "unknown_rank", True)
    yield "shape cleared", lambda e: e.ClearField("shape")
    if dims:
        yield "last dim removed", lambda e: e.shape.dim.pop()
    if entry.slices:
        yield "slices cleared", lambda e: e.ClearField("slices")
        yield "first slice dropped", lambda e: e.slices.pop(0)
        yield "slice duplicated", lambda e: e.slices.append(e.slices[0])
        for i in range(len(entry.slices[0].extent)):
            for value in INTS:
                yield f"slice0.extent[{i}].start={value}", lambda e, i=i, v=value: setattr(
                    e.slices[0].extent[i], "start", v)
                yield f"slice0.extent[{i}].length={value}", lambda e, i=i, v=value: setattr(
                    e.slices[0].extent[i], "length", v)
        yield "slice0 extent added", lambda e: e.slices[0].extent.add()
    else:
        yield "slice added", lambda e: e.slices.add().extent.add(start=0, length=1)


def header_mutations():
    for value in SHARDS:
        yield f"num_shards={value}", lambda h, v=value: setattr(h, "num_shards", v)
    for value in (0, 1, 2, -1):
        yield f"endianness={value}", lambda h, v=value: setattr(h, "endianness", v)
    for value in (-1, 0, 1, 2, 2 ** 31 - 1):
        yield f"producer={value}", lambda h, v=value: setattr(h.version, "producer", v)
        yield f"min_consumer={value}", lambda h, v=value: setattr(h.version, "min_consumer", v)
    for value in (0, 1, 2):
        yield f"bad_consumers+={value}", lambda h, v=value: h.version.bad_consumers.append(v)


def random_value(rng, field: str) -> int:
    pool = SHARDS if field in ("shard_id", "num_shards") else DTYPES if field == "dtype" else INTS
    value = int(rng.choice(pool)) if rng.random() < 0.7 else int(rng.integers(-(2 ** 40), 2 ** 40))
    if field in UINT32_FIELDS:
        return value % (1 << 32)
    if field in INT32_FIELDS:
        return (value + (1 << 31)) % (1 << 32) - (1 << 31)
    return value


def mutate_bytes(raw: bytes, rng) -> bytes:
    out = bytearray(raw)
    kind = int(rng.integers(0, 4))
    if kind == 0 and out:
        for _ in range(int(rng.integers(1, 4))):
            bit = int(rng.integers(0, 8 * len(out)))
            out[bit // 8] ^= 1 << (bit % 8)
    elif kind == 1 and out:
        pos = int(rng.integers(0, len(out)))
        del out[pos:pos + int(rng.integers(1, 4))]
    elif kind == 2:
        pos = int(rng.integers(0, len(out) + 1))
        out[pos:pos] = rng.bytes(int(rng.integers(1, 6)))
    else:
        out += rng.bytes(int(rng.integers(1, 12)))  # appended fields: merged by protobuf
    return bytes(out)


def random_v2_mutation(items, rng):
    """(description, new items): several fields of one or two entries, or random bytes."""
    items = list(items)
    desc = []
    for _ in range(int(rng.integers(1, 3))):
        i = int(rng.integers(0, len(items)))
        key, raw = items[i]
        proto = tensor_bundle_pb2.BundleHeaderProto() if key == b"" else tensor_bundle_pb2.BundleEntryProto()
        try:
            proto.ParseFromString(raw)
            parsed = True
        except Exception:  # noqa: BLE001 - random bytes from an earlier round
            parsed = False
        if not parsed or rng.random() < 0.25:
            items[i] = (key, mutate_bytes(raw, rng))
            desc.append(f"{key!r}: random bytes")
            continue
        if key == b"":
            fields = ["num_shards", "endianness", "producer"]
        else:
            fields = ["dtype", "shard_id", "offset", "size", "crc32c", "dim"]
        for field in rng.choice(fields, size=int(rng.integers(1, 4)), replace=False):
            value = random_value(rng, field)
            if field == "producer":
                proto.version.producer = value
            elif field == "dim":
                if proto.shape.dim:
                    proto.shape.dim[int(rng.integers(0, len(proto.shape.dim)))].size = value
                else:
                    proto.shape.dim.add(size=value)
            else:
                setattr(proto, field, value)
            desc.append(f"{key!r}.{field}={value}")
        items[i] = (key, proto.SerializeToString())
    return "; ".join(desc), items


def v2_cases(items, shard_lens: dict[int, int], rng, n_random: int):
    """Every one-field mutation of every entry and of the header, then `n_random` random ones."""
    for i, (key, raw) in enumerate(items):
        if key == b"":
            proto = tensor_bundle_pb2.BundleHeaderProto()
            proto.ParseFromString(raw)
            mutations = header_mutations()
        else:
            proto = tensor_bundle_pb2.BundleEntryProto()
            proto.ParseFromString(raw)
            mutations = entry_mutations(proto, shard_lens.get(proto.shard_id, 0))
        for desc, mutate in mutations:
            changed = type(proto)()
            changed.CopyFrom(proto)
            try:
                mutate(changed)
                new = changed.SerializeToString()
            except (ValueError, TypeError):  # a value the proto field cannot hold
                continue
            yield f"{key!r}: {desc}", items[:i] + [(key, new)] + items[i + 1:]
    for _ in range(n_random):
        yield random_v2_mutation(items, rng)


@pytest.fixture(scope="module")
def v2_work(tf_v2, tmp_path_factory):
    """A copy of the TF checkpoint's data shards, and everything a case needs."""
    _, prefix, expected = tf_v2
    work = str(tmp_path_factory.mktemp("structured_v2"))
    target = os.path.join(work, os.path.basename(prefix))
    lens = {}
    for shard in range(2):
        src = bundle.data_filename(prefix, shard, 2)
        shutil.copy(src, bundle.data_filename(target, shard, 2))
        lens[shard] = os.path.getsize(src)
    budget = sum(lens.values()) + os.path.getsize(prefix + ".index") + MEMORY_SLACK
    return target, v2_index(prefix), lens, expected, budget


def test_v2_fields_one_by_one_and_at_random(v2_work, traced, capsys):
    target, items, lens, expected, budget = v2_work
    rng = np.random.default_rng(SEED)
    outcomes = Outcomes()
    cases = 0
    for n, (desc, mutated) in enumerate(v2_cases(items, lens, rng, RANDOM_V2_CASES)):
        write_table(target + ".index", mutated)
        run_case(target, expected, budget, f"V2 case {n} ({desc})", outcomes)
        cases += 1
    write_table(target + ".index", items)
    assert cases > 2000
    with capsys.disabled():
        print(f"\nstructured V2: {cases} mutated indexes: {outcomes}")


# --------------------------------------------------------------------------- against TF

_TF_WORKER = r"""
import os, pickle, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
out_path = sys.argv[1]
for line in sys.stdin:
    n, prefix = line.rstrip("\n").split("\t")
    result = {}
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in reader.get_variable_to_shape_map():
            try:
                result[key] = np.asarray(reader.get_tensor(key))
            except Exception as exc:
                result[key] = "error: " + type(exc).__name__
    except Exception as exc:
        result = "error: " + type(exc).__name__
    with open(out_path, "ab") as f:
        pickle.dump((int(n), result), f)
"""


def tf_read_cases(prefixes: list[str], directory: str) -> dict[int, object]:
    """TF's reading of each prefix, in a subprocess restarted after a case that kills it
    (TF aborts the process on some invalid shapes: a CHECK, not a Status)."""
    out_path = os.path.join(directory, "tf_results.pkl")
    results: dict[int, object] = {}
    start = 0
    while start < len(prefixes):
        feed = "".join(f"{n}\t{p}\n" for n, p in enumerate(prefixes) if n >= start)
        proc = subprocess.run([sys.executable, "-c", _TF_WORKER, out_path], input=feed, text=True,
                              env=subprocess_env(), capture_output=True, timeout=600)
        if os.environ.get("FUZZ_DEBUG"):
            print("TF worker exit", proc.returncode, proc.stderr[-600:])
        if os.path.exists(out_path):
            with open(out_path, "rb") as f:
                while True:
                    try:
                        n, result = pickle.load(f)
                    except EOFError:
                        break
                    results[n] = result
            os.unlink(out_path)
        done = max([n for n in results if n >= start], default=start - 1)
        if done + 1 < len(prefixes):
            results[done + 1] = "crashed"
        start = done + 2
    return results


def tf_can_list(prefix: str) -> bool:
    """Whether ckptkit reads every tensor of `prefix`: only those cases go to TF (we
    compare values both return; and TF aborts the whole process, a CHECK failure in
    CheckpointReader::GetTensor, on many indexes it cannot read, each costing a restart)."""
    try:
        with ckptkit.CheckpointReader(prefix) as reader:
            reader.get_variable_to_dtype_map()
            for key in reader:
                reader.get_tensor(key)
            if any(reader._index.entry(k).dtype > 100 for k in reader._index.keys()):
                return False  # ref dtypes (DT_FLOAT_REF): ckptkit reads the base type, TF aborts
    except CheckpointError:
        return False
    return True


def test_v2_mutations_read_like_tf(v2_work, traced, tmp_path, capsys):
    """Where TF and ckptkit both return a value for a mutated checkpoint, they are equal."""
    target, items, lens, expected, budget = v2_work
    rng = np.random.default_rng(SEED + 7)
    cases = list(v2_cases(items, lens, rng, TF_CASES))
    order = rng.permutation(len(cases)).tolist()
    picked, prefixes = [], []
    for n in order:
        if len(picked) == TF_CASES:
            break
        case_dir = tmp_path / f"c{n}"
        case_dir.mkdir()
        prefix = str(case_dir / os.path.basename(target))
        for shard in range(2):
            os.link(bundle.data_filename(target, shard, 2), bundle.data_filename(prefix, shard, 2))
        write_table(prefix + ".index", cases[n][1])
        if not tf_can_list(prefix):
            continue
        picked.append(n)
        prefixes.append(prefix)
    tf_results = tf_read_cases(prefixes, str(tmp_path))
    compared = both_values = crashed = 0
    outcomes = Outcomes()
    for i, (n, prefix) in enumerate(zip(picked, prefixes, strict=True)):
        desc = cases[n][0]
        ours = run_case(prefix, expected, budget, f"TF case {n} ({desc})", outcomes)
        theirs = tf_results.get(i)
        if theirs == "crashed":
            crashed += 1
            if os.environ.get("FUZZ_DEBUG"):
                print("TF crashed on", n, desc)
        if not isinstance(theirs, dict) or ours is None:
            continue
        for key, value in ours.items():
            other = theirs.get(key)
            if isinstance(value, np.ndarray) and isinstance(other, np.ndarray):
                both_values += 1
                if value.dtype.kind == "O":
                    assert list(value.reshape(-1)) == list(other.reshape(-1)), f"case {n} ({desc}): {key!r}"
                else:
                    assert value.shape == other.shape and np.ascontiguousarray(value).tobytes() == \
                        np.ascontiguousarray(other.astype(value.dtype)).tobytes(), \
                        f"case {n} ({desc}): {key!r} differs from TF's"
        compared += 1
    assert compared > TF_CASES // 3
    with capsys.disabled():
        print(f"\nstructured V2 vs TF: {len(prefixes)} cases, {compared} read by both, "
              f"{both_values} values compared equal, TF crashed on {crashed}")


# --------------------------------------------------------------------------- V1 mutations

def v1_mutations(msg: saved_tensor_slice_pb2.SavedTensorSlices, rng):
    """Random mutations of one SavedTensorSlices record (meta or data)."""
    if msg.HasField("meta"):
        tensors = msg.meta.tensor
        t = tensors[int(rng.integers(0, len(tensors)))]
        choice = int(rng.integers(0, 7))
        if choice == 0:
            t.type = int(rng.choice(DTYPES))
        elif choice == 1 and t.shape.dim:
            t.shape.dim[int(rng.integers(0, len(t.shape.dim)))].size = int(rng.choice(INTS))
        elif choice == 2:
            t.shape.dim.add(size=int(rng.choice([0, 1, 2, 2 ** 62])))
        elif choice == 3 and t.slice:
            s = t.slice[0]
            if s.extent:
                e = s.extent[int(rng.integers(0, len(s.extent)))]
                setattr(e, "start" if rng.random() < 0.5 else "length", int(rng.choice(INTS)))
            else:
                s.extent.add(start=int(rng.choice(INTS)), length=int(rng.choice(INTS)))
        elif choice == 4:
            t.name = t.name + "x" if rng.random() < 0.5 else ""
        elif choice == 5:
            msg.meta.versions.producer = int(rng.choice([-1, 0, 1, 2 ** 31 - 1]))
            msg.meta.versions.min_consumer = int(rng.choice([0, 1, 2]))
        else:
            tensors.add(name=t.name, type=t.type).CopyFrom(t)
        return "meta"
    data = msg.data.data
    choice = int(rng.integers(0, 6))
    fields = [f for f in ("float_val", "double_val", "int_val", "int64_val", "string_val", "bool_val")
              if len(getattr(data, f))]
    if choice == 0:
        data.dtype = int(rng.choice(DTYPES))
    elif choice == 1 and fields:
        del getattr(data, fields[0])[-1]
    elif choice == 2 and fields and fields[0] != "string_val":
        getattr(data, fields[0]).append(getattr(data, fields[0])[0])
    elif choice == 3:
        data.tensor_content = rng.bytes(int(rng.integers(0, 64)))
    elif choice == 4:
        msg.data.name += "y"
    else:
        data.float_val.extend([1.0, 2.0])
    return "data"


@pytest.fixture(scope="module")
def small_v1(tf, tf1, tmp_path_factory):
    """A TF1 Saver's legacy V1 file, small (test_fuzz's has 360 KB of floats to parse per
    read): floats, ints, a string, a partitioned variable."""
    directory = str(tmp_path_factory.mktemp("structured_v1"))
    rng = np.random.default_rng(SEED + 3)
    with tf.Graph().as_default():
        tf1.Variable(rng.standard_normal((5, 3)).astype(np.float32), name="w")
        tf1.Variable(rng.standard_normal(4), name="d")  # float64
        tf1.Variable(np.arange(12, dtype=np.int64).reshape(3, 4), name="ids")
        tf1.Variable(np.array([7, -8], dtype=np.int32), name="i32")
        tf1.Variable(b"text", name="s")
        part = tf1.get_variable("part", shape=[6, 2], initializer=tf1.random_normal_initializer(seed=SEED),
                                partitioner=tf1.fixed_size_partitioner(2))
        saver = tf1.train.Saver(write_version=tf1.train.SaverDef.V1)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            path = saver.save(sess, os.path.join(directory, "small.ckpt"))
            whole_part = sess.run(part.as_tensor())
    reader = tf.train.load_checkpoint(path)
    expected = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k != "part"}
    expected["part"] = whole_part  # TF 2.x cannot read a sliced V1 tensor back whole
    return path, expected


def test_v1_records_mutated(small_v1, traced, tmp_path, capsys):
    path, expected = small_v1
    items = [(bytes(k), bytes(v)) for k, v in TableReader.open(path)]
    target = str(tmp_path / os.path.basename(path))
    budget = 3 * os.path.getsize(path) + MEMORY_SLACK  # V1 values are parsed from protos
    rng = np.random.default_rng(SEED + 1)
    outcomes = Outcomes()
    for n in range(RANDOM_V1_CASES):
        i = int(rng.integers(0, len(items)))
        key, raw = items[i]
        if rng.random() < 0.2:
            desc, new = "random bytes", mutate_bytes(raw, rng)
        else:
            msg = saved_tensor_slice_pb2.SavedTensorSlices()
            msg.ParseFromString(raw)
            desc = v1_mutations(msg, rng)
            new = msg.SerializeToString()
        write_table(target, items[:i] + [(key, new)] + items[i + 1:])
        # V1 records carry no checksum of their own (the table blocks' crcs are valid
        # again): a changed value is as TF would read it. Tensors whose records were
        # not touched must still read as before.
        if key == b"":
            untouched = {}
        else:
            record = saved_tensor_slice_pb2.SavedTensorSlices()
            record.ParseFromString(raw)
            untouched = {k: v for k, v in expected.items() if k != record.data.name}
        run_case(target, untouched, budget, f"V1 case {n} ({key!r}: {desc})", outcomes)
    with capsys.disabled():
        print(f"\nstructured V1: {RANDOM_V1_CASES} mutated records: {outcomes}")


# --------------------------------------------------------------------------- edits on mutated indexes

def test_edits_on_mutated_indexes(v2_work, tmp_path):
    """compact and rename_keys -o on a lying index: a result that reads like the source
    (or fails like it), or a CheckpointError; never another exception or a hang."""
    target, items, lens, expected, budget = v2_work
    rng = np.random.default_rng(SEED + 2)
    cases = list(v2_cases(items, lens, rng, EDIT_CASES // 2))
    picked = sorted(rng.choice(len(cases), size=min(EDIT_CASES, len(cases)), replace=False).tolist())
    failures = []
    for n in picked:
        desc, mutated = cases[n]
        case_dir = tmp_path / f"e{n}"
        case_dir.mkdir()
        prefix = str(case_dir / "src")
        for shard in range(2):
            shutil.copy(bundle.data_filename(target, shard, 2), bundle.data_filename(prefix, shard, 2))
        write_table(prefix + ".index", mutated)
        for name, run in (("compact", lambda p=prefix, d=case_dir: edit.compact(p, output=str(d / "compact"))),
                          ("rename", lambda p=prefix, d=case_dir: edit.rename_keys(
                              p, {k: k + "_r" for k in ckptkit.CheckpointReader(p)
                                  if not ckptkit.CheckpointReader(p).slices(k)},
                              output=str(d / "renamed")))):
            try:
                with time_limit(CASE_SECONDS):
                    run()
            except CheckpointError:
                continue
            except Exception as exc:  # noqa: BLE001 - collected, reported together
                failures.append(f"{name} case {n} ({desc}): {type(exc).__name__}: {exc}")
                continue
            out = str(case_dir / ("compact" if name == "compact" else "renamed"))
            try:
                with time_limit(CASE_SECONDS):
                    got = ckptkit.load(out)
            except CheckpointError:
                continue
            except Exception as exc:  # noqa: BLE001 - any other exception is the failure being counted
                failures.append(f"{name} case {n} ({desc}) output: {type(exc).__name__}: {exc}")
                continue
            for key, value in got.items():
                original = expected.get(key[:-2] if name == "rename" and key.endswith("_r") else key)
                if original is not None and not acceptable(value, original):
                    failures.append(f"{name} case {n} ({desc}): {key!r} differs")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:30])


def test_case_counts_are_stable(v2_work):
    """The one-by-one mutations are a fixed list: a change to them shows here."""
    _, items, lens, _, _ = v2_work
    n = sum(1 for _ in v2_cases(items, lens, np.random.default_rng(0), 0))
    assert n > 500, n
    print(json.dumps({"one_field_v2_cases": n}))
