"""A user's path becomes a `Location` once: one resolution per checkpoint argument of a
command and per `ckptkit.load`, counted at the one place paths are resolved
(`location._resolve`); everything below takes the Location."""
import os

import numpy as np
import pytest
from click.testing import CliRunner

import ckptkit
from ckptkit import location as locate
from ckptkit.cli import cli
from ckptkit.ops import average, edit, merge
from ckptkit.ops.convert import convert
from ckptkit.reader import CheckpointReader

TENSORS = {"a/w": np.arange(3, dtype=np.float32), "b/w": np.zeros(2, np.float32),
           "a/w/ExponentialMovingAverage": np.ones(3, np.float32)}


@pytest.fixture
def resolved(monkeypatch) -> list[str]:
    """The paths `location._resolve` is called with, in order."""
    calls: list[str] = []
    real = locate._resolve

    def counting(path, as_prefix):
        calls.append(path)
        return real(path, as_prefix)

    monkeypatch.setattr(locate, "_resolve", counting)
    return calls


def _run_dir(directory) -> str:
    """A directory holding checkpoint `model`, named latest by its state file."""
    os.makedirs(directory)
    ckptkit.save(os.path.join(directory, "model"), TENSORS)
    with open(os.path.join(directory, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "model"\n')
    return str(directory)


@pytest.fixture
def run(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)  # `.` holds no checkpoint
    return _run_dir(tmp_path / "run")


def _cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("args", [
    ["ls", "{run}"],
    ["ls", "--tree", "{run}"],
    ["show", "{run}", "a/w"],
    ["stats", "{run}"],
    ["verify", "{run}"],
    ["rename", "{run}", "a/w", "c/w"],
    ["rename", "-c", "{run}", "--glob", "a/*", "z/*"],
    ["rename", "-c", "{run}", "--regex", "a/(.*)", r"y/\1", "--include", "a/*"],
    ["rm", "-c", "{run}", "b/w"],
    ["rm", "-c", "{run}", "--include", "b/*"],
    ["rm", "-c", "{run}", "--glob", "b/*"],
    ["rm", "-c", "{run}", "--compact", "b/w"],
    ["ema", "{run}", "-o", "{out}"],
    ["convert", "{run}", "{out}.npz"],
    ["convert", "{run}", "{out}"],
    ["merge", "{run}", "-o", "{out}"],
    ["view", "{run}", "--html", "{out}.html"],
    ["state", "{run}"],
], ids=lambda args: " ".join(a for a in args if "{" not in a))
def test_one_resolution_per_command(run, tmp_path, resolved, args):
    _cli(*[a.format(run=run, out=tmp_path / "model") for a in args])
    assert resolved == [run]


def test_diff_resolves_each_side_once(run, tmp_path, resolved):
    other = _run_dir(tmp_path / "other")
    _cli("diff", run, other)
    assert resolved == [run, other]


def test_average_and_merge_resolve_each_input_once(run, tmp_path, resolved):
    other = _run_dir(tmp_path / "other")
    _cli("average", run, other, "-o", tmp_path / "avg")
    assert resolved == [run, other]
    resolved.clear()
    ckptkit.save(os.path.join(other, "model-2"), TENSORS)
    ckptkit.update_checkpoint_state(other, os.path.join(other, "model-2"),
                                    [os.path.join(other, "model"), os.path.join(other, "model-2")])
    _cli("average", "--last", 2, other, "-o", tmp_path / "last")  # each checkpoint the state file lists
    assert resolved == [os.path.join(other, "model"), os.path.join(other, "model-2")]
    parts = [_run_dir(tmp_path / "p0"), _run_dir(tmp_path / "p1")]
    for i, part in enumerate(parts):  # disjoint parts
        edit.rename_keys(part, {k: f"p{i}/{k}" for k in TENSORS})
    resolved.clear()
    _cli("merge", *parts, "-o", tmp_path / "merged")
    assert resolved == parts
    assert len(ckptkit.load(tmp_path / "merged")) == 2 * len(TENSORS)


@pytest.mark.parametrize("command", ["average", "merge"])
def test_average_and_merge_note_a_stale_state_file(run, tmp_path, resolved, command):
    """Their inputs are resolved where every command's are (`located`): the note says so."""
    with open(os.path.join(run, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "model-9"\n')
    inputs = [run, _run_dir(tmp_path / "other")] if command == "average" else [run]
    resolved.clear()
    result = _cli(command, *inputs, "-o", tmp_path / "out")
    assert f"names model-9 as latest, which does not exist; opened {os.path.join(run, 'model')}" in result.stderr
    assert resolved == inputs


def test_view_of_a_run_resolves_each_checkpoint_once(run, tmp_path, resolved):
    ckptkit.save(os.path.join(run, "model-2"), TENSORS)
    listed = [os.path.join(run, "model"), os.path.join(run, "model-2")]
    ckptkit.update_checkpoint_state(run, listed[1], listed)
    resolved.clear()
    _cli("view", run, "--html", tmp_path / "run.html")
    assert resolved == listed


def test_meta_of_a_directory_resolves_it_once(tmp_path, resolved):
    """`meta DIR` opens the .meta of the checkpoint DIR names: one resolution, and a stale
    state file gets its note as for every command."""
    _cli("example", tmp_path / "ex")
    with open(tmp_path / "ex" / "checkpoint", "w") as f:
        f.write('model_checkpoint_path: "model.ckpt-9"\n')
    resolved.clear()
    result = _cli("meta", tmp_path / "ex")
    assert resolved == [str(tmp_path / "ex")]
    assert "names model.ckpt-9 as latest, which does not exist" in result.stderr


def test_positional_checkpoint_of_rm_is_resolved_once(run, resolved):
    """`rm DIR NAME` asks whether DIR is a checkpoint and whether NAME names a tensor of
    the checkpoint in `.`: each path once, DIR's Location then serves the edit."""
    _cli("rm", run, "b/w")
    assert sorted(resolved) == sorted([run, "."])
    assert "b/w" not in ckptkit.load(run)


def test_load_resolves_once(run, resolved):
    assert set(ckptkit.load(run)) == set(TENSORS)
    assert resolved == [run]


def test_a_location_is_not_resolved_again(run, tmp_path, resolved):
    """The library takes a Location where it takes a path, and asks nothing again."""
    location = locate.locate(run)
    assert (location.prefix, location.format, location.how) == (os.path.join(run, "model"), "v2", locate.STATE_FILE)
    with CheckpointReader(location) as reader:
        assert set(reader) == set(TENSORS)
    assert edit.rename_keys(location, {"b/w": "c/w"}) == {"b/w": "c/w"}
    convert(location, str(tmp_path / "out.npz"))
    merge.merge_checkpoints([location], tmp_path / "merged")
    average.average_checkpoints([location, location], tmp_path / "avg")
    assert resolved == [run]
    assert set(np.load(tmp_path / "out.npz")) == {"a/w", "c/w", "a/w/ExponentialMovingAverage"}


def test_the_note_comes_from_the_location(run, resolved):
    """A stale state file: the note says what the one resolution found, and how."""
    with open(os.path.join(run, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "model-9"\n')
    location = locate.locate(run)
    assert (location.how, location.recorded) == (locate.ONLY_CHECKPOINT, "model-9")
    resolved.clear()
    result = _cli("ls", run)
    assert (f"note: {os.path.join(run, 'checkpoint')} names model-9 as latest, which does not exist; "
            f"opened {os.path.join(run, 'model')}, the only checkpoint in {run}") in result.stderr
    assert resolved == [run]


def test_a_moved_directory_says_so(tmp_path, resolved):
    run = _run_dir(tmp_path / "run")
    with open(os.path.join(run, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "/gone/elsewhere/model"\n')
    location = locate.locate(run)
    assert (location.prefix, location.how) == (os.path.join(run, "model"), locate.MOVED)
    assert location.recorded == "/gone/elsewhere/model"


def _save_meanwhile(monkeypatch, run, prune: bool) -> None:
    """Right after the edit resolves `run`, a Saver writes model-2 as latest (and prunes model)."""
    real = edit.locate

    def resolve_then_save(path):
        found = real(path)
        if prune:
            for name in os.listdir(run):
                if name.startswith("model."):
                    os.unlink(os.path.join(run, name))
        ckptkit.save(os.path.join(run, "model-2"), TENSORS)
        ckptkit.update_checkpoint_state(run, os.path.join(run, "model-2"))
        return found

    monkeypatch.setattr(edit, "locate", resolve_then_save)


def test_an_edit_edits_what_it_resolved_before_the_lock(run, monkeypatch, resolved):
    _save_meanwhile(monkeypatch, run, prune=False)
    edit.rename_keys(run, {"b/w": "c/w"})
    assert resolved == [run]
    assert "c/w" in ckptkit.load(os.path.join(run, "model"))
    assert "b/w" in ckptkit.load(os.path.join(run, "model-2"))


def test_an_edit_whose_checkpoint_was_pruned_meanwhile_resolves_again(run, monkeypatch, resolved):
    _save_meanwhile(monkeypatch, run, prune=True)
    edit.rename_keys(run, {"b/w": "c/w"})
    assert resolved == [run, run]
    assert "c/w" in ckptkit.load(os.path.join(run, "model-2"))
