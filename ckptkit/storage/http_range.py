"""Byte ranges over HTTP, checked: exactly the bytes asked for, or a clear error.

fsspec's HTTP store sends `Range: bytes=a-b` and returns whatever body comes back, read
whole into memory. Servers that ignore Range (`python -m http.server`, many small static
servers) answer 200 with the whole file, and a broken proxy may answer another range; a
reader taking those bytes as the ones it asked for would see every tensor as damaged.
So every answer is checked here, its body streamed and never read past what it may be:

- 206 must carry the Content-Range asked for and exactly that many bytes;
- 200 is the whole file: taken when the whole file was asked for, or, for files up to
  WHOLE_FILE_LIMIT, returned whole for the caller to keep and serve ranges from; a
  bigger file is a StorageError saying the server ignores HTTP Range requests.

Each request also asks for the version of the file that was opened (`If-Match` with its
ETag, or `If-Unmodified-Since` with its Last-Modified where the server gave no strong
ETag), and an answer of another version (412, or an ETag / Last-Modified that differs) is
a CheckpointChangedError: a file replaced between two reads never yields bytes of both.
"""
from __future__ import annotations

import re
from typing import Any

from ..errors import CheckpointChangedError, StorageError

# A server that ignores Range sends the whole file for every request: files up to this size
# are read once and kept in memory (ranges served from that copy), bigger ones are an error.
WHOLE_FILE_LIMIT = 256 << 20
_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)$")
IGNORES_RANGE = "the server ignores HTTP Range requests"


def too_big(size: int, what: str) -> str:
    return (f"{IGNORES_RANGE} (it sends the whole file for every read), and this {what} is {size} bytes, "
            f"over the {WHOLE_FILE_LIMIT >> 20} MiB ckptkit reads whole: serve it with Range support "
            f"or download it")


def get(fs: Any, url: str, start: int, end: int, size: int, what: str, etag: str = "",
        modified: str = "") -> tuple[bool, bytes]:
    """Bytes [start, end) of `url` (a file of `size` bytes) through fsspec's HTTP store `fs`:
    (False, those bytes), or (True, the whole file) when the server ignored the Range."""
    from fsspec.asyn import sync  # noqa: PLC0415 - only HTTP URLs get here

    return sync(fs.loop, fetch, fs, url, start, end, size, what, etag, modified)


async def fetch(fs: Any, url: str, start: int, end: int, size: int, what: str, etag: str = "",
                modified: str = "") -> tuple[bool, bytes]:
    """`get` as a coroutine on `fs.loop`. `etag` / `modified`: the ETag and Last-Modified the
    file had when opened (empty: unknown); an answer from another version is refused."""
    session = await fs.set_session()
    kwargs = dict(fs.kwargs)
    headers = dict(kwargs.pop("headers", None) or {})
    headers["Range"] = f"bytes={start}-{end - 1}"
    headers["Accept-Encoding"] = "identity"  # lengths are the file's, never a compressed body's
    if etag and not etag.startswith("W/"):  # If-Match compares strongly: a weak tag would never match
        headers["If-Match"] = etag
    elif modified:
        headers["If-Unmodified-Since"] = modified
    encode = getattr(fs, "encode_url", None)  # fsspec >= 2023.9 quotes URLs its way
    async with session.get(encode(url) if encode else url, headers=headers, **kwargs) as r:
        if r.status == 404:
            raise FileNotFoundError(url)
        if r.status == 412:
            raise CheckpointChangedError(changed(what, etag or modified, "a newer one"), path=url)
        r.raise_for_status()  # 403, 5xx: aiohttp's error, with its status, for the caller's retries
        _same_version(r.headers, etag, modified, url, what)
        if r.status == 206:
            answered = r.headers.get("Content-Range", "")
            m = _CONTENT_RANGE.match(answered.strip())
            if m is None or (int(m[1]), int(m[2])) != (start, end - 1):
                raise StorageError(f"the server answered a request for bytes {start}-{end - 1} of the {what} "
                                 f"with Content-Range {answered!r}", path=url)
            return False, await _body(r, end - start, url, what)
        if r.status == 200:
            if start == 0 and end == size:
                return False, await _body(r, size, url, what)
            if size > WHOLE_FILE_LIMIT or (r.content_length or 0) > WHOLE_FILE_LIMIT:
                raise StorageError(too_big(max(size, r.content_length or 0), what), path=url)
            return True, await _body(r, size, url, what)
        raise StorageError(f"the server answered a range request for the {what} with HTTP {r.status}", path=url)


def changed(what: str, opened: str, now: str) -> str:
    """The message of a CheckpointChangedError for a file replaced after it was opened."""
    return (f"the {what} was replaced on the store after it was opened (version {opened} then, {now} now): "
            f"reading on would mix bytes of both; open it again")


def _same_version(answered: Any, etag: str, modified: str, url: str, what: str) -> None:
    """Refuse an answer whose ETag (or, without one, Last-Modified) is not the version opened:
    a server that ignores If-Match still names the version it sends."""
    got = answered.get("ETag", "")
    if etag and got and _opaque(got) != _opaque(etag):
        raise CheckpointChangedError(changed(what, etag, got), path=url)
    got = answered.get("Last-Modified", "")
    if not etag and modified and got and got != modified:
        raise CheckpointChangedError(changed(what, modified, got), path=url)


def _opaque(etag: str) -> str:
    """An ETag without its weakness mark (RFC 9110's weak comparison)."""
    return etag[2:] if etag.startswith("W/") else etag


async def _body(r: Any, expected: int, url: str, what: str) -> bytes:
    """The response's body, which must be `expected` bytes: read in chunks, and stopped as
    soon as it is longer (a short one is a dropped connection, worth another try)."""
    if r.content_length is not None and r.content_length > expected:
        raise StorageError(f"the server sent {r.content_length} bytes of the {what} where {expected} were "
                         f"asked for", path=url)
    parts = []
    got = 0
    while True:
        chunk = await r.content.read(min(_CHUNK, expected - got + 1))
        if not chunk:
            break
        got += len(chunk)
        if got > expected:
            raise StorageError(f"the server sent more than the {expected} bytes of the {what} asked for", path=url)
        parts.append(chunk)
    if got < expected:
        raise ConnectionError(f"the response ended after {got} of {expected} bytes")
    return b"".join(parts)
