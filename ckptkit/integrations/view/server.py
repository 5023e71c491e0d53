"""The server of `ckptkit view`: the page and a fixed set of JSON endpoints, on loopback.

Routes (nothing else; any other path, `..` included, is 404, and no part of a request
is ever used as a file name): `/` the page, `/api/model` what it embeds,
`/api/tensor?i=N` row N's histogram and heat map, `/api/moved?a=I&b=J` what moved
between checkpoints I and J of a run. Only GET and HEAD. Unless the user chose a
`--host`, a request must name the loopback host it was sent to (a page of another site
cannot reach it through a DNS name rebound to 127.0.0.1). Every answer says
`Cache-Control: no-store` and `X-Content-Type-Options: nosniff`; the page carries its
own Content-Security-Policy (page.py).
"""
from __future__ import annotations

import http.server
import urllib.parse
from typing import Any

from ...errors import CheckpointError
from . import page
from .model import ViewModel

__all__ = ["ViewServer", "make_server"]

LOOPBACK = "127.0.0.1"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ViewServer
    server_version = "ckptkit-view"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: the terminal shows the URL and the progress bar, not a request log."""

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        if not self.server.host_allowed(self.headers.get("Host")):
            self._send(403, "text/plain; charset=utf-8", b"forbidden host\n", head)
            return
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        try:
            status, kind, body = self.server.route(url.path, query)
        except (CheckpointError, OSError) as exc:  # e.g. the checkpoint deleted or damaged since
            status, kind, body = 500, "application/json", _json({"error": str(exc)})
        self._send(status, kind, body, head)

    def _send(self, status: int, kind: str, body: bytes, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _json(value: Any) -> bytes:
    return page.embed_json(value).encode("ascii")


def _index(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name, [])
    if len(values) != 1 or not values[0].isascii() or not values[0].isdigit() or len(values[0]) > 9:
        return None
    return int(values[0])


_NOT_FOUND = (404, "text/plain; charset=utf-8", b"not found\n")


class ViewServer(http.server.ThreadingHTTPServer):
    """Serves one ViewModel. `host_check`: accept only requests whose Host header names
    this loopback address (or localhost) and port."""

    daemon_threads = True

    def __init__(self, model: ViewModel, host: str, port: int, *, host_check: bool = True) -> None:
        super().__init__((host, port), _Handler)
        self.model = model
        self.host_check = host_check
        # rendered before the URL is printed: the first request gets the page at once
        self._page = page.render(model.page(served=True)).encode("utf-8")

    @property
    def host(self) -> str:
        host = self.server_address[0]
        return host.decode("ascii") if isinstance(host, bytes) else str(host)

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.server_address[1]}/"

    def host_allowed(self, header: str | None) -> bool:
        if not self.host_check:
            return True
        port = self.server_address[1]
        return header in (f"{LOOPBACK}:{port}", f"localhost:{port}", f"{self.host}:{port}")

    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        if path == "/":
            return 200, "text/html; charset=utf-8", self._page
        if path == "/api/model":
            return 200, "application/json", _json(self.model.page(served=True))
        if path == "/api/tensor":
            i = _index(query, "i")
            if i is None or i >= len(self.model.summary["tensors"]):
                return _NOT_FOUND
            return 200, "application/json", _json(self.model.detail(i))
        if path == "/api/moved":
            a, b = _index(query, "a"), _index(query, "b")
            if a is None or b is None or max(a, b) >= len(self.model.locations):
                return _NOT_FOUND
            return 200, "application/json", _json(self.model.moved(a, b))
        return _NOT_FOUND


def make_server(model: ViewModel, host: str | None = None, port: int = 0) -> ViewServer:
    """A server for `model` on `host` (127.0.0.1 unless given) and `port` (0: a free one);
    call `serve_forever()` on it, `shutdown()` from another thread to stop it."""
    return ViewServer(model, host or LOOPBACK, port, host_check=host is None)
