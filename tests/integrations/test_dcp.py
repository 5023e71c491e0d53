"""ckptkit.dcp: torch.distributed.checkpoint loads TF-written checkpoints into DTensors
and saves TF checkpoints, on 2 and 4 CPU ranks (gloo) that each test starts itself
(dcp_worker.py: subprocesses meeting in a FileStore). TF is the oracle: the values
loaded are TF's reader's values, and what dcp.save writes, TF reads.

Marked `distributed` (each test starts torch in several processes: seconds each); CI
runs them like every other test.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal

import ml_dtypes
import numpy as np
import pytest
from dcp_worker import launch
from helpers import tf_values
from sharded_cases import SHARDED

from ckptkit.formats import naming
from ckptkit.storage.files import TEMP_MARKER, sweep_stale_temps

pytestmark = pytest.mark.distributed


def _job(tmp_path, mode: str, path: str, tensors: dict, **extra) -> dict:
    specs = [{"key": k, "shape": list(shape), "dtype": dtype, "placement": placement}
             for k, (shape, dtype, placement) in tensors.items()]
    return {"mode": mode, "path": path, "out": os.fspath(tmp_path / f"out-{mode}"), "tensors": specs, **extra}


def _results(job: dict, world: int) -> list[tuple[dict, dict]]:
    """[(local tensors, facts)] of each rank."""
    found = []
    for r in range(world):
        with np.load(os.path.join(job["out"], f"rank{r}.npz")) as f:
            arrays = {k: f[k] for k in f.files}
        with open(os.path.join(job["out"], f"rank{r}.json")) as f:
            found.append((arrays, json.load(f)))
    return found


def _window(spec: dict, offsets: list[int], local: np.ndarray) -> tuple[slice, ...]:
    return tuple(slice(o, o + n) for o, n in zip(offsets, local.shape, strict=True))


def _as_float64(value: np.ndarray) -> np.ndarray:
    return value.astype(np.float64) if value.dtype == ml_dtypes.bfloat16 else value


def _check_loaded(job: dict, world: int, expected: dict, keys: dict[str, str]) -> list[int]:
    """Every rank's local tensors equal TF's values at its window; returns each rank's
    data bytes read."""
    read = []
    held = dict.fromkeys(keys, 0)  # elements of each tensor held over all ranks
    for rank, (arrays, facts) in enumerate(_results(job, world)):
        for spec in job["tensors"]:
            key = spec["key"]
            local = arrays[key]
            full = _as_float64(expected[keys[key]])
            window = _window(spec, facts["offsets"][key], local)
            assert local.dtype == full.dtype, key
            np.testing.assert_array_equal(local, full[window], err_msg=f"rank {rank}, {key}")
            held[key] += local.size
        read.append(facts["data_bytes"])
    for spec in job["tensors"]:  # a sharded tensor's pieces make it whole
        if spec["placement"].startswith("shard"):
            assert held[spec["key"]] == expected[keys[spec["key"]]].size, spec["key"]
    return read


def _local_bytes(expected: dict, world: int) -> int:
    """Bytes of data each rank needs: 1/world of each sharded tensor, all of the others."""
    total = 0
    for name, (_, _, placement) in SHARDED.items():
        nbytes = expected[name].nbytes
        total += nbytes // world if placement.startswith("shard") else nbytes
    return total


@pytest.mark.parametrize("world", [2, 4])
def test_dtensors_load_tf_values_each_rank_reading_its_share(tf, tf_sharded, tmp_path, world):
    expected = tf_values(tf, tf_sharded)
    job = _job(tmp_path, "load", tf_sharded, SHARDED)
    assert launch(job, world) == [0] * world
    read = _check_loaded(job, world, expected, {k: k for k in SHARDED})
    need = _local_bytes(expected, world)
    whole = sum(v.nbytes for v in expected.values())
    for got in read:
        # the rank's own windows, plus what lies between runs closer than a page (read with
        # them, as the kernel reads whole pages): the narrow bfloat16 tensor, a few KiB
        assert need <= got <= need + 16 * 1024, (got, need, whole)
        assert got < 0.6 * whole if world == 2 else got < 0.3 * whole


def test_rename_maps_tf_names_to_state_dict_keys(tf, tf_sharded, tmp_path):
    expected = tf_values(tf, tf_sharded)
    tensors = {f"model.{k}": v for k, v in SHARDED.items() if k in ("part", "step")}
    job = _job(tmp_path, "load", tf_sharded, tensors, rename=[["(part|step)", r"model.\1"]])
    assert launch(job, 2) == [0, 0]
    _check_loaded(job, 2, expected, {k: k.removeprefix("model.") for k in tensors})


def test_dtensors_load_from_s3(tf, tf_sharded, tmp_path, s3):
    import fsspec  # noqa: PLC0415 - the remote tests' extra

    expected = tf_values(tf, tf_sharded)
    fs = fsspec.filesystem("s3", **s3)
    directory = os.path.dirname(tf_sharded)
    for name in os.listdir(directory):
        fs.put(os.path.join(directory, name), f"bucket/dcp/{name}")
    url = "s3://bucket/dcp/model.ckpt"
    job = _job(tmp_path, "load", url, SHARDED, storage_options=s3)
    assert launch(job, 2) == [0, 0]
    read = _check_loaded(job, 2, expected, {k: k for k in SHARDED})
    need = _local_bytes(expected, 2)
    assert all(need <= got <= need + 16 * 1024 for got in read), read


# --------------------------------------------------------------------------- saving

SAVED = {
    "w": ((8, 6), "float32", "shard0"),
    "v": ((4, 8), "float64", "shard1"),
    "b": ((4, 4), "bfloat16", "shard0"),
    "r": ((5,), "float32", "replicate"),
    "p": ((3, 3), "int32", "plain"),
    "s": ((), "int64", "plain"),
    "u": ((5, 3), "float32", "shard0"),  # uneven: rows 2, 2, 1 and none on 4 ranks; 3 and 2 on 2
}


def _values(tmp_path) -> tuple[str, dict]:
    rng = np.random.default_rng(7)
    values = {}
    for key, (shape, dtype, _) in SAVED.items():
        value = rng.integers(-1000, 1000, shape) if dtype.startswith("int") else rng.standard_normal(shape)
        values[key] = value.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    path = os.fspath(tmp_path / "values.npz")
    np.savez(path, **{k: v.astype(np.float32) if v.dtype == ml_dtypes.bfloat16 else v for k, v in values.items()})
    return path, values


def test_dcp_save_writes_a_checkpoint_tf_reads(tf, tf1, tmp_path):
    values_path, values = _values(tmp_path)
    prefix = os.fspath(tmp_path / "saved" / "model.ckpt")
    job = _job(tmp_path, "save", prefix, SAVED, values=values_path)
    assert launch(job, 4) == [0] * 4

    # one data shard per rank, the index listing each sharded tensor's slices
    assert naming.existing_data_files(prefix) == [naming.data_filename(prefix, r, 4) for r in range(4)]
    assert not [n for n in os.listdir(os.path.dirname(prefix)) if TEMP_MARKER in n]
    # each element stored once: replicated and plain tensors are not written by every rank
    assert sum(os.path.getsize(f) for f in naming.existing_data_files(prefix)) == \
        sum(v.nbytes for v in values.values())
    reader = tf.train.load_checkpoint(prefix)
    assert sorted(reader.get_variable_to_shape_map()) == sorted(SAVED)
    for key, value in values.items():
        got = reader.get_tensor(key)
        assert got.dtype == value.dtype, key
        np.testing.assert_array_equal(got, value, err_msg=key)

    import ckptkit  # noqa: PLC0415

    with ckptkit.CheckpointReader(prefix) as ours:
        assert len(ours.slices("w")) == 4 and len(ours.slices("v")) == 4 and ours.slices("r") == []
        assert [s.spec() for s in ours.slices("u")] == ["0,2:-", "2,2:-", "4,1:-"]

    # TF1's Saver restores a partitioned variable (2 partitions) from 4 slices of another tiling
    with tf.Graph().as_default():
        w = tf1.get_variable("w", shape=[8, 6], dtype=tf.float32, partitioner=tf1.fixed_size_partitioner(2))
        saver = tf1.train.Saver([w])
        with tf1.Session() as sess:
            saver.restore(sess, prefix)
            np.testing.assert_array_equal(sess.run(tf.concat(list(w), axis=0)), values["w"])

    # and dcp.load through ckptkit reads it back on another number of ranks
    back = _job(tmp_path, "load", prefix, SAVED)
    assert launch(back, 2) == [0, 0]
    _check_loaded(back, 2, {k: np.asarray(v) for k, v in values.items()}, {k: k for k in SAVED})


def _digests(directory: str) -> dict[str, str]:
    return {name: hashlib.sha256(open(os.path.join(directory, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(directory))}


def test_a_rank_killed_mid_save_leaves_the_old_checkpoint(tf, tf_sharded, tmp_path):
    directory = tmp_path / "run"
    directory.mkdir()
    for name in os.listdir(os.path.dirname(tf_sharded)):
        with open(os.path.join(os.path.dirname(tf_sharded), name), "rb") as src:
            (directory / name).write_bytes(src.read())
    prefix = os.fspath(directory / "model.ckpt")
    before = _digests(os.fspath(directory))
    expected = tf_values(tf, prefix)

    values_path, _ = _values(tmp_path)
    job = _job(tmp_path, "save", prefix, SAVED, values=values_path, overwrite=True, kill_after_bytes=1)
    codes = launch(job, 2, timeout=120)
    assert codes[1] == -signal.SIGKILL
    assert codes[0] != 0  # its save failed: the coordinator never published

    # every file of the old checkpoint as it was (the dead rank's temp shard aside), and TF reads it
    after = _digests(os.fspath(directory))
    leftovers = [n for n in after if TEMP_MARKER in n]
    assert leftovers  # the ranks did write (under temp names) before one died
    assert {n: d for n, d in after.items() if n not in leftovers} == before
    got = tf_values(tf, prefix)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    # the next ckptkit writer in the directory sweeps what the dead ranks left
    sweep_stale_temps(os.fspath(directory))
    assert _digests(os.fspath(directory)) == before
