r"""The `ckptkit` command: look inside, check, edit and convert TF checkpoints.

Only parsing and rendering live here; every number and every edit comes from the
library (info, edit, convert, state, metagraph, saver). Heavy modules (numpy,
protobuf, rich) are imported inside the commands, so `ckptkit --help` and shell
completion start at the speed of click alone.

Output: rich tables when stdout is a terminal, plain aligned text when it is not,
`--json` for scripts. Bad input: one line `ckptkit: error: FILE: ...` on stderr, exit 1;
usage errors exit 2; Ctrl-C exits 130; never a traceback (CKPTKIT_DEBUG=1 shows one).

Names and paths are printed safely whatever they hold. TF keys are bytes, which
ckptkit decodes as UTF-8 with undecodable bytes kept as surrogate escapes; in text
output such a byte shows as `\xff`, and control characters as `\x0a` (`\u0085` for
C1 controls), so that one name is one line and the printed form is what bash's
`$'...'` quoting turns back into the name. Backslashes are not doubled, so text
output is for people: `--json` is exact, writing an undecodable byte as the JSON
escape `\udcff` (Python's `json.loads` gives back the str ckptkit uses as the key).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys

import click

from . import __version__
from .errors import CheckpointError

__all__ = ["cli", "main"]

_DEBUG_ENV = "CKPTKIT_DEBUG"


# --------------------------------------------------------------------------- errors

class _Failure(click.ClickException):
    """A one-line error on stderr and exit status 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        _echo(_error_line(self.message), err=True)


def _error_line(message: str) -> str:
    """`ckptkit: error: MESSAGE` as one printable line (a key's undecodable bytes as \\xff)."""
    return "ckptkit: error: " + _printable(_BYTE_IN_REPR.sub(r"\1\\x\2", message))


_LONG_KEY = 120  # keys longer than this are shortened in error messages
# An undecodable byte in repr(key), `\udcff`, shown as the byte it stands for, `\xff`.
_BYTE_IN_REPR = re.compile(r"(?<!\\)((?:\\\\)*)\\udc([89a-f][0-9a-f])")


def _error_text(exc: CheckpointError, fallback_path: str | None = None) -> str:
    """The one-line message of a CheckpointError: its file (or `fallback_path`, the
    command's checkpoint, when the library named none), its key (shortened if long)."""
    key = exc.key
    path = exc.path if exc.path is not None else fallback_path
    if path == exc.path and (key is None or (len(key) <= _LONG_KEY and not _SURROGATES.search(key))):
        return str(exc)
    parts = [] if path is None else [path]
    if key is not None:
        shown = repr(key) if len(key) <= _LONG_KEY else f"{key[:_LONG_KEY]!r}... ({len(key)} characters)"
        parts.append("key " + _BYTE_IN_REPR.sub(r"\1\\x\2", shown))
    return ": ".join([*parts, exc.message])


# The parameter naming the file a command works on, for errors the library raised
# without one (commands with two files, diff and convert, have none).
_FILE_PARAMS = ("ckpt", "file", "directory")


# Parameters that may name a directory standing for its latest checkpoint.
_CKPT_PARAMS = ("ckpt", "file", "src", "a", "b")


@contextlib.contextmanager
def _quiet_state_log():
    """While a command runs, ckptkit.state's warning about a state file it ignores (as TF
    does) stays off stderr: the note or the command's error says it, once."""
    import logging  # noqa: PLC0415

    log = logging.getLogger("ckptkit.state")
    was = log.disabled
    log.disabled = True
    try:
        yield
    finally:
        log.disabled = was


def _resolution_note(directory: str) -> str | None:
    """One line saying which checkpoint `directory` opens and why, when it is not simply
    the latest one its state file names (a stale or damaged state file, a moved
    directory); None when it is, or when the command itself will report an error."""
    from . import reader, state  # noqa: PLC0415

    state_file = os.path.join(directory, state.STATE_FILENAME)
    try:
        opened = reader.resolve_prefix(directory)
    except (CheckpointError, OSError, ValueError):
        return None  # the command fails with its own message
    try:
        recorded = state.read_state_file(state_file)
    except CheckpointError:  # unreachable in practice: resolve_prefix reads it strictly
        return None
    if recorded is None or not recorded.model_checkpoint_path:
        return None
    named = recorded.model_checkpoint_path
    latest = state.resolve_checkpoint_path(directory, named)
    as_written = named if os.path.isabs(named) else os.path.join(directory, named)
    if opened == latest == as_written:
        return None
    if opened != latest and state.checkpoint_exists(latest):
        return None  # a save replaced the state file between the two reads: nothing is stale
    if opened == latest:
        why = "the checkpoint of that name in this directory (moved or copied here)"
    else:
        why = f"the only checkpoint in {_printable(directory)}"
    return (f"note: {_printable(state_file)} names {_printable(named)} as latest, which does not "
            f"exist; opened {_printable(opened)}, {why}")


class _Command(click.Command):
    """A command whose CheckpointErrors always name a file: its own when the library's don't.

    A directory given as a checkpoint that does not open its state file's latest (stale
    or damaged state file, moved directory) gets a note on stderr saying which it opens.
    """

    def invoke(self, ctx: click.Context):
        with _quiet_state_log():
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context):
        from . import storage  # noqa: PLC0415 - commands import what they use

        for param in _CKPT_PARAMS:
            value = ctx.params.get(param)
            if isinstance(value, str) and storage.isdir(value):
                note = _resolution_note(value)
                if note:
                    _note(note)
        try:
            return super().invoke(ctx)
        except CheckpointError as exc:
            fallback = next((ctx.params[p] for p in _FILE_PARAMS if ctx.params.get(p)), None)
            raise _Failure(_error_text(exc, fallback)) from None


_INTERRUPTED = "ckptkit: interrupted"  # Ctrl-C: this line, exit status 130 (128 + SIGINT)


def _os_message(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else ""
    what = exc.strerror or str(exc)
    return f"{where}: {what}" if where else what


class _Group(click.Group):
    """Turns every error a command can meet into a one-line message and an exit code."""

    command_class = _Command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except CheckpointError as exc:
            raise _Failure(_error_text(exc)) from None
        except BrokenPipeError:  # `ckptkit ls | head`: the reader left, which is fine
            with contextlib.suppress(Exception):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(141) from None
        except OSError as exc:
            raise _Failure(_os_message(exc)) from None
        except KeyboardInterrupt:
            _echo(_INTERRUPTED, err=True)
            raise click.exceptions.Exit(130) from None
        except Exception as exc:
            if os.environ.get(_DEBUG_ENV):
                raise
            raise _Failure(f"internal error: {type(exc).__name__}: {exc} "
                           f"(set {_DEBUG_ENV}=1 for a traceback)") from None


# --------------------------------------------------------------------------- rendering

# Lone surrogates: undecodable bytes of a name or path (surrogateescape), or worse.
_SURROGATES = re.compile("[\ud800-\udfff]")
# ...and what else must not reach a terminal raw: C0 controls, DEL, C1 controls.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape_char(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # the byte 0x80-0xff that surrogateescape kept
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def _printable(text: object) -> str:
    """A name or path as one printable line: undecodable bytes as \\xff, controls escaped."""
    return _UNPRINTABLE.sub(_escape_char, str(text))


def _safe(text: str, stream) -> str:
    """`text` (possibly many lines) made writable to `stream`: surrogates escaped, and
    characters its encoding lacks as backslash escapes (a strict non-UTF-8 locale)."""
    text = _SURROGATES.sub(_escape_char, text)
    encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("_", "-")
    if encoding not in ("utf-8", "utf8"):
        text = text.encode(encoding, "backslashreplace").decode(encoding, "replace")
    return text


def _echo(text: str = "", err: bool = False) -> None:
    """click.echo that never fails on what a name or path holds."""
    click.echo(_safe(text, sys.stderr if err else sys.stdout), err=err)


def _stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def _console(stderr: bool = False):
    from rich.console import Console  # noqa: PLC0415

    return Console(stderr=stderr, highlight=False)


def _echo_json(value) -> None:
    """JSON on stdout. Strings are exact: an undecodable byte of a name (a lone surrogate
    in Python) is written as its JSON escape (`\\udcff`); all of it is ASCII when
    stdout is not UTF-8."""
    encoding = (getattr(sys.stdout, "encoding", None) or "utf-8").lower().replace("_", "-")
    ascii_only = encoding not in ("utf-8", "utf8")
    text = json.dumps(value, indent=2, ensure_ascii=ascii_only, default=_json_default)
    click.echo(_SURROGATES.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


def _json_default(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "as_dict"):
        return value.as_dict()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _table(columns: list[tuple[str, str]], rows: list[list], footer: list | None = None,
           title: str | None = None) -> None:
    """A table: rich on a terminal, plain aligned columns otherwise. columns: (header, 'l'|'r')."""
    cells = [[_printable(c) for c in row] for row in rows]
    foot = [_printable(c) for c in footer] if footer else None
    title = _printable(title) if title else title
    if _stdout_is_tty():
        from rich.table import Table  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        table = Table(title=Text(title) if title else None, show_footer=foot is not None,
                      title_justify="left")
        for i, (header, align) in enumerate(columns):
            table.add_column(header, justify="right" if align == "r" else "left",
                             footer=Text(foot[i]) if foot else "", overflow="fold")
        for row in cells:
            table.add_row(*(Text(c) for c in row))
        _console().print(table)
        return
    if title:
        _echo(title)
    all_rows = [[h for h, _ in columns], *cells, *([foot] if foot else [])]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(columns))]
    for row in all_rows:
        parts = [c.rjust(w) if a == "r" else c.ljust(w)
                 for c, w, (_, a) in zip(row, widths, columns, strict=True)]
        _echo("  ".join(parts).rstrip())


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _bytes(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _count(n: int, what: str = "tensor") -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _shape(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


@contextlib.contextmanager
def _progress(total: int, description: str):
    """A byte-count callback showing a rich progress bar on a terminal stderr, else None."""
    if not _stderr_is_tty() or total <= 0:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn  # noqa: PLC0415

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=_console(stderr=True),
                  transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _note(message: str) -> None:
    """A status line for people, on stderr (stdout stays parseable)."""
    _echo(message, err=True)


# --------------------------------------------------------------------------- completion

def _complete_tensor_names(ctx: click.Context, param, incomplete: str):
    """Shell completion of tensor names from the command's checkpoint argument."""
    path = ctx.params.get("ckpt") or "."
    try:
        from .format.slices import is_slice_key  # noqa: PLC0415
        from .reader import CheckpointReader  # noqa: PLC0415

        with CheckpointReader(path) as reader:
            return [k for k in reader if k.startswith(incomplete) and not is_slice_key(k)]
    except Exception:  # completion must never print errors
        return []


# No checks at parse time: click's (readable, exists) would make a bad path a usage
# error (exit 2); the library's own checks name the file and exit 1.
_PATH = click.Path(readable=False)

_CKPT_HELP = "checkpoint: a prefix, any of its files, or a directory (its latest checkpoint)"


def _ckpt_option():
    return click.option("-c", "--checkpoint", "ckpt", default=".", show_default=True,
                        type=_PATH, help=_CKPT_HELP)


# --------------------------------------------------------------------------- the filter vocabulary

_INCLUDE_HELP = "only tensors whose name matches GLOB (fnmatch: * crosses /); repeatable"
_EXCLUDE_HELP = "not the tensors whose name matches GLOB; repeatable (a GLOB matching no name is an error)"


def _deprecated(old: str, new: str) -> None:
    """The one-line note an old spelling gets (it keeps working)."""
    _note(f"note: {old} is deprecated; use {new} (same meaning)")


def _filter_options(legacy_filter: bool = False):
    """`--include GLOB`/`--exclude GLOB` (repeatable), the same on every command that picks
    tensors; the command gets `include` and `exclude` tuples for `selection.select`, the
    one function applying them (directly or inside the library call). `legacy_filter`:
    the old `--filter GLOB` too, hidden, taken as an include, with a deprecation note."""
    import functools  # noqa: PLC0415

    def decorate(f):
        if legacy_filter:
            inner = f

            @functools.wraps(inner)
            def command(*args, old_filter, include, **kwargs):
                if old_filter:
                    _deprecated("--filter", "--include")
                return inner(*args, include=(*include, *old_filter), **kwargs)

            f = click.option("--filter", "old_filter", multiple=True, metavar="GLOB", hidden=True)(command)
        f = click.option("--exclude", multiple=True, metavar="GLOB", help=_EXCLUDE_HELP)(f)
        return click.option("--include", multiple=True, metavar="GLOB", help=_INCLUDE_HELP)(f)

    return decorate


def _ckpt_was_given(ctx: click.Context) -> bool:
    from click.core import ParameterSource  # noqa: PLC0415

    return ctx.get_parameter_source("ckpt") not in (ParameterSource.DEFAULT, None)


def _use_checkpoint(ctx: click.Context, path: str) -> str:
    """An edit's checkpoint given as a positional argument: errors name it, and a directory
    that does not open its latest gets the note every command's CKPT gets."""
    from . import storage  # noqa: PLC0415

    if _ckpt_was_given(ctx):
        raise click.UsageError(f"two checkpoints: -c {ctx.params['ckpt']} and {path}; give one")
    ctx.params["ckpt"] = path
    if storage.isdir(path):
        note = _resolution_note(path)
        if note:
            _note(note)
    return path


def _is_checkpoint(path: str) -> bool:
    """Whether `path` opens as a checkpoint (what any CKPT argument accepts)."""
    from .reader import CheckpointReader  # noqa: PLC0415

    try:
        with CheckpointReader(path):
            return True
    except (CheckpointError, OSError, ValueError):
        return False


def _names_in(ckpt: str, name: str) -> bool:
    """Whether `name` is a tensor name, or a TF2 object path, of checkpoint `ckpt` (False
    when `ckpt` does not open)."""
    from .reader import CheckpointReader  # noqa: PLC0415

    try:
        with CheckpointReader(ckpt) as reader:
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


def _leading_checkpoint(ctx: click.Context, ckpt: str, names: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """`rm [CKPT] NAME...`: without -c, the first positional is the checkpoint when it opens
    as one and is neither a tensor name nor a TF2 object path of the checkpoint in `.` (a
    name of `.` wins, so `rm v` in the checkpoint's directory removes v)."""
    if not names or _ckpt_was_given(ctx) or not _is_checkpoint(names[0]) or _names_in(ckpt, names[0]):
        return ckpt, names
    return _use_checkpoint(ctx, names[0]), names[1:]


@contextlib.contextmanager
def _hint_checkpoint_names(ckpt: str, names):
    """An edit failing on a NAME that is no name of CKPT but is itself a checkpoint: the
    error asks `did you mean -c NAME?` (`ckptkit rename run v w` meant `-c run`)."""
    try:
        yield
    except CheckpointError as exc:
        for name in names:
            if (exc.key in (name, None) and name != ckpt and _is_checkpoint(name)
                    and not _names_in(ckpt, name)):
                raise _Failure(f"{_error_text(exc, ckpt)}; {name} is a checkpoint: did you mean -c {name}?") \
                    from None
        raise


def _output_option():
    return click.option("-o", "--output", type=_PATH, default=None,
                        help="write the result as a new checkpoint at this prefix (data shards "
                             "hard-linked or copied) instead of editing in place; an existing one "
                             "only with --overwrite")


_OVERWRITE_HELP = ("replace an existing checkpoint (or file) at the output; its old .meta and surplus "
                   "data shards go in the same commit")


def _overwrite_option(help: str = _OVERWRITE_HELP):  # noqa: A002 - click's own word
    """--overwrite: every command that writes a new checkpoint or file refuses an
    existing one (exit 1, nothing written) unless it is given."""
    return click.option("--overwrite", is_flag=True, help=help)


# --------------------------------------------------------------------------- commands

def _log_to_stderr(verbose: int) -> None:
    """ckptkit's own warnings reach stderr as lines; other libraries' log (a store's
    retries, its tracebacks, even from threads still running at exit) only with -v (INFO)
    or -vv (DEBUG), so that a failing store is the command's one error line."""
    import logging  # noqa: PLC0415

    class StderrHandler(logging.Handler):
        ckptkit_cli = True

        def emit(self, record: logging.LogRecord) -> None:
            try:
                sys.stderr.write(self.format(record) + "\n")  # sys.stderr as it is then
            except Exception:  # noqa: BLE001 - logging's own policy for a failing handler
                self.handleError(record)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "ckptkit_cli", False)]:
        root.removeHandler(old)  # an earlier command of this process (tests) installed it
    handler = StderrHandler()
    if verbose:
        handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
        level = root.level
        root.setLevel(logging.INFO if verbose == 1 else logging.DEBUG)
        click.get_current_context().call_on_close(lambda: root.setLevel(level))
    else:
        handler.setLevel(logging.WARNING)
        handler.addFilter(lambda record: record.name == "ckptkit" or record.name.startswith("ckptkit."))
    root.addHandler(handler)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ckptkit")
@click.option("-v", "--verbose", count=True,
              help="show the log of the libraries behind URLs (fsspec, s3fs, gcsfs, aiohttp) on stderr; "
                   "-vv: their debug log too")
def cli(verbose: int) -> None:
    """Inspect, verify, edit and convert TensorFlow checkpoints, without TensorFlow.

    CKPT may be a checkpoint prefix (model.ckpt-1000), any file of it (.index,
    .data-*, .meta), a directory (its latest checkpoint) or a SavedModel directory
    (its variables/variables); ls, show, diff and verify also read .npz and
    .safetensors files (by extension; nothing is unpickled). Any path may be a URL
    (s3://, gs://, https://, hf://, ... with the "remote" extra installed), with
    credentials from the store's usual environment or fsspec's configuration.

    Edits rewrite the .index, and with it the TF2 object graph or the TF1 .meta so
    that every file agrees, in one atomic commit holding the directory's lock
    (tensor bytes are copied only by rm --compact, or where a changed object graph
    shares a small shard).
    """
    _log_to_stderr(verbose)


@cli.command("ls")
@click.argument("ckpt", default=".", required=False, type=_PATH)
@click.argument("object_path", required=False, metavar="[OBJECT]")
@click.option("--json", "as_json", is_flag=True,
              help='print {"checkpoint", "tensors": [...], "elements", "bytes"} as JSON for scripts')
@_filter_options(legacy_filter=True)
@click.option("--count-exclude", multiple=True, metavar="GLOB",
              help="list tensors matching GLOB but leave their elements and bytes out of the totals "
                   "(inspect_checkpoint's --count_exclude_pattern); repeatable")
@click.option("--sort", type=click.Choice(["name", "size"]), default="name", show_default=True,
              help="order by name, or by size (largest first)")
@click.option("--tree", is_flag=True,
              help="TF2 checkpoints: the object graph from the root (or OBJECT), each variable with "
                   "its key, dtype, shape and optimizer slots; TF1: tensors grouped by / scopes")
def ls_cmd(ckpt: str, object_path: str | None, as_json: bool, include: tuple[str, ...], exclude: tuple[str, ...],
           count_exclude: tuple[str, ...], sort: str, tree: bool) -> None:
    """List tensors: name, dtype, shape, elements and bytes, with totals.

    OBJECT (TF2 checkpoints) is an object path such as `optimizer` or
    `model/layer_with_weights-0`: only the tensors it and the objects below it save,
    with their optimizer slots. --include/--exclude pick among those; tensors
    --count-exclude matches are listed but not counted in the totals (with --json,
    each tensor then says "counted": true or false).
    """
    from . import info  # noqa: PLC0415
    from .objectgraph import tree_text  # noqa: PLC0415
    from .selection import by_glob, select  # noqa: PLC0415

    prefix, infos = info.list_tensors(ckpt)
    if tree:
        objects = info.object_tree(prefix, object_path)
        if objects is not None and (include or exclude or count_exclude or sort != "name"):
            raise click.UsageError("--include, --exclude, --count-exclude and --sort apply to the flat listing; "
                                   "--tree of a TF2 checkpoint draws its object graph (give an OBJECT path to "
                                   "draw part of it)")
        if objects is not None:
            if as_json:
                _echo_json(objects)
            else:
                _echo(_printable(prefix) + (f" {_printable(object_path)}" if object_path else ""))
                for line in tree_text(objects, 1 if object_path else 0):
                    _echo(_printable(line))
            return
    if object_path is not None:
        wanted = set(info.object_keys(prefix, object_path))
        infos = [i for i in infos if i.name in wanted]
    picked = set(select([i.name for i in infos], include, exclude, path=prefix))
    infos = [i for i in infos if i.name in picked]
    uncounted = set(by_glob([i.name for i in infos], count_exclude, path=prefix, what="count-exclude glob"))
    if sort == "size":
        infos.sort(key=lambda i: (-(i.bytes or 0), i.name))  # unknown sizes (sliced strings, V1 strings) count 0
    if tree:
        root = info.scope_tree(infos)
        if as_json:
            _echo_json(_tree_json(root))
        else:
            _print_tree(prefix, root, uncounted)
        return
    counted = [i for i in infos if i.name not in uncounted]
    total_el = sum(i.elements for i in counted)
    total_b = sum(i.bytes or 0 for i in counted)
    if as_json:  # as verify and stats: the checkpoint opened, then the tensors
        _echo_json({"checkpoint": prefix, "tensors": [
            {**i.as_dict(), **({"counted": i.name not in uncounted} if count_exclude else {})} for i in infos],
            "elements": total_el, "bytes": total_b})
        return
    rows = [[i.name, i.dtype + (" (sliced)" if i.sliced else ""), _shape(i.shape),
             f"{i.elements:,}", _bytes(i.bytes)] for i in infos]
    tensors = _count(len(infos)) + (f" ({len(counted)} counted)" if count_exclude else "")
    _table([("name", "l"), ("dtype", "l"), ("shape", "l"), ("elements", "r"), ("bytes", "r")], rows,
           footer=[tensors, "", "", f"{total_el:,}", f"{total_b:,} ({_human(total_b)})"],
           title=prefix)


def _tree_totals(node: dict, uncounted: set[str]) -> tuple[int, int]:
    count, size = 0, 0
    for key, child in node.items():
        if key is None:
            count, size = count + 1, size + (0 if child.name in uncounted else child.bytes or 0)
        else:
            c, s = _tree_totals(child, uncounted)
            count, size = count + c, size + s
    return count, size


def _tree_json(node: dict) -> dict:
    out: dict = {}
    if None in node:
        out["tensor"] = node[None].as_dict()
    children = {k: _tree_json(v) for k, v in node.items() if k is not None}
    if children:
        out["children"] = children
    return out


def _tree_label(name: str, node: dict, uncounted: set[str]) -> str:
    parts = [_printable(name)]
    if None in node:
        t = node[None]
        parts.append(f"{t.dtype}{_shape(t.shape)}  {_bytes(t.bytes)} B" + ("  (not counted)" if t.name in uncounted
                                                                             else ""))
    if len(node) > (1 if None in node else 0):
        count, size = _tree_totals(node, uncounted)
        parts.append(f"({_count(count)}, {_human(size)})")
    return "  ".join(parts)


def _print_tree(prefix: str, root: dict, uncounted: set[str]) -> None:
    if _stdout_is_tty():
        from rich.text import Text  # noqa: PLC0415
        from rich.tree import Tree  # noqa: PLC0415

        def add(branch, node):
            for key, child in node.items():
                if key is not None:
                    add(branch.add(Text(_tree_label(key, child, uncounted))), child)

        top = Tree(Text(_printable(prefix)))
        add(top, root)
        _console().print(top)
        return
    _echo(_printable(prefix))

    def walk(node, depth):
        for key, child in node.items():
            if key is not None:
                _echo("  " * depth + _tree_label(key, child, uncounted))
                walk(child, depth + 1)

    walk(root, 1)


@cli.command("show")
@click.argument("ckpt", type=_PATH)
@click.argument("names", nargs=-1, shell_complete=_complete_tensor_names)
@click.option("--all", "all_tensors", is_flag=True, help="every tensor (as TF's inspect_checkpoint --all_tensors)")
@click.option("--stats", is_flag=True, help="min/max/mean/std and NaN/Inf/zero counts")
@click.option("--hist", is_flag=True, help="a histogram of the finite values (bins and counts in --json)")
@click.option("--bins", type=click.IntRange(min=1, max=1000), default=20, show_default=True,
              help="histogram bins")
@click.option("--full", is_flag=True, help="print every value (default: numpy's summary)")
@_filter_options()
@click.option("--json", "as_json", is_flag=True,
              help="print JSON (values only with --full or when small): an object for one NAME, "
                   "a list for several, globs or --all")
def show_cmd(ckpt: str, names: tuple[str, ...], all_tensors: bool, stats: bool, hist: bool, bins: int,
             full: bool, include: tuple[str, ...], exclude: tuple[str, ...], as_json: bool) -> None:
    """Print tensors' values (and, with --stats/--hist, their statistics).

    NAMES are tensor names or fnmatch globs ('dense/*'; * crosses /); --all shows
    every tensor. A name that is a tensor is taken as it is, even if it holds * or ?.
    In a TF2 checkpoint a NAME may be an object path (`model/layer_with_weights-0/kernel`):
    the tensor that object saves. --include adds the tensors its globs match to NAMES;
    --exclude then leaves out those its globs match.
    """
    import numpy as np  # noqa: PLC0415

    from . import stats as _stats  # noqa: PLC0415
    from .reader import CheckpointReader  # noqa: PLC0415
    from .selection import select  # noqa: PLC0415

    if not names and not all_tensors and not include:
        raise click.UsageError("give at least one NAME, --include GLOB or --all")
    single = len(names) == 1 and not all_tensors and not include
    out_list = []
    with CheckpointReader(ckpt) as reader:
        chosen = list(reader) if all_tensors else _select(reader, names)
        chosen = select(list(reader), include, exclude, base=chosen, path=reader.prefix)
        single = single and len(chosen) == 1 and (names[0] in reader or not any(c in names[0] for c in "*?["))
        dtypes = reader.get_variable_to_dtype_map()
        for i, name in enumerate(chosen):
            array = reader.get_tensor(name)
            dtype = dtypes[name].name
            summary = _stats.array_stats(array) if stats or hist else None
            histogram = _stats.array_histogram(array, summary, bins) if hist else None
            if as_json:
                out: dict[str, object] = {"name": name, "dtype": dtype, "shape": list(array.shape)}
                if full or array.size <= 1000:
                    out["values"] = (array.astype(np.float64) if array.dtype.kind == "V" else array).tolist()
                if stats:
                    out["stats"] = summary
                if hist:
                    out["hist"] = histogram
                out_list.append(out)
                continue
            if i:
                _echo()
            _echo(f"{_printable(name)}: {dtype}{_shape(array.shape)}")
            threshold = sys.maxsize if full else 1000
            with np.printoptions(threshold=threshold, linewidth=_width()):
                _echo(np.array2string(array, separator=", ") if array.ndim else str(array[()]))
            if stats and summary is not None:
                _table([("stat", "l"), ("value", "r")], [[k, _fmt(v)] for k, v in summary.items()])
            if hist:
                _print_histogram(histogram)
    if as_json:
        _echo_json(out_list[0] if single else out_list)


def _select(reader, names: tuple[str, ...]) -> list[str]:
    """The tensors NAMES pick, in the order given: a tensor's own name first, else a glob
    (every match, in key order). A name or glob that picks nothing is an error."""
    import fnmatch  # noqa: PLC0415

    from . import info  # noqa: PLC0415
    from .errors import TensorNotFoundError  # noqa: PLC0415

    chosen: dict[str, None] = {}
    for name in names:
        if name in reader:
            chosen[name] = None
            continue
        is_glob = any(c in name for c in "*?[")
        if not is_glob and reader.object_graph() is not None:  # a TF2 object path
            chosen[info.tensor_for(reader, name)] = None
            continue
        matches = [k for k in reader if fnmatch.fnmatchcase(k, name)] if is_glob else []
        if not matches:
            what = "no tensor matches this pattern" if is_glob else "tensor not found in checkpoint"
            raise TensorNotFoundError(what, path=reader.prefix, key=name)
        chosen.update(dict.fromkeys(matches))
    return list(chosen)


_BLOCKS = " ▏▎▍▌▋▊▉█"  # eighths of a cell, for histogram bars
_HIST_WIDTH = 40


def _bar(count: int, most: int, width: int = _HIST_WIDTH) -> str:
    """`count` as a bar of unicode blocks, `most` filling `width` cells (eighths resolve)."""
    eighths = round(count * width * 8 / most) if most else 0
    if count and not eighths:
        eighths = 1  # a non-empty bin always shows
    full, rest = divmod(eighths, 8)
    return "█" * full + (_BLOCKS[rest] if rest else "")


def histogram_lines(histogram: dict | None) -> list[str]:
    """A histogram as text: one line per bin, `[low, high)  bar  count` (the last bin closed)."""
    if histogram is None:
        return ["histogram: no finite real values"]
    edges, counts = histogram["edges"], histogram["counts"]
    labels = [f"{edges[i]:.4g}, {edges[i + 1]:.4g}" for i in range(len(counts))]
    labels = [f"[{label}" + ("]" if i == len(counts) - 1 else ")") for i, label in enumerate(labels)]
    width = max(map(len, labels))
    most = max(counts, default=0)
    return [f"{label.ljust(width)}  {_bar(count, most).ljust(_HIST_WIDTH)}  {count:,}"
            for label, count in zip(labels, counts, strict=True)]


def _print_histogram(histogram: dict | None) -> None:
    for line in histogram_lines(histogram):
        _echo(line)


def _width() -> int:
    import shutil  # noqa: PLC0415

    return shutil.get_terminal_size((100, 24)).columns if _stdout_is_tty() else 100


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.9g}"
    return "-" if value is None else str(value)


def _drop_meta_option():
    return click.option("--drop-meta", is_flag=True,
                        help="TF1: delete the checkpoint's .meta in the same commit instead of rewriting "
                             "its Saver (needed where ckptkit cannot rewrite it)")


@cli.command("rename")
@_ckpt_option()
@click.argument("args", nargs=-1, metavar="[CKPT] OLD NEW")
@click.option("--regex", is_flag=True,
              help="OLD is a Python regex that must match a whole name (re.fullmatch); NEW is "
                   "its expansion template (\\1, \\g<name>); applied to every name")
@click.option("--glob", "as_glob", is_flag=True,
              help="OLD is a glob (* and ?) matched against every name; each * and ? of NEW takes "
                   "what the corresponding wildcard of OLD matched: 'enc/*' 'encoder/*'")
@_overwrite_option("allow renaming onto an existing name (drops it), and replacing an existing "
                   "checkpoint at -o OUT")
@_filter_options()
@click.option("--dry-run", is_flag=True, help="print the renames; change nothing")
@_output_option()
@_drop_meta_option()
@click.option("--json", "as_json", is_flag=True, help="print {old: new} as JSON")
@click.pass_context
def rename_cmd(ctx, ckpt, args, regex, as_glob, overwrite, include, exclude, dry_run, output, drop_meta,
               as_json) -> None:
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
    from . import edit  # noqa: PLC0415

    if len(args) == 3:
        ckpt = _use_checkpoint(ctx, args[0])
    elif len(args) != 2:
        raise click.UsageError("expected OLD NEW (or CKPT OLD NEW)")
    old, new = args[-2:]
    if regex and as_glob:
        raise click.UsageError("--regex and --glob are alternatives")
    if (include or exclude) and not (regex or as_glob):
        raise click.UsageError("--include/--exclude restrict the names a --regex or --glob pattern applies to; "
                               "a plain OLD NEW names its tensor")
    _check_output(output)
    if regex:
        renamer = _regex_renamer(old, new)
    elif as_glob:
        from .selection import glob_renamer  # noqa: PLC0415

        renamer = glob_renamer(old, new)
    else:
        renamer = {old: new}
    with _hint_checkpoint_names(ckpt, [old]):
        if include or exclude:
            renamer = _restricted(renamer, _picked(ckpt, include, exclude))
        if (regex or as_glob) and not edit.rename_keys(ckpt, renamer, overwrite=overwrite, dry_run=True):
            how = "re.fullmatch" if regex else "glob"
            among = " among the names --include/--exclude pick" if include or exclude else ""
            raise _Failure(f"{ckpt}: no tensor name{among} matches {old!r} ({how})")
        with _progress(0 if dry_run else _copy_total(ckpt, output), "copying") as progress:
            mapping = edit.rename_keys(ckpt, renamer, overwrite=overwrite, output=output,
                                       dry_run=dry_run, progress=progress, drop_meta=drop_meta)
    _report_mapping(mapping, as_json, dry_run, output, "renamed")


def _picked(ckpt: str, include, exclude) -> set[str]:
    """The tensor names of `ckpt` that --include/--exclude pick."""
    from .reader import CheckpointReader  # noqa: PLC0415
    from .selection import select  # noqa: PLC0415

    with CheckpointReader(ckpt) as reader:
        return set(select(list(reader), include, exclude, path=reader.prefix))


def _restricted(renamer, names: set[str]):
    """A pattern renamer applied only to `names` (None, unchanged, for any other key)."""
    def restricted(key: str):
        return renamer(key) if key in names else None

    return restricted


def _regex_renamer(old: str, new: str):
    """key -> re.fullmatch(old, key).expand(new), or None where the pattern does not match."""
    import re  # noqa: PLC0415

    try:
        pattern = re.compile(old)
    except re.error as exc:
        raise click.BadParameter(f"{old!r}: {exc}", param_hint="OLD") from None

    def renamer(key: str):
        match = pattern.fullmatch(key)
        if match is None:
            return None
        try:
            return match.expand(new)
        except (re.error, IndexError) as exc:
            raise click.BadParameter(f"{new!r}: {exc}", param_hint="NEW") from None

    return renamer


def _check_output(output: str | None, *, overwrite: bool = True) -> None:
    """An `-o` prefix that no file could be written under (or, unless `overwrite`, that
    exists already) fails before anything is read."""
    if output is not None:
        from .convert import check_destination  # noqa: PLC0415

        check_destination(output, make_parents=True, exist_ok=overwrite)


def _copy_total(ckpt: str, output: str | None) -> int:
    """Bytes an `-o` edit may copy (0 when editing in place: no progress bar then)."""
    if output is None or not _stderr_is_tty():
        return 0
    from .convert import source_bytes  # noqa: PLC0415

    return source_bytes(ckpt)


def _report_mapping(mapping: dict, as_json: bool, dry_run: bool, output, verb: str) -> None:
    if as_json:
        _echo_json(mapping)
    else:
        for old, new in mapping.items():
            _echo(f"{_printable(old)} -> {_printable(new)}")
    if dry_run:
        _note(f"dry run: would have {verb} {len(mapping)} tensor(s); nothing changed")
    else:
        where = f" into {_printable(output)}" if output else ""
        _note(f"{verb} {len(mapping)} tensor(s){where}")


@cli.command("ema")
@_ckpt_option()
@click.argument("ckpt_arg", required=False, metavar="[CKPT]", type=_PATH)
@_output_option()
@_overwrite_option()
@click.option("--ema-name", default="ExponentialMovingAverage", show_default=True,
              help="the suffix of shadow names (the EMA's name)")
@_drop_meta_option()
@click.option("--json", "as_json", is_flag=True, help="print {shadow: variable} as JSON")
@click.pass_context
def ema_cmd(ctx, ckpt, ckpt_arg, output, overwrite, ema_name, drop_meta, as_json) -> None:
    """Make the inference checkpoint: each variable takes its moving average.

    v gets v/ExponentialMovingAverage's value (what EMA.variables_to_restore()
    would restore) and the shadow names are dropped. Only the .index is rewritten,
    and a TF1 .meta's Saver, which stops restoring the shadow variables. The
    checkpoint is CKPT or -c CKPT (default: the one in `.`).
    """
    from . import edit  # noqa: PLC0415

    if ckpt_arg is not None:
        ckpt = _use_checkpoint(ctx, ckpt_arg)

    _check_output(output)
    with _progress(_copy_total(ckpt, output), "copying") as progress:
        mapping = edit.apply_ema(ckpt, output=output, ema_name=ema_name, progress=progress,
                                 drop_meta=drop_meta, overwrite=overwrite)
    _report_mapping(mapping, as_json, False, output, "replaced by their averages:")


@cli.command("rm")
@_ckpt_option()
@click.argument("names", nargs=-1, metavar="[CKPT] [NAME]...", shell_complete=_complete_tensor_names)
@_filter_options()
@click.option("--glob", "as_glob", is_flag=True, hidden=True, help="deprecated: NAMES are globs (--include)")
@click.option("--regex", is_flag=True, help="NAMES are Python regexes matching whole names (re.fullmatch)")
@click.option("--optimizer", is_flag=True,
              help="remove the optimizer's state: TF1 slots of the usual optimizers (Adam, Momentum, "
                   "RMSProp, Adagrad, Adadelta, Ftrl, BERT's adam_m/adam_v, beta1_power...); TF2 the "
                   "optimizer objects and what only they reach")
@click.option("--compact", is_flag=True,
              help="also rewrite the data shards without the removed bytes (reclaims space)")
@click.option("--dry-run", is_flag=True, help="print what would be removed; change nothing")
@_output_option()
@_overwrite_option()
@_drop_meta_option()
@click.option("--json", "as_json", is_flag=True, help="print the removed names as JSON")
@click.pass_context
def rm_cmd(ctx, ckpt, names, include, exclude, as_glob, regex, optimizer, compact, dry_run, output, overwrite,
           drop_meta, as_json) -> None:
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
    from . import edit  # noqa: PLC0415

    if as_glob and regex:
        raise click.UsageError("--glob and --regex are alternatives")
    if (as_glob or regex) and not names:
        raise click.UsageError("--glob and --regex need at least one pattern as NAME")
    ckpt, names = _leading_checkpoint(ctx, ckpt, names)
    if as_glob:
        _deprecated("rm --glob PATTERN", "--include PATTERN")
        include, names = (*include, *names), ()
    if regex and not names:
        raise click.UsageError("--regex needs at least one pattern as NAME")
    if not names and not compact and not optimizer and not include:
        raise click.UsageError("give at least one NAME, --include GLOB, --optimizer, or --compact alone to "
                               "reclaim space")
    if exclude and not (names or include or optimizer):
        raise click.UsageError("--exclude keeps tensors out of what NAME, --include, --regex or --optimizer "
                               "select; it selects nothing itself")
    _check_output(output)
    selection = {"names": () if regex else names, "glob": include, "regex": names if regex else (),
                 "optimizer": optimizer, "exclude": exclude, "overwrite": overwrite}
    with _hint_checkpoint_names(ckpt, () if regex else names):
        if dry_run:
            removed = edit.remove_keys(ckpt, selection.pop("names"), dry_run=True, **selection)
            _report_removed(removed, as_json)
            _note(f"dry run: would remove {_count(len(removed))}; nothing changed")
            return
        if compact:
            with _progress(_copy_total(ckpt, output or ckpt), "compacting") as progress:
                removed, freed = edit.remove_and_compact(ckpt, selection.pop("names"), output=output,
                                                         progress=progress, drop_meta=drop_meta, **selection)
            _report_removed(removed, as_json)
            if removed:
                _note(f"removed {_count(len(removed))}")
            elif optimizer and not names:
                _note(_NOTHING_TO_REMOVE)
            _note(f"compacted: {_human(freed)} reclaimed")
            return
        with _progress(_copy_total(ckpt, output), "copying") as progress:
            removed = edit.remove_keys(ckpt, selection.pop("names"), output=output, progress=progress,
                                       drop_meta=drop_meta, **selection)
    _report_removed(removed, as_json)
    if not removed and optimizer and not names:
        _note(_NOTHING_TO_REMOVE + (f"; {_printable(output)} written unchanged" if output else ""))
        return
    exception = " (except where the object graph's shard was rewritten)" if _has_object_graph(output or ckpt) else ""
    _note(f"removed {_count(len(removed))}; their bytes stay in the data shards until `ckptkit rm --compact`"
          + exception)


_NOTHING_TO_REMOVE = "nothing to remove: no optimizer state found"


def _has_object_graph(ckpt: str) -> bool:
    from .objectgraph import OBJECT_GRAPH_KEY  # noqa: PLC0415
    from .reader import CheckpointReader  # noqa: PLC0415

    with CheckpointReader(ckpt) as reader:
        return OBJECT_GRAPH_KEY in reader


def _report_removed(removed: list[str], as_json: bool) -> None:
    if as_json:
        _echo_json(removed)
        return
    for name in removed:
        _echo(_printable(name))


class _Trouble(_Failure):
    """diff's "trouble" (an unreadable or missing checkpoint): one line, exit status 2."""

    exit_code = 2


@cli.command("diff")
@click.argument("a", type=_PATH)
@click.argument("b", type=_PATH)
@click.option("--atol", type=float, default=0.0, show_default=True,
              help="values within this absolute tolerance count as equal")
@click.option("--rtol", type=float, default=0.0, show_default=True,
              help="...or within this tolerance relative to max(|a|, |b|)")
@click.option("--friendly-names", is_flag=True,
              help="TF2: match and report tensors by the names convert --friendly-names writes "
                   "(the model's object paths), not by key")
@_filter_options()
@click.option("--json", "as_json", is_flag=True, help="print the differences as JSON")
@click.pass_context
def diff_cmd(ctx, a, b, atol, rtol, friendly_names, include, exclude, as_json) -> None:
    """Compare two checkpoints: names, dtypes, shapes and values.

    Lists the tensors only in A or only in B, those whose dtype or shape changed, and
    for each whose values differ how many elements do, the max absolute and the max
    relative difference (|a-b| / max(|a|, |b|)). --include/--exclude compare only the
    names they pick (of A and B together). Exit status as diff(1): 0 when equal, 1
    when different, 2 on trouble (a missing or damaged checkpoint, a glob matching no
    name: one line on stderr).
    """
    from . import info  # noqa: PLC0415

    if atol < 0 or not atol == atol:  # noqa: PLR0124 - NaN check
        raise click.BadParameter("must be >= 0", param_hint="--atol")
    if rtol < 0 or not rtol == rtol:  # noqa: PLR0124 - NaN check
        raise click.BadParameter("must be >= 0", param_hint="--rtol")
    try:
        result = info.diff_checkpoints(a, b, atol=atol, rtol=rtol, friendly_names=friendly_names,
                                       include=include, exclude=exclude)
    except CheckpointError as exc:
        raise _Trouble(_error_text(exc)) from None
    except OSError as exc:
        raise _Trouble(_os_message(exc)) from None
    if as_json:
        _echo_json(result)
    else:
        for key in result["only_a"]:
            _echo(f"only in A: {_printable(key)}")
        for key in result["only_b"]:
            _echo(f"only in B: {_printable(key)}")
        for c in result["changed"]:
            _echo(f"changed:   {_printable(c['name'])}: {c['a']['dtype']}{_shape(c['a']['shape'])} -> "
                  f"{c['b']['dtype']}{_shape(c['b']['shape'])}")
        for v in result["values"]:
            extra = ""
            if v["max_abs_diff"] is not None:
                extra = f", max |a-b| {v['max_abs_diff']:.6g}, max rel {v['max_rel_diff']:.6g}"
            _echo(f"values:    {_printable(v['name'])}: {v['mismatched']} of {v['elements']} differ{extra}")
        if result["equal"]:
            _note(f"checkpoints are equal ({_count(result['compared'])} compared)")
    ctx.exit(0 if result["equal"] else 1)


@cli.command("verify")
@click.argument("ckpt", default=".", required=False, type=_PATH)
@_filter_options()
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.pass_context
def verify_cmd(ctx, ckpt, include, exclude, as_json) -> None:
    """Read every tensor, checking every crc32c; exit 1 naming each damaged tensor.

    --include/--exclude check only the tensors they pick.

    TF2 checkpoints: the object graph is checked against the keys too (every key an
    object names exists; every key is saved by an object reachable from the root).

    .safetensors and .npz files have no checksums: their headers are checked and
    every tensor is read.

    A SavedModel without variables (no variables/variables.index, as TF1's builder
    writes one for a graph without variables) is OK: its saved_model.pb is parsed, and
    there is nothing else to verify.
    """
    from . import info, locate  # noqa: PLC0415

    export_dir = locate.saved_model_without_variables(ckpt)
    if export_dir is not None:
        from . import metagraph  # noqa: PLC0415

        metagraph.read_saved_model(export_dir)  # a damaged saved_model.pb fails here
        message = "the SavedModel has no variables to verify (no variables/variables.index)"
        if as_json:
            _echo_json({"checkpoint": None, "prefix": None, "saved_model": export_dir, "format": "saved_model",
                        "checked": message, "tensors": 0, "bytes": 0, "ok": True, "errors": [], "graph_problems": []})
        else:
            _echo(f"OK: {_printable(export_dir)}: {message}")
        ctx.exit(0)
    total = info.total_bytes(ckpt, include=include, exclude=exclude) if _stderr_is_tty() else 0
    with _progress(total, "verifying") as progress:
        report = info.verify_checkpoint(ckpt, progress=progress, include=include, exclude=exclude)
    if as_json:
        _echo_json({"checkpoint": report.prefix, "prefix": report.prefix, "format": report.format,
                    "checked": report.checked,
                    "tensors": report.tensors, "bytes": report.bytes, "ok": report.ok,
                    "errors": [{"name": k, "error": m} for k, m in report.errors],
                    "graph_problems": [{"name": k, "error": m} for k, m in report.graph_problems]})
    else:
        for key, message in report.errors:
            if not message.startswith(report.prefix):  # the library named neither file nor key
                message = f"{report.prefix}: key {key!r}: {message}"
            _echo(_error_line(message), err=True)
        for key, message in report.graph_problems:
            if not message.startswith(report.prefix):
                message = f"{report.prefix}: key {key!r}: {message}"
            _echo(_error_line(message), err=True)
        prefix = _printable(report.prefix)
        if report.ok and report.format in ("safetensors", "npz"):
            _echo(f"OK: {report.tensors} tensors, {report.bytes:,} bytes read in {prefix} ({report.checked})")
        elif report.ok:
            _echo(f"OK: {report.tensors} tensors, {report.bytes:,} bytes verified in {prefix}")
        elif report.errors:
            _echo(f"FAILED: {len(report.errors)} of {report.tensors} tensors damaged in {prefix}"
                  + (f"; {len(report.graph_problems)} object graph problems" if report.graph_problems else ""))
        else:
            _echo(f"FAILED: the object graph and the index of {prefix} disagree "
                  f"({len(report.graph_problems)} problems); every tensor's data is intact")
    ctx.exit(0 if report.ok else 1)


@cli.command("meta")
@click.argument("file", type=_PATH)
@click.option("--tag-set", "tag_set", metavar="TAGS",
              help="one MetaGraphDef of a SavedModel, by its tags separated by commas (serve or "
                   "serve,gpu): list its signature keys, as saved_model_cli show --tag_set")
@click.option("--signature-def", "signature_def", metavar="KEY",
              help="one signature's inputs and outputs, as saved_model_cli show --signature_def "
                   "(--tag-set may be left out when the SavedModel has one MetaGraphDef)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def meta_cmd(file, tag_set, signature_def, as_json) -> None:
    """Summarize a SavedModel or a .meta file (MetaGraphDef).

    FILE may be a SavedModel directory or its saved_model.pb (tag-sets, signatures with
    their inputs and outputs, and a TF2 SavedModel's concrete functions with their
    argument specs, as `saved_model_cli show --all` prints them; then the variables), a
    .meta file (ops, variables, saver, collections), or a checkpoint prefix or directory
    (the .meta of that checkpoint).
    """
    try:
        from . import metagraph, saved_model_views  # noqa: PLC0415
    except ImportError:
        raise _Failure("this ckptkit has no metagraph module (ckptkit.metagraph)") from None
    if tag_set is None and signature_def is None:
        summary = metagraph.summarize(file)
        if as_json:
            _echo_json(summary)
        elif summary["kind"] == "saved_model":
            for line in metagraph.format_saved_model(summary):
                _echo(_printable(line))
        else:
            _print_nested(summary, 0)
        return
    if not metagraph.is_saved_model(file):
        raise click.UsageError("--tag-set and --signature-def select in a SavedModel (a directory with "
                               f"saved_model.pb); {file} is not one")
    summary = metagraph.summarize_saved_model(file)
    graph = saved_model_views.select_meta_graph(summary, tag_set)
    view: dict = {"kind": "saved_model", "path": summary["path"], "tags": graph["tags"]}
    if signature_def is None:
        view["signature_keys"] = [s["key"] for s in graph["signatures"]]
        lines = saved_model_views.signature_keys_lines(graph)
    else:
        signature = saved_model_views.select_signature(summary, graph, signature_def)
        view["signature"] = signature
        lines = saved_model_views.signature_lines(signature)
    if as_json:
        _echo_json(view)
    else:
        for line in lines:
            _echo(_printable(line))


def _print_nested(value, depth: int) -> None:
    for line in _nested_lines(value, depth):
        _echo(line)


def _nested_lines(value, depth: int) -> list[str]:
    """A YAML-like view of plain data (dicts, lists, scalars)."""
    pad = "  " * depth
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{_printable(key)}:" + (f" ({len(item)})" if isinstance(item, list) else ""))
                lines.extend(_nested_lines(item, depth + 1))
            else:
                lines.append(f"{pad}{_printable(key)}: {_scalar(item)}")
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


def _scalar(value) -> str:
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    if isinstance(value, bytes):
        return _printable(value.decode("utf-8", "backslashreplace"))
    return _printable(value)


@cli.command("state")
@click.argument("directory", default=".", required=False, type=_PATH)
@click.option("--json", "as_json", is_flag=True, help="print the state as JSON")
def state_cmd(directory, as_json) -> None:
    """Show a directory's `checkpoint` file: latest, all checkpoints, save times, files.

    Paths are shown as recorded in the file and, separately, what they resolve to
    here, with the checkpoint a reader of DIRECTORY opens. A damaged state file is an
    error (readers, like TF's, would ignore it).
    """
    from . import info, reader, state, storage  # noqa: PLC0415

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
        described["opens"], described["opens_error"] = reader.resolve_prefix(directory), None
    except CheckpointError as exc:
        described["opens"], described["opens_error"] = None, str(exc)
    if as_json:
        _echo_json(described)
        return
    status = "" if described["latest_exists"] else "  (MISSING)"
    _echo(f"latest: {_printable(described['latest'])}{status}")
    _echo(f"recorded: {_printable(described['recorded_latest'])}")
    opens = described["opens"] if described["opens"] is not None else f"nothing ({described['opens_error']})"
    _echo(f"opens: {_printable(opens)}")
    rows = []
    for c in described["checkpoints"]:
        files = ", ".join(f"{_printable(f['name'])} ({_human(f['bytes'])})" for f in c["files"]) or "-"
        rows.append([("* " if c["latest"] else "  ") + _printable(c["recorded"] or "?"), _printable(c["path"]),
                     _timestamp(c["timestamp"]), "yes" if c["exists"] else "MISSING", files])
    _table([("recorded", "l"), ("here", "l"), ("saved", "l"), ("exists", "l"), ("files", "l")], rows,
           title=described["state_file"])


def _timestamp(value) -> str:
    if value is None:
        return "-"
    import datetime  # noqa: PLC0415

    return datetime.datetime.fromtimestamp(value).isoformat(sep=" ", timespec="seconds")


@cli.command("convert")
@click.argument("src", type=_PATH)
@click.argument("dst", type=_PATH)
@click.option("--num-shards", type=click.IntRange(min=1), default=1, show_default=True,
              help="data shards when DST is a checkpoint")
@_filter_options()
@click.option("--cast", "casts", multiple=True, metavar="FROM=TO",
              help="convert dtype FROM to TO, e.g. bfloat16=float32 (repeatable)")
@click.option("--rename", nargs=2, metavar="REGEX TEMPLATE",
              help="a name REGEX fully matches becomes TEMPLATE (\\1, \\g<name> expand)")
@click.option("--friendly-names", is_flag=True,
              help="TF2 keys as the model's object paths (model/dense/kernel, not the optimizer's path "
                   "to the same weight), without /.ATTRIBUTES/VARIABLE_VALUE; --include/--exclude "
                   "match these names")
@click.option("--strict", is_flag=True, help="fail instead of leaving out tensors DST cannot hold")
@click.option("--metadata", "metadata_pairs", multiple=True, metavar="KEY=VALUE",
              help="add KEY=VALUE to a .safetensors DST's __metadata__ (repeatable)")
@click.option("--dry-run", is_flag=True,
              help="print the plan (name, new name, dtype, shape, bytes of each tensor); write nothing")
@_overwrite_option("replace an existing DST (a checkpoint's old .meta and surplus data shards go in the "
                   "same commit)")
@click.option("--json", "as_json", is_flag=True, help="print the summary (with --dry-run, the plan) as JSON")
def convert_cmd(src, dst, num_shards, include, exclude, casts, rename, friendly_names, strict, metadata_pairs,
                dry_run, overwrite, as_json) -> None:
    """Convert between checkpoints, .npz and .safetensors (by extension).

    A path ending in .npz or .safetensors is that format; anything else is a
    checkpoint (SRC resolves like every CKPT; DST is the prefix to write). One
    tensor is in memory at a time. Tensors DST cannot hold (strings and the TF2
    object graph in .safetensors, bfloat16/float8 in .npz) are left out with a
    note, unless --strict; --cast bfloat16=float32 keeps them. A .safetensors
    DST records format "pt", SRC and the ckptkit version in its __metadata__,
    plus each --metadata KEY=VALUE. A glob matching no name, or nothing left to
    write, is an error: no empty file is written. An existing DST (any file of
    that checkpoint, or the file) is refused unless --overwrite.
    """
    from . import convert  # noqa: PLC0415

    cast = {}
    for pair in casts:
        a, sep, b = pair.partition("=")
        if not sep or not a or not b:
            raise click.BadParameter(f"{pair!r} is not FROM=TO", param_hint="--cast")
        cast[a] = b
    metadata = {}
    for pair in metadata_pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--metadata")
        metadata[key] = value
    total = convert.source_bytes(src) if _stderr_is_tty() and not dry_run else 0
    with _progress(total, "converting") as progress:
        result = convert.convert(src, dst, num_shards=num_shards, include=include, exclude=exclude,
                                 cast=cast, rename=tuple(rename) if rename else None,
                                 friendly_names=friendly_names, strict=strict, metadata=metadata,
                                 overwrite=overwrite,
                                 progress=progress, dry_run=dry_run)
    if as_json:
        _echo_json(result)
        return
    if dry_run:
        _table([("name", "l"), ("new name", "l"), ("dtype", "l"), ("shape", "l"), ("bytes", "r")],
               [[r["name"], r["new_name"], r["dtype"] if r["dtype"] == r["source_dtype"]
                 else f"{r['source_dtype']} -> {r['dtype']}", _shape(r["shape"]), f"{r['bytes']:,}"]
                for r in result["plan"]])
    left = result["left_out"]
    if left:
        shown = ", ".join(f"{_printable(d['name'])} ({d['reason']})" for d in left[:5])
        more = f" and {len(left) - 5} more" if len(left) > 5 else ""
        _note(f"{'would leave' if dry_run else 'left'} out {_count(len(left))}: {shown}{more} "
              "(--strict makes this an error)")
    if dry_run:
        _note(f"dry run: would convert {_count(result['tensors'])} ({_human(result['bytes'])}): "
              f"{_printable(src)} -> {_printable(dst)}; nothing written")
        return
    _note(f"converted {result['tensors']} tensors ({_human(result['bytes'])}): "
          f"{_printable(src)} -> {_printable(dst)}")


# --------------------------------------------------------------------------- surgery: average, merge, stats

def _bytes_to_read(paths) -> int:
    """The total a progress bar counts to: what reading `paths` reads (0 off a terminal,
    where there is no bar, so nothing is opened for it)."""
    if not _stderr_is_tty():
        return 0
    from .convert import source_bytes  # noqa: PLC0415

    return sum(source_bytes(p) for p in paths)


@cli.command("average")
@click.argument("ckpts", nargs=-1, type=_PATH)
@click.option("-o", "--output", required=True, type=_PATH, help="prefix of the averaged checkpoint to write")
@click.option("--last", nargs=2, type=(click.IntRange(min=2), _PATH), default=None, metavar="N DIR",
              help="average the N newest checkpoints of DIR (from its `checkpoint` state file)")
@_overwrite_option()
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def average_cmd(ckpts, output, last, overwrite, as_json) -> None:
    """Write the element-wise mean of several checkpoints (CKPT... or --last N DIR).

    Float and complex tensors are averaged in float64 and stored in their own dtype;
    integer, bool and string tensors (global_step, the TF2 object graph) are taken
    from the last checkpoint. Keys, dtypes and shapes must agree. One chunk of each
    tensor is in memory at a time. The last checkpoint's .meta is copied beside OUT.
    """
    from . import average  # noqa: PLC0415

    if bool(ckpts) == bool(last):
        raise click.UsageError("give the checkpoints to average, or --last N DIR (not both)")
    if len(ckpts) == 1:
        raise click.UsageError("averaging needs two or more checkpoints")
    paths = list(ckpts) if ckpts else average.last_checkpoints(last[1], last[0])
    _check_output(output)
    with _progress(_bytes_to_read(paths), "averaging") as progress:
        result = average.average_checkpoints(paths, output, progress=progress, overwrite=overwrite)
    if as_json:
        _echo_json(result)
        return
    for prefix in result["inputs"]:
        _echo(_printable(prefix))
    _note(f"averaged {_count(len(result['inputs']), 'checkpoint')} into {_printable(output)}: "
          f"{result['averaged']} tensors averaged, {result['copied']} taken from the last"
          + (f"; its .meta copied to {_printable(result['meta'])}" if result["meta"] else ""))


@cli.command("merge")
@click.argument("parts", nargs=-1, required=True, type=_PATH)
@click.option("-o", "--output", required=True, type=_PATH, help="prefix of the merged checkpoint to write")
@_overwrite_option()
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def merge_cmd(parts, output, overwrite, as_json) -> None:
    """Merge checkpoints written in parts (by parallel workers) into one, as TF's
    MergeV2Checkpoints does.

    Keys must be disjoint (a partitioned variable may have its slices in several
    parts). Data shards are hard-linked (or copied byte for byte), never re-encoded;
    only the index is new. The parts are left as they are.
    """
    from . import merge  # noqa: PLC0415

    _check_output(output)
    with _progress(_bytes_to_read(parts), "merging") as progress:
        result = merge.merge_checkpoints(parts, output, progress=progress, overwrite=overwrite)
    if as_json:
        _echo_json(result)
        return
    _note(f"merged {_count(len(result['parts']), 'checkpoint')} into {_printable(output)}: "
          f"{_count(result['tensors'])} in {_count(result['shards'], 'data shard')}")


@cli.command("stats")
@click.argument("ckpt", default=".", required=False, type=_PATH)
@_filter_options(legacy_filter=True)
@click.option("--json", "as_json", is_flag=True, help="print the statistics as JSON")
@click.pass_context
def stats_cmd(ctx, ckpt, include, exclude, as_json) -> None:
    """Statistics of every tensor: min, max, mean, std, NaN, Inf and zero counts.

    Streams each tensor in chunks (checksums checked), so any size fits in a few MiB.
    Exit status 1 when any NaN or Inf is found (did training diverge?), 0 otherwise.
    Strings are listed without statistics.
    """
    from . import stats as _stats  # noqa: PLC0415

    total = _stats.numeric_bytes(ckpt, include=include, exclude=exclude) if _stderr_is_tty() else 0
    with _progress(total, "reading") as progress:
        report = _stats.checkpoint_stats(ckpt, progress=progress, include=include, exclude=exclude)
    if as_json:
        _echo_json({"checkpoint": report["prefix"], **report})  # "prefix": its old name
    else:
        rows = []
        for t in report["tensors"]:
            st = t["stats"] or {}
            rows.append([t["name"], t["dtype"], _shape(t["shape"]),
                         *(_fmt(st.get(k)) for k in ("min", "max", "mean", "std")),
                         *(_fmt(st.get(k)) for k in ("nan", "inf", "zeros"))])
        _table([("name", "l"), ("dtype", "l"), ("shape", "l"), ("min", "r"), ("max", "r"), ("mean", "r"),
                ("std", "r"), ("nan", "r"), ("inf", "r"), ("zeros", "r")], rows, title=report["prefix"])
        if report["nonfinite"]:
            shown = ", ".join(_printable(n) for n in report["nonfinite"][:5])
            more = f" and {len(report['nonfinite']) - 5} more" if len(report["nonfinite"]) > 5 else ""
            _note(f"NaN or Inf found: {report['nan']:,} NaN, {report['inf']:,} Inf in "
                  f"{_count(len(report['nonfinite']))}: {shown}{more}")
    ctx.exit(0 if report["ok"] else 1)


@cli.command("example")
@click.argument("directory", type=_PATH)
@_overwrite_option("replace DIRECTORY/model.ckpt if it exists")
def example_cmd(directory, overwrite) -> None:
    """Write the classic example checkpoint into DIRECTORY to play with.

    v = 10.0 and its moving average v/ExponentialMovingAverage = 0.099999905
    (v started at 0; EMA(0.99); v := 10; one update), with .meta and the
    `checkpoint` state file, at DIRECTORY/model.ckpt - as TF's Saver writes it.
    An existing DIRECTORY/model.ckpt is left alone (exit 1) unless --overwrite.
    """
    try:
        from . import saver as _saver  # noqa: PLC0415
    except ImportError:
        raise _Failure("this ckptkit has no Saver (ckptkit.saver)") from None
    import numpy as np  # noqa: PLC0415

    from .ema import ExponentialMovingAverage  # noqa: PLC0415

    ema = ExponentialMovingAverage(0.99)
    ema.apply({"v": np.float32(0.0)})   # v = tf.Variable(0.); the shadow starts at 0
    v = np.float32(10.0)                # sess.run(v.assign(10))
    ema.apply({"v": v})                 # sess.run(ema.apply([v]))
    values = {"v": v, **ema.shadow_variables()}
    _check_output(os.path.join(directory, "model.ckpt"), overwrite=overwrite)
    os.makedirs(directory, exist_ok=True)
    path = _saver.Saver().save(values, os.path.join(directory, "model.ckpt"))
    for key, value in values.items():
        _echo(f"{key} = {str(np.asarray(value)[()])}")
    _note(f"wrote {_printable(path)}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`ckptkit`, `python -m ckptkit`, `python cli.py`)."""
    try:
        cli.main(args=argv, prog_name="ckptkit")
    except KeyboardInterrupt:  # outside a command (while parsing): still no traceback
        _echo(_INTERRUPTED, err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
