"""TF's own semantics at the edges (issue 12): each test runs TF 2.21 on the same input
and checks that ckptkit answers the same way - the same value, or an error of the
same builtin family (`except ValueError` written against TF keeps working).

Where ckptkit deliberately differs, the test says so and the README's
"Differences from TensorFlow" section gives the reason.
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from click.testing import CliRunner

import ckptkit
from ckptkit.cli import cli
from ckptkit.errors import (
    CheckpointError,
    DataLossError,
    InvalidArgumentError,
    InvalidStateError,
    NoCheckpointError,
    NotFoundError,
    TensorNotFoundError,
)
from ckptkit.tf1 import state
from ckptkit.tf1.saver import Saver


@pytest.fixture(scope="module")
def cm(tf):
    from tensorflow.python.checkpoint import checkpoint_management  # noqa: PLC0415 - TF only inside TF tests
    return checkpoint_management


def tf_graph_saver(tf1, var_list_of):
    """A graph with variable `v` (and `w`), a Session, and TF's Saver on var_list_of(vars)."""
    graph = tf1.Graph()
    with graph.as_default():
        variables = {"v": tf1.Variable(1.0, name="v"), "w": tf1.Variable(2.0, name="w")}
        saver = tf1.train.Saver(var_list_of(variables))
        sess = tf1.Session(graph=graph)
        sess.run(tf1.global_variables_initializer())
    return graph, saver, sess


VALUES = {"v": np.float32(1.0), "w": np.float32(2.0)}


# ---- 1. one variable under two checkpoint names ----------------------------------------------

def test_one_variable_under_two_names_refused_like_tf(tf1):
    with pytest.raises(ValueError, match="The same saveable will be restored with two names: b"):
        tf_graph_saver(tf1, lambda v: {"a": v["v"], "b": v["v"]})
    with pytest.raises(InvalidArgumentError, match="'v' would be saved and restored under two names") as info:
        Saver({"a": "v", "b": "v"})
    assert isinstance(info.value, ValueError) and info.value.key == "b"
    # two variables, two names; and a list naming one variable twice (TF: "same name")
    tf_graph_saver(tf1, lambda v: {"a": v["v"], "b": v["w"]})
    Saver({"a": "v", "b": "w"})
    with pytest.raises(ValueError, match="At least two variables have the same name: v"):
        tf_graph_saver(tf1, lambda v: [v["v"], v["v"]])
    with pytest.raises(InvalidArgumentError, match="appears twice"):
        Saver(["v", "v"])


# ---- 2. a save path whose parent is a regular file ----------------------------------------

@pytest.mark.parametrize("below", ["afile/m", "afile/sub/m"])
def test_parent_that_is_a_file_is_a_value_error_like_tf(tf1, tmp_path, below):
    for side in ("tf", "ck"):
        (tmp_path / side).mkdir()
        (tmp_path / side / "afile").write_bytes(b"not a directory")
    graph, saver, sess = tf_graph_saver(tf1, lambda v: None)
    with graph.as_default(), pytest.raises(ValueError, match="Parent directory of .* doesn't exist, can't save"):
        saver.save(sess, str(tmp_path / "tf" / below))
    with pytest.raises(InvalidArgumentError, match="can't save") as info:
        Saver().save(VALUES, tmp_path / "ck" / below)
    assert isinstance(info.value, ValueError) and info.value.path == str(tmp_path / "ck" / below)
    assert sorted(os.listdir(tmp_path / "ck")) == ["afile"]


# ---- 3. a damaged `checkpoint` state file --------------------------------------------------

# (content, what TF 2.21 does): "none" = logs a warning and returns None; "value" = raises ValueError
STATE_FILES = {
    "empty": (b"", "value"),                                        # no model_checkpoint_path
    "cut-at-line": (b'all_model_checkpoint_paths: "m-1"\n', "value"),
    "cut-in-string": (b'model_checkpoint_path: "m-1"\nall_model_checkpoint_paths: "m', "none"),
    "junk": (b"hello world", "none"),
    "unknown-field": (b'model_checkpoint_path: "m-1"\nfoo: 1\n', "none"),
    "not-utf8": (b'model_checkpoint_path: "\xff"\n', "value"),     # TF: UnicodeDecodeError
}


@pytest.mark.parametrize("case", sorted(STATE_FILES))
def test_damaged_state_file_like_tf(tf, tmp_path, caplog, case):
    content, expected = STATE_FILES[case]
    Saver().save(VALUES, tmp_path / "m", global_step=1)
    (tmp_path / "checkpoint").write_bytes(content)
    directory = str(tmp_path)
    for ours, theirs in ((state.get_checkpoint_state, tf.train.get_checkpoint_state),
                         (state.latest_checkpoint, tf.train.latest_checkpoint)):
        if expected == "value":
            with pytest.raises(ValueError):
                theirs(directory)
            with pytest.raises(InvalidStateError) as info:
                ours(directory)
            assert isinstance(info.value, ValueError) and isinstance(info.value, DataLossError)
            assert info.value.path == str(tmp_path / "checkpoint")
        else:
            assert theirs(directory) is None
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="ckptkit.formats.state_file"):
                assert ours(directory) is None
            assert [r.levelno for r in caplog.records] == [logging.WARNING]
            assert str(tmp_path / "checkpoint") in caplog.records[0].getMessage()
            # strict callers get the damage as an error
            with pytest.raises(DataLossError, match="not parseable"):
                ours(directory, strict=True)
        # reading the file as stored is strict about the text, not about what it names
        if case in ("empty", "cut-at-line"):
            assert state.read_state_file(tmp_path / "checkpoint").model_checkpoint_path == ""
        else:
            with pytest.raises(DataLossError):
                state.read_state_file(tmp_path / "checkpoint")


def test_resume_loop_goes_on_after_unparseable_state(tmp_path, caplog):
    """What TF's behaviour is for: a loop that resumes from latest_checkpoint starts over."""
    (tmp_path / "checkpoint").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="ckptkit.formats.state_file"):
        assert ckptkit.latest_checkpoint(str(tmp_path)) is None
    saver = Saver()
    saver.save(VALUES, tmp_path / "model", global_step=0)
    assert ckptkit.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model-0")


# ---- 4. ValueError where TF raises ValueError --------------------------------------------

def test_value_errors_where_tf_raises_value_error(tf1, cm, tmp_path):
    graph, tf_saver, sess = tf_graph_saver(tf1, lambda v: None)
    (tmp_path / "tf").mkdir()
    (tmp_path / "ck").mkdir()
    with graph.as_default():
        with pytest.raises(ValueError, match="Can't load save_path when it is None"):
            tf_saver.restore(sess, None)
        with pytest.raises(ValueError, match="not a valid checkpoint"):
            tf_saver.restore(sess, str(tmp_path / "tf" / "nothing"))
        with pytest.raises(ValueError, match="must not contain path components"):
            tf_saver.save(sess, str(tmp_path / "tf" / "m"), latest_filename="a/b")
        with pytest.raises(ValueError, match="collides"):
            tf_saver.save(sess, str(tmp_path / "tf" / "checkpoint"))
        with pytest.raises(TypeError):  # TF: as_str(None); ckptkit: a ValueError (README)
            tf_saver.save(sess, None)
    with pytest.raises(InvalidArgumentError):
        Saver().restore(None)
    with pytest.raises(NoCheckpointError, match="not a valid checkpoint") as info:
        Saver().restore(tmp_path / "ck" / "nothing")
    assert isinstance(info.value, ValueError) and isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, NotFoundError)
    with pytest.raises(InvalidArgumentError, match="path components"):
        Saver().save(VALUES, tmp_path / "ck" / "m", latest_filename="a/b")
    with pytest.raises(InvalidArgumentError, match="collides"):
        Saver().save(VALUES, tmp_path / "ck" / "checkpoint")
    with pytest.raises(InvalidArgumentError, match="None"):
        Saver().save(VALUES, None)
    # update_checkpoint_state: mismatched timestamps (TF: ValueError)
    d = str(tmp_path / "ck")
    with pytest.raises(ValueError):
        cm.update_checkpoint_state(d, f"{d}/m-2", [f"{d}/m-1"], all_model_checkpoint_timestamps=[1.0])
    with pytest.raises(ValueError):
        state.update_checkpoint_state(d, f"{d}/m-2", [f"{d}/m-1"], all_model_checkpoint_timestamps=[1.0])
    for cls in (InvalidArgumentError, InvalidStateError, NoCheckpointError):
        assert issubclass(cls, ValueError) and issubclass(cls, CheckpointError)
    assert sorted(os.listdir(tmp_path / "ck")) == []


# ---- 5. load_variable strips ":0" ---------------------------------------------------------

def test_load_variable_strips_colon_zero_like_tf(tf, tmp_path):
    prefix = Saver().save({"w": np.arange(3, dtype=np.float32), "x:1": np.float32(5)}, tmp_path / "m",
                          write_meta_graph=False)  # "x:1" is no graph node name
    for name in ("w", "w:0"):
        np.testing.assert_array_equal(ckptkit.load_variable(prefix, name), tf.train.load_variable(prefix, name))
        np.testing.assert_array_equal(ckptkit.load_variable(str(tmp_path), name),
                                      tf.train.load_variable(str(tmp_path), name))
    # only ":0" is TF's graph-tensor suffix; ":1" is part of the key
    assert ckptkit.load_variable(prefix, "x:1") == tf.train.load_variable(prefix, "x:1") == 5
    with pytest.raises(tf.errors.NotFoundError):
        tf.train.load_variable(prefix, "w:1")
    with pytest.raises(TensorNotFoundError):
        ckptkit.load_variable(prefix, "w:1")


# ---- 7. checkpoint_exists with only sharded V1 files --------------------------------------

def test_checkpoint_exists_sharded_v1_like_tf(cm, tmp_path):
    for name in ("sh-00000-of-00002", "sh-00001-of-00002"):
        (tmp_path / name).write_bytes(b"x")
    for prefix in ("sh", "sh-?????-of-00002", "sh-00000-of-00002", "other", "other-?????-of-00002"):
        path = str(tmp_path / prefix)
        assert state.checkpoint_exists(path) == cm.checkpoint_exists_internal(path), prefix
    assert not state.checkpoint_exists(str(tmp_path / "sh"))


def test_checkpoint_exists_differences_from_tf(cm, tmp_path):
    """Deliberate (README): TF globs every prefix and counts a directory; ckptkit expands only
    the sharded-V1 pattern and wants a file."""
    (tmp_path / "adir").mkdir()
    (tmp_path / "m1").write_bytes(b"x")
    assert cm.checkpoint_exists_internal(str(tmp_path / "adir"))
    assert not state.checkpoint_exists(str(tmp_path / "adir"))
    assert cm.checkpoint_exists_internal(str(tmp_path / "m*"))
    assert not state.checkpoint_exists(str(tmp_path / "m*"))


# ---- 3 and 8 in the CLI: damaged and stale state files --------------------------------------

def run_cli(*args):
    result = CliRunner().invoke(cli, [os.fspath(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def saved_steps(directory, steps, max_to_keep=5, prefix="model"):
    saver = Saver(max_to_keep=max_to_keep)
    return [saver.save({"v": np.float32(s)}, directory / prefix, global_step=s) for s in steps]


@pytest.mark.parametrize("case", sorted(STATE_FILES))
def test_cli_state_reports_a_damaged_state_file(tmp_path, case):
    saved_steps(tmp_path, [1])
    (tmp_path / "checkpoint").write_bytes(STATE_FILES[case][0])
    result = run_cli("state", tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("ckptkit: error: ") and str(tmp_path / "checkpoint") in lines[0]
    assert result.stdout == ""


def test_cli_notes_a_stale_state_file(tf, tmp_path):
    """The latest checkpoint is gone, another remains: TF opens nothing (latest_checkpoint is
    None); ckptkit opens the one left and says so on stderr, in one line."""
    saved_steps(tmp_path, [1, 2])
    for name in os.listdir(tmp_path):
        if name.startswith("model-2."):
            os.remove(tmp_path / name)
    os.remove(tmp_path / "model-1.index")  # model-1 is gone too: one checkpoint ("other") is left
    Saver().save({"v": np.float32(9)}, tmp_path / "other", write_state=False)
    assert tf.train.latest_checkpoint(str(tmp_path)) is None
    result = run_cli("ls", tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: "), result.stderr
    assert f"names {tmp_path / 'model-2'} as latest, which does not exist" in lines[0]
    assert f"opened {tmp_path / 'other'}, the only checkpoint in {tmp_path}" in lines[0]
    assert result.stdout.splitlines()[0] == str(tmp_path / "other")
    # `state` shows what is recorded, what it resolves to here, and what a reader opens
    shown = run_cli("state", tmp_path)
    assert shown.exit_code == 0 and "latest: " + str(tmp_path / "model-2") + "  (MISSING)" in shown.stdout
    assert "opens: " + str(tmp_path / "other") in shown.stdout


def test_cli_notes_a_moved_directory_and_state_shows_recorded_paths(tf, tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    saved_steps(old, [1, 2])
    os.rename(old, new)
    assert tf.train.latest_checkpoint(str(new)) is None  # TF follows the stale absolute path
    result = run_cli("ls", new)
    assert result.exit_code == 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"names {old / 'model-2'} as latest" in lines[0]
    assert f"opened {new / 'model-2'}, the checkpoint of that name in this directory" in lines[0]
    described = json.loads(run_cli("state", new, "--json").stdout)
    assert described["recorded_latest"] == str(old / "model-2") and described["latest"] == str(new / "model-2")
    assert described["opens"] == str(new / "model-2")
    assert [(c["recorded"], c["path"]) for c in described["checkpoints"]] == \
        [(str(old / f"model-{s}"), str(new / f"model-{s}")) for s in (1, 2)]
    text = run_cli("state", new).stdout
    assert f"recorded: {old / 'model-2'}" in text and str(new / "model-1") in text


def test_cli_state_relative_paths_and_no_note_when_latest_opens(tmp_path):
    saved_steps(tmp_path, [1], prefix="model")
    state.update_checkpoint_state(str(tmp_path), "model-1")  # recorded relative
    described = json.loads(run_cli("state", tmp_path, "--json").stdout)
    assert described["recorded_latest"] == "model-1" and described["latest"] == str(tmp_path / "model-1")
    result = run_cli("ls", tmp_path)
    assert result.exit_code == 0 and result.stderr == ""


def test_a_directory_whose_state_file_does_not_parse_opens_nothing(tf, tmp_path):
    """TF's load_checkpoint(dir) fails there (latest_checkpoint is None); so does ckptkit,
    instead of silently opening the directory's only checkpoint."""
    ckptkit.save(str(tmp_path / "model-1"), {"v": np.float32(1)})
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model-1')  # cut mid-string
    with pytest.raises(ValueError):
        tf.train.load_checkpoint(str(tmp_path))
    with pytest.raises(ckptkit.DataLossError, match="checkpoint"):
        ckptkit.load(str(tmp_path))


def test_a_stale_state_file_with_several_checkpoints_says_what_it_names(tmp_path):
    for step in (1, 2):
        ckptkit.save(str(tmp_path / f"model-{step}"), {"v": np.float32(step)})
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model-3"\n')
    with pytest.raises(ckptkit.NotFoundError, match="model-3, which does not exist, and 2 other"):
        ckptkit.load(str(tmp_path))
