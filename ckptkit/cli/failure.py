"""Failures: the one line `ckptkit: error: ...` a command ends with, and its exit status.

Errors the library raises (CheckpointError) name their file and key; here they become
one printable line, a long or undecodable key shortened or escaped.
"""
from __future__ import annotations

import re
from typing import IO, Any

import click

from ..errors import CheckpointError
from .render import SURROGATES, echo, printable


class Failure(click.ClickException):
    """A one-line error on stderr and exit status 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        echo(error_line(self.message), err=True)


def error_line(message: str) -> str:
    """`ckptkit: error: MESSAGE` as one printable line (a key's undecodable bytes as \\xff)."""
    return "ckptkit: error: " + printable(_BYTE_IN_REPR.sub(r"\1\\x\2", message))


_LONG_KEY = 120  # keys longer than this are shortened in error messages
# An undecodable byte in repr(key), `\udcff`, shown as the byte it stands for, `\xff`.
_BYTE_IN_REPR = re.compile(r"(?<!\\)((?:\\\\)*)\\udc([89a-f][0-9a-f])")


def error_text(exc: CheckpointError, fallback_path: str | None = None) -> str:
    """The one-line message of a CheckpointError: its file (or `fallback_path`, the
    command's checkpoint, when the library named none), its key (shortened if long)."""
    key = exc.key
    path = exc.path if exc.path is not None else fallback_path
    if path == exc.path and (key is None or (len(key) <= _LONG_KEY and not SURROGATES.search(key))):
        return str(exc)
    parts = [] if path is None else [path]
    if key is not None:
        shown = repr(key) if len(key) <= _LONG_KEY else f"{key[:_LONG_KEY]!r}... ({len(key)} characters)"
        parts.append("key " + _BYTE_IN_REPR.sub(r"\1\\x\2", shown))
    return ": ".join([*parts, exc.message])


# The parameter naming the file a command works on, for errors the library raised


INTERRUPTED = "ckptkit: interrupted"  # Ctrl-C: this line, exit status 130 (128 + SIGINT)


def os_message(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else ""
    what = exc.strerror or str(exc)
    return f"{where}: {what}" if where else what
