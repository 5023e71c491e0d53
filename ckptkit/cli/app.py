"""The `ckptkit` click group: its options, logging, and the error handling every command gets.

`Command` makes a command's CheckpointErrors name its file and notes how a directory
argument resolved; the group turns every other exception into one line and an exit
status (1 on errors, 2 on usage, 130 on Ctrl-C, 141 on a closed pipe; never a
traceback unless CKPTKIT_DEBUG=1). `main` is the console-script entry point.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

from .. import __version__
from ..errors import CheckpointError
from .failure import INTERRUPTED, Failure, error_text, os_message
from .render import echo

_DEBUG_ENV = "CKPTKIT_DEBUG"


# The parameter naming the file a command works on, for errors the library raised
# without one (commands with two files, diff and convert, have none).
_FILE_PARAMS = ("ckpt", "file", "directory")


@contextlib.contextmanager
def _quiet_state_log() -> Iterator[None]:
    """While a command runs, ckptkit.tf1.state's warning about a state file it ignores (as TF
    does) stays off stderr: the note or the command's error says it, once."""
    import logging  # noqa: PLC0415

    log = logging.getLogger("ckptkit.formats.state_file")
    was = log.disabled
    log.disabled = True
    try:
        yield
    finally:
        log.disabled = was


class Command(click.Command):
    """A command whose CheckpointErrors always name a file: its own when the library's don't.

    Each checkpoint argument is resolved once, when the command first opens it
    (`options.located`), which notes a directory that does not open its state file's
    latest (stale or damaged state file, moved directory).
    """

    def invoke(self, ctx: click.Context) -> Any:
        with _quiet_state_log():
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CheckpointError as exc:
            fallback = next((ctx.params[p] for p in _FILE_PARAMS if ctx.params.get(p)), None)
            raise Failure(error_text(exc, fallback)) from None


class _Group(click.Group):
    """Turns every error a command can meet into a one-line message and an exit code."""

    command_class = Command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except CheckpointError as exc:
            raise Failure(error_text(exc)) from None
        except BrokenPipeError:  # `ckptkit ls | head`: the reader left, which is fine
            with contextlib.suppress(Exception):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(141) from None
        except OSError as exc:
            raise Failure(os_message(exc)) from None
        except KeyboardInterrupt:
            echo(INTERRUPTED, err=True)
            raise click.exceptions.Exit(130) from None
        except Exception as exc:
            if os.environ.get(_DEBUG_ENV):
                raise
            raise Failure(f"internal error: {type(exc).__name__}: {exc} "
                           f"(set {_DEBUG_ENV}=1 for a traceback)") from None


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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`ckptkit`, `python -m ckptkit`, `python cli.py`)."""
    try:
        cli.main(args=argv, prog_name="ckptkit")
    except KeyboardInterrupt:  # outside a command (while parsing): still no traceback
        echo(INTERRUPTED, err=True)
        sys.exit(130)

