"""Path semantics, each checked against TF 2.21.

* A save prefix that is an existing directory: TF's Saver writes `DIR.index` (and
  `DIR.data-*`, `DIR.meta`) beside the directory and the state file in its parent;
  `Saver.restore(sess, DIR)` and `NewCheckpointReader(DIR)` read `DIR.index` back, while
  `tf.train.load_checkpoint(DIR)` reads the directory's latest checkpoint (and raises
  ValueError when the directory has none). ckptkit: `Saver.save` writes what TF writes;
  `NewCheckpointReader(DIR)` (as_prefix) reads `DIR.index` first, as TF; `load`,
  `load_checkpoint`, `CheckpointReader` and the CLI read the directory's latest checkpoint,
  and where the directory has none, `DIR.index` beside it (TF raises there).
* Sharded V1 checkpoints: TF's sharded V1 Saver writes `model.ckpt-0000N-of-00002` and
  records `model.ckpt-?????-of-00002`; that pattern restores in TF and reads in ckptkit.
* TF Serving session_bundle exports (`export-0000N-of-0000M` + `export.meta`, often shipped
  without their state file or with one naming the directory they were exported to): the
  directory opens as that V1 checkpoint, as TF reads the set by its pattern.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import ckptkit
from ckptkit.cli import cli
from ckptkit.errors import InvalidArgumentError


def _tf_save(tf1, prefix: str, value: float) -> str:
    """Save `v = value` (float32 scalar) with TF's Saver at `prefix`; return TF's path."""
    graph = tf1.Graph()
    with graph.as_default():
        tf1.get_variable("v", initializer=np.float32(value))
        saver = tf1.train.Saver()
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            return saver.save(sess, prefix)


def _tf_restore(tf1, prefix: str) -> float:
    """`v` as TF's Saver.restore(sess, prefix) reads it."""
    graph = tf1.Graph()
    with graph.as_default():
        v = tf1.get_variable("v", initializer=np.float32(-1.0))
        saver = tf1.train.Saver()
        with tf1.Session() as sess:
            saver.restore(sess, prefix)
            return float(sess.run(v))


# --------------------------------------------------------------------------- prefix = directory

def test_tf_saves_beside_an_existing_directory_and_ckptkit_reads_it(tf, tf1, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "events.log").write_text("not a checkpoint")
    assert _tf_save(tf1, str(run), 3.0) == str(run)
    assert {"run.index", "run.meta", "checkpoint"} <= set(os.listdir(tmp_path))
    assert _tf_restore(tf1, str(run)) == 3.0
    assert float(tf.compat.v1.train.NewCheckpointReader(str(run)).get_tensor("v")) == 3.0
    with pytest.raises(ValueError):  # TF: a directory means its latest checkpoint; it has none
        tf.train.load_checkpoint(str(run))

    assert ckptkit.NewCheckpointReader(str(run)).prefix == str(run)
    assert float(ckptkit.load(str(run))["v"]) == 3.0  # ckptkit: falls back to run.index
    assert float(ckptkit.Saver().restore(str(run))["v"]) == 3.0
    assert ckptkit.latest_checkpoint(str(tmp_path)) == tf.train.latest_checkpoint(str(tmp_path))
    res = CliRunner().invoke(cli, ["ls", str(run), "--json"])
    assert res.exit_code == 0, res.output
    assert '"v"' in res.output


def test_ckptkit_saves_beside_an_existing_directory_as_tf(tf, tf1, tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for top in (ours, theirs):
        (top / "run").mkdir(parents=True)
    _tf_save(tf1, str(theirs / "run"), 3.0)
    got = ckptkit.Saver().save({"v": np.float32(3.0)}, str(ours / "run"))
    assert got == str(ours / "run")
    assert sorted(os.listdir(ours)) == sorted(os.listdir(theirs))
    assert os.listdir(ours / "run") == []
    assert _tf_restore(tf1, str(ours / "run")) == 3.0
    assert float(tf.compat.v1.train.NewCheckpointReader(str(ours / "run")).get_tensor("v")) == 3.0
    assert float(ckptkit.Saver().restore(str(ours / "run"))["v"]) == 3.0
    assert ckptkit.checkpoint_exists(str(ours / "run"))


def test_directory_with_its_own_checkpoints_and_an_index_beside_it(tf, tf1, tmp_path):
    """`run.index` beside `run/`, and `run/` holding a checkpoint of its own: TF's readers
    disagree, and ckptkit's follow each of them."""
    run = tmp_path / "run"
    run.mkdir()
    _tf_save(tf1, str(run), 3.0)
    _tf_save(tf1, str(run / "inner"), 7.0)
    assert _tf_restore(tf1, str(run)) == 3.0
    assert float(tf.compat.v1.train.NewCheckpointReader(str(run)).get_tensor("v")) == 3.0
    assert float(tf.train.load_checkpoint(str(run)).get_tensor("v")) == 7.0

    assert float(ckptkit.NewCheckpointReader(str(run)).get_tensor("v")) == 3.0
    assert float(ckptkit.CheckpointReader(str(run), as_prefix=True).get_tensor("v")) == 3.0
    assert float(ckptkit.load_checkpoint(str(run)).get_tensor("v")) == 7.0
    assert float(ckptkit.load(str(run))["v"]) == 7.0
    assert float(ckptkit.Saver().restore(str(run))["v"]) == 3.0  # TF's Saver.restore: run.index


def test_trailing_slash_names_the_directory_only(tf1, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _tf_save(tf1, str(run), 3.0)
    with pytest.raises(ckptkit.CheckpointError):
        ckptkit.load(str(run) + os.sep)


# --------------------------------------------------------------------------- sharded V1

@pytest.fixture(scope="module")
def sharded_v1(tf, tmp_path_factory):
    """A sharded V1 checkpoint written by TF's Saver(sharded=True, write_version=V1) over
    two CPU devices: (recorded pattern, directory, values)."""
    tf1 = tf.compat.v1
    directory = tmp_path_factory.mktemp("sharded_v1")
    values = {"a": np.array([1.0, 2.0], np.float32), "b": np.int64(5)}
    graph = tf1.Graph()
    with graph.as_default():
        with tf.device("/cpu:0"):
            tf1.get_variable("a", initializer=values["a"])
        with tf.device("/cpu:1"):
            tf1.get_variable("b", initializer=values["b"])
        saver = tf1.train.Saver(sharded=True, write_version=tf1.train.SaverDef.V1)
        with tf1.Session(config=tf1.ConfigProto(device_count={"CPU": 2})) as sess:
            sess.run(tf1.global_variables_initializer())
            path = saver.save(sess, str(directory / "model.ckpt"))
    return path, str(directory), values


def test_tf_writes_sharded_v1_under_the_pattern(tf, sharded_v1):
    path, directory, values = sharded_v1
    assert path == os.path.join(directory, "model.ckpt-?????-of-00002")
    assert sorted(os.listdir(directory)) == ["checkpoint", "model.ckpt-00000-of-00002",
                                             "model.ckpt-00001-of-00002", "model.ckpt.meta"]
    assert tf.train.latest_checkpoint(directory) == path
    reader = tf.train.load_checkpoint(path)
    assert sorted(reader.get_variable_to_shape_map()) == sorted(values)


def test_sharded_v1_pattern_reads_like_tf(tf, sharded_v1):
    path, directory, values = sharded_v1
    tf_reader = tf.train.load_checkpoint(path)
    for form in (path, directory, os.path.join(directory, "model.ckpt-00001-of-00002"),
                 os.path.join(directory, "model.ckpt")):
        with ckptkit.CheckpointReader(form) as reader:
            assert reader.prefix == path, form
            assert reader.format_version == 1
            assert reader.get_variable_to_shape_map() == tf_reader.get_variable_to_shape_map()
            assert {k: v.name for k, v in reader.get_variable_to_dtype_map().items()} == {
                k: v.name for k, v in tf_reader.get_variable_to_dtype_map().items()}
    got = ckptkit.load(path)
    assert sorted(got) == sorted(values)
    for name, want in values.items():
        assert np.array_equal(got[name], want) and got[name].dtype == np.asarray(want).dtype
        assert np.array_equal(got[name], tf_reader.get_tensor(name))
    assert ckptkit.latest_checkpoint(directory) == path
    assert ckptkit.list_variables(path) == [(k, list(v)) for k, v in tf.train.list_variables(path)]
    res = CliRunner().invoke(cli, ["meta", path, "--json"])  # the set's .meta: model.ckpt.meta, as TF names it
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["path"] == os.path.join(directory, "model.ckpt.meta")


def test_sharded_v1_pattern_restores_like_tf(tf, sharded_v1):
    path, _, values = sharded_v1
    tf1 = tf.compat.v1
    graph = tf1.Graph()
    with graph.as_default():
        with tf.device("/cpu:0"):
            a = tf1.get_variable("a", initializer=np.zeros(2, np.float32))
        with tf.device("/cpu:1"):
            b = tf1.get_variable("b", initializer=np.int64(0))
        saver = tf1.train.Saver(sharded=True, write_version=tf1.train.SaverDef.V1)
        with tf1.Session(config=tf1.ConfigProto(device_count={"CPU": 2})) as sess:
            saver.restore(sess, path)
            tf_values = {"a": sess.run(a), "b": sess.run(b)}
    assert ckptkit.checkpoint_exists(path)
    got = ckptkit.Saver().restore(path)
    assert sorted(got) == sorted(tf_values)
    for name, want in tf_values.items():
        assert np.array_equal(got[name], want)
    assert ckptkit.Saver(var_list={"a": "a_restored"}).restore(path)["a_restored"].tolist() == [1.0, 2.0]
    # TF's testBasics (V1): the count wildcarded too restores the set
    both = path.replace("-of-00002", "-of-?????")
    with graph.as_default(), tf1.Session(config=tf1.ConfigProto(device_count={"CPU": 2})) as sess:
        saver.restore(sess, both)
        assert sess.run(a).tolist() == tf_values["a"].tolist()
    assert ckptkit.checkpoint_exists(both)
    assert {k: v.tolist() for k, v in ckptkit.Saver().restore(both).items()} == {
        k: v.tolist() for k, v in tf_values.items()}
    res = CliRunner().invoke(cli, ["verify", path])
    assert res.exit_code == 0, res.output


def test_sharded_v1_pattern_with_wildcarded_count_over_two_sets_is_ambiguous(sharded_v1, tmp_path):
    path, directory, _ = sharded_v1
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    shutil.copy(copy / "model.ckpt-00000-of-00002", copy / "model.ckpt-00000-of-00003")
    with pytest.raises(InvalidArgumentError, match=r"2 V1 checkpoints \(-of-00002, -of-00003\)"):
        ckptkit.load(str(copy / "model.ckpt-?????-of-?????"))
    assert sorted(ckptkit.load(str(copy / "model.ckpt-?????-of-00002"))) == ["a", "b"]


# --------------------------------------------------------------------------- session_bundle exports

def _save_v1(tf1, prefix: str, values: dict, *, sharded: bool) -> str:
    """TF1's Saver(write_version=V1) over two CPU devices (one shard each when sharded),
    with its .meta, as TF Serving's old session_bundle exporter wrote `export`."""
    graph = tf1.Graph()
    with graph.as_default():
        for i, (name, value) in enumerate(values.items()):
            with tf1.device(f"/cpu:{i % 2}"):
                tf1.get_variable(name, initializer=value)
        saver = tf1.train.Saver(sharded=sharded, write_version=tf1.train.SaverDef.V1)
        with tf1.Session(config=tf1.ConfigProto(device_count={"CPU": 2})) as sess:
            sess.run(tf1.global_variables_initializer())
            return saver.save(sess, prefix)


SESSION_BUNDLE_VALUES = {"a": np.array([0.5, 1.5], np.float32), "b": np.arange(6, dtype=np.int64).reshape(2, 3)}


@pytest.fixture(scope="module")
def session_bundles(tf, tmp_path_factory) -> dict[str, str]:
    """{variant: export directory}: `export-0000N-of-00002` + `export.meta` written by TF's
    sharded V1 Saver, then as TF Serving ships such exports: without the `checkpoint` state
    file, with one naming the directory it was exported to (TF Serving's testdata:
    `/tmp/half_plus_two/00000123/export`), moved away from the directory its state file names."""

    root = tmp_path_factory.mktemp("session_bundle")
    written = root / "written" / "00000123"
    written.mkdir(parents=True)
    path = _save_v1(tf.compat.v1, str(written / "export"), SESSION_BUNDLE_VALUES, sharded=True)
    assert path == str(written / "export-?????-of-00002")
    assert sorted(os.listdir(written)) == ["checkpoint", "export-00000-of-00002", "export-00001-of-00002",
                                           "export.meta"]
    out = {"written": str(written)}
    for variant in ("no_state_file", "stale_state_file", "moved"):
        out[variant] = str(root / variant / "00000123")
        shutil.copytree(written, out[variant])
    os.remove(os.path.join(out["no_state_file"], "checkpoint"))
    with open(os.path.join(out["stale_state_file"], "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "/tmp/half_plus_two/00000123/export"\n'
                'all_model_checkpoint_paths: "/tmp/half_plus_two/00000123/export"\n')
    moved_from = root / "moved_from" / "00000123"
    shutil.copytree(written, moved_from)
    with open(moved_from / "checkpoint") as f:  # its state file names moved_from/, then moved_from/ goes
        state = f.read().replace(str(written), str(moved_from))
    with open(os.path.join(out["moved"], "checkpoint"), "w") as f:
        f.write(state)
    shutil.rmtree(moved_from)
    return out


@pytest.mark.parametrize("variant", ["written", "no_state_file", "stale_state_file", "moved"])
def test_session_bundle_export_opens_as_its_v1_checkpoint(tf, session_bundles, variant):
    directory = session_bundles[variant]
    pattern = os.path.join(directory, "export-?????-of-00002")
    tf_reader = tf.train.load_checkpoint(pattern)  # TF reads the set by its pattern, wherever it is
    with ckptkit.CheckpointReader(directory) as reader:
        assert reader.prefix == pattern and reader.format_version == 1
        assert reader.get_variable_to_shape_map() == tf_reader.get_variable_to_shape_map()
    got = ckptkit.load(directory)
    assert sorted(got) == sorted(SESSION_BUNDLE_VALUES)
    for name, want in SESSION_BUNDLE_VALUES.items():
        assert got[name].dtype == want.dtype and np.array_equal(got[name], tf_reader.get_tensor(name))
    runner = CliRunner()
    ls = runner.invoke(cli, ["ls", directory, "--json"])
    assert ls.exit_code == 0, ls.output
    assert {t["name"] for t in json.loads(ls.stdout)["tensors"]} == set(SESSION_BUNDLE_VALUES)
    show = runner.invoke(cli, ["show", directory, "b", "--json"])
    assert show.exit_code == 0, show.output
    verify = runner.invoke(cli, ["verify", directory])
    assert verify.exit_code == 0 and verify.stdout.startswith("OK: 2 tensors"), verify.output
    meta = runner.invoke(cli, ["meta", directory, "--json"])
    assert meta.exit_code == 0, meta.output
    summary = json.loads(meta.stdout)
    assert summary["path"] == os.path.join(directory, "export.meta")
    assert {v["name"] for v in summary["variables"]} == set(SESSION_BUNDLE_VALUES)
    if variant == "stale_state_file":  # the note says which checkpoint opened, and why
        assert "the only checkpoint in" in ls.stderr


def test_single_file_v1_export_with_meta_opens(tf, tmp_path):
    """Non-sharded V1 (`export` + `export.meta`, as TF Serving's bad_half_plus_two), no state file."""
    prefix = _save_v1(tf.compat.v1, str(tmp_path / "export"), SESSION_BUNDLE_VALUES, sharded=False)
    assert prefix == str(tmp_path / "export")
    os.remove(tmp_path / "checkpoint")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    tf_reader = tf.train.load_checkpoint(prefix)
    assert ckptkit.CheckpointReader(str(tmp_path)).prefix == prefix
    got = ckptkit.load(str(tmp_path))
    assert all(np.array_equal(got[k], tf_reader.get_tensor(k)) for k in SESSION_BUNDLE_VALUES)
    res = CliRunner().invoke(cli, ["verify", str(tmp_path)])
    assert res.exit_code == 0, res.output


def test_directory_of_two_v1_checkpoints_needs_a_name(tf, tmp_path):
    for name in ("export", "other"):
        _save_v1(tf.compat.v1, str(tmp_path / name), SESSION_BUNDLE_VALUES, sharded=True)
    os.remove(tmp_path / "checkpoint")
    with pytest.raises(ckptkit.CheckpointError, match=r"which of 2 checkpoints .*export-\?{5}-of-00002, "
                                                      r"other-\?{5}-of-00002\): name one"):
        ckptkit.load(str(tmp_path))
    res = CliRunner().invoke(cli, ["ls", str(tmp_path)])
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output


def test_v1_lookalike_names_are_not_a_checkpoint(tmp_path):
    (tmp_path / "export-00000-of-00001").write_bytes(b"not a table")
    (tmp_path / "model").write_bytes(b"nor this")
    (tmp_path / "model.meta").write_bytes(b"")
    with pytest.raises(ckptkit.CheckpointError, match="no checkpoint found in directory"):
        ckptkit.load(str(tmp_path))
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "/tmp/gone/export"\n')
    with pytest.raises(ckptkit.CheckpointError, match=r"names /tmp/gone/export, which does not exist, and no other"):
        ckptkit.load(str(tmp_path))


def test_file_urls_write_where_they_name(tf, tmp_path, monkeypatch):
    """`file:///abs/dir/x` is the local path /abs/dir/x for every writer (it once made
    `./file:/abs/dir/x.index` under the working directory)."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    url = f"file://{out}"
    values = {"w": np.arange(4, dtype=np.float32)}
    assert ckptkit.save(f"{url}/saved", values) == str(out / "saved")
    ckptkit.Checkpoint(w=values["w"]).write(f"{url}/written")
    assert ckptkit.Checkpoint(w=values["w"]).save(f"{url}/ck") == str(out / "ck-1")
    assert ckptkit.Saver().save(values, f"{url}/saver", global_step=3) == str(out / "saver-3")
    manager = ckptkit.CheckpointManager(ckptkit.Checkpoint(w=values["w"]), f"{url}/managed", max_to_keep=1)
    assert manager.save() == str(out / "managed" / "ckpt-1")
    assert CliRunner().invoke(cli, ["convert", f"{url}/saved", f"{url}/converted.npz"]).exit_code == 0
    assert not any(p.name.startswith("file:") for p in tmp_path.iterdir())  # nothing under the cwd
    for prefix, key in (("saved", "w"), ("saver-3", "w"), ("written", "w/.ATTRIBUTES/VARIABLE_VALUE"),
                        ("ck-1", "w/.ATTRIBUTES/VARIABLE_VALUE"), ("managed/ckpt-1", "w/.ATTRIBUTES/VARIABLE_VALUE")):
        assert np.array_equal(tf.train.load_checkpoint(str(out / prefix)).get_tensor(key), values["w"]), prefix
    assert np.array_equal(ckptkit.Checkpoint.read(f"{url}/written")["w"], values["w"])
    assert np.array_equal(np.load(out / "converted.npz")["w"], values["w"])
