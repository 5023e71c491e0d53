r"""Rendering: every byte the commands print goes through here.

Output: rich tables when stdout is a terminal, plain aligned text when it is not,
`--json` for scripts. Names and paths are printed safely whatever they hold. TF keys
are bytes, which ckptkit decodes as UTF-8 with undecodable bytes kept as surrogate
escapes; in text output such a byte shows as `\xff`, and control characters as `\x0a`
(`\u0085` for C1 controls), so that one name is one line and the printed form is what
bash's `$'...'` quoting turns back into the name. Backslashes are not doubled, so text
output is for people: `--json` is exact, writing an undecodable byte as the JSON escape
`\udcff` (Python's `json.loads` gives back the str ckptkit uses as the key).

The terminal checks (`stdout_is_tty`, `stderr_is_tty`), `console` and `progress` are
called through this module (`render.progress(...)`) by the commands, so that one
replacement here (a test standing in a terminal) reaches every command. rich is
imported only when a terminal asks for it.
"""
from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

# Lone surrogates: undecodable bytes of a name or path (surrogateescape), or worse.
SURROGATES = re.compile("[\ud800-\udfff]")
# ...and what else must not reach a terminal raw: C0 controls, DEL, C1 controls.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # the byte 0x80-0xff that surrogateescape kept
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(text: object) -> str:
    """A name or path as one printable line: undecodable bytes as \\xff, controls escaped."""
    return _UNPRINTABLE.sub(_escape_char, str(text))


def _safe(text: str, stream: IO[str]) -> str:
    """`text` (possibly many lines) made writable to `stream`: surrogates escaped, and
    characters its encoding lacks as backslash escapes (a strict non-UTF-8 locale)."""
    text = SURROGATES.sub(_escape_char, text)
    encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("_", "-")
    if encoding not in ("utf-8", "utf8"):
        text = text.encode(encoding, "backslashreplace").decode(encoding, "replace")
    return text


def echo(text: str = "", err: bool = False) -> None:
    """click.echo that never fails on what a name or path holds."""
    click.echo(_safe(text, sys.stderr if err else sys.stdout), err=err)


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def console(stderr: bool = False) -> Console:
    from rich.console import Console  # noqa: PLC0415

    return Console(stderr=stderr, highlight=False)


def echo_json(value: object) -> None:
    """JSON on stdout. Strings are exact: an undecodable byte of a name (a lone surrogate
    in Python) is written as its JSON escape (`\\udcff`); all of it is ASCII when
    stdout is not UTF-8."""
    encoding = (getattr(sys.stdout, "encoding", None) or "utf-8").lower().replace("_", "-")
    ascii_only = encoding not in ("utf-8", "utf8")
    text = json.dumps(value, indent=2, ensure_ascii=ascii_only, default=_json_default)
    click.echo(SURROGATES.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "as_dict"):
        return value.as_dict()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def table(columns: list[tuple[str, str]], rows: list[list[Any]], footer: list[Any] | None = None,
           title: str | None = None) -> None:
    """A table: rich on a terminal, plain aligned columns otherwise. columns: (header, 'l'|'r')."""
    cells = [[printable(c) for c in row] for row in rows]
    foot = [printable(c) for c in footer] if footer else None
    title = printable(title) if title else title
    if stdout_is_tty():
        from rich.table import Table  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        table = Table(title=Text(title) if title else None, show_footer=foot is not None,
                      title_justify="left")
        for i, (header, align) in enumerate(columns):
            table.add_column(header, justify="right" if align == "r" else "left",
                             footer=Text(foot[i]) if foot else "", overflow="fold")
        for row in cells:
            table.add_row(*(Text(c) for c in row))
        console().print(table)
        return
    if title:
        echo(title)
    all_rows = [[h for h, _ in columns], *cells, *([foot] if foot else [])]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(columns))]
    for row in all_rows:
        parts = [c.rjust(w) if a == "r" else c.ljust(w)
                 for c, w, (_, a) in zip(row, widths, columns, strict=True)]
        echo("  ".join(parts).rstrip())


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def bytes_text(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def plural(n: int, what: str = "tensor") -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def shape_text(shape: Iterable[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


@contextlib.contextmanager
def progress(total: int, description: str) -> Iterator[Callable[[int], None] | None]:
    """A byte-count callback showing a rich progress bar on a terminal stderr, else None."""
    if not stderr_is_tty() or total <= 0:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn  # noqa: PLC0415

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console(stderr=True),
                  transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def note(message: str) -> None:
    """A status line for people, on stderr (stdout stays parseable)."""
    echo(message, err=True)
