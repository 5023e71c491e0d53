"""Shared test helpers: plain functions and constants, no fixtures (those are in conftest.py).

Any test module imports them by name (`from helpers import same`): pyproject puts tests/
on pytest's path, so this works from every tests/ subfolder.

Sections: paths and subprocesses; comparing values; test tensors; checkpoints written by
TF; snappy tables; guards (time, memory); hostile indexes; fault injection (fork, kill, check).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import pathlib
import select
import shutil
import signal
import sys
import time
import traceback
import tracemalloc

import ml_dtypes
import numpy as np

import ckptkit
from ckptkit.formats import bundle
from ckptkit.formats import table as table_mod
from ckptkit.formats.coding import FIXED32, FIXED64, crc32c, encode_varint, mask_crc
from ckptkit.storage import files
from ckptkit.storage.journal import JOURNAL_SUFFIX
from ckptkit.storage.lock import LOCK_FILENAME

# --------------------------------------------------------------------------- paths and subprocesses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout (tests/ is in it)
CKPTKIT = [sys.executable, "-m", "ckptkit"]
# Real checkpoints of released TF builds (shared/testdata beside the checkout, never copied
# into it): the folder CKPTKIT_TESTDATA names, None when unset (conftest then deselects the
# tests marked `testdata`).
TESTDATA_ENV = "CKPTKIT_TESTDATA"
TESTDATA = pathlib.Path(os.environ[TESTDATA_ENV]).resolve() if os.environ.get(TESTDATA_ENV) else None
# The Chromium executable the `browser` tests drive through Playwright (none is downloaded):
# CKPTKIT_BROWSER, e.g. /usr/bin/chromium; None when unset (conftest deselects them).
BROWSER_ENV = "CKPTKIT_BROWSER"
BROWSER = os.environ.get(BROWSER_ENV) or None


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CKPTKIT_DEBUG", None)
    return env


def copy_dir(src: str, dst) -> str:
    shutil.copytree(src, dst)
    return os.fspath(dst)


# --------------------------------------------------------------------------- comparing values

def same(a, b) -> bool:
    """Bitwise equality of two arrays (NaN-safe), or element equality for strings."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "O" or b.dtype.kind == "O":
        return a.shape == b.shape and list(a.reshape(-1)) == list(b.reshape(-1))
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def same_values(got: dict, want: dict) -> bool:
    if set(got) != set(want):
        return False
    for k, w in want.items():
        g = np.asarray(got[k])
        w = np.asarray(w)
        if g.shape != w.shape:
            return False
        if w.dtype == object or g.dtype == object:
            if [bytes(x) for x in g.reshape(-1)] != [bytes(x) for x in w.reshape(-1)]:
                return False
        elif g.dtype != w.dtype or not np.array_equal(g, w):
            return False
    return True


def _keep_strings(value) -> np.ndarray:
    """An array of `value` where byte strings stay whole: numpy's `S` dtype drops trailing
    NUL bytes (`np.asarray(b"\\x00")` holds b""), so bytes and str become object arrays."""
    if isinstance(value, (bytes, str)):
        out = np.empty((), dtype=object)
        out[()] = value
        return out
    if isinstance(value, (list, tuple)):
        items = np.array(value, dtype=object)
        if any(isinstance(v, (bytes, str)) for v in items.reshape(-1)):
            return items
    return np.asarray(value)


def assert_same_tensor(actual: np.ndarray, expected: np.ndarray, key: str = "") -> None:
    """Same shape and the same bytes (strings: the same byte strings)."""
    actual = _keep_strings(actual)
    expected = _keep_strings(expected)
    assert actual.shape == expected.shape, key
    if expected.dtype.kind in "OS":  # TF hands back a string scalar as plain bytes
        assert actual.dtype.kind in "OS", key
        assert [bytes(x) for x in actual.reshape(-1)] == [bytes(x) for x in expected.reshape(-1)], key
    else:
        assert actual.dtype == expected.dtype, (key, actual.dtype, expected.dtype)
        assert actual.tobytes() == expected.tobytes(), key


# --------------------------------------------------------------------------- test tensors

NUMERIC_DTYPES = ["float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64",
                  "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128"]

STRINGS = [b"", "ünïcödé ✓".encode(), bytes(range(256)), b"x" * 70000, b"\x00\xff\x80"]


def random_array(dtype: str, shape, rng: np.random.Generator) -> np.ndarray:
    """Random values covering each dtype's range (incl. negative, inf/nan for floats)."""
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.startswith("complex"):
        real = np.float32 if dtype == "complex64" else np.float64
        return (rng.standard_normal(shape).astype(real) + 1j * rng.standard_normal(shape).astype(real)).astype(dtype)
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    npd = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    values = (rng.standard_normal(shape) * 1000).astype(npd)
    flat = values.reshape(-1)
    if flat.size >= 3:
        flat[:3] = [np.inf, -np.inf, np.nan]
    return values


def variety(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every dtype as a matrix, a scalar and an empty tensor, plus string tensors."""
    out: dict[str, np.ndarray] = {}
    for dtype in NUMERIC_DTYPES:
        out[f"{dtype}/matrix"] = random_array(dtype, (3, 5), rng)
        out[f"{dtype}/scalar"] = random_array(dtype, (), rng)
        out[f"{dtype}/empty"] = random_array(dtype, (0, 4), rng)
    out["string/vector"] = np.array(STRINGS, dtype=object)
    out["string/scalar"] = np.array("ünïcödé".encode(), dtype=object)
    out["string/matrix"] = np.array([[b"a", b""], [b"bc", "✓".encode()]], dtype=object)
    out["string/empty"] = np.zeros((0,), dtype=object)
    out["scope/deep/name with space"] = np.arange(7, dtype=np.int32)
    return out


def seeded_values(seed: int, n: int = 64) -> dict:
    """A small checkpoint's worth of tensors of several dtypes (a function of `seed`)."""
    rng = np.random.default_rng(seed)
    return {"a": rng.standard_normal((n, n)).astype(np.float32),
            "b": np.arange(1000, dtype=np.int64) * (seed + 1),
            "c": np.array([f"s{seed}-{i}".encode() * (i % 5 + 1) for i in range(20)], dtype=object),
            "d": np.float64(seed + 0.5),
            "e": rng.integers(0, 255, size=(3000,), dtype=np.uint8)}


# --------------------------------------------------------------------------- checkpoints written by TF

SEED_EMA = np.float32(0.099999905)  # the seed documents' figure, as TF computes it


def make_seed(tf1, directory: str) -> str:
    """The seed example with TF1: v=0, EMA(0.99), v:=10, apply, Saver().save."""
    import tensorflow as tf  # noqa: PLC0415 - helpers must import without TF; only TF tests call this

    graph = tf.Graph()
    with graph.as_default():
        v = tf1.Variable(0.0, name="v")
        ema = tf1.train.ExponentialMovingAverage(0.99)
        update = ema.apply([v])
        saver = tf1.train.Saver(save_relative_paths=True)  # copies of the dir stay self-contained
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(v.assign(10.0))
            sess.run(update)
            return saver.save(sess, os.path.join(directory, "model.ckpt"))


def dtype_tensors(tf, with_strings: bool = True) -> dict:
    """Tensors of many dtypes, as TF tensors (values chosen to exercise each type)."""
    tensors = {
        "dense/kernel": tf.constant(np.arange(6, dtype=np.float32).reshape(2, 3) / 7),
        "dense/bias": tf.constant([np.nan, np.inf, -1.5], dtype=tf.float64),
        "ints/i32": tf.constant([[1, -2], [3, 2**31 - 1]], dtype=tf.int32),
        "ints/i64": tf.constant([2**40, -5], dtype=tf.int64),
        "ints/u8": tf.constant([0, 255], dtype=tf.uint8),
        "ints/i8": tf.constant(-7, dtype=tf.int8),
        "flags": tf.constant([True, False, True]),
        "half": tf.constant([0.5, -2.0], dtype=tf.float16),
        "bf16": tf.constant([1.5, -3.25, 1e30], dtype=tf.bfloat16),
        "cplx": tf.constant([1 + 2j, -0.5j], dtype=tf.complex64),
        "empty": tf.zeros([0, 4], dtype=tf.float32),
    }
    if with_strings:
        tensors["names"] = tf.constant([b"alpha", b"", "é".encode()])
    return tensors


def make_dtypes(tf, directory: str, with_strings: bool = True) -> str:
    """A checkpoint written by tf.raw_ops.SaveV2 with every tensor of dtype_tensors."""
    tensors = dtype_tensors(tf, with_strings)
    prefix = os.path.join(directory, "dtypes.ckpt")
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tensors[n] for n in names])
    return prefix


def make_partitioned(tf1, directory: str) -> str:
    """A TF1 checkpoint with a partitioned variable (slice entries) and a plain one."""
    import tensorflow as tf  # noqa: PLC0415 - helpers must import without TF; only TF tests call this

    with tf.Graph().as_default():
        tf1.get_variable("part", shape=[4, 2], initializer=tf1.ones_initializer(),
                         partitioner=tf1.fixed_size_partitioner(2))
        tf1.Variable(3.0, name="plain")
        saver = tf1.train.Saver(save_relative_paths=True)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            return saver.save(sess, os.path.join(directory, "part.ckpt"))


def make_v1(tf1, directory: str) -> str:
    """A legacy V1 checkpoint (one SSTable file) written by TF1's Saver."""
    import tensorflow as tf  # noqa: PLC0415 - helpers must import without TF; only TF tests call this

    with tf.Graph().as_default():
        tf1.Variable([[1.0, 2.0], [3.0, 4.0]], name="w")
        tf1.Variable(b"text", name="s")
        saver = tf1.train.Saver(write_version=tf1.train.SaverDef.V1, save_relative_paths=True)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            return saver.save(sess, os.path.join(directory, "old.ckpt"))


def tf_values(tf, prefix: str) -> dict:
    """{key: numpy value} as TF's own reader sees the checkpoint."""
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


PARTITIONERS = {
    "fixed3_axis0": lambda tf1: tf1.fixed_size_partitioner(3),
    "fixed2_axis1": lambda tf1: tf1.fixed_size_partitioner(2, axis=1),
    "minmax": lambda tf1: tf1.min_max_variable_partitioner(max_partitions=4, min_slice_size=256),
    "axis_size": lambda tf1: tf1.variable_axis_size_partitioner(max_shard_bytes=1000),
}
PARTITIONED_SHAPES = {"fixed3_axis0": [7, 4], "fixed2_axis1": [5, 6], "minmax": [40, 30], "axis_size": [50, 20]}


def save_partitioned_tf1(tf, tf1, directory: str, version: str = "V2", extra_dtypes: bool = False):
    """Build TF1 partitioned variables, save with a Saver; return (path, {name: full value})."""
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(7)
        variables = {name: tf1.get_variable(name, shape=PARTITIONED_SHAPES[name], partitioner=make(tf1),
                                            initializer=tf1.random_normal_initializer())
                     for name, make in PARTITIONERS.items()}
        variables["plain"] = tf1.get_variable("plain", shape=[3], initializer=tf1.ones_initializer())
        if extra_dtypes:
            variables["ints"] = tf1.get_variable(
                "ints", shape=[9, 2], dtype=tf.int64, partitioner=tf1.fixed_size_partitioner(4),
                initializer=tf1.random_uniform_initializer(-(1 << 40), 1 << 40, dtype=tf.int64))
            variables["f64"] = tf1.get_variable(
                "f64", shape=[6], dtype=tf.float64, partitioner=tf1.fixed_size_partitioner(3),
                initializer=tf1.random_normal_initializer(dtype=tf.float64))
        write_version = getattr(tf1.train.SaverDef, version)
        saver = tf1.train.Saver(write_version=write_version)
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            path = saver.save(sess, os.path.join(directory, "model.ckpt"))
            values = {name: sess.run(v.as_tensor() if hasattr(v, "as_tensor") else v)
                      for name, v in variables.items()}
    for name in PARTITIONERS:  # every test variable really is partitioned
        assert len(list(variables[name])) > 1, name
    return path, values


# --------------------------------------------------------------------------- snappy tables (as TF 1.x wrote)

def _literal(data: bytes) -> bytes:
    n = len(data) - 1
    if n < 60:
        return bytes([n << 2]) + data
    size = (n.bit_length() + 7) // 8  # 1..4 extra bytes: tags 60..63
    return bytes([(59 + size) << 2]) + n.to_bytes(size, "little") + data


def _copy(offset: int, length: int) -> bytes:
    out = b""
    while length:
        if 4 <= length <= 11 and offset < 2048:
            return out + bytes([((offset >> 8) << 5) | ((length - 4) << 2) | 1, offset & 0xFF])
        n = min(length, 64)
        if length - n and length - n < 4:  # keep what is left a valid copy of >= 4 bytes
            n = length - 4
        if offset < 65536:
            out += bytes([((n - 1) << 2) | 2]) + offset.to_bytes(2, "little")
        else:
            out += bytes([((n - 1) << 2) | 3]) + offset.to_bytes(4, "little")
        length -= n
    return out


def snappy_compress(data: bytes) -> bytes:
    """Raw snappy (no framing): greedy matches of >= 4 bytes found through a hash of the
    last position of each 4-byte string, at any distance (so 4-byte offsets occur)."""
    out = [encode_varint(len(data))]
    last: dict[bytes, int] = {}
    pos = start = 0
    while pos + 4 <= len(data):
        key = data[pos:pos + 4]
        candidate = last.get(key)
        last[key] = pos
        if candidate is None:
            pos += 1
            continue
        length = 4
        while pos + length < len(data) and data[candidate + length] == data[pos + length]:
            length += 1
        if start < pos:
            out.append(_literal(data[start:pos]))
        out.append(_copy(pos - candidate, length))
        pos += length
        start = pos
    if start < len(data):
        out.append(_literal(data[start:]))
    return b"".join(out)


def write_snappy_table(path: str, entries: list[tuple[bytes, bytes]], compress, per_block: int = 2) -> None:
    """A table whose data blocks are snappy-compressed, as old TF 1.x builds wrote them."""
    out = bytearray()

    def put(contents: bytes, ctype: int) -> tuple[int, int]:
        offset = len(out)
        out.extend(contents)
        trailer = bytes([ctype])
        out.extend(trailer + FIXED32.pack(mask_crc(crc32c(trailer, crc32c(contents)))))
        return offset, len(contents)

    index = table_mod._BlockBuilder(1)
    for i in range(0, len(entries), per_block):
        block = table_mod._BlockBuilder(table_mod.RESTART_INTERVAL)
        for key, value in entries[i:i + per_block]:
            block.add(key, value)
        handle = put(compress(block.finish()), table_mod.SNAPPY_COMPRESSION)
        index.add(entries[min(i + per_block, len(entries)) - 1][0], table_mod.encode_handle(*handle))
    meta = put(table_mod._BlockBuilder(16).finish(), 0)
    idx = put(index.finish(), 0)
    footer = (table_mod.encode_handle(*meta) + table_mod.encode_handle(*idx)).ljust(40, b"\0")
    out.extend(footer + FIXED64.pack(table_mod.MAGIC))
    with open(path, "wb") as f:
        f.write(bytes(out))


# --------------------------------------------------------------------------- guards: time and memory

MEMORY_LIMIT = 16 << 20  # peak bytes a rejected hostile read may allocate


class Hang(Exception):
    """Raised by time_limit when a guarded block runs too long."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail a block that runs longer than `seconds` (SIGALRM; interrupts blocking opens too)."""
    def on_alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def bounded_memory(limit: int = MEMORY_LIMIT):
    """Assert that the block's peak traced allocation stays under `limit` bytes."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < limit, f"peak allocation {peak} bytes"


# --------------------------------------------------------------------------- hostile indexes

def hostile_v2(tmp_path, entries: dict, data: bytes = b"\0" * 16, num_shards: int = 1) -> str:
    """A bundle whose index holds `entries` {key: BundleEntryProto} over a small data shard."""
    prefix = str(tmp_path / "hostile")
    for shard in range(num_shards):
        with open(bundle.data_filename(prefix, shard, num_shards), "wb") as f:
            f.write(data)
    items = sorted((bundle.encode_key(k), e.SerializeToString()) for k, e in entries.items())
    bundle.write_index(prefix, bundle.make_header(num_shards), items).commit()
    return prefix


# --------------------------------------------------------------------------- fault injection

# `run_forked(op, kill_at=N, when="before"|"after")` runs `op()` in a forked child whose
# os.replace/rename/unlink/fsync/link are wrapped: the child SIGKILLs itself right before
# or right after the Nth such call (counted over all of them, in the order the writer
# makes them). Run with kill_at=None first to learn how many calls the operation makes
# (and their trace, for failure messages). Forking is fast (ckptkit and numpy are
# already imported), so every step of every writing command can be killed in CI time.

WATCHED = ("replace", "rename", "unlink", "fsync", "link")
CHILD_TIMEOUT = 30.0


def _describe(args) -> str:
    out = []
    for a in args:
        if isinstance(a, (str, bytes, os.PathLike)):
            out.append(os.path.basename(os.fsdecode(a)))
        else:
            out.append("fd")
    return ",".join(out)


def _child(op, kill_at: int | None, when: str, wfd: int) -> None:
    """Runs in the forked child; never returns."""
    code = 0
    try:
        bundle._POOL = None  # the parent's reader threads do not exist in the child
        state = {"count": 0, "trace": []}

        def wrap(name, real):
            def wrapper(*args, **kwargs):
                state["count"] += 1
                n = state["count"]
                if kill_at is None:
                    state["trace"].append(f"{name}({_describe(args)})")
                if n == kill_at and when == "before":
                    os.kill(os.getpid(), signal.SIGKILL)
                try:
                    return real(*args, **kwargs)
                finally:
                    if n == kill_at and when == "after":
                        os.kill(os.getpid(), signal.SIGKILL)
            return wrapper

        for name in WATCHED:
            setattr(os, name, wrap(name, getattr(os, name)))
        op()
        result = {"count": state["count"], "trace": state["trace"]}
    except BaseException:  # noqa: BLE001 - reported to the parent
        result = {"error": traceback.format_exc()}
        code = 1
    try:
        os.write(wfd, json.dumps(result).encode())
    finally:
        os._exit(code)


def run_forked(op, kill_at: int | None = None, when: str = "before",
               kill_after_seconds: float | None = None) -> dict:
    """Fork, run `op()` in the child, wait. Returns {"killed": bool, "count", "trace"} or
    raises AssertionError with the child's traceback if `op` raised."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        _child(op, kill_at, when, wfd)
    os.close(wfd)
    chunks = []
    deadline = time.monotonic() + CHILD_TIMEOUT
    kill_time = None if kill_after_seconds is None else time.monotonic() + kill_after_seconds
    try:
        while True:
            now = time.monotonic()
            if now > deadline:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"child hung for {CHILD_TIMEOUT} s (kill_at={kill_at} {when})")
            wait = deadline - now if kill_time is None else max(0.0, kill_time - now)
            ready, _, _ = select.select([rfd], [], [], min(wait, 1.0))
            if kill_time is not None and time.monotonic() >= kill_time and not ready:
                os.kill(pid, signal.SIGKILL)
                kill_time = None
                continue
            if ready:
                data = os.read(rfd, 1 << 20)
                if not data:
                    break
                chunks.append(data)
    finally:
        os.close(rfd)
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL, status
        return {"killed": True, "count": None, "trace": []}
    result = json.loads(b"".join(chunks).decode() or "{}")
    if "error" in result:
        raise AssertionError("operation failed in the child:\n" + result["error"])
    result["killed"] = False
    return result


def leftovers(directory: str) -> list[str]:
    """Temp files, journals and the lock file: what must not survive the next operation."""
    return sorted(n for n in os.listdir(directory)
                  if files.is_temp_name(n) or n.endswith(JOURNAL_SUFFIX) or n == LOCK_FILENAME)


def temps_and_journals(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if files.is_temp_name(n) or n.endswith(JOURNAL_SUFFIX))


def read_all(prefix: str) -> dict:
    """ckptkit.load, cross-checked with CheckpointReader (both must agree)."""
    got = ckptkit.load(prefix)
    with ckptkit.CheckpointReader(prefix) as reader:
        again = {k: reader.get_tensor(k) for k in reader}
    assert same_values(again, got), f"load and CheckpointReader disagree on {prefix}"
    return got


def label_of(prefix: str, choices: dict, allow_missing: bool = False) -> str:
    """Which of `choices` ({label: values}) the checkpoint at `prefix` holds, whole."""
    try:
        got = read_all(prefix)
    except ckptkit.NotFoundError:
        if allow_missing:
            return "none"
        raise
    for label, want in choices.items():
        if same_values(got, want):
            return label
    raise AssertionError(f"{prefix} holds neither of {sorted(choices)}: keys {sorted(got)}")


def alternate_cpus():
    """A TF1 device function putting variables (and the partitions of one) on /cpu:0 and
    /cpu:1 in turn: a sharded Saver then writes two shards (run with two CPU devices)."""
    counter = itertools.count()

    def device(op):
        if op.type in ("VariableV2", "VarHandleOp"):
            return f"/cpu:{next(counter) % 2}"
        return op.device

    return device
