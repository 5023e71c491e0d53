"""ckptkit.dcp in one process (dcp.load/save without a process group): checksums,
renames and the errors each plug-in raises, each naming the file and key."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
from helpers import tf_values
from torch.distributed.checkpoint.api import CheckpointException

import ckptkit
from ckptkit.dcp import StorageReader, StorageWriter
from ckptkit.errors import InvalidArgumentError
from ckptkit.formats import naming
from ckptkit.integrations.dcp import renamer

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


@pytest.fixture
def sharded_copy(tf_sharded, tmp_path) -> str:
    shutil.copytree(os.path.dirname(tf_sharded), tmp_path / "ckpt")
    return os.fspath(tmp_path / "ckpt" / "model.ckpt")


def test_plain_tensors_load_tf_values(tf, tf_sharded):
    expected = tf_values(tf, tf_sharded)
    state = {"part": torch.zeros(12, 2048), "step": torch.zeros((), dtype=torch.int64),
             "half": torch.zeros(8, 512, dtype=torch.bfloat16)}
    dcp.load(state, storage_reader=StorageReader(tf_sharded))
    np.testing.assert_array_equal(state["part"].numpy(), expected["part"])
    assert state["step"].item() == expected["step"]
    np.testing.assert_array_equal(state["half"].to(torch.float64).numpy(), expected["half"].astype(np.float64))


def test_metadata_lists_partitioned_variables_as_their_slices(tf_sharded):
    metadata = StorageReader(tf_sharded).read_metadata()
    part = metadata.state_dict_metadata["part"]
    assert [(list(c.offsets), list(c.sizes)) for c in part.chunks] == \
        [([0, 0], [4, 2048]), ([4, 0], [4, 2048]), ([8, 0], [4, 2048])]
    assert list(part.size) == [12, 2048] and part.properties.dtype == torch.float32
    assert metadata.state_dict_metadata["half"].properties.dtype == torch.bfloat16
    assert len(metadata.state_dict_metadata["wide"].chunks) == 1


def test_a_damaged_tensor_read_whole_fails_its_checksum(sharded_copy):
    with ckptkit.CheckpointReader(sharded_copy) as reader:
        entry = reader.entry("bias")
        data = naming.data_filename(sharded_copy, entry.shard_id, reader.num_shards)
    with open(data, "r+b") as f:
        f.seek(entry.offset + 100)
        byte = f.read(1)
        f.seek(entry.offset + 100)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(CheckpointException, match="key 'bias': checksum mismatch"):
        dcp.load({"bias": torch.zeros(1024)}, storage_reader=StorageReader(sharded_copy))


def test_rename_forms():
    assert renamer({"a": "x"})("a") == "x" and renamer({"a": "x"})("b") == "b"
    assert renamer(lambda n: None if n == "b" else n.upper())("a") == "A"
    assert renamer(lambda n: None)("b") == "b"
    rules = renamer([("dense/(.*)", r"fc.\1"), (".*", "rest")])
    assert rules("dense/kernel") == "fc.kernel" and rules("bias") == "rest"
    with pytest.raises(InvalidArgumentError, match="not a \\(regex, replacement\\) pair"):
        renamer([("a", "b", "c")])
    with pytest.raises(InvalidArgumentError, match="bad regex"):
        renamer([("(", "b")])
    with pytest.raises(InvalidArgumentError, match=r"key 'w': rename replacement '\\\\2' for '\(w\)'"):
        renamer([("(w)", r"\2")])("w")


def test_two_names_renamed_to_one_key_are_refused(tf_sharded):
    with pytest.raises(InvalidArgumentError, match="key 'bias': rename maps both 'bias' and 'counts'"):
        StorageReader(tf_sharded, rename={"counts": "bias"}).read_metadata()


def test_saving_objects_that_are_not_tensors_is_refused(tmp_path):
    prefix = os.fspath(tmp_path / "m")
    with pytest.raises(CheckpointException, match="key 'epoch': a TF checkpoint stores tensors only"):
        dcp.save({"w": torch.ones(2), "epoch": 5}, storage_writer=StorageWriter(prefix))
    assert os.listdir(tmp_path) == []


def test_an_existing_checkpoint_is_replaced_only_with_overwrite(sharded_copy):
    before = ckptkit.load(sharded_copy)
    with pytest.raises(CheckpointException, match="a checkpoint already exists here"):
        dcp.save({"w": torch.ones(2)}, storage_writer=StorageWriter(sharded_copy))
    assert ckptkit.load(sharded_copy).keys() == before.keys()
    dcp.save({"w": torch.ones(2)}, storage_writer=StorageWriter(sharded_copy, overwrite=True))
    assert list(ckptkit.load(sharded_copy)) == ["w"]
    assert sorted(os.listdir(os.path.dirname(sharded_copy))) == \
        ["checkpoint", "model.ckpt.data-00000-of-00001", "model.ckpt.index"]  # the old .meta went with it


def test_writer_refuses_urls_and_checkpoint_ids():
    with pytest.raises(CheckpointException, match="StorageWriter writes checkpoints on local"):
        dcp.save({"w": torch.ones(2)}, storage_writer=StorageWriter("memory://x/m"))
    assert StorageReader.validate_checkpoint_id("/nonexistent/model.ckpt") is False
    assert StorageWriter.validate_checkpoint_id("/some/where/model.ckpt") is True


def test_a_tf2_checkpoint_loads_under_renamed_keys(tf, tmp_path):
    layer = tf.Variable(np.arange(12, dtype=np.float32).reshape(3, 4))
    path = tf.train.Checkpoint(encoder=tf.Module(), kernel=layer).write(os.fspath(tmp_path / "tf2" / "ckpt"))
    reader = StorageReader(path, rename=[(r"(.*)/\.ATTRIBUTES/VARIABLE_VALUE", r"\1")])
    metadata = reader.read_metadata()
    # the object graph (a string) is not a tensor torch can hold: left out of the metadata
    assert sorted(metadata.state_dict_metadata) == ["kernel"]
    state = {"kernel": torch.zeros(3, 4)}
    dcp.load(state, storage_reader=StorageReader(path, rename=[(r"(.*)/\.ATTRIBUTES/VARIABLE_VALUE", r"\1")]))
    np.testing.assert_array_equal(state["kernel"].numpy(), layer.numpy())


def test_one_reader_loads_a_checkpoint_replaced_between_loads(tmp_path):
    prefix = os.fspath(tmp_path / "m")
    ckptkit.save(prefix, {"w": np.zeros((2, 3), np.float32)})
    reader = StorageReader(prefix)
    state = {"w": torch.ones(2, 3)}
    dcp.load(state, storage_reader=reader)
    assert state["w"].sum() == 0
    ckptkit.save(prefix, {"w": np.full((2, 3), 5, np.float32), "b": np.ones(4, np.float32)})
    state = {"w": torch.zeros(2, 3), "b": torch.zeros(4)}
    dcp.load(state, storage_reader=reader)  # sees the new checkpoint's tensors, "b" among them
    assert state["w"].sum() == 30 and state["b"].sum() == 4
