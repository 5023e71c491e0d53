"""Keras 2 files (formats/keras.py) written by tf_keras, the Keras 2 of the test extra:
`save_weights("x.h5")` (root `layer_names`, each layer's `weight_names`: the layout of
Hugging Face's tf_model.h5) and the full-model `model.save("x.h5")` (`model_weights`,
`optimizer_weights`, `model_config`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import ckptkit
from ckptkit.cli import cli
from ckptkit.formats.keras import KerasFile

h5py = pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def tf_keras_files(tf, tmp_path_factory):
    """A tf_keras model of Conv2D, BatchNormalization, DepthwiseConv2D, Embedding and Dense
    layers after a fit, saved both ways."""
    import tf_keras as keras  # noqa: PLC0415 - the test extra's Keras 2

    image, ids = keras.Input((6, 6, 3)), keras.Input((4,), dtype="int32")
    x = keras.layers.BatchNormalization(momentum=0.5, name="bn")(keras.layers.Conv2D(4, 3, name="conv")(image))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.DepthwiseConv2D(3, name="dw")(x))
    e = keras.layers.Flatten()(keras.layers.Embedding(10, 5, name="emb")(ids))
    y = keras.layers.Dense(3, name="head")(keras.layers.Concatenate()([x, e]))
    model = keras.Model([image, ids], y)
    model.compile(keras.optimizers.Adam(0.1), "mse")
    rng = np.random.default_rng(0)
    model.fit([rng.random((4, 6, 6, 3)), rng.integers(0, 10, (4, 4))], rng.random((4, 3)), epochs=2, verbose=0)
    d = tmp_path_factory.mktemp("tf_keras")
    paths = {"weights": str(d / "tf_model.h5"), "full": str(d / "model.h5")}
    model.save_weights(paths["weights"])
    model.save(paths["full"])
    return model, paths


@pytest.mark.parametrize("kind", ["weights", "full"])
def test_values_equal_get_weights_under_names_without_colon_zero(tf_keras_files, kind):
    model, paths = tf_keras_files
    names = [w.name.removesuffix(":0") for w in model.weights]
    assert {"conv/kernel", "bn/moving_variance", "dw/depthwise_kernel", "emb/embeddings", "head/bias"} <= set(names)
    with ckptkit.CheckpointReader(paths[kind]) as reader:
        assert reader.format == "keras"
        for name, value in zip(names, model.get_weights(), strict=True):
            got = reader.get_tensor(name)
            assert got.dtype == value.dtype and np.array_equal(got, value), name
        weights = [n for n in reader if not n.startswith("optimizer_weights/")]
        assert sorted(weights) == sorted(names)
        optimizer = sorted(set(reader) - set(weights))
    if kind == "weights":
        assert optimizer == []
    else:  # the optimizer's state under its raw paths, values as the optimizer holds them
        slots = {"optimizer_weights/" + v.name: v.numpy() for v in model.optimizer.variables()}
        assert optimizer == sorted(slots)
        with ckptkit.CheckpointReader(paths[kind]) as reader:
            for name, value in slots.items():
                assert np.array_equal(reader.get_tensor(name), value), name


def test_ls_shows_layer_names_and_the_full_model_file_knows_layer_classes(tf_keras_files):
    _, paths = tf_keras_files
    for path in paths.values():
        result = CliRunner().invoke(cli, ["ls", path])
        assert result.exit_code == 0, result.output
        for name in ("conv/kernel", "bn/moving_mean", "dw/depthwise_kernel", "emb/embeddings", "head/kernel"):
            assert name in result.output
        listed = json.loads(CliRunner().invoke(cli, ["ls", "--json", path]).output)["tensors"]
        weights = [t["name"] for t in listed if not t["name"].startswith("optimizer_weights/")]
        assert len(weights) == 11 and not any(n.endswith(":0") for n in weights)
    with KerasFile(paths["full"]) as full, KerasFile(paths["weights"]) as weights:
        assert full.layer_classes["dw/depthwise_kernel"] == "DepthwiseConv2D"  # from its model_config
        assert full.layer_classes["bn/gamma"] == "BatchNormalization"
        assert weights.layer_classes == {}  # save_weights stores no config
        assert full.raw_path("conv/kernel") == "model_weights/conv/conv/kernel:0"
