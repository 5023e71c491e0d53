"""Framework tensors (`framework="torch"|"jax"`) against the values TensorFlow wrote.

Each checkpoint here is written by TF (tf.raw_ops.SaveV2, a TF1 Saver); the torch
tensors and jax arrays ckptkit hands back must hold TF's exact bytes, in the framework's
dtype of the same name.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import ml_dtypes
import numpy as np
import pytest
import torch  # a test dependency (the test extra): imported plainly, so a missing one fails, never skips
from click.testing import CliRunner
from helpers import REPO, hostile_v2, random_array, same, save_partitioned_tf1, subprocess_env, tf_values

import ckptkit
from ckptkit import storage
from ckptkit.cli import cli
from ckptkit.errors import InvalidArgumentError, UnsupportedError
from ckptkit.integrations.frameworks import Staging
from ckptkit.proto import tensor_bundle_pb2

TORCH_DTYPES = ["float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8",
                "uint16", "uint32", "uint64", "bool", "complex64", "complex128",
                "float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2fnuz"]
NO_TORCH = ["int4", "uint4"]  # ml_dtypes' one-byte 4-bit ints: torch has no such dtype
SHAPES = [(3, 5), (), (0, 4), (2, 3, 4)]


def _value(dtype: str, shape, rng) -> np.ndarray:
    if dtype.startswith("float8"):
        return rng.integers(0, 256, size=shape, dtype=np.uint8).view(getattr(ml_dtypes, dtype))
    if dtype in NO_TORCH:
        return (rng.integers(0, 8, size=shape)).astype(getattr(ml_dtypes, dtype))
    return random_array(dtype, shape, rng)


@pytest.fixture(scope="module")
def tf_ckpt(tf, tmp_path_factory):
    """Every dtype in several shapes, plus strings, written by TF's SaveV2: (prefix, TF's values)."""
    rng = np.random.default_rng(21)
    tensors = {f"{dtype}/{i}": _value(dtype, shape, rng)
               for dtype in TORCH_DTYPES + NO_TORCH for i, shape in enumerate(SHAPES)}
    tensors["names"] = np.array([b"alpha", b"", b"\xff"], dtype=object)
    prefix = os.fspath(tmp_path_factory.mktemp("fw") / "all.ckpt")
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    return prefix, tf_values(tf, prefix)


def _torch_bytes(t) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _assert_torch_equals_tf(t, want: np.ndarray, key: str) -> None:
    want = np.asarray(want)
    assert isinstance(t, torch.Tensor), key
    assert t.dtype == getattr(torch, want.dtype.name), (key, t.dtype, want.dtype)  # the same-named dtype
    assert tuple(t.shape) == want.shape, key
    assert _torch_bytes(t) == want.tobytes(), key


def test_torch_tensors_equal_tf_values_for_every_torch_dtype(tf_ckpt):
    prefix, want = tf_ckpt
    got = {}
    with ckptkit.CheckpointReader(prefix, framework="torch") as reader:
        for name in want:
            if name.split("/")[0] in TORCH_DTYPES:
                got[name] = reader.get_tensor(name)
    assert len(got) == len(TORCH_DTYPES) * len(SHAPES)
    for name, t in got.items():
        assert t.device.type == "cpu"
        _assert_torch_equals_tf(t, want[name], name)
    # as numbers too: torch's own bfloat16 -> float32 conversion agrees with TF's values
    torch.testing.assert_close(got["bfloat16/0"].float(), torch.from_numpy(want["bfloat16/0"].astype(np.float32)),
                               rtol=0, atol=0, equal_nan=True)


def _left_out_notes(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "ckptkit" and "left out" in r.getMessage()]


def test_load_with_torch_leaves_out_what_torch_cannot_hold(tf_ckpt, caplog):
    """Strings and int4/uint4 are left out of load with ONE warning naming them (how many,
    the first few); asked for by name, each is an UnsupportedError naming file and key."""
    prefix, want = tf_ckpt
    torch_names = {k for k in want if k.split("/")[0] in TORCH_DTYPES}
    refused = sorted(set(want) - torch_names)
    assert len(refused) == 9  # "names", int4/0..3, uint4/0..3
    with caplog.at_level(logging.INFO, logger="ckptkit"):
        loaded = ckptkit.load(prefix, framework="torch", device="cpu")
    assert set(loaded) == torch_names
    for name, t in loaded.items():
        _assert_torch_equals_tf(t, want[name], name)
    [note] = _left_out_notes(caplog)
    message = note.getMessage()
    assert note.levelno == logging.WARNING and message.startswith(f"{prefix}: load(framework='torch') left out 9 ")
    assert "int4/0 (int4)" in message and "names (string)" in message and "and 1 more" in message
    with ckptkit.CheckpointReader(prefix, framework="torch") as reader:
        assert sorted(reader.unsupported_names()) == refused
        assert len(reader) == len(want)  # still listed: the reader shows the checkpoint as it is
        with pytest.raises(UnsupportedError, match="no string dtype: strings have no torch tensor") as info:
            reader.get_tensor("names")
        assert info.value.key == "names" and info.value.path == prefix
        for dtype in NO_TORCH:
            with pytest.raises(UnsupportedError, match=f"has no {dtype} dtype: read it with framework='numpy'"):
                reader.get_tensor(f"{dtype}/0")
    for name in ("names", "int4/2"):  # asked for by name: never left out quietly
        with pytest.raises(UnsupportedError, match="read it with framework='numpy'") as info:
            ckptkit.load(prefix, framework="torch", include=[name, "float32/*"])
        assert info.value.key == name and info.value.path == prefix
    # a glob takes what torch can hold, the rest noted
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ckptkit"):
        ints = ckptkit.load(prefix, framework="torch", include="*int*/0")  # a str: one glob
    assert set(ints) == {f"{d}/0" for d in TORCH_DTYPES if "int" in d}
    [note] = _left_out_notes(caplog)
    assert "left out 2 entries it cannot hold: int4/0 (int4), uint4/0 (uint4) (" in note.getMessage()
    # numpy holds everything: nothing left out, nothing logged
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ckptkit"):
        assert set(ckptkit.load(prefix)) == set(want)
    assert not _left_out_notes(caplog)


OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"


@pytest.fixture(scope="module")
def tf2_ckpts(tf, tmp_path_factory) -> dict[str, str]:
    """TF2 object-based checkpoints: a Keras model fit for one step with Adam (slot
    variables, the optimizer's int64 iteration) written by tf.train.Checkpoint, and one
    written by ckptkit.Checkpoint (an int64 step and a string beside the weights)."""
    directory = tmp_path_factory.mktemp("tf2")
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(4), tf.keras.layers.Dense(2)])
    optimizer = tf.keras.optimizers.Adam(0.1)
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(3)
    model.fit(rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 2)).astype(np.float32),
              batch_size=4, epochs=1, verbose=0)
    keras = tf.train.Checkpoint(model=model, optimizer=optimizer).write(os.fspath(directory / "keras"))
    ours = ckptkit.Checkpoint(model={"dense": {"kernel": rng.standard_normal((3, 4)).astype(np.float32),
                                               "bias": np.zeros(4, np.float16)}},
                              step=np.int64(7), note=np.array(b"hello", dtype=object))
    return {"keras": keras, "ckptkit": ours.write(os.fspath(directory / "ours"))}


@pytest.mark.parametrize("which", ["keras", "ckptkit"])
@pytest.mark.parametrize("framework", ["torch", "pt"])
def test_tf2_checkpoints_load_as_torch(tf, tf2_ckpts, which, framework, caplog):
    """Every TF2 checkpoint loads: the object graph (and strings) left out with one note,
    every other tensor (slot variables, int64 counters) equal to TF's value."""
    prefix = tf2_ckpts[which]
    want = tf_values(tf, prefix)
    strings = {k for k, v in want.items() if np.asarray(v).dtype.kind in "OS"}
    assert OBJECT_GRAPH in strings and (which == "keras") == (strings == {OBJECT_GRAPH})
    if which == "keras":
        assert any(k.startswith("optimizer/_variables/") for k in want)  # fit made Adam's moments
        assert want["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"] == 1
    with caplog.at_level(logging.INFO, logger="ckptkit"):
        loaded = ckptkit.load(prefix, framework=framework)
    assert set(loaded) == set(want) - strings
    for name, t in loaded.items():
        _assert_torch_equals_tf(t, want[name], name)
    [note] = _left_out_notes(caplog)
    # only the object graph (every TF2 checkpoint has one): INFO; a string of the user's: WARNING
    assert note.levelno == (logging.INFO if which == "keras" else logging.WARNING)
    assert f"left out {len(strings)} " in note.getMessage() and f"{OBJECT_GRAPH} (string)" in note.getMessage()
    with ckptkit.CheckpointReader(prefix, framework=framework) as reader:
        assert reader.framework == "torch"
        with pytest.raises(UnsupportedError, match="the TF2 object graph is a serialized proto") as info:
            reader.get_tensor(OBJECT_GRAPH)
        assert info.value.key == OBJECT_GRAPH and info.value.path == prefix
    with pytest.raises(UnsupportedError, match="object graph") as info:
        ckptkit.load(prefix, framework=framework, include=OBJECT_GRAPH)
    assert info.value.key == OBJECT_GRAPH


def test_a_datatype_ckptkit_cannot_decode_is_left_out_too(tmp_path, caplog):
    """A DT_VARIANT entry (what a tf.data iterator's state is saved as) beside a float: a
    framework load gives the float and notes the other; numpy load still refuses it."""

    real = ckptkit.save(os.fspath(tmp_path / "real"), {"x": np.arange(2, dtype=np.float32)})
    with ckptkit.CheckpointReader(real) as reader:
        x = reader.entry("x")
        data = open(reader.files[1], "rb").read()
    variant = tensor_bundle_pb2.BundleEntryProto(dtype=21)  # DT_VARIANT, a scalar
    prefix = hostile_v2(tmp_path, {"x": x, "it": variant}, data=data)
    with caplog.at_level(logging.INFO, logger="ckptkit"):
        loaded = ckptkit.load(prefix, framework="torch")
    assert list(loaded) == ["x"] and torch.equal(loaded["x"], torch.arange(2, dtype=torch.float32))
    [note] = _left_out_notes(caplog)
    assert "left out 1 entry it cannot hold: it (DataType 21)" in note.getMessage()
    with pytest.raises(UnsupportedError, match="unsupported TensorFlow DataType 21") as info:
        ckptkit.CheckpointReader(prefix, framework="torch").get_tensor("it")
    assert info.value.key == "it" and info.value.path == prefix
    with pytest.raises(UnsupportedError, match="unsupported TensorFlow DataType 21"):
        ckptkit.load(prefix)


def _readme_example(tmp_path) -> str:
    """The README's Python API example, as written there."""
    path = os.fspath(tmp_path / "ckpt" / "model")
    ckptkit.save(path, {"w": np.ones((2, 3), np.float32), "names": ["a", "b"]}, num_shards=1)
    return path


def _cli_example(tmp_path) -> str:
    """What `ckptkit example DIR` writes (the first lines of the README)."""

    directory = os.fspath(tmp_path / "demo")
    result = CliRunner().invoke(cli, ["example", directory])
    assert result.exit_code == 0, result.output
    return directory


def test_the_readme_examples_load_as_torch(tmp_path, caplog):
    readme = _readme_example(tmp_path)
    with caplog.at_level(logging.INFO, logger="ckptkit"):
        loaded = ckptkit.load(readme, framework="torch")
    assert list(loaded) == ["w"] and torch.equal(loaded["w"], torch.ones(2, 3))
    [note] = _left_out_notes(caplog)
    assert note.levelno == logging.WARNING and "left out 1 entry it cannot hold: names (string)" in note.getMessage()
    demo = _cli_example(tmp_path)
    want = ckptkit.load(demo)
    loaded = ckptkit.load(demo, framework="torch")
    assert set(loaded) == {"v", "v/ExponentialMovingAverage"} == set(want)
    for name, t in loaded.items():
        _assert_torch_equals_tf(t, want[name], name)


def test_load_include_and_exclude(tmp_path):
    """Globs with the CLI's rules: `*` crosses `/`, a str or a list, an include matching
    nothing an error naming it and the checkpoint; the order is the checkpoint's."""
    values = {"enc/layer0/w": np.ones(2, np.float32), "enc/layer1/w": np.zeros(2, np.float32),
              "dec/w": np.arange(3, dtype=np.int32), "step": np.int64(3)}
    prefix = ckptkit.save(os.fspath(tmp_path / "m"), values)
    assert list(ckptkit.load(prefix, include="enc/*")) == ["enc/layer0/w", "enc/layer1/w"]
    assert list(ckptkit.load(prefix, include=["*w"], exclude="*layer1*")) == ["dec/w", "enc/layer0/w"]
    assert list(ckptkit.load(prefix, exclude=("enc/*",))) == ["dec/w", "step"]
    with pytest.raises(InvalidArgumentError, match="nothing-like-this"):  # every glob must match, as in the CLI
        ckptkit.load(prefix, exclude=("enc/*", "nothing-like-this"))
    assert list(ckptkit.load(prefix, include=[])) == sorted(values)  # as an absent option
    loaded = ckptkit.load(prefix, framework="torch", include=("dec/?", "step"))
    assert torch.equal(loaded["dec/w"], torch.arange(3, dtype=torch.int32)) and loaded["step"].item() == 3
    with pytest.raises(InvalidArgumentError, match="no tensor name matches the include glob 'enc/layer2/\\*'") as info:
        ckptkit.load(prefix, include=["enc/*", "enc/layer2/*"])
    assert info.value.path == prefix
    with pytest.raises(InvalidArgumentError, match="include takes globs"):
        ckptkit.load(prefix, include=[3])


def test_safetensors_framework_names_are_aliases(tf_ckpt):
    prefix, want = tf_ckpt
    with ckptkit.CheckpointReader(prefix, framework="np") as reader:
        assert reader.framework == "numpy" and same(reader["float32/0"], want["float32/0"])
        assert reader.unsupported_names() == {}
    with ckptkit.CheckpointReader(prefix, framework="pt") as reader:
        assert reader.framework == "torch"
        _assert_torch_equals_tf(reader["bfloat16/0"], want["bfloat16/0"], "bfloat16/0")
    with pytest.raises(InvalidArgumentError, match="np=numpy, pt=torch, flax=jax"):
        ckptkit.CheckpointReader(prefix, framework="tf")


def test_torch_partitioned_and_slices_equal_tf(tf, tf1, tmp_path):
    path, values = save_partitioned_tf1(tf, tf1, os.fspath(tmp_path), extra_dtypes=True)
    loaded = ckptkit.load(path, framework="torch")
    for name, value in values.items():
        _assert_torch_equals_tf(loaded[name], value, name)
    with ckptkit.CheckpointReader(path, framework="torch") as reader:
        for name, value in values.items():
            window = reader.get_slice(name)[1::2]
            _assert_torch_equals_tf(window, value[1::2], name)
        _assert_torch_equals_tf(reader.get_slice("ints")[-1, 1], np.asarray(values["ints"][-1, 1]), "ints")
        assert reader["plain"].dtype == torch.float32


def _mapped_files() -> str:
    with open("/proc/self/maps") as f:
        return f.read()


def test_torch_mmap_tensors_are_private_views_of_the_page_cache(tf_ckpt, tmp_path):
    """mmap=True: each torch tensor maps its bytes copy-on-write (zero-copy: the shard is
    in this process's memory map), writable, and a write reaches neither the file nor
    another read (torch has no read-only tensors: the numpy views are never handed over)."""
    prefix, want = tf_ckpt
    with ckptkit.CheckpointReader(prefix, framework="torch", mmap=True) as reader:
        shard = [f for f in reader.files if ".data-" in f][0]
        before = open(shard, "rb").read()
        t = reader.get_tensor("float32/3")
        assert shard in _mapped_files()
        t += 1
        torch.testing.assert_close(t, torch.from_numpy(want["float32/3"] + np.float32(1)), rtol=0, atol=0,
                                   equal_nan=True)
        _assert_torch_equals_tf(reader.get_tensor("float32/3"), want["float32/3"], "float32/3")
        for name in want:  # every dtype, through the mapped path or (strings aside) the array one
            if name.split("/")[0] in TORCH_DTYPES:
                _assert_torch_equals_tf(reader.get_tensor(name), want[name], name)
    assert open(shard, "rb").read() == before
    numpy_view = ckptkit.CheckpointReader(prefix, mmap=True).get_tensor("float32/0")
    assert not numpy_view.flags.writeable  # what torch would otherwise have aliased
    # a float32 tensor at an offset that is not a multiple of 4 (after 3 uint8 bytes)
    odd = ckptkit.save(os.fspath(tmp_path / "odd"), {"a": np.arange(3, dtype=np.uint8),
                                                   "b": np.arange(5, dtype=np.float32)})
    with ckptkit.CheckpointReader(odd, framework="torch", mmap=True) as reader:
        assert reader.entry("b").offset == 3
        assert torch.equal(reader.get_tensor("b") * 2, torch.arange(5, dtype=torch.float32) * 2)


def test_torch_mmap_tensor_checks_the_crc(tf_ckpt, tmp_path):
    prefix, _ = tf_ckpt
    with ckptkit.CheckpointReader(prefix) as reader:
        entry = reader.entry("int32/0")
        shard = [f for f in reader.files if ".data-" in f][0]
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in (shard, prefix + ".index"):
        (copy / os.path.basename(f)).write_bytes(open(f, "rb").read())
    data = bytearray((copy / os.path.basename(shard)).read_bytes())
    data[entry.offset] ^= 1
    (copy / os.path.basename(shard)).write_bytes(bytes(data))
    damaged = os.fspath(copy / os.path.basename(prefix))
    with pytest.raises(ckptkit.DataLossError, match="checksum"):
        ckptkit.CheckpointReader(damaged, framework="torch", mmap=True).get_tensor("int32/0")
    t = ckptkit.CheckpointReader(damaged, framework="torch", mmap=True, verify=False).get_tensor("int32/0")
    assert t.dtype == torch.int32


def test_big_endian_npz_members_become_native_torch_tensors(tmp_path):
    path = os.fspath(tmp_path / "be.npz")
    np.savez(path, i=np.array([1, -2, 300], dtype=">i4"), f=np.array([[0.5, -1e300]], dtype=">f8"))
    with ckptkit.CheckpointReader(path, framework="torch") as reader:
        assert torch.equal(reader["i"], torch.tensor([1, -2, 300], dtype=torch.int32))
        assert torch.equal(reader["f"], torch.tensor([[0.5, -1e300]], dtype=torch.float64))
        assert torch.equal(reader.get_slice("i")[::-2], torch.tensor([300, 1], dtype=torch.int32))


def test_framework_and_device_arguments(tf_ckpt):
    prefix, _ = tf_ckpt
    with pytest.raises(InvalidArgumentError, match="unknown framework 'tensorflow'") as info:
        ckptkit.CheckpointReader(prefix, framework="tensorflow")
    assert info.value.path == prefix
    with pytest.raises(InvalidArgumentError, match="needs framework='torch' or 'jax'"):
        ckptkit.load(prefix, device="cuda")
    with pytest.raises(InvalidArgumentError, match="bad torch device"):
        ckptkit.CheckpointReader(prefix, framework="torch", device="warp-drive")
    if torch.cuda.is_available():  # a GPU machine: the pinned-memory path
        t = ckptkit.CheckpointReader(prefix, framework="torch", device="cuda").get_tensor("float32/0")
        assert t.device.type == "cuda"
    else:
        with pytest.raises(UnsupportedError, match="no usable CUDA device") as info:
            ckptkit.CheckpointReader(prefix, framework="torch", device="cuda")
        assert info.value.path == prefix


def test_staging_streams_a_range_in_chunks_and_sums_its_crc(tmp_path):
    """The CUDA path's staging (here unpinned, onto the CPU, in 64-byte chunks through
    two buffers): the bytes land in order and the crc32c is the whole range's."""
    import crc32c  # noqa: PLC0415 - the reference crc32c implementation

    blob = np.random.default_rng(5).integers(0, 256, size=1000, dtype=np.uint8).tobytes()
    (tmp_path / "blob").write_bytes(blob)
    source = storage.LOCAL.open(str(tmp_path / "blob"), "blob")
    try:
        staging = Staging(torch, torch.device("cpu"), pin=False, chunk=64, count=2)
        for offset, size in [(50, 900), (0, 64), (999, 1), (0, 1000)]:
            dest = torch.zeros(size, dtype=torch.uint8)
            crc = staging.upload(source, offset, size, dest, True)
            assert dest.numpy().tobytes() == blob[offset:offset + size]
            assert crc == crc32c.crc32c(blob[offset:offset + size])
        with pytest.raises(ckptkit.CheckpointError, match="ended early"):
            staging.upload(source, 990, 20, torch.zeros(20, dtype=torch.uint8), False, key="k")
    finally:
        source.close()


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- jax
# In a child process: jax starts threads, and the fault-injection tests fork (jax warns
# that a fork after it is imported may deadlock), so jax never enters pytest's process.

JAX_DTYPES = TORCH_DTYPES + NO_TORCH
JAX_CHILD = """
import json, sys
import jax, numpy as np, ckptkit
prefix, x64 = sys.argv[1], sys.argv[2] == "1"
jax.config.update("jax_enable_x64", x64)
def describe(a, want):
    host = np.asarray(a)
    return [isinstance(a, jax.Array), str(a.dtype) == str(want.dtype), host.shape == want.shape,
            host.tobytes() == want.tobytes()]
out = {}
with ckptkit.CheckpointReader(prefix, framework="jax", device="cpu") as r, ckptkit.CheckpointReader(prefix) as n:
    for name in r:
        try:
            out[name] = describe(r[name], n[name])
        except ckptkit.UnsupportedError as exc:
            out[name] = exc.message
    out["window"] = describe(r.get_slice("bfloat16/3")[:, ::-1, 2], n["bfloat16/3"][:, ::-1, 2])
print(json.dumps(out))
"""


def _jax_results(prefix: str, x64: bool) -> dict:
    result = _run(JAX_CHILD, prefix, "1" if x64 else "0")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_jax_arrays_equal_tf_values(tf_ckpt):
    """The child compares jax arrays with ckptkit's numpy arrays; here those are TF's values."""
    prefix, want = tf_ckpt
    with ckptkit.CheckpointReader(prefix) as reader:
        for name, value in want.items():
            if name != "names":
                assert same(reader[name], np.asarray(value)), name
    got = _jax_results(prefix, x64=True)
    for name in want:
        if name.split("/")[0] in JAX_DTYPES:
            assert got[name] == [True, True, True, True], (name, got[name])
    assert got["window"] == [True, True, True, True]
    assert got["names"].startswith("strings have no jax array")


def test_jax_refuses_to_narrow_64_bit_types(tf_ckpt):
    prefix, _ = tf_ckpt
    got = _jax_results(prefix, x64=False)  # jax's default
    assert got["int32/0"] == got["float32/2"] == got["bfloat16/3"] == [True, True, True, True]
    for dtype in ("float64", "int64", "uint64", "complex128"):
        assert got[f"{dtype}/0"].startswith(f"jax would narrow {dtype} to 32 bits (jax_enable_x64 is off)"), dtype


JAX_LOAD_CHILD = """
import json, logging, sys
import jax, numpy as np, ckptkit
notes = []
class Keep(logging.Handler):
    def emit(self, record):
        notes.append([record.levelname, record.getMessage()])
logging.getLogger("ckptkit").addHandler(Keep())
logging.getLogger("ckptkit").setLevel(logging.INFO)
out = []
for path, framework, x64 in json.loads(sys.argv[1]):
    jax.config.update("jax_enable_x64", x64)
    del notes[:]
    loaded, want = ckptkit.load(path, framework=framework), ckptkit.load(path)
    same = all(isinstance(a, jax.Array) and str(a.dtype) == str(want[k].dtype)
               and np.asarray(a).tobytes() == want[k].tobytes() for k, a in loaded.items())
    out.append({"keys": sorted(loaded), "same": same, "notes": list(notes)})
print(json.dumps(out))
"""


def test_tf2_checkpoints_and_the_readme_examples_load_as_jax(tf2_ckpts, tmp_path):
    """jax (and its safetensors name "flax"): the object graph and strings left out with
    one note; with jax_enable_x64 off (jax's default) the int64 counters too, the note a
    WARNING saying so, never narrowed values."""
    keras, ours = tf2_ckpts["keras"], tf2_ckpts["ckptkit"]
    readme, demo = _readme_example(tmp_path), _cli_example(tmp_path)
    jobs = [[keras, "jax", True], [keras, "flax", False], [ours, "jax", True], [readme, "jax", False],
            [demo, "flax", False]]
    result = _run(JAX_LOAD_CHILD, json.dumps(jobs))
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    for job, found in zip(jobs, got, strict=True):
        assert found["same"], job  # every array holds the bytes numpy reads, in the same-named dtype
        assert len(found["notes"]) == (0 if job[0] == demo else 1), (job, found["notes"])
    iterations = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"
    with ckptkit.CheckpointReader(keras) as reader:
        keras_keys = set(reader)
    assert set(got[0]["keys"]) == keras_keys - {OBJECT_GRAPH}
    assert got[0]["notes"] == [["INFO", got[0]["notes"][0][1]]] and OBJECT_GRAPH in got[0]["notes"][0][1]
    assert set(got[1]["keys"]) == keras_keys - {OBJECT_GRAPH, iterations}
    [[level, message]] = got[1]["notes"]
    assert level == "WARNING" and f"left out 2 entries it cannot hold: {OBJECT_GRAPH} (string), {iterations} (int64)" \
        in message
    assert got[2]["keys"] == ["model/dense/bias/.ATTRIBUTES/VARIABLE_VALUE",
                              "model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE", "step/.ATTRIBUTES/VARIABLE_VALUE"]
    assert got[3]["keys"] == ["w"] and "names (string)" in got[3]["notes"][0][1]
    assert got[4]["keys"] == ["v", "v/ExponentialMovingAverage"]


# --------------------------------------------------------------------------- optional imports

def test_import_and_numpy_reads_do_not_import_torch_or_jax(tf_ckpt):
    prefix, _ = tf_ckpt
    result = _run(f"""
        import sys, ckptkit
        r = ckptkit.CheckpointReader({prefix!r})
        r.get_tensor("float32/0"); r.get_slice("float32/0")[1:]; ckptkit.load({prefix!r})
        loaded = [m for m in ("torch", "jax", "jaxlib") if m in sys.modules]
        assert not loaded, loaded
        print("ok")
    """)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize("framework, install", [("torch", "pip install torch"), ("jax", "pip install jax jaxlib")])
def test_a_missing_framework_says_what_to_install(tf_ckpt, framework, install):
    prefix, _ = tf_ckpt
    result = _run(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == {framework!r}:
                    raise ImportError("blocked in this test")
        sys.meta_path.insert(0, Block())
        import ckptkit
        try:
            ckptkit.load({prefix!r}, framework={framework!r})
        except ckptkit.UnsupportedError as exc:
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    assert f"framework='{framework}' needs {framework}" in result.stdout and install in result.stdout
