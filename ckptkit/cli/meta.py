"""Commands about the files around the tensors: meta (SavedModel, .meta), state (the
`checkpoint` file), recover (commits a dead writer left), and example (writes the classic
example checkpoint)."""
from __future__ import annotations

import os
from typing import Any

import click

from ..errors import CheckpointError
from .app import Command
from .failure import Failure
from .options import PATH, check_output, located, overwrite_option
from .render import echo, echo_json, human, note, printable, table


@click.command("meta", cls=Command)
@click.argument("file", type=PATH)
@click.option("--tag-set", "tag_set", metavar="TAGS",
              help="one MetaGraphDef of a SavedModel, by its tags separated by commas (serve or "
                   "serve,gpu): list its signature keys, as saved_model_cli show --tag_set")
@click.option("--signature-def", "signature_def", metavar="KEY",
              help="one signature's inputs and outputs, as saved_model_cli show --signature_def "
                   "(--tag-set may be left out when the SavedModel has one MetaGraphDef)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def meta_cmd(file: str, tag_set: str | None, signature_def: str | None, as_json: bool) -> None:
    """Summarize a SavedModel or a .meta file (MetaGraphDef).

    FILE may be a SavedModel directory or its saved_model.pb (tag-sets, signatures with
    their inputs and outputs, and a TF2 SavedModel's concrete functions with their
    argument specs, as `saved_model_cli show --all` prints them; then the variables), a
    .meta file (ops, variables, saver, collections), or a checkpoint prefix or directory
    (the .meta of that checkpoint).
    """
    from ..tf1 import saved_model, saved_model_views  # noqa: PLC0415
    if tag_set is None and signature_def is None:
        summary = saved_model.summarize(file, locate=located)
        if as_json:
            echo_json(summary)
        elif summary["kind"] == "saved_model":
            for line in saved_model.format_saved_model(summary):
                echo(printable(line))
        else:
            _print_nested(summary, 0)
        return
    if not saved_model.is_saved_model(file):
        raise click.UsageError("--tag-set and --signature-def select in a SavedModel (a directory with "
                               f"saved_model.pb); {file} is not one")
    summary = saved_model.summarize_saved_model(file)
    graph = saved_model_views.select_meta_graph(summary, tag_set)
    view: dict[str, Any] = {"kind": "saved_model", "path": summary["path"], "tags": graph["tags"]}
    if signature_def is None:
        view["signature_keys"] = [s["key"] for s in graph["signatures"]]
        lines = saved_model_views.signature_keys_lines(graph)
    else:
        signature = saved_model_views.select_signature(summary, graph, signature_def)
        view["signature"] = signature
        lines = saved_model_views.signature_lines(signature)
    if as_json:
        echo_json(view)
    else:
        for line in lines:
            echo(printable(line))


def _print_nested(value: Any, depth: int) -> None:
    for line in _nested_lines(value, depth):
        echo(line)


def _nested_lines(value: Any, depth: int) -> list[str]:
    """A YAML-like view of plain data (dicts, lists, scalars)."""
    pad = "  " * depth
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{printable(key)}:" + (f" ({len(item)})" if isinstance(item, list) else ""))
                lines.extend(_nested_lines(item, depth + 1))
            else:
                lines.append(f"{pad}{printable(key)}: {_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                inner = _nested_lines(item, depth + 1)
                inner[0] = f"{pad}- " + inner[0].lstrip()
                lines.extend(inner)
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(f"{pad}{_scalar(value)}")
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    if isinstance(value, bytes):
        return printable(value.decode("utf-8", "backslashreplace"))
    return printable(value)


@click.command("state", cls=Command)
@click.argument("directory", default=".", required=False, type=PATH)
@click.option("--json", "as_json", is_flag=True, help="print the state as JSON")
def state_cmd(directory: str, as_json: bool) -> None:
    """Show a directory's `checkpoint` file: latest, all checkpoints, save times, files.

    Paths are shown as recorded in the file and, separately, what they resolve to
    here, with the checkpoint a reader of DIRECTORY opens. A damaged state file is an
    error (readers, like TF's, would ignore it).
    """
    from .. import storage  # noqa: PLC0415
    from ..ops import info  # noqa: PLC0415
    from ..tf1 import state  # noqa: PLC0415

    recorded = None
    if storage.isdir(directory):  # strict: report damage instead of "no state file"
        state.get_checkpoint_state(directory, strict=True)
        recorded = state.read_state_file(os.path.join(directory, state.STATE_FILENAME))
    described = info.describe_state(directory)
    rec_paths: list[str | None] = []
    if recorded is not None:
        rec_paths = list(recorded.all_model_checkpoint_paths)
        if described["latest"] not in [c["path"] for c in described["checkpoints"][:len(rec_paths)]]:
            rec_paths.append(recorded.model_checkpoint_path)
    if len(rec_paths) != len(described["checkpoints"]):  # the file changed between reads
        rec_paths = [None] * len(described["checkpoints"])
    for c, rec in zip(described["checkpoints"], rec_paths, strict=True):
        c["recorded"] = rec
    described["recorded_latest"] = recorded.model_checkpoint_path if recorded is not None else None
    try:
        described["opens"], described["opens_error"] = located(directory, quiet=True).prefix, None
    except CheckpointError as exc:
        described["opens"], described["opens_error"] = None, str(exc)
    if as_json:
        echo_json(described)
        return
    status = "" if described["latest_exists"] else "  (MISSING)"
    echo(f"latest: {printable(described['latest'])}{status}")
    echo(f"recorded: {printable(described['recorded_latest'])}")
    opens = described["opens"] if described["opens"] is not None else f"nothing ({described['opens_error']})"
    echo(f"opens: {printable(opens)}")
    rows = []
    for c in described["checkpoints"]:
        files = ", ".join(f"{printable(f['name'])} ({human(f['bytes'])})" for f in c["files"]) or "-"
        rows.append([("* " if c["latest"] else "  ") + printable(c["recorded"] or "?"), printable(c["path"]),
                     _timestamp(c["timestamp"]), "yes" if c["exists"] else "MISSING", files])
    table([("recorded", "l"), ("here", "l"), ("saved", "l"), ("exists", "l"), ("files", "l")], rows,
           title=described["state_file"])


@click.command("recover", cls=Command)
@click.argument("directory", default=".", required=False, type=PATH)
@click.option("--json", "as_json", is_flag=True, help="print what was done to each commit as JSON")
def recover_cmd(directory: str, as_json: bool) -> None:
    """Finish the commits a ckptkit writer killed past its commit point left in DIRECTORY.

    Until then ckptkit reads the new checkpoint (through the commit's journal), but TF
    sees half-replaced files. Each commit is completed, or, where a file it would
    replace was rewritten since by another program (TF saving the same prefix), rolled
    back: its temp files are deleted and the newer files kept. `ckptkit verify` reports
    unfinished commits; any ckptkit write in the directory completes them too.
    Exit 1 when a damaged journal is left (it names the files it leaves alone).
    """
    from .. import storage  # noqa: PLC0415

    done = storage.recover(directory)
    left = storage.pending_commits(directory)
    if as_json:
        echo_json({"directory": directory, "recovered": [r._asdict() for r in done], "left": left})
    else:
        for r in done:
            echo(f"{r.outcome}: {printable(r.journal)} ({r.detail})")
        if not done and not left:
            note(f"nothing to recover in {printable(directory)}")
    if left:
        raise Failure(f"{left[0]}: commit journal is damaged; it was left alone, and so were the files it names")


def _timestamp(value: float | None) -> str:
    if value is None:
        return "-"
    import datetime  # noqa: PLC0415

    return datetime.datetime.fromtimestamp(value).isoformat(sep=" ", timespec="seconds")


@click.command("example", cls=Command)
@click.argument("directory", type=PATH)
@overwrite_option("replace DIRECTORY/model.ckpt if it exists")
def example_cmd(directory: str, overwrite: bool) -> None:
    """Write the classic example checkpoint into DIRECTORY to play with.

    v = 10.0 and its moving average v/ExponentialMovingAverage = 0.099999905
    (v started at 0; EMA(0.99); v := 10; one update), with .meta and the
    `checkpoint` state file, at DIRECTORY/model.ckpt - as TF's Saver writes it.
    An existing DIRECTORY/model.ckpt is left alone (exit 1) unless --overwrite.
    """
    try:
        from ..tf1 import saver as _saver  # noqa: PLC0415
    except ImportError:
        raise Failure("this ckptkit has no Saver (ckptkit.tf1.saver)") from None
    import numpy as np  # noqa: PLC0415

    from ..tf1.ema import ExponentialMovingAverage  # noqa: PLC0415

    ema = ExponentialMovingAverage(0.99)
    ema.apply({"v": np.float32(0.0)})   # v = tf.Variable(0.); the shadow starts at 0
    v = np.float32(10.0)                # sess.run(v.assign(10))
    ema.apply({"v": v})                 # sess.run(ema.apply([v]))
    values = {"v": v, **ema.shadow_variables()}
    check_output(os.path.join(directory, "model.ckpt"), overwrite=overwrite)
    os.makedirs(directory, exist_ok=True)
    path = _saver.Saver().save(values, os.path.join(directory, "model.ckpt"))
    for key, value in values.items():
        echo(f"{key} = {str(np.asarray(value)[()])}")
    note(f"wrote {printable(path)}")
