"""average, merge and an `-o` edit of a V1 checkpoint killed (SIGKILL) before and after
every rename, unlink, fsync and link.

Each writes onto an existing output (3 data shards, to be replaced by 1 or 2: a journaled
multi-file commit). After every kill the output reads back whole as the old checkpoint
or the new one, the inputs are untouched, and the next run leaves no temp file, journal
or lock behind.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
from helpers import label_of, leftovers, make_v1, read_all, run_forked, same_values, tf_values

import ckptkit
from ckptkit.ops import average, edit, merge

OLD = {"x": np.full(1000, -1.0, np.float32), "y": np.arange(7, dtype=np.int64), "z": np.ones(3)}


def setup(tmp_path, name: str):
    """(inputs, output prefix, the values the command writes)."""
    out = os.fspath(tmp_path / "out" / "model")
    ckptkit.save(out, OLD, num_shards=3)
    if name == "merge":
        a = ckptkit.save(os.fspath(tmp_path / "a" / "part"), {"x": np.full(1000, 2.0, np.float32)})
        b = ckptkit.save(os.fspath(tmp_path / "b" / "part"), {"y": np.arange(5, dtype=np.int64)})
        return [a, b], out, {"x": np.full(1000, 2.0, np.float32), "y": np.arange(5, dtype=np.int64)}
    inputs = [ckptkit.save(os.fspath(tmp_path / f"in{i}" / "model"),
                           {"x": np.full(1000, float(i), np.float32), "y": np.int64(i)}) for i in range(3)]
    return inputs, out, {"x": np.full(1000, 1.0, np.float32), "y": np.int64(2)}


def command(name: str, inputs: list[str], out: str) -> None:
    if name == "merge":
        merge.merge_checkpoints(inputs, out, overwrite=True)
    else:
        average.average_checkpoints(inputs, out, overwrite=True)


@pytest.mark.parametrize("name", ["average", "merge"])
def test_killed_at_every_step_leaves_old_or_new_whole(tmp_path, name):
    probe = tmp_path / "probe"
    inputs, out, new = setup(probe, name)
    steps = run_forked(lambda: command(name, inputs, out))["count"]
    assert steps >= 8
    assert same_values(read_all(out), new)
    seen = set()
    for kill_at in range(1, steps + 1):
        for when in ("before", "after"):
            case = tmp_path / f"{kill_at}-{when}"
            inputs, out, new = setup(case, name)
            before = [read_all(p) for p in inputs]
            assert run_forked(lambda: command(name, inputs, out), kill_at, when)["killed"]  # noqa: B023
            seen.add(label_of(out, {"old": OLD, "new": new}))
            assert all(same_values(read_all(p), b) for p, b in zip(inputs, before, strict=True))
            command(name, inputs, out)  # the next writer completes or sweeps what the killed one left
            assert same_values(read_all(out), new)
            assert leftovers(os.path.dirname(out)) == []
    assert seen == {"old", "new"}


def test_publishing_a_link_onto_a_link_of_the_same_file_leaves_no_temp(tmp_path):
    """rename(2) of a hard link onto another link of the same file does nothing: the commit
    must then remove the temp name itself (a merge or an `-o` edit run twice)."""

    a = ckptkit.save(os.fspath(tmp_path / "a"), {"x": np.ones(3)})
    b = ckptkit.save(os.fspath(tmp_path / "b"), {"y": np.zeros(2)})
    for _ in range(2):
        merge.merge_checkpoints([a, b], tmp_path / "m", overwrite=True)
        edit.rename_keys(a, {"x": "z"}, output=tmp_path / "o", overwrite=True)
    assert leftovers(os.fspath(tmp_path)) == []
    assert sorted(read_all(os.fspath(tmp_path / "m"))) == ["x", "y"]
    assert list(read_all(os.fspath(tmp_path / "o"))) == ["z"]


@pytest.mark.parametrize("existing", [True, False], ids=["onto-old-output", "new-output"])
def test_v1_edit_into_output_is_one_commit(tf, tf1, tmp_path, existing):
    """`rename -o` of a V1 checkpoint (TF's V1 Saver) writes the V2 output in the edit's
    own commit: every rename publishes a file of the output (no temp prefix of a commit
    before it), a kill at any step leaves no output or the old one, or the new one whole,
    and TF reads what the next run leaves."""
    source = make_v1(tf1, os.fspath(tmp_path))
    before = tf_values(tf, source)
    new = {"x": before["w"], "s": before["s"]}

    def case(directory):
        out = os.fspath(directory / "out" / "model")
        if existing:
            ckptkit.save(out, OLD, num_shards=3)
        return out, lambda: edit.rename_keys(source, {"w": "x"}, output=out, overwrite=True)

    out, command = case(tmp_path / "probe")
    probe = run_forked(command)
    published = [call.split(",")[1].rstrip(")") for call in probe["trace"] if call.startswith(("replace", "rename"))]
    output_files = re.compile(r"model\.(index|index\.ckptkit-journal|data-\d{5}-of-\d{5})")
    assert published and all(output_files.fullmatch(name) for name in published), probe["trace"]
    assert same_values(read_all(out), new) and same_values(tf_values(tf, out), new)
    seen = set()
    for kill_at in range(1, probe["count"] + 1):
        for when in ("before", "after"):
            out, command = case(tmp_path / f"{kill_at}-{when}")
            assert run_forked(command, kill_at, when)["killed"]
            seen.add(label_of(out, {"old": OLD, "new": new}, allow_missing=not existing))
            assert sorted(n for n in os.listdir(os.path.dirname(out)) if n.endswith(".index")) in ([], ["model.index"])
            command()  # the next writer completes or sweeps what the killed one left
            assert same_values(tf_values(tf, out), new)
            assert leftovers(os.path.dirname(out)) == []
    assert seen == {"old" if existing else "none", "new"}
    assert same_values(tf_values(tf, source), before)
