"""Real servers on loopback for the remote-storage tests, started by the tests themselves.

- `http_server(root)`: a static file server answering HEAD and `Range: bytes=a-b` GETs (as
  nginx and object-store gateways do), counting the body bytes it sends. Every answer
  carries the file's ETag and Last-Modified, and `If-Match` / `If-Unmodified-Since` are
  honoured (412 when the file is another now). Under `/swap/`, once counter["swap_after"]
  GETs were answered, a file `X` is replaced by its twin `X.v2` (other bytes, another ETag);
  counter["swap_mode"] "ignores" makes the server ignore the preconditions, "last-modified"
  sends no ETag. Under `/drip/` data responses send their body one byte every 0.2 s. Paths under
  `/flaky/` answer every other data request with a 503 (a store having a bad moment);
  under `/truncated/` every data response stops half-way through its body; under
  `/stalled/` data responses send their headers, then nothing for 30 s; under
  `/wrong-range/` range answers name (and send) the range one byte further on; under
  `/overlong/` they send twice the bytes asked for (`/unsized-overlong/`: without a
  Content-Length, to the connection's end).
- `plain_http_server(root)`: Python's own `python -m http.server` in a subprocess, which
  ignores Range requests (every GET is a 200 with the whole file).
- `silent_server()`: a port that accepts connections and never answers.
- `s3_server()`: moto's S3-compatible server (the one s3fs's own tests use), in a thread.
"""
from __future__ import annotations

import contextlib
import email.utils
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    root: str
    counter: dict

    def log_message(self, *args) -> None:  # quiet
        pass

    def _target(self) -> str | None:
        if "/forbidden/" in self.path:
            self.send_error(403)
            return None
        path = os.path.normpath(os.path.join(self.root, self.path.split("?")[0].lstrip("/")))
        if not path.startswith(self.root) or not os.path.isfile(path):
            self.send_error(404)
            return None
        swap_after = self.counter.get("swap_after")
        if "/swap/" in self.path and swap_after is not None and self.counter.get("swap_gets", 0) >= swap_after \
                and os.path.isfile(path + ".v2"):
            path += ".v2"  # the file was replaced
        return path

    def _mode(self) -> str:
        return self.counter.get("swap_mode", "honours") if "/swap/" in self.path else "honours"

    def _validators(self, path: str) -> None:
        st = os.stat(path)
        if self._mode() != "last-modified":
            self.send_header("ETag", f'"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"')
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))

    def _precondition_failed(self, path: str) -> bool:
        """RFC 9110: If-Match names another ETag, or the file changed since If-Unmodified-Since."""
        if self._mode() == "ignores":
            return False
        st = os.stat(path)
        wanted = self.headers.get("If-Match")
        if wanted is not None and self._mode() != "last-modified":
            return wanted.strip() not in ("*", f'"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"')
        since = self.headers.get("If-Unmodified-Since")
        if since is not None:
            return int(st.st_mtime) > email.utils.parsedate_to_datetime(since).timestamp()
        return False

    def do_HEAD(self) -> None:  # http.server's naming
        path = self._target()
        if path is None:
            return
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(path)))
        self.send_header("Accept-Ranges", "bytes")
        self._validators(path)
        self.end_headers()

    def do_GET(self) -> None:
        path = self._target()
        if path is None:
            return
        data_request = ".data-" in self.path
        if data_request and "/flaky/" in self.path:
            self.counter["flaky"] = self.counter.get("flaky", 0) + 1
            if self.counter["flaky"] % 2:
                self.send_error(503)
                return
        if self._precondition_failed(path):
            self.send_error(412)
            return
        size = os.path.getsize(path)
        start, end = 0, size - 1
        m = _RANGE.match(self.headers.get("Range", ""))
        if m:
            start = int(m[1])
            end = min(int(m[2]) if m[2] else size - 1, size - 1)
            if "/wrong-range/" in self.path and end + 1 < size:
                start, end = start + 1, end + 1
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            if "overlong/" in self.path:  # the range asked for, and more bytes than it holds
                end = min(size - 1, end + (end - start + 1))
        else:
            self.send_response(200)
        length = max(0, end - start + 1)
        if "/unsized-overlong/" in self.path and m:  # no length: the body runs to the connection's end
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self._validators(path)
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(length)
        if data_request and "/stalled/" in self.path:
            self.wfile.flush()
            time.sleep(30)
            return
        if data_request and "/drip/" in self.path:  # a byte every 0.2 s, for at most 30 s
            with contextlib.suppress(OSError):  # the reader gave up and closed the connection
                for byte in body[:150]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            self.close_connection = True
            return
        if "/swap/" in self.path:
            self.counter["swap_gets"] = self.counter.get("swap_gets", 0) + 1
        if data_request and "/truncated/" in self.path:
            body = body[:len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)
        self.counter["bytes"] += length
        self.counter["requests"] += 1


@contextlib.contextmanager
def http_server(root: str) -> Iterator[tuple[str, dict]]:
    """Serve `root` on loopback; yields (base URL, {"bytes": sent, "requests": n})."""
    counter = {"bytes": 0, "requests": 0}
    handler = type("Handler", (_Handler,), {"root": os.path.realpath(root), "counter": counter})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counter
    finally:
        server.shutdown()
        server.server_close()


def _wait_for_port(port: int, proc: subprocess.Popen | None = None, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


@contextlib.contextmanager
def plain_http_server(root: str) -> Iterator[str]:
    """`python -m http.server` serving `root` on loopback (a subprocess); yields its base URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", root], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A loopback port whose connections are accepted (by the kernel) and never answered:
    a host that takes requests and stays silent. Yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@contextlib.contextmanager
def s3_server() -> Iterator[dict]:
    """moto's S3 server on loopback; yields the storage_options that reach it."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 - test extra only

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield {"key": "testing", "secret": "testing", "skip_instance_cache": True,
               "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}}
    finally:
        server.stop()
