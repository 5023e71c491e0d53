"""Sharded jax loads (`ckptkit.load(..., framework="jax", sharding=...)`,
`reader.get_tensor(name, sharding=...)`) of a TF-written checkpoint on 4 host devices:
the arrays equal TF's values, laid out as asked, and every device's window is read
alone (each byte of a sharded tensor read once, no read larger than one window's run).

jax takes its device count from XLA_FLAGS when it starts, so the load runs in a
subprocess (jax_worker.py) started with --xla_force_host_platform_device_count=4.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from helpers import REPO, tf_values

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jax_worker.py")


@pytest.mark.distributed
@pytest.mark.parametrize("where", ["local", "s3"])
def test_sharded_jax_load_reads_each_devices_window(tf, tf_sharded, tmp_path, where, request):
    path, args = tf_sharded, []
    if where == "s3":  # the same windows as range requests
        import fsspec  # noqa: PLC0415 - the remote tests' extra

        options = request.getfixturevalue("s3")
        fs = fsspec.filesystem("s3", **options)
        for name in os.listdir(os.path.dirname(tf_sharded)):
            fs.put(os.path.join(os.path.dirname(tf_sharded), name), f"bucket/jax/{name}")
        path, args = "s3://bucket/jax/model.ckpt", [json.dumps(options)]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, WORKER, path, os.fspath(tmp_path), *args], env=env, check=True, timeout=300)
    expected = tf_values(tf, tf_sharded)
    with np.load(tmp_path / "loaded.npz") as f:
        loaded = {k: f[k] for k in f.files}
    # jax holds no 64-bit types without jax_enable_x64: load leaves counts and step out
    assert sorted(loaded) == ["bias", "half", "part", "wide", "wide_by_rows"]
    np.testing.assert_array_equal(loaded.pop("wide_by_rows"), expected["wide"])
    for key, value in loaded.items():
        want = expected[key].astype(np.float64) if expected[key].dtype == ml_dtypes.bfloat16 else expected[key]
        np.testing.assert_array_equal(value, want, err_msg=key)

    with open(tmp_path / "shards.json") as f:
        shards = json.load(f)
    assert shards["wide"] == [[[0, 16], [1024 * d, 1024 * (d + 1)]] for d in range(4)]
    assert shards["part"] == [[[3 * d, 3 * (d + 1)], [0, 2048]] for d in range(4)]
    assert shards["bias"] == [[[0, 1024]]] * 4

    with open(tmp_path / "reads.json") as f:
        reads = json.load(f)
    by_tensor: dict[str, list[int]] = {}
    for key, _, size in reads:
        name = next(n for n in ("wide", "part", "bias", "half") if n in key)
        by_tensor.setdefault(name, []).append(size)
    # every byte of each tensor read once, in runs no longer than a device's window allows
    assert sum(by_tensor["wide"]) == expected["wide"].nbytes and max(by_tensor["wide"]) == 1024 * 4
    assert sum(by_tensor["part"]) == expected["part"].nbytes and max(by_tensor["part"]) <= 3 * 2048 * 4
    assert by_tensor["bias"] == [expected["bias"].nbytes]  # replicated on 4 devices, read once

    with open(tmp_path / "errors.json") as f:  # a sharding that does not fit the tensor
        assert json.load(f)["bias"].startswith(f"{path}: key 'bias': cannot lay out shape [1024] by")


def test_sharding_errors_name_the_tensor(tf_sharded):
    import jax  # noqa: PLC0415 - the framework tests' extra
    from jax.sharding import SingleDeviceSharding  # noqa: PLC0415

    import ckptkit  # noqa: PLC0415

    one = SingleDeviceSharding(jax.devices()[0])
    with pytest.raises(ckptkit.InvalidArgumentError, match="key 'wide': sharding= builds jax arrays"):
        ckptkit.CheckpointReader(tf_sharded).get_tensor("wide", sharding=one)
    with ckptkit.CheckpointReader(tf_sharded, framework="jax") as reader:
        np.testing.assert_array_equal(np.asarray(reader.get_tensor("wide", sharding=one)), reader.get_slice("wide")[:])
        with pytest.raises(ckptkit.UnsupportedError, match="key 'counts': jax would narrow int64"):
            reader.get_tensor("counts", sharding=one)
