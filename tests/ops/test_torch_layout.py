"""`convert --layout torch` (ckptkit/ops/torch_layout.py): Keras weights loaded into torch.nn
modules of the same model give Keras's predictions; the rule by name and rank, worked by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import ckptkit
from ckptkit.cli import cli
from ckptkit.errors import InvalidArgumentError
from ckptkit.ops.convert import convert
from ckptkit.ops.torch_layout import torch_layout

pytest.importorskip("h5py")

BN_EPS, BN_MOMENTUM = 1e-3, 0.5  # Keras's default eps; a momentum that moves the statistics in a short fit


def _inputs(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((n, 8, 8, 3), np.float32), rng.integers(0, 10, (n, 4)).astype(np.int32),
            rng.random((n, 10, 3), np.float32), rng.random((n, 4, 4, 4, 2), np.float32)]


def _keras_model(keras):
    """Every kind of kernel the rule changes: Dense, Conv1D/2D/3D, DepthwiseConv2D (a
    `kernel` in Keras 3, a `depthwise_kernel` in Keras 2), SeparableConv2D,
    Conv2DTranspose; and BatchNormalization and Embedding, which keep their layout.
    Global pooling, not Flatten: channels-last and channels-first flatten in different
    orders. `keras`: Keras 3 (tf.keras) or tf_keras, whose layers take the same arguments."""
    layers = keras.layers
    image, ids, seq, vol = (keras.Input((8, 8, 3)), keras.Input((4,), dtype="int32"),
                            keras.Input((10, 3)), keras.Input((4, 4, 4, 2)))
    x = layers.Conv2D(4, 3, name="conv")(image)
    x = layers.ReLU()(layers.BatchNormalization(momentum=BN_MOMENTUM, name="bn")(x))
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = layers.Conv2DTranspose(3, 3, strides=2, name="up")(x)
    x = layers.SeparableConv2D(4, 3, depth_multiplier=2, name="sep")(x)
    pooled = [layers.GlobalAveragePooling2D()(x),
              layers.GlobalAveragePooling1D()(layers.Embedding(10, 5, name="emb")(ids)),
              layers.GlobalAveragePooling1D()(layers.Conv1D(3, 3, name="c1")(seq)),
              layers.GlobalAveragePooling3D()(layers.Conv3D(2, 2, name="c3")(vol))]
    y = layers.Dense(3, name="head")(layers.Concatenate()(pooled))
    model = keras.Model([image, ids, seq, vol], y)
    model.compile(keras.optimizers.Adam(0.05), "mse")
    model.fit(_inputs(16, 0), np.random.default_rng(1).random((16, 3)), epochs=3, batch_size=8, verbose=0)
    return model


def _torch_model():
    """The same model in torch.nn, channels first; names as --layout torch writes them."""
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    class Separable(nn.Module):  # torch has no one module: a grouped conv, then a 1x1 conv
        def __init__(self, cin: int, mult: int, cout: int, k: int) -> None:
            super().__init__()
            self.groups = cin
            self.depthwise_kernel = nn.Parameter(torch.empty(cin * mult, 1, k, k))
            self.pointwise_kernel = nn.Parameter(torch.empty(cout, cin * mult, 1, 1))
            self.bias = nn.Parameter(torch.empty(cout))

        def forward(self, x):
            x = nn.functional.conv2d(x, self.depthwise_kernel, groups=self.groups)
            return nn.functional.conv2d(x, self.pointwise_kernel, self.bias)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4, eps=BN_EPS, momentum=1 - BN_MOMENTUM)  # torch's momentum is 1 - Keras's
            self.dw = nn.Conv2d(4, 8, 3, groups=4)
            self.up = nn.ConvTranspose2d(8, 3, 3, stride=2)
            self.sep = Separable(3, 2, 4, 3)
            self.emb = nn.Embedding(10, 5)
            self.c1 = nn.Conv1d(3, 3, 3)
            self.c3 = nn.Conv3d(2, 2, 2)
            self.head = nn.Linear(4 + 5 + 3 + 2, 3)

        def forward(self, image, ids, seq, vol):
            x = self.sep(self.up(self.dw(torch.relu(self.bn(self.conv(image.permute(0, 3, 1, 2)))))))
            pooled = [x.mean((2, 3)), self.emb(ids).mean(1), self.c1(seq.permute(0, 2, 1)).mean(2),
                      self.c3(vol.permute(0, 4, 1, 2, 3)).mean((2, 3, 4))]
            return self.head(torch.cat(pooled, 1))

    return Net().eval()


@pytest.fixture(scope="module")
def keras_model_files(tf, tmp_path_factory):
    """Keras 3's predictions, their inputs, and its .weights.h5, .keras and full-model .h5."""
    model = _keras_model(tf.keras)
    d = tmp_path_factory.mktemp("keras_torch")
    paths = {"weights": str(d / "m.weights.h5"), "keras": str(d / "m.keras"), "legacy": str(d / "m.h5")}
    model.save_weights(paths["weights"])
    model.save(paths["keras"])
    model.save(paths["legacy"])
    inputs = _inputs(5, 2)
    return model.predict(inputs, verbose=0), inputs, paths


@pytest.fixture(scope="module")
def tf_keras_model_files(tf, tmp_path_factory):
    """The same for tf_keras (Keras 2): its save_weights .h5 (Hugging Face's tf_model.h5
    layout) and full-model .h5."""
    import tf_keras  # noqa: PLC0415 - the test extra's Keras 2

    model = _keras_model(tf_keras)
    d = tmp_path_factory.mktemp("tf_keras_torch")
    paths = {"k2_weights": str(d / "tf_model.h5"), "k2_full": str(d / "full.h5")}
    model.save_weights(paths["k2_weights"])
    model.save(paths["k2_full"])
    inputs = _inputs(5, 2)
    return model.predict(inputs, verbose=0), inputs, paths


@pytest.mark.parametrize("kind", ["weights", "keras", "legacy", "k2_weights", "k2_full"])
def test_torch_modules_given_the_converted_file_predict_as_keras(request, kind, tmp_path):
    """The README's two commands: convert --layout torch, then load_state_dict."""
    import torch  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    files = "tf_keras_model_files" if kind.startswith("k2_") else "keras_model_files"
    expected, inputs, paths = request.getfixturevalue(files)
    out = str(tmp_path / "model.safetensors")
    optimizer = [] if kind == "k2_weights" else ["--exclude", "optimizer*"]  # (save_weights keeps none in Keras 2)
    result = CliRunner().invoke(cli, ["convert", paths[kind], out, "--layout", "torch", *optimizer])
    assert result.exit_code == 0, result.output
    net = _torch_model()
    net.load_state_dict(load_file(out))  # strict: every name matches (BatchNorm fills in num_batches_tracked)
    with torch.no_grad():
        got = net(*(torch.from_numpy(a) for a in inputs)).numpy()
    assert np.abs(expected).max() > 0.1  # (not a model that predicts zeros)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_dry_run_lists_old_and_new_shapes(keras_model_files):
    _, _, paths = keras_model_files
    result = CliRunner().invoke(cli, ["convert", paths["keras"], "x.safetensors", "--layout", "torch",
                                      "--exclude", "optimizer/*", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)["plan"]}
    assert {n: (r["new_name"], r["source_shape"], r["shape"], r["layout"]) for n, r in rows.items() if r["layout"]} == {
        "conv/kernel": ("conv.weight", [3, 3, 3, 4], [4, 3, 3, 3], "HWIO->OIHW"),
        "dw/kernel": ("dw.weight", [3, 3, 4, 2], [8, 1, 3, 3], "HWIM->(I*M)1HW"),
        "up/kernel": ("up.weight", [3, 3, 3, 8], [8, 3, 3, 3], "HWIO->OIHW"),  # [H,W,out,in] -> [in,out,H,W]
        "sep/depthwise_kernel": ("sep.depthwise_kernel", [3, 3, 3, 2], [6, 1, 3, 3], "HWIM->(I*M)1HW"),
        "sep/pointwise_kernel": ("sep.pointwise_kernel", [1, 1, 6, 4], [4, 6, 1, 1], "HWIO->OIHW"),
        "c1/kernel": ("c1.weight", [3, 3, 3], [3, 3, 3], "WIO->OIW"),
        "c3/kernel": ("c3.weight", [2, 2, 2, 2, 2], [2, 2, 2, 2, 2], "DHWIO->OIDHW"),
        "head/kernel": ("head.weight", [14, 3], [3, 14], "[in,out]->[out,in]"),
    }
    assert rows["emb/embeddings"]["new_name"] == "emb.weight" and rows["emb/embeddings"]["layout"] is None
    assert rows["bn/moving_variance"]["new_name"] == "bn.running_var"
    text = CliRunner().invoke(cli, ["convert", paths["keras"], "x.safetensors", "--layout", "torch", "--dry-run"])
    assert "[3,3,3,4] -> [4,3,3,3]" in text.output and "HWIO->OIHW" in text.output


def test_the_rule_by_name_and_rank_worked_by_hand():
    shapes = {
        "dense/kernel": (2, 3),                                        # TF1 name: transposed
        "dense/kernel/Adam": (2, 3),                                   # an optimizer slot: leaf Adam, kept
        "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE": (2, 3),  # TF2 key
        "bert/pooler/dense/kernel:0": (4, 4),                          # Keras 2 weight name
        "emb/embeddings": (10, 5),                                     # embeddings keep [vocab, dim]
        "odd/kernel": (7,),                                            # rank 1: kept
        "ein/kernel": (4, 2, 3),                                       # an EinsumDense's (class below): kept
        "dwk/depthwise_kernel": (3, 3, 4, 2),                          # Keras 2 DepthwiseConv2D: grouped, weight
        "ln/gamma": (4,), "ln/beta": (4,),
        "model/_operations/1/_kernel": (3, 2),                         # Keras 3 in a TF2 checkpoint
        "x/_private": (3, 2),                                          # an unknown leaf keeps its `_`
    }
    changes = torch_layout(shapes, {"ein/kernel": "EinsumDense"})
    assert {n: (c.name, c.shape, c.rule) for n, c in changes.items()} == {
        "dense/kernel": ("dense.weight", (3, 2), "[in,out]->[out,in]"),
        "dense/kernel/Adam": ("dense.kernel.Adam", (2, 3), None),
        "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE":
            ("model.layer_with_weights-0.weight", (3, 2), "[in,out]->[out,in]"),
        "bert/pooler/dense/kernel:0": ("bert.pooler.dense.weight", (4, 4), "[in,out]->[out,in]"),
        "emb/embeddings": ("emb.weight", (10, 5), None),
        "odd/kernel": ("odd.weight", (7,), None),
        "ein/kernel": ("ein.weight", (4, 2, 3), None),
        "dwk/depthwise_kernel": ("dwk.weight", (8, 1, 3, 3), "HWIM->(I*M)1HW"),
        "ln/gamma": ("ln.weight", (4,), None), "ln/beta": ("ln.bias", (4,), None),
        "model/_operations/1/_kernel": ("model._operations.1.weight", (2, 3), "[in,out]->[out,in]"),
        "x/_private": ("x._private", (3, 2), None),
    }
    kept = torch_layout({"dense/kernel": (2, 3)}, torch_names=False)["dense/kernel"]
    assert (kept.name, kept.shape) == ("dense/kernel", (3, 2))
    # values: depthwise [H,W,in,mult] -> [in*mult,1,H,W], output channel i*mult+m as TF orders them
    dw = np.arange(3 * 3 * 4 * 2, dtype=np.float32).reshape(3, 3, 4, 2)
    got = changes["dwk/depthwise_kernel"].apply(dw)
    for i in range(4):
        for m in range(2):
            assert np.array_equal(got[i * 2 + m, 0], dw[:, :, i, m])
    assert got.flags.c_contiguous


def test_keep_names_raw_layout_and_collisions(tmp_path):
    src = str(tmp_path / "in.npz")
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.savez(src, **{"dense/kernel": kernel, "dense/bias": np.ones(3, np.float32)})
    out = str(tmp_path / "kept.npz")
    result = CliRunner().invoke(cli, ["convert", src, out, "--layout", "torch", "--keep-names"])
    assert result.exit_code == 0, result.output
    assert np.array_equal(ckptkit.load(out)["dense/kernel"], kernel.T)
    plain = str(tmp_path / "plain.npz")
    convert(src, plain)  # without --layout: the stored layout and names
    assert np.array_equal(ckptkit.load(plain)["dense/kernel"], kernel)
    result = CliRunner().invoke(cli, ["convert", src, str(tmp_path / "x.npz"), "--keep-names"])
    assert result.exit_code == 2 and "--keep-names goes with --layout torch" in result.output
    np.savez(src, **{"d/kernel": kernel, "d/weight": kernel})
    with pytest.raises(InvalidArgumentError, match="would be written as 'd.weight'"):
        convert(src, str(tmp_path / "y.npz"), layout="torch")
    with pytest.raises(InvalidArgumentError, match="unknown layout"):
        convert(src, str(tmp_path / "y.npz"), layout="jax")


def test_raw_names_on_ls_show_and_convert(keras_model_files, tmp_path):
    _, _, paths = keras_model_files
    runner = CliRunner()
    listed = runner.invoke(cli, ["ls", "--raw-names", paths["keras"]])
    assert listed.exit_code == 0 and "layers/dense/vars/0" in listed.output and "head/kernel" not in listed.output
    assert "head/kernel" in runner.invoke(cli, ["ls", paths["keras"]]).output
    for command in ("stats", "verify"):
        result = runner.invoke(cli, [command, "--raw-names", "--json", "--include", "layers/dense/*", paths["keras"]])
        assert result.exit_code == 0, result.output
    diffed = runner.invoke(cli, ["diff", "--raw-names", "--json", paths["keras"], paths["weights"]])
    assert diffed.exit_code == 0 and "layers/dense/vars/0" not in diffed.output  # equal under raw names too
    shown = runner.invoke(cli, ["show", "--raw-names", "--json", paths["weights"], "layers/dense/vars/1"])
    assert shown.exit_code == 0, shown.output
    with ckptkit.CheckpointReader(paths["weights"]) as reader:
        assert json.loads(shown.output)["values"] == reader.get_tensor("head/bias").tolist()
    out = str(tmp_path / "raw.safetensors")
    converted = runner.invoke(cli, ["convert", "--raw-names", paths["weights"], out])
    assert converted.exit_code == 0, converted.output
    with ckptkit.CheckpointReader(paths["weights"], raw_names=True) as raw:
        assert sorted(ckptkit.load(out)) == sorted(raw)


def test_a_tf2_checkpoint_of_a_keras_3_model_through_friendly_names_and_rename(tf, tmp_path):
    """TensorFlow -> PyTorch from tf.train.Checkpoint: the friendly names are the model's
    object paths (a Sequential's layers at model/_functional/_operations/N, N=0 the Input;
    Conv2D's and Dense's kernel at `_kernel`), --rename maps them onto an nn.Sequential
    of the same indices, and the torch model predicts what Keras predicts."""
    import torch  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    keras = tf.keras
    model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.BatchNormalization(momentum=BN_MOMENTUM),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    model.compile(keras.optimizers.Adam(0.05), "mse")
    rng = np.random.default_rng(3)
    model.fit(rng.random((8, 6, 6, 3)), rng.random((8, 3)), epochs=2, verbose=0)
    prefix, out = str(tmp_path / "ckpt"), str(tmp_path / "model.safetensors")
    tf.train.Checkpoint(model=model).write(prefix)
    result = CliRunner().invoke(cli, ["convert", prefix, out, "--friendly-names", "--layout", "torch",
                                      "--exclude", "model/optimizer/*",
                                      "--rename", r"model\._functional\._operations\.(\d+)\.(.+)", r"\1.\2"])
    assert result.exit_code == 0, result.output

    class ChannelsFirst(nn.Module):  # index 0, where Keras has its Input
        def forward(self, x):
            return x.permute(0, 3, 1, 2)

    class GlobalAverage(nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    net = nn.Sequential(ChannelsFirst(), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=BN_EPS), GlobalAverage(),
                        nn.Linear(4, 3)).eval()
    net.load_state_dict(load_file(out))
    x = rng.random((5, 6, 6, 3)).astype(np.float32)
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
