"""Commands that edit a checkpoint in place (or into -o OUT): rename, ema, rm.

The edits themselves are ckptkit.ops.edit's (one atomic commit each); this module decides
which argument is the checkpoint, builds the renamer or the selection, and reports.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from . import render
from .app import Command
from .failure import Failure
from .options import (
    PATH,
    check_output,
    ckpt_option,
    complete_tensor_names,
    deprecated,
    drop_meta_option,
    filter_options,
    hint_checkpoint_names,
    leading_checkpoint,
    located,
    output_option,
    overwrite_option,
    use_checkpoint,
)
from .render import echo, echo_json, human, note, plural, printable

if TYPE_CHECKING:
    from ..ops.edit import Renamer


@click.command("rename", cls=Command)
@ckpt_option()
@click.argument("args", nargs=-1, metavar="[CKPT] OLD NEW")
@click.option("--regex", is_flag=True,
              help="OLD is a Python regex that must match a whole name (re.fullmatch); NEW is "
                   "its expansion template (\\1, \\g<name>); applied to every name")
@click.option("--glob", "as_glob", is_flag=True,
              help="OLD is a glob (* and ?) matched against every name; each * and ? of NEW takes "
                   "what the corresponding wildcard of OLD matched: 'enc/*' 'encoder/*'")
@overwrite_option("allow renaming onto an existing name (drops it), and replacing an existing "
                   "checkpoint at -o OUT")
@filter_options()
@click.option("--dry-run", is_flag=True, help="print the renames; change nothing")
@output_option()
@drop_meta_option()
@click.option("--json", "as_json", is_flag=True, help="print {old: new} as JSON")
@click.pass_context
def rename_cmd(ctx: click.Context, ckpt: str, args: tuple[str, ...], regex: bool, as_glob: bool, overwrite: bool,
               include: tuple[str, ...], exclude: tuple[str, ...], dry_run: bool, output: str | None, drop_meta: bool,
               as_json: bool) -> None:
    """Rename tensor OLD to NEW, keeping every file of the checkpoint consistent.

    Example: ckptkit rename v v/ExponentialMovingAverage (the checkpoint in `.`);
    ckptkit rename run v w (three arguments: the first is the checkpoint, as -c run).
    With --regex, '(.*)/ExponentialMovingAverage' '\\1' renames every shadow to its
    variable; --include/--exclude restrict the names a --regex or --glob pattern is
    applied to. In a TF2 checkpoint OLD may be an object path (model/dense): the
    object is renamed in the object graph and the keys under it follow. The object
    graph (TF2) and the .meta's Saver (TF1) are rewritten with the index; a
    partitioned variable's slices follow its name. Renaming onto an existing name
    fails (exit 1, nothing changed) unless --overwrite, which also lets -o OUT replace
    an existing checkpoint.
    """
    from ..ops import edit  # noqa: PLC0415

    if len(args) == 3:
        ckpt = use_checkpoint(ctx, args[0])
    elif len(args) != 2:
        raise click.UsageError("expected OLD NEW (or CKPT OLD NEW)")
    old, new = args[-2:]
    if regex and as_glob:
        raise click.UsageError("--regex and --glob are alternatives")
    if (include or exclude) and not (regex or as_glob):
        raise click.UsageError("--include/--exclude restrict the names a --regex or --glob pattern applies to; "
                               "a plain OLD NEW names its tensor")
    check_output(output)
    renamer: Renamer
    if regex:
        renamer = _regex_renamer(old, new)
    elif as_glob:
        from ..selection import glob_renamer  # noqa: PLC0415

        renamer = glob_renamer(old, new)
    else:
        renamer = {old: new}
    with hint_checkpoint_names(ckpt, [old]):
        if callable(renamer) and (include or exclude):  # a pattern's (checked above)
            renamer = _restricted(renamer, _picked(ckpt, include, exclude))
        if (regex or as_glob) and not edit.rename_keys(located(ckpt), renamer, overwrite=overwrite, dry_run=True):
            how = "re.fullmatch" if regex else "glob"
            among = " among the names --include/--exclude pick" if include or exclude else ""
            raise Failure(f"{ckpt}: no tensor name{among} matches {old!r} ({how})")
        with render.progress(0 if dry_run else _copy_total(ckpt, output), "copying") as progress:
            mapping = edit.rename_keys(located(ckpt), renamer, overwrite=overwrite, output=output,
                                       dry_run=dry_run, progress=progress, drop_meta=drop_meta)
    _report_mapping(mapping, as_json, dry_run, output, "renamed")


def _picked(ckpt: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> set[str]:
    """The tensor names of `ckpt` that --include/--exclude pick."""
    from ..reader import CheckpointReader  # noqa: PLC0415
    from ..selection import select  # noqa: PLC0415

    with CheckpointReader(located(ckpt)) as reader:
        return set(select(list(reader), include, exclude, path=reader.prefix))


def _restricted(renamer: Callable[[str], str | None], names: set[str]) -> Callable[[str], str | None]:
    """A pattern renamer applied only to `names` (None, unchanged, for any other key)."""
    def restricted(key: str) -> str | None:
        return renamer(key) if key in names else None

    return restricted


def _regex_renamer(old: str, new: str) -> Callable[[str], str | None]:
    """key -> re.fullmatch(old, key).expand(new), or None where the pattern does not match."""
    import re  # noqa: PLC0415

    try:
        pattern = re.compile(old)
    except re.error as exc:
        raise click.BadParameter(f"{old!r}: {exc}", param_hint="OLD") from None

    def renamer(key: str) -> str | None:
        match = pattern.fullmatch(key)
        if match is None:
            return None
        try:
            return match.expand(new)
        except (re.error, IndexError) as exc:
            raise click.BadParameter(f"{new!r}: {exc}", param_hint="NEW") from None

    return renamer


def _copy_total(ckpt: str, output: str | None) -> int:
    """Bytes an `-o` edit may copy (0 when editing in place: no progress bar then)."""
    if output is None or not render.stderr_is_tty():
        return 0
    from ..ops.convert import source_bytes  # noqa: PLC0415

    return source_bytes(located(ckpt))


def _report_mapping(mapping: dict[str, str], as_json: bool, dry_run: bool, output: str | None, verb: str) -> None:
    if as_json:
        echo_json(mapping)
    else:
        for old, new in mapping.items():
            echo(f"{printable(old)} -> {printable(new)}")
    if dry_run:
        note(f"dry run: would have {verb} {len(mapping)} tensor(s); nothing changed")
    else:
        where = f" into {printable(output)}" if output else ""
        note(f"{verb} {len(mapping)} tensor(s){where}")


@click.command("ema", cls=Command)
@ckpt_option()
@click.argument("ckpt_arg", required=False, metavar="[CKPT]", type=PATH)
@output_option()
@overwrite_option()
@click.option("--ema-name", default="ExponentialMovingAverage", show_default=True,
              help="the suffix of shadow names (the EMA's name)")
@drop_meta_option()
@click.option("--json", "as_json", is_flag=True, help="print {shadow: variable} as JSON")
@click.pass_context
def ema_cmd(ctx: click.Context, ckpt: str, ckpt_arg: str | None, output: str | None, overwrite: bool, ema_name: str,
            drop_meta: bool, as_json: bool) -> None:
    """Make the inference checkpoint: each variable takes its moving average.

    v gets v/ExponentialMovingAverage's value (what EMA.variables_to_restore()
    would restore) and the shadow names are dropped. Only the .index is rewritten,
    and a TF1 .meta's Saver, which stops restoring the shadow variables. The
    checkpoint is CKPT or -c CKPT (default: the one in `.`).
    """
    from ..ops import edit  # noqa: PLC0415

    if ckpt_arg is not None:
        ckpt = use_checkpoint(ctx, ckpt_arg)

    check_output(output)
    with render.progress(_copy_total(ckpt, output), "copying") as progress:
        mapping = edit.apply_ema(located(ckpt), output=output, ema_name=ema_name, progress=progress,
                                 drop_meta=drop_meta, overwrite=overwrite)
    _report_mapping(mapping, as_json, False, output, "replaced by their averages:")


@click.command("rm", cls=Command)
@ckpt_option()
@click.argument("names", nargs=-1, metavar="[CKPT] [NAME]...", shell_complete=complete_tensor_names)
@filter_options()
@click.option("--glob", "as_glob", is_flag=True, hidden=True, help="deprecated: NAMES are globs (--include)")
@click.option("--regex", is_flag=True, help="NAMES are Python regexes matching whole names (re.fullmatch)")
@click.option("--optimizer", is_flag=True,
              help="remove the optimizer's state: TF1 slots of the usual optimizers (Adam, Momentum, "
                   "RMSProp, Adagrad, Adadelta, Ftrl, BERT's adam_m/adam_v, beta1_power...); TF2 the "
                   "optimizer objects and what only they reach")
@click.option("--compact", is_flag=True,
              help="also rewrite the data shards without the removed bytes (reclaims space)")
@click.option("--dry-run", is_flag=True, help="print what would be removed; change nothing")
@output_option()
@overwrite_option()
@drop_meta_option()
@click.option("--json", "as_json", is_flag=True, help="print the removed names as JSON")
@click.pass_context
def rm_cmd(ctx: click.Context, ckpt: str, names: tuple[str, ...], include: tuple[str, ...],
           exclude: tuple[str, ...], as_glob: bool, regex: bool, optimizer: bool, compact: bool, dry_run: bool,
           output: str | None, overwrite: bool, drop_meta: bool, as_json: bool) -> None:
    """Remove tensors NAMES from the checkpoint, keeping every file of it consistent.

    What goes: NAMES, the tensors --include globs match, and with --optimizer the
    optimizer's state; --exclude globs then keep what they match. Without -c, a
    first argument that opens as a checkpoint and is no tensor name (or object path)
    of the checkpoint in `.` is the checkpoint: `ckptkit rm run --optimizer`.
    In a TF2 checkpoint a NAME may be an object path (`optimizer`,
    `model/layer_with_weights-0`): the object goes with what only it reaches (its
    variables and their optimizer slots; variables the model shares stay), and the
    object graph is rewritten. A TF1 .meta's Saver stops restoring removed keys.
    A partitioned variable goes with all its slices. The removed tensors' bytes stay
    in the data shards, unreferenced, until --compact rewrites the shards (which
    `rm --compact` with no names also does). --optimizer on a checkpoint without
    optimizer state removes nothing and succeeds ("nothing to remove").
    """
    from ..ops import edit  # noqa: PLC0415

    if as_glob and regex:
        raise click.UsageError("--glob and --regex are alternatives")
    if (as_glob or regex) and not names:
        raise click.UsageError("--glob and --regex need at least one pattern as NAME")
    ckpt, names = leading_checkpoint(ctx, ckpt, names)
    if as_glob:
        deprecated("rm --glob PATTERN", "--include PATTERN")
        include, names = (*include, *names), ()
    if regex and not names:
        raise click.UsageError("--regex needs at least one pattern as NAME")
    if not names and not compact and not optimizer and not include:
        raise click.UsageError("give at least one NAME, --include GLOB, --optimizer, or --compact alone to "
                               "reclaim space")
    if exclude and not (names or include or optimizer):
        raise click.UsageError("--exclude keeps tensors out of what NAME, --include, --regex or --optimizer "
                               "select; it selects nothing itself")
    check_output(output)
    plain = () if regex else names
    selection: dict[str, Any] = {"glob": include, "regex": names if regex else (), "optimizer": optimizer,
                                 "exclude": exclude, "overwrite": overwrite}
    with hint_checkpoint_names(ckpt, plain):
        if dry_run:
            removed = edit.remove_keys(located(ckpt), plain, dry_run=True, **selection)
            _report_removed(removed, as_json)
            note(f"dry run: would remove {plural(len(removed))}; nothing changed")
            return
        if compact:
            with render.progress(_copy_total(ckpt, output or ckpt), "compacting") as progress:
                removed, freed = edit.remove_and_compact(located(ckpt), plain, output=output,
                                                         progress=progress, drop_meta=drop_meta, **selection)
            _report_removed(removed, as_json)
            if removed:
                note(f"removed {plural(len(removed))}")
            elif optimizer and not names:
                note(_NOTHING_TO_REMOVE)
            note(f"compacted: {human(freed)} reclaimed")
            return
        with render.progress(_copy_total(ckpt, output), "copying") as progress:
            removed = edit.remove_keys(located(ckpt), plain, output=output, progress=progress,
                                       drop_meta=drop_meta, **selection)
    _report_removed(removed, as_json)
    if not removed and optimizer and not names:
        note(_NOTHING_TO_REMOVE + (f"; {printable(output)} written unchanged" if output else ""))
        return
    if located(ckpt).format != "v2":  # written tensor by tensor into OUT: the removed ones are not there
        note(f"removed {plural(len(removed))}")
        return
    exception = " (except where the object graph's shard was rewritten)" if _has_object_graph(output or ckpt) else ""
    note(f"removed {plural(len(removed))}; their bytes stay in the data shards until `ckptkit rm --compact`"
          + exception)


_NOTHING_TO_REMOVE = "nothing to remove: no optimizer state found"


def _has_object_graph(ckpt: str) -> bool:
    from ..formats.objectgraph import OBJECT_GRAPH_KEY  # noqa: PLC0415
    from ..reader import CheckpointReader  # noqa: PLC0415

    with CheckpointReader(located(ckpt)) as reader:
        return OBJECT_GRAPH_KEY in reader


def _report_removed(removed: list[str], as_json: bool) -> None:
    if as_json:
        echo_json(removed)
        return
    for name in removed:
        echo(printable(name))
