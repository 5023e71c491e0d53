"""Keras weight files (formats/keras.py), written by Keras 3 (tf.keras) and read without it."""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import subprocess_env

import ckptkit
from ckptkit.cli import cli
from ckptkit.errors import DataLossError, UnsupportedError
from ckptkit.formats.keras import KerasFile
from ckptkit.location import locate
from ckptkit.ops import edit
from ckptkit.ops.convert import convert

h5py = pytest.importorskip("h5py")


def _fitted_model(tf):
    """Conv2D, BatchNormalization, Embedding and Dense layers after one step of Adam."""
    keras = tf.keras
    image, ids = keras.Input((6, 6, 3)), keras.Input((4,), dtype="int32")
    x = keras.layers.Conv2D(4, 3, name="conv")(image)
    x = keras.layers.Flatten()(keras.layers.BatchNormalization(name="bn")(x))
    e = keras.layers.Flatten()(keras.layers.Embedding(10, 5, name="emb")(ids))
    y = keras.layers.Dense(3, name="head")(keras.layers.Concatenate()([x, e]))
    model = keras.Model([image, ids], y)
    model.compile(keras.optimizers.Adam(0.1), "mse")
    rng = np.random.default_rng(0)
    model.fit([rng.random((2, 6, 6, 3)), rng.integers(0, 10, (2, 4))], rng.random((2, 3)), epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def keras_files(tf, tmp_path_factory):
    model = _fitted_model(tf)
    d = tmp_path_factory.mktemp("keras")
    paths = {"weights": str(d / "m.weights.h5"), "keras": str(d / "m.keras"), "legacy": str(d / "m.h5")}
    model.save_weights(paths["weights"])
    model.save(paths["keras"])
    model.save(paths["legacy"])  # Keras 3 writes the legacy full-model HDF5 file for .h5
    return model, paths


@pytest.mark.parametrize("kind", ["weights", "keras", "legacy"])
def test_values_equal_get_weights_by_layer_names(keras_files, kind):
    model, paths = keras_files
    expected = [w.path for w in model.weights]  # Keras 3's LAYER/VAR: conv/kernel, bn/moving_mean, ...
    assert expected[:3] == ["conv/kernel", "conv/bias", "bn/gamma"]
    with ckptkit.CheckpointReader(paths[kind]) as reader:
        assert reader.format == "keras" and reader.format_version == 0
        for name, value in zip(expected, model.get_weights(), strict=True):
            got = reader.get_tensor(name)
            assert got.dtype == value.dtype and np.array_equal(got, value), name
    if kind == "legacy":  # stored in the model's order: layer_names, then each layer's weight_names
        with KerasFile(paths[kind]) as f:
            assert f.names[:len(expected)] == expected


@pytest.mark.parametrize("kind", ["weights", "keras"])
def test_raw_paths_stay_available(keras_files, kind):
    model, paths = keras_files
    with KerasFile(paths[kind], raw_names=True) as raw, KerasFile(paths[kind]) as named:
        assert "layers/dense/vars/0" in raw.names and "optimizer/vars/0" in raw.names
        assert named.raw_path("head/kernel") == "layers/dense/vars/0"
        assert named.metadata is not None and named.metadata["bn/moving_mean"] == "layers/batch_normalization/vars/2"
        assert np.array_equal(raw.read("layers/dense/vars/0"), model.get_layer("head").kernel.numpy())
        assert "optimizer/vars/0" in named.names  # no layer class to name it from: its raw path


def test_ls_shows_layer_names_and_verify_says_no_checksums(keras_files):
    _, paths = keras_files
    result = CliRunner().invoke(cli, ["ls", paths["weights"]])
    assert result.exit_code == 0, result.output
    for name in ("conv/kernel", "bn/moving_variance", "emb/embeddings", "head/bias"):
        assert name in result.output
    result = CliRunner().invoke(cli, ["verify", "--json", paths["keras"]])
    assert result.exit_code == 0, result.output
    assert "no checksums" in json.loads(result.output)["checked"]


def test_diff_slice_and_convert_go_through_the_registry(keras_files, tmp_path):
    model, paths = keras_files
    result = CliRunner().invoke(cli, ["diff", paths["weights"], paths["keras"]])
    assert result.exit_code == 0, result.output
    kernel = model.get_layer("conv").kernel.numpy()
    with ckptkit.CheckpointReader(paths["keras"]) as reader:
        assert np.array_equal(reader.get_slice("conv/kernel")[1:3, :, ::2], kernel[1:3, :, ::2])
    out = str(tmp_path / "out.safetensors")
    convert(paths["legacy"], out)
    assert np.array_equal(ckptkit.load(out)["head/kernel"], model.get_layer("head").kernel.numpy())
    with pytest.raises(UnsupportedError, match="does not write them"):
        convert(out, str(tmp_path / "back.weights.h5"))


@pytest.mark.parametrize("raw_names", [False, True], ids=["layer-names", "raw-names"])
def test_an_edit_into_a_checkpoint_names_tensors_as_the_reader_does(keras_files, tmp_path, raw_names):
    """An `output=` edit of a Keras file writes a V2 checkpoint in LAYER/VAR names, or for
    a Location with `raw_names` (the CLI's --raw-names) in the HDF5 paths it was given."""
    model, paths = keras_files
    kernel, bias = ("layers/dense/vars/0", "layers/dense/vars/1") if raw_names else ("head/kernel", "head/bias")
    out = str(tmp_path / "out" / "model")
    assert edit.remove_keys(locate(paths["weights"])._replace(raw_names=raw_names), [bias], output=out) == [bias]
    with KerasFile(paths["weights"], raw_names=raw_names) as source:
        names = set(source.names)
    got = ckptkit.load(out)
    assert set(got) == names - {bias} and kernel in names
    assert np.array_equal(got[kernel], model.get_layer("head").kernel.numpy())


def test_names_follow_config_options_and_fall_back_to_raw_paths(tf, tmp_path):
    """Without use_bias or center, the build order skips bias and beta: the .keras config
    says so; a .weights.h5 alone can name the dense kernel (only a trailing optional
    variable is missing) but not the batch normalization, which keeps raw paths."""
    keras = tf.keras
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, use_bias=False, name="d"),
                              keras.layers.BatchNormalization(center=False, name="n")])
    weights, archive = str(tmp_path / "m.weights.h5"), str(tmp_path / "m.keras")
    model.save_weights(weights)
    model.save(archive)
    with KerasFile(archive) as f:
        assert sorted(f.names) == sorted(w.path.split("/", 1)[1] for w in model.weights)  # d/kernel, n/gamma, ...
        assert np.array_equal(f.read("n/moving_variance"), model.layers[1].moving_variance.numpy())
    with KerasFile(weights) as f:
        assert sorted(f.names) == ["d/kernel", "layers/batch_normalization/vars/0",
                                   "layers/batch_normalization/vars/1", "layers/batch_normalization/vars/2"]


# --------------------------------------------------------------------------- hostile files

def test_not_hdf5_and_truncated_are_data_loss(keras_files, tmp_path):
    _, paths = keras_files
    with open(paths["weights"], "rb") as f:
        data = f.read()
    bad = tmp_path / "x.weights.h5"
    bad.write_bytes(b"not hdf5" + data[8:])
    with pytest.raises(DataLossError, match="no HDF5 signature") as exc:
        ckptkit.CheckpointReader(str(bad))
    assert exc.value.path == str(bad)
    bad.write_bytes(data[:len(data) // 2])
    with pytest.raises(DataLossError, match="not a readable HDF5 file"):
        ckptkit.CheckpointReader(str(bad))
    member = tmp_path / "x.keras"
    with zipfile.ZipFile(member, "w") as z:
        z.writestr("config.json", "{}")
    with pytest.raises(DataLossError, match="without model.weights.h5"):
        ckptkit.CheckpointReader(str(member))


def test_a_dataset_claiming_more_than_the_file_is_refused_before_reading(tmp_path):
    path = str(tmp_path / "big.h5")
    with h5py.File(path, "w") as f:  # Keras 2 layout; the dataset's 400 MB are never written
        f.attrs["layer_names"] = [b"dense"]
        f.create_group("dense").attrs["weight_names"] = [b"dense/kernel:0"]
        f["dense"].create_dataset("dense/kernel:0", shape=(10_000, 10_000), dtype="f4")
    assert os.path.getsize(path) < 10_000
    with pytest.raises(DataLossError, match="past the end of the file") as exc:
        ckptkit.CheckpointReader(path)
    assert exc.value.key == "dense/kernel"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"t"]
        f.create_group("t").attrs["weight_names"] = [b"t/s:0"]
        f["t"]["t/s:0"] = np.array([b"text"])
    with pytest.raises(UnsupportedError, match="not numbers") as exc:
        ckptkit.CheckpointReader(path)
    assert exc.value.key == "t/s"
    with h5py.File(path, "w") as f:  # numbers TensorFlow has no dtype for (a fuzzed file's flipped float type)
        f.attrs["layer_names"] = [b"t"]
        f.create_group("t").attrs["weight_names"] = [b"t/x:0"]
        f["t"]["t/x:0"] = np.zeros(2, np.longdouble)
    with pytest.raises(UnsupportedError, match="no TensorFlow equivalent") as exc:
        ckptkit.CheckpointReader(path)
    assert (exc.value.path, exc.value.key) == (path, "t/x")


def _zero_free_space(data: bytes) -> bytes:
    """`data` (an HDF5 file) with its first global heap collection's free-space object's
    size set to 0: the HDF5 library's walk of the collection no longer advances."""
    out = bytearray(data)
    at = out.find(b"GCOL\x01")  # signature, version; 3 reserved bytes; the size (8-byte lengths)
    assert at > 0
    end, p = at + struct.unpack_from("<Q", out, at + 8)[0], at + 16
    while struct.unpack_from("<H", out, p)[0] != 0:  # index, refs, reserved, size, data padded to 8
        p += 16 + (struct.unpack_from("<Q", out, p + 8)[0] + 7) // 8 * 8
        assert p < end
    assert struct.unpack_from("<Q", out, p + 8)[0] > 0
    struct.pack_into("<Q", out, p + 8, 0)
    return bytes(out)


@pytest.mark.parametrize("kind", ["weights", "keras", "legacy"])
def test_a_global_heap_that_loops_hdf5_is_refused_before_it_is_read(keras_files, tmp_path, kind):
    """The layer names' global heap collection with a free-space object of size 0, which
    the HDF5 library walks forever (README, "Keras weight files"): a DataLossError naming
    the file, in a child process so that a regression fails here instead of hanging."""
    _, paths = keras_files
    bad = str(tmp_path / os.path.basename(paths[kind]))
    if kind == "keras":
        with zipfile.ZipFile(paths[kind]) as source, zipfile.ZipFile(bad, "w") as out:
            for info in source.infolist():
                data = source.read(info)
                out.writestr(info, _zero_free_space(data) if info.filename == "model.weights.h5" else data)
    else:
        with open(paths[kind], "rb") as f:
            data = f.read()
        with open(bad, "wb") as f:
            f.write(_zero_free_space(data))
    code = textwrap.dedent("""
        import sys, ckptkit
        try:
            ckptkit.CheckpointReader(sys.argv[1])
        except ckptkit.DataLossError as exc:
            assert exc.path == sys.argv[1], exc
            print(exc)
    """)
    result = subprocess.run([sys.executable, "-c", code, bad], env=subprocess_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().startswith(f"{bad}: corrupt HDF5 global heap collection at byte "), result.stdout
    assert "free-space object of size 0" in result.stdout


def test_h5py_missing_gives_a_one_line_hint(keras_files, tmp_path):
    _, paths = keras_files
    (tmp_path / "h5py.py").write_text("raise ImportError('no h5py here')\n")
    env = subprocess_env()
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env["PYTHONPATH"]
    result = subprocess.run([sys.executable, "-m", "ckptkit", "ls", paths["weights"]], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f'ckptkit: error: {paths["weights"]}: reading Keras files needs h5py: pip install "tf-ckptkit[keras]"']


FUZZ = """
import random, sys
import ckptkit
from ckptkit.errors import CheckpointError
source, scratch, suffix, first, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
data = open(source, "rb").read()
for i in range(first, count):
    rng = random.Random(1234 + i)
    buf = bytearray(data)
    if i % 3 == 0:
        buf = buf[:rng.randrange(len(buf))]
    for _ in range(rng.randint(1, 8)):
        if buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    path = f"{scratch}/f{i}{suffix}"
    open(path, "wb").write(bytes(buf))
    print("start", i, flush=True)
    try:
        with ckptkit.CheckpointReader(path) as reader:
            for key in reader:
                reader.get_tensor(key)
        print("read", i, flush=True)
    except CheckpointError as exc:
        assert exc.path == path, exc
        print("refused", i, flush=True)
"""
CASES, CASE_SECONDS = 120, 15


def _fuzz(source: str, scratch: str, suffix: str) -> tuple[dict[str, int], list[int]]:
    """Run the FUZZ cases in child processes: ({outcome: count}, [cases HDF5 looped on]).
    A child that dies by a signal, or fails otherwise, fails the test; one stuck in a
    case for CASE_SECONDS is killed and the run goes on after that case."""
    outcomes, hangs, first = {"read": 0, "refused": 0}, [], 0
    while first < CASES:
        log = os.path.join(scratch, f"log{first}")
        with open(log, "w") as out:
            child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(FUZZ), source, scratch, suffix,
                                      str(first), str(CASES)], env=subprocess_env(), stdout=out,
                                     stderr=subprocess.PIPE, text=True)
            current, since = None, time.monotonic()
            while child.poll() is None:
                time.sleep(0.2)
                lines = open(log).read().split()
                last = lines[-2:] if lines else None
                if last != current:
                    current, since = last, time.monotonic()
                elif last and last[0] == "start" and time.monotonic() - since > CASE_SECONDS:
                    child.kill()
                    child.wait()
                    break
            stderr = child.stderr.read() if child.stderr else ""
        words = open(log).read().split()
        for outcome, _ in zip(words[::2], words[1::2], strict=True):
            if outcome in outcomes:
                outcomes[outcome] += 1
        if child.returncode == -signal.SIGKILL:
            hangs.append(int(words[-1]))
            first = int(words[-1]) + 1
            continue
        assert child.returncode == 0, (child.returncode, stderr[-3000:])
        break
    return outcomes, hangs


@pytest.mark.parametrize("kind", ["weights", "keras", "legacy"])
def test_fuzz_flipped_and_truncated_files_never_crash(keras_files, tmp_path, kind):
    """The HDF5 library is C: the reads run in child processes, each of which must end
    cleanly (a segfault or abort is a negative return code, a Python error a traceback),
    and none may hang: a case stuck for CASE_SECONDS is killed and fails the test (the
    HDF5 library loops forever on some corrupt global heaps, which are checked before it
    reads them: formats/hdf5_heap.py)."""
    _, paths = keras_files
    suffix = {"weights": ".weights.h5", "keras": ".keras", "legacy": ".h5"}[kind]
    outcomes, hangs = _fuzz(paths[kind], str(tmp_path), suffix)
    assert outcomes["refused"] > 0 and outcomes["refused"] + outcomes["read"] + len(hangs) == CASES
    print(kind, outcomes, "HDF5 looped on", hangs)
    assert hangs == []


def test_every_class_of_the_build_order_table_is_named(tf, tmp_path):
    """The table's classes, saved by Keras 3: each variable is LAYER/VAR, with and without
    the .keras config."""
    layers = tf.keras.layers
    model = tf.keras.Sequential([
        tf.keras.Input((8, 8, 3)), layers.DepthwiseConv2D(3), layers.SeparableConv2D(4, 3),
        layers.Conv2DTranspose(2, 3), layers.LayerNormalization(), layers.Reshape((-1, 2)),
        layers.Conv1D(2, 3), layers.SeparableConv1D(2, 3), layers.DepthwiseConv1D(3),
        layers.Conv1DTranspose(2, 3), layers.EinsumDense("abc,cd->abd", output_shape=(None, 3), bias_axes="d"),
        layers.Dense(2, use_bias=False)])
    expected = sorted(f"{layer.name}/{w.name}" for layer in model.layers for w in layer.weights)
    values = {f"{layer.name}/{w.name}": w.numpy() for layer in model.layers for w in layer.weights}
    for name in ("m.weights.h5", "m.keras"):
        path = str(tmp_path / name)
        model.save_weights(path) if name.endswith(".weights.h5") else model.save(path)
        with KerasFile(path) as f:
            assert sorted(f.names) == expected
            for key, value in values.items():
                assert np.array_equal(f.read(key), value), key


@pytest.mark.parametrize("kind", ["weights", "keras", "legacy"])
def test_read_at_a_url(keras_files, kind):
    """h5py reads through the store's file object: a file at a URL reads as the local one."""
    fsspec = pytest.importorskip("fsspec")
    _, paths = keras_files
    url = f"memory://keras-test/{os.path.basename(paths[kind])}"
    with open(paths[kind], "rb") as f:
        fsspec.filesystem("memory").pipe(url, f.read())
    with ckptkit.CheckpointReader(url) as remote, ckptkit.CheckpointReader(paths[kind]) as local:
        assert list(remote) == list(local)
        for key in local:
            assert np.array_equal(remote.get_tensor(key), local.get_tensor(key)), key
        assert np.array_equal(remote.get_slice("head/kernel")[2:4, 1:], local.get_tensor("head/kernel")[2:4, 1:])


def test_keras2_save_weights_layout_as_in_hugging_face_tf_model_h5(tmp_path):
    """Root `layer_names`, each layer's `weight_names` with TF's `:0` (what tf_keras's
    save_weights and Hugging Face's tf_model.h5 hold), written here with h5py."""
    path = str(tmp_path / "tf_model.h5")
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3)
    names = [b"tf_bert_model/bert/embeddings/word_embeddings/weight:0", b"tf_bert_model/bert/pooler/kernel:0"]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"bert"]
        group = f.create_group("bert")
        group.attrs["weight_names"] = names
        group[names[0].decode()] = np.ones((4, 2), np.float16)
        group[names[1].decode()] = kernel
    with KerasFile(path) as f:
        assert f.names == ["tf_bert_model/bert/embeddings/word_embeddings/weight", "tf_bert_model/bert/pooler/kernel"]
        assert f.raw_path(f.names[1]) == "bert/tf_bert_model/bert/pooler/kernel:0"
    assert np.array_equal(ckptkit.load(path)["tf_bert_model/bert/pooler/kernel"], kernel)
    assert ckptkit.load(path)["tf_bert_model/bert/embeddings/word_embeddings/weight"].dtype == np.float16
