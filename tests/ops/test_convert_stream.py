"""Streaming conversion: one tensor in memory at a time, filters, casts, renames,
friendly TF2 names, and what a format cannot hold left out (or refused with strict)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import make_dtypes, same, subprocess_env, tf_values
from safetensors.numpy import load_file

import ckptkit
from ckptkit.cli import cli
from ckptkit.errors import InvalidArgumentError, UnsupportedError
from ckptkit.ops import convert


@pytest.fixture(scope="module")
def keras_tf2(tf, tmp_path_factory):
    """A Keras model and its Adam slots in a TF2 object-graph checkpoint, written by TF."""
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(4), tf.keras.layers.Dense(2)])
    optimizer = tf.keras.optimizers.Adam(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(tf.ones((2, 3))))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                  strict=True))
    return tf.train.Checkpoint(model=model, optimizer=optimizer).save(
        str(tmp_path_factory.mktemp("keras") / "ckpt"))


def test_tf2_keras_checkpoint_to_safetensors_equals_tf(tf, keras_tf2, tmp_path):
    dst = str(tmp_path / "m.safetensors")
    result = convert.convert(keras_tf2, dst)
    expected = tf_values(tf, keras_tf2)
    numeric = {k: v for k, v in expected.items() if np.asarray(v).dtype.kind not in "OSU"}
    assert result["left_out"] == [{"name": convert.OBJECT_GRAPH_KEY, "reason": "safetensors has no strings"}]
    got = load_file(dst)  # the reference implementation reads what we wrote
    assert sorted(got) == sorted(numeric) and result["tensors"] == len(numeric)
    for key, value in numeric.items():
        assert same(got[key], value), key


def test_friendly_names_are_object_paths(tf, keras_tf2, tmp_path):
    """Keys lose `/.ATTRIBUTES/VARIABLE_VALUE`; Keras 3's model weights, keyed under the
    optimizer (`optimizer/_trainable_variables/N`), are named under `model/` instead."""
    dst = str(tmp_path / "f.safetensors")
    result = convert.convert(keras_tf2, dst, friendly_names=True)
    expected = tf_values(tf, keras_tf2)
    got = load_file(dst)
    values = {k: v for k, v in expected.items() if k != convert.OBJECT_GRAPH_KEY}
    assert len(values) > 5 and all(k.endswith("/.ATTRIBUTES/VARIABLE_VALUE") for k in values)
    paths = {k[: -len("/.ATTRIBUTES/VARIABLE_VALUE")]: v for k, v in values.items()}
    weights = {k: v for k, v in paths.items() if k.startswith("optimizer/_trainable_variables/")}
    assert len(weights) == 4
    for key, value in paths.items():
        if key not in weights:
            assert same(got[key], value), key
    moved = {k: v for k, v in got.items() if k.startswith("model/")}
    assert len(moved) == len(weights) and len(got) == len(paths)
    for key, value in weights.items():  # four distinct shapes: each weight is one model/ tensor
        assert [n for n, v in moved.items() if same(v, value)] != [], key
    assert not any(k.endswith("VARIABLE_VALUE") for k in got)
    assert {"name": convert.OBJECT_GRAPH_KEY, "reason": "the object graph (names changed)"} in result["left_out"]


def test_every_dtype_through_cast_to_npz(tf, tmp_path):
    ckpt = make_dtypes(tf, str(tmp_path), with_strings=True)
    expected = tf_values(tf, ckpt)
    dst = str(tmp_path / "all.npz")
    result = convert.convert(ckpt, dst, cast={"bfloat16": "float32"})
    assert result["left_out"] == []
    with np.load(dst, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(expected)
        assert data["bf16"].dtype == np.float32
        np.testing.assert_array_equal(data["bf16"], np.asarray(expected["bf16"]).astype(np.float32))
        for key, value in expected.items():
            if key not in ("bf16", "names"):
                assert same(data[key], value), key
    # without the cast, bfloat16 is left out (npz would read it back as raw bytes), or refused
    assert convert.convert(ckpt, str(tmp_path / "b.npz"))["left_out"] == [
        {"name": "bf16", "reason": "npz has no bfloat16"}]
    with pytest.raises(UnsupportedError, match="'bf16'"):
        convert.convert(ckpt, str(tmp_path / "c.npz"), strict=True)
    assert not (tmp_path / "c.npz").exists()


def test_include_exclude_rename_and_collisions(tmp_path):
    src = str(tmp_path / "src")
    ckptkit.save(src, {"enc/w": np.ones(2, np.float32), "enc/b": np.zeros(2, np.float32),
                       "dec/w": np.full(2, 3, np.int64), "step": np.int64(5)})
    dst = str(tmp_path / "out.npz")
    result = convert.convert(src, dst, include=["enc/*", "dec/*"], exclude=["*/b"],
                             rename=(r"(enc|dec)/(\w+)", r"\2_\1"))
    with np.load(dst) as data:
        assert sorted(data.files) == ["w_dec", "w_enc"]
        assert data["w_dec"].dtype == np.int64
    assert result["tensors"] == 2
    with pytest.raises(InvalidArgumentError, match="both"):
        convert.convert(src, str(tmp_path / "x.npz"), rename=(r".*/(w|b)", r"\1"), include=["enc/*", "dec/w"])
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(InvalidArgumentError, match="strings"):
        convert.convert(src, str(tmp_path / "y.npz"), cast={"string": "float32"})
    with pytest.raises(InvalidArgumentError, match=r"bad regex '\(': missing \)") as info:  # not re.error
        convert.convert(src, str(tmp_path / "z.npz"), rename=("(", "x"))
    assert info.value.path == src and not (tmp_path / "z.npz").exists()
    result = CliRunner().invoke(cli, ["convert", src, str(tmp_path / "z.npz"), "--rename", "(", "x"])
    assert result.exit_code == 1 and result.output.startswith(f"ckptkit: error: {src}: bad regex '('")


def test_cast_to_a_checkpoint_reads_back_in_tf(tf, tmp_path):
    src = str(tmp_path / "src")
    ckptkit.save(src, {"h": np.arange(6, dtype=ml_dtypes.bfloat16), "f": np.arange(3, dtype=np.float64)})
    dst = str(tmp_path / "dst")
    convert.convert(src, dst, cast={"bfloat16": "float32", "float64": "float16"})
    got = tf_values(tf, dst)
    assert got["h"].dtype == np.float32 and got["f"].dtype == np.float16
    np.testing.assert_array_equal(got["h"], np.arange(6, dtype=np.float32))


def test_cli_convert_options_and_json(tmp_path):
    src = str(tmp_path / "src")
    ckptkit.save(src, {"a": np.ones(2, np.float32), "s": np.array([b"x"], object)})
    result = CliRunner().invoke(cli, ["convert", src, str(tmp_path / "o.safetensors"), "--json",
                                      "--cast", "float32=float64"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["tensors"] == 1 and summary["left_out"] == [{"name": "s", "reason": "safetensors has no strings"}]
    assert load_file(str(tmp_path / "o.safetensors"))["a"].dtype == np.float64
    bad = CliRunner().invoke(cli, ["convert", src, str(tmp_path / "p.npz"), "--cast", "float32"])
    assert bad.exit_code == 2  # usage: not FROM=TO


RSS_CHILD = textwrap.dedent("""
    import sys
    from ckptkit.ops import convert

    def peak_rss():  # this process's own high-water mark (ru_maxrss would include the parent's)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmHWM:"))

    src, dst = sys.argv[1], sys.argv[2]
    convert.convert(src + "_warm", dst + "_warm" + sys.argv[3])  # every code path imported and run once
    before = peak_rss()
    convert.convert(src, dst + sys.argv[3])
    print(peak_rss() - before)
""")


@pytest.mark.parametrize("ext", [".safetensors", ".npz", ""])
def test_convert_holds_one_tensor_at_a_time(tmp_path, ext):
    """256 MiB in 16 tensors of 16 MiB: the converting process grows by at most the largest
    tensor plus 128 MiB (issue 14's bound), not by the checkpoint's size."""
    src = str(tmp_path / "big")
    rng = np.random.default_rng(0)
    ckptkit.save(src, {f"t{i:02d}": rng.standard_normal(4 << 20, dtype=np.float32) for i in range(16)})
    ckptkit.save(src + "_warm", {"w": np.ones(10, np.float32)})
    done = subprocess.run([sys.executable, "-c", RSS_CHILD, src, str(tmp_path / "out"), ext],
                          capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    growth = int(done.stdout.split()[-1])
    assert growth <= (16 << 20) + (128 << 20), f"peak RSS grew by {growth >> 20} MiB"
    out = str(tmp_path / "out") + ext
    assert os.path.exists(out if ext else out + ".index")
