"""Options and arguments several commands share, and what a checkpoint argument means.

The filter vocabulary (`--include`/`--exclude`), `-c/--checkpoint`, `-o/--output`,
`--overwrite`, `--drop-meta`, shell completion of tensor names, and the rules that
decide which positional argument is the checkpoint (`rm run v`, `rename run v w`).
Library modules are imported inside the functions, to keep `ckptkit --help` fast.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import click

from ..errors import CheckpointError
from .failure import Failure, error_text
from .render import note, printable

if TYPE_CHECKING:
    from ..location import Location

# What click.option returns, and so each shared option below: a decorator of a command's function.
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def located(path: str, *, quiet: bool = False) -> Location:
    """The checkpoint a command's argument names, resolved once per command (later calls
    with the same path get the same Location): what the command passes down. A
    directory that does not open its state file's latest gets its note here, once,
    unless `quiet` (probing whether an argument is a checkpoint at all)."""
    from ..location import locate  # noqa: PLC0415

    meta = click.get_current_context().meta
    found: dict[str, Location] = meta.setdefault("ckptkit.locations", {})
    noted: set[str] = meta.setdefault("ckptkit.noted", set())
    if path not in found:
        found[path] = locate(path)
        if meta.get(_RAW_NAMES):
            found[path] = found[path]._replace(raw_names=True)
    if not quiet and path not in noted:
        noted.add(path)
        line = resolution_note(found[path])
        if line:
            note(line)
    return found[path]


_RAW_NAMES = "ckptkit.raw_names"


def raw_names_option() -> Decorator:
    """`--raw-names`: every checkpoint argument the command resolves (`located`) is read
    with its tensors' names as stored: a Keras 3 file's HDF5 paths (`layers/dense/vars/0`)
    instead of LAYER/VAR; other formats have no other names. The command's function
    does not see it: the Locations it gets carry it down."""
    def remember(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            ctx.meta[_RAW_NAMES] = True

    return click.option("--raw-names", is_flag=True, expose_value=False, callback=remember,
                        help="Keras 3 files: name tensors by their HDF5 paths (layers/dense/vars/0), "
                             "not LAYER/VAR (head/kernel)")


def resolution_note(location: Location) -> str | None:
    """One line saying which checkpoint a directory opens and why, when it is not simply
    the latest one its state file names (a stale or damaged state file, a moved
    directory); None when it is."""
    from .. import storage  # noqa: PLC0415
    from ..formats.state_file import STATE_FILENAME  # noqa: PLC0415
    from ..location import MOVED  # noqa: PLC0415

    if not location.stale_state:
        return None
    directory = location.given
    state_file = storage.join(directory, STATE_FILENAME)
    if location.how == MOVED:
        why = "the checkpoint of that name in this directory (moved or copied here)"
    else:
        why = f"the only checkpoint in {printable(directory)}"
    return (f"note: {printable(state_file)} names {printable(location.recorded)} as latest, which does not "
            f"exist; opened {printable(location.prefix)}, {why}")


def complete_tensor_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of tensor names from the command's checkpoint argument."""
    path = ctx.params.get("ckpt") or "."
    try:
        from ..formats.slices import is_slice_key  # noqa: PLC0415
        from ..reader import CheckpointReader  # noqa: PLC0415

        with CheckpointReader(path) as reader:
            return [k for k in reader if k.startswith(incomplete) and not is_slice_key(k)]
    except Exception:  # noqa: BLE001 - completion must never print errors
        return []


# No checks at parse time: click's (readable, exists) would make a bad path a usage
# error (exit 2); the library's own checks name the file and exit 1.
PATH = click.Path(readable=False)

_CKPT_HELP = "checkpoint: a prefix, any of its files, or a directory (its latest checkpoint)"


def ckpt_option() -> Decorator:
    return click.option("-c", "--checkpoint", "ckpt", default=".", show_default=True,
                        type=PATH, help=_CKPT_HELP)


# --------------------------------------------------------------------------- the filter vocabulary

_INCLUDE_HELP = "only tensors whose name matches GLOB (fnmatch: * crosses /); repeatable"
_EXCLUDE_HELP = "not the tensors whose name matches GLOB; repeatable (a GLOB matching no name is an error)"


def deprecated(old: str, new: str) -> None:
    """The one-line note an old spelling gets (it keeps working)."""
    note(f"note: {old} is deprecated; use {new} (same meaning)")


def filter_options(legacy_filter: bool = False) -> Decorator:
    """`--include GLOB`/`--exclude GLOB` (repeatable), the same on every command that picks
    tensors; the command gets `include` and `exclude` tuples for `selection.select`, the
    one function applying them (directly or inside the library call). `legacy_filter`:
    the old `--filter GLOB` too, hidden, taken as an include, with a deprecation note."""
    import functools  # noqa: PLC0415

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        if legacy_filter:
            inner = f

            @functools.wraps(inner)
            def command(*args: Any, old_filter: tuple[str, ...], include: tuple[str, ...], **kwargs: Any) -> Any:
                if old_filter:
                    deprecated("--filter", "--include")
                return inner(*args, include=(*include, *old_filter), **kwargs)

            f = click.option("--filter", "old_filter", multiple=True, metavar="GLOB", hidden=True)(command)
        f = click.option("--exclude", multiple=True, metavar="GLOB", help=_EXCLUDE_HELP)(f)
        return click.option("--include", multiple=True, metavar="GLOB", help=_INCLUDE_HELP)(f)

    return decorate


def _ckpt_was_given(ctx: click.Context) -> bool:
    from click.core import ParameterSource  # noqa: PLC0415

    return ctx.get_parameter_source("ckpt") not in (ParameterSource.DEFAULT, None)


def use_checkpoint(ctx: click.Context, path: str) -> str:
    """An edit's checkpoint given as a positional argument: errors name it."""
    if _ckpt_was_given(ctx):
        raise click.UsageError(f"two checkpoints: -c {ctx.params['ckpt']} and {path}; give one")
    ctx.params["ckpt"] = path
    return path


def _is_checkpoint(path: str) -> bool:
    """Whether `path` opens as a checkpoint (what any CKPT argument accepts)."""
    from ..reader import CheckpointReader  # noqa: PLC0415

    try:
        with CheckpointReader(located(path, quiet=True)):
            return True
    except (CheckpointError, OSError, ValueError):
        return False


def _names_in(ckpt: str, name: str) -> bool:
    """Whether `name` is a tensor name, or a TF2 object path, of checkpoint `ckpt` (False
    when `ckpt` does not open)."""
    from ..reader import CheckpointReader  # noqa: PLC0415

    try:
        with CheckpointReader(located(ckpt, quiet=True)) as reader:
            if name in reader:
                return True
            graph = reader.object_graph()
            if graph is None:
                return False
            try:
                graph.find(name)
            except KeyError:
                return False
            return True
    except (CheckpointError, OSError, ValueError):
        return False


def leading_checkpoint(ctx: click.Context, ckpt: str, names: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """`rm [CKPT] NAME...`: without -c, the first positional is the checkpoint when it opens
    as one and is neither a tensor name nor a TF2 object path of the checkpoint in `.` (a
    name of `.` wins, so `rm v` in the checkpoint's directory removes v)."""
    if not names or _ckpt_was_given(ctx) or not _is_checkpoint(names[0]) or _names_in(ckpt, names[0]):
        return ckpt, names
    return use_checkpoint(ctx, names[0]), names[1:]


@contextlib.contextmanager
def hint_checkpoint_names(ckpt: str, names: Iterable[str]) -> Iterator[None]:
    """An edit failing on a NAME that is no name of CKPT but is itself a checkpoint: the
    error asks `did you mean -c NAME?` (`ckptkit rename run v w` meant `-c run`)."""
    try:
        yield
    except CheckpointError as exc:
        for name in names:
            if (exc.key in (name, None) and name != ckpt and _is_checkpoint(name)
                    and not _names_in(ckpt, name)):
                raise Failure(f"{error_text(exc, ckpt)}; {name} is a checkpoint: did you mean -c {name}?") \
                    from None
        raise


def output_option() -> Decorator:
    return click.option("-o", "--output", type=PATH, default=None,
                        help="write the result as a new checkpoint at this prefix (data shards "
                             "hard-linked or copied) instead of editing in place; an existing one "
                             "only with --overwrite")


_OVERWRITE_HELP = ("replace an existing checkpoint (or file) at the output; its old .meta and surplus "
                   "data shards go in the same commit")


def overwrite_option(help: str = _OVERWRITE_HELP) -> Decorator:  # noqa: A002 - click's own word
    """--overwrite: every command that writes a new checkpoint or file refuses an
    existing one (exit 1, nothing written) unless it is given."""
    return click.option("--overwrite", is_flag=True, help=help)


def drop_meta_option() -> Decorator:
    return click.option("--drop-meta", is_flag=True,
                        help="TF1: delete the checkpoint's .meta in the same commit instead of rewriting "
                             "its Saver (needed where ckptkit cannot rewrite it)")


def check_output(output: str | None, *, overwrite: bool = True) -> None:
    """An `-o` prefix that no file could be written under (or, unless `overwrite`, that
    exists already) fails before anything is read."""
    if output is not None:
        from ..ops.convert import check_destination  # noqa: PLC0415

        check_destination(output, make_parents=True, exist_ok=overwrite)
