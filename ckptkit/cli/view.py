"""`ckptkit view`: a checkpoint, or a training run, as a page in the browser.

Served on loopback (the URL is stdout's first line; Ctrl-C stops it and exits 0), or
written with --html as one self-contained file. The numbers, the page and the server
are ckptkit.integrations.view's; this module parses the options and reports.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from . import render
from .app import Command
from .failure import Failure
from .options import PATH, located, overwrite_option
from .render import echo, note, printable

if TYPE_CHECKING:
    from ..integrations.view.model import ViewModel


@click.command("view", cls=Command)
@click.argument("ckpt", default=".", required=False, type=PATH)
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default="a free port",
              help="the port to serve on")
@click.option("--host", default=None, metavar="ADDRESS",
              help="serve on ADDRESS instead of 127.0.0.1 (anyone who can reach it sees the checkpoint)")
@click.option("--open", "open_browser", is_flag=True, help="open the page in the default browser")
@click.option("--html", "html", type=PATH, default=None, metavar="FILE",
              help="write the page as one self-contained HTML file (data embedded) instead of serving it")
@overwrite_option("replace an existing --html FILE")
@click.option("--no-cache", is_flag=True, help="recompute the statistics instead of reusing those kept "
                                               "in ~/.cache/ckptkit/view (or $CKPTKIT_CACHE_DIR)")
def view_cmd(ckpt: str, port: int, host: str | None, open_browser: bool, html: str | None, overwrite: bool,
             no_cache: bool) -> None:
    """Look at a checkpoint in the browser: every tensor's statistics in a sortable,
    filterable table, histograms and heat maps, the TF2 object tree, EMA shadows beside
    their variables.

    CKPT may be a training run: a directory whose `checkpoint` state file lists several
    checkpoints; the page then plots each variable's norm, mean, std and max |x| across
    the steps and shows what moved between two of them. Statistics are computed once
    per checkpoint (a progress bar on a terminal) and kept for the next time.
    Nothing is fetched from the network: scripts and styles are in the page.
    """
    from ..integrations.view import data  # noqa: PLC0415
    from ..integrations.view.model import ViewModel  # noqa: PLC0415

    if html is not None and os.path.lexists(html) and not overwrite:
        raise Failure(f"{printable(html)}: exists; give --overwrite to replace it")
    target = ckpt if data.run_checkpoints(ckpt) else located(ckpt)
    model = ViewModel(target, cache=not no_cache)
    total = model.pending_bytes() if render.stderr_is_tty() else 0
    with render.progress(total, "statistics") as progress:
        model.load(progress)
    if html is not None:
        _write_html(model, html)
        return
    _serve(model, host, port, open_browser)


def _write_html(model: ViewModel, html: str) -> None:
    from .. import storage  # noqa: PLC0415
    from ..integrations.view import page  # noqa: PLC0415
    text = page.render(model.page(served=False))
    storage.write_file(os.path.abspath(html), text.encode("utf-8"))
    note(f"wrote {printable(html)} ({render.human(len(text))})")


def _serve(model: ViewModel, host: str | None, port: int, open_browser: bool) -> None:
    from ..integrations.view.server import make_server  # noqa: PLC0415

    try:
        server = make_server(model, host, port)
    except OSError as exc:
        raise Failure(f"cannot serve on {host or '127.0.0.1'}:{port}: {exc.strerror or exc}") from None
    with server:
        echo(server.url)
        note("serving; Ctrl-C stops")
        if open_browser:
            import webbrowser  # noqa: PLC0415

            webbrowser.open(server.url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            note("stopped")
