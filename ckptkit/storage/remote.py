"""Checkpoints at fsspec URLs (s3://, gs://, http(s)://, hf://, memory://, ...).

Reads fetch byte ranges only (`cat_file(path, start, end)`), so listing a checkpoint
reads its `.index` and never its data shards, and a tensor read fetches that tensor's
bytes; BundleData splits big tensors into pieces that its thread pool fetches
concurrently. Transient store failures are retried a bounded number of times; what
still fails is a StorageError naming the URL (never a DataLossError: a transport fault says
nothing about the file's bytes). Until a store has answered once, every call to it is
bounded by FIRST_CONTACT_SECONDS, so an unreachable or offline store fails in seconds
whatever its library's own retries. Over HTTP each range answer is checked
(http_range.py): a server that ignores Range requests is named as such.

Every read has one overall deadline (`Deadline`: READ_DEADLINE_SECONDS, or the environment
variable READ_DEADLINE_ENV) covering its retries, back-offs, stalls and slow bodies: when it
runs out the read is cancelled and fails with one StorageError naming the URL and the deadline.

A file's version is pinned when it is opened (`Version`): over HTTP every range request
carries `If-Match` (or `If-Unmodified-Since`) and the answer's ETag is compared; on S3 the
object's VersionId is asked for where the bucket is versioned (the bytes of the version
opened, even after an overwrite), else its ETag as `IfMatch`. A file replaced between two
reads is then a CheckpointChangedError, never bytes of two versions. Other stores (gs://,
az://, hf://, memory://, ...) are read without a pin: fsspec gives no way to ask them for a
version, so a V2 checkpoint's index identity (checked when a shard is opened) and the data
shards' crc32c are what notice a replacement there.

Object stores have no rename, so there is no temp-and-rename commit: every new file
streams straight to its final name (S3 multipart uploads and GCS resumable uploads
appear only when completed) and files are completed in the commit's order — data
shards first, the `.index` last, the state file after it — then old files are deleted.
A reader therefore never sees an index whose shards are missing; overwriting an
existing prefix in place is not atomic (see the README). There is no directory lock.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import CheckpointChangedError, CheckpointError, InvalidArgumentError, NotFoundError, StorageError
from . import http_range
from .base import COPY_CHUNK, Identity, Opener, Progress, ReadHandle, Storage, check_unchanged, copy_range
from .crc import byte_view, crc32c
from .lock import EDIT, EDIT_WAIT_SECONDS

if TYPE_CHECKING:
    from .crc import AnyBuffer

_log = logging.getLogger(__name__)

_PIPE_LIMIT = 64 << 20  # spooled files up to this size are sent from memory, bigger ones from disk
RETRIES = 3               # attempts after the first, for errors that may pass
_BACKOFF_SECONDS = 0.2    # doubled after each failed attempt
# A store that has not answered once within this is unreachable (offline, a closed port, a
# host that drops packets): its library's own retries (gcsfs: 30 s) are not waited for.
FIRST_CONTACT_SECONDS = 6.0
_AT_ONCE_SECONDS = 0.5  # a first call this soon after the store was made shares its window
_HTTP = ("http", "https")
_S3 = ("s3", "s3a")
_IN_PROCESS = ("memory",)  # stores in this process: nothing to stall, no thread to bound them with
# names that do not resolve now will not resolve in a second either
_DNS_FAILURES = ("name or service not known", "nodename nor servname", "name resolution", "getaddrinfo failed",
                 "no address associated", "dnserror")

T = TypeVar("T")


def _transient(exc: BaseException) -> bool:
    """Errors worth another try: timeouts, dropped connections, 5xx and throttling."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if _unresolved(exc):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in ("timeout", "timed out", "connection", "disconnect", "reset by peer",
                                         "503", "500", "502", "504", "slowdown", "throttl", "payload"))


def _unresolved(exc: BaseException) -> bool:
    """A host name that does not resolve (offline, a typo): no retry will change that."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(words in text for words in _DNS_FAILURES)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


# One read from a remote store (its retries, stalls and slow bodies together) fails after this
# many seconds; the environment variable READ_DEADLINE_ENV sets another (see Deadline).
READ_DEADLINE_SECONDS = 60.0
READ_DEADLINE_ENV = "CKPTKIT_READ_DEADLINE"


class Deadline:
    """The time one read may take in all: its attempts, back-offs, stalls and slow bodies.
    Without one, a stalled server took (1 + RETRIES) x the socket timeout, and a body sent a
    byte at a time (each byte within the socket timeout) had no end."""

    def __init__(self, url: str, seconds: float | None = None) -> None:
        self.url = url
        self.seconds = read_deadline(url) if seconds is None else seconds
        self.at = time.monotonic() + self.seconds

    def left(self) -> float:
        """Seconds left; the deadline's StorageError when none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.error()
        return left

    def error(self, last: BaseException | None = None) -> StorageError:
        after = f" (last failure: {_describe(last)})" if last is not None else ""
        return StorageError(f"the read did not complete within its deadline of {self.seconds:g} s{after}: the "
                            f"store is stalled or too slow ({READ_DEADLINE_ENV} sets the deadline)", path=self.url)


def read_deadline(url: str) -> float:
    """Seconds one read may take: READ_DEADLINE_ENV if set, else READ_DEADLINE_SECONDS."""
    raw = os.environ.get(READ_DEADLINE_ENV, "").strip()
    if not raw:
        return READ_DEADLINE_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise InvalidArgumentError(f"{READ_DEADLINE_ENV}={raw!r} is not a number of seconds above 0", path=url)
    return seconds


def bounded(loop: Any, deadline: Deadline, make: Callable[[], Awaitable[T]]) -> T:
    """`await make()` on an fsspec store's event loop, cancelled when `deadline` runs out
    (its connection closed with it): the deadline's StorageError then."""
    from fsspec.asyn import sync  # noqa: PLC0415 - remote stores only

    async def run() -> T:
        left = deadline.left()  # before the request begins: none is left running when none is left
        task = asyncio.ensure_future(make())
        done, _ = await asyncio.wait({task}, timeout=left)
        if not done:
            task.cancel()
            with contextlib.suppress(BaseException):  # its cancellation, or what it raised meanwhile
                await task
            raise deadline.error()
        return task.result()

    return sync(loop, run)


def call(url: str, what: str, fn: Callable[[], T], deadline: Deadline | None = None) -> T:
    """`fn()`, retried on transient failures; failures become CheckpointErrors naming `url`.
    With a `deadline`, no retry begins that its back-off would take past it."""
    delay = _BACKOFF_SECONDS
    for attempt in range(RETRIES + 1):
        try:
            return fn()
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - a store's errors are many and undocumented
            failure: BaseException = exc
            if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                # fsspec's HTTP store says "not found" for every failure: its cause tells
                cause = exc.__cause__
                status = getattr(cause, "status", None)
                if cause is None or status == 404 or not (status or isinstance(cause, OSError)):
                    raise NotFoundError(f"{what} not found", path=url) from None
                failure = cause
            if attempt < RETRIES and _transient(failure):
                if deadline is not None and time.monotonic() + delay >= deadline.at:
                    raise deadline.error(failure) from None
                _log.debug("retrying %s after %s", url, failure)
                time.sleep(delay)
                delay *= 2
                continue
            denied = isinstance(failure, PermissionError) or getattr(failure, "status", None) in (401, 403) \
                or any(w in str(failure).lower() for w in ("403", "forbidden", "access denied"))
            if denied:
                # S3 answers 403, not 404, for a missing key to credentials that may not list the bucket
                hint = " (or it does not exist: S3 says 403 for a missing key without list permission)" \
                    if url.startswith(("s3://", "s3a://")) else ""
                raise StorageError(f"access to {what} denied{hint}: {_describe(failure)}", path=url) from None
            raise StorageError(f"cannot access {what}: {_describe(failure)}", path=url) from None
    raise AssertionError("unreachable")


def within(seconds: float, url: str, fn: Callable[[], T], error: Callable[[], StorageError] | None = None) -> T:
    """`fn()`, given up on after `seconds`: it runs in a daemon thread that is left to
    finish on its own (its result unused), so no library's retry loop can hold the caller.
    `error()` is what is raised then (default: the store is unreachable)."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="ckptkit-store-contact", daemon=True).start()
    if not done.wait(max(seconds, 0.0)):
        if error is not None:
            raise error()
        raise StorageError(f"no answer from the store within {FIRST_CONTACT_SECONDS:g} s: unreachable or offline "
                         f"(ckptkit -v shows its library's log)", path=url)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@dataclass(frozen=True)
class Version:
    """The version of a file its store reported when it was opened, which every later read
    asks for (empty strings: not reported; all empty: reads are not pinned)."""

    etag: str = ""
    modified: str = ""    # HTTP Last-Modified, for servers without a strong ETag
    version_id: str = ""  # S3 VersionId, in versioned buckets

    def __bool__(self) -> bool:
        return bool(self.etag or self.modified or self.version_id)


async def _s3_range(fs: Any, key: str, start: int, end: int, version: Version, url: str, what: str) -> bytes:
    """Bytes [start, end) of the S3 object `key` in `version`: s3fs's `cat_file` takes no
    precondition, so the GetObject is sent through s3fs's client call (its credentials,
    endpoint and error translation) with VersionId, or IfMatch with the ETag."""
    bucket, name, _ = fs.split_path(key)
    pin = {"VersionId": version.version_id} if version.version_id else {"IfMatch": version.etag} if version.etag else {}
    try:
        resp = await fs._call_s3("get_object", Bucket=bucket, Key=name, Range=f"bytes={start}-{end - 1}", **pin)
    except OSError as exc:
        cause = getattr(exc.__cause__, "response", None) or {}
        if cause.get("Error", {}).get("Code") == "PreconditionFailed" or \
                cause.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
            raise CheckpointChangedError(http_range.changed(what, version.etag, "another"), path=url) from None
        raise
    try:
        got = str(resp.get("ETag") or "")
        if version.etag and got and got != version.etag:  # a store that ignores IfMatch
            raise CheckpointChangedError(http_range.changed(what, version.etag, got), path=url)
        return bytes(await resp["Body"].read())
    finally:
        resp["Body"].close()


class RemoteHandle(ReadHandle):
    # Each read waits on a round trip: more, smaller range requests in flight.
    piece_bytes = 4 << 20
    read_threads = 8

    def __init__(self, storage: FsspecStorage, path: str, what: str, info: dict) -> None:
        self.storage = storage
        self.path = path
        self.what = what
        self.size = int(info.get("size") or 0)
        self.identity = storage.identity_of(info)
        self.version = storage.version_of(info)  # what every read asks for
        # HTTP: the first read runs alone, as its answer says whether the server honours
        # Range; if not, the whole file it sent is kept here and every read served from it.
        self._probed = storage.protocol not in _HTTP
        self._probe_lock = threading.Lock()
        self._copy: bytes | None = None

    def read(self, size: int, offset: int) -> bytes:
        """Bytes [offset, offset + size) of the version opened, within one Deadline."""
        if size <= 0 or offset >= self.size:
            return b""
        end = min(offset + size, self.size)
        try:
            return self._read(offset, end, Deadline(self.path))
        except NotFoundError:
            if not self.version:
                raise
            raise CheckpointChangedError(f"the {self.what} was deleted from the store after it was opened; "
                                         f"open it again", path=self.path) from None

    def _read(self, offset: int, end: int, deadline: Deadline) -> bytes:
        if not self._probed:
            with self._probe_lock:
                if not self._probed:
                    data = self._http(offset, end, deadline)
                    self._probed = True
                    return data
        if self._copy is not None:
            return self._copy[offset:end]
        if self.storage.protocol in _HTTP:
            return self._http(offset, end, deadline)
        data = self._fetch(offset, end, deadline)
        if len(data) != end - offset:  # a truncated response: once more, then the store is at fault
            data = self._fetch(offset, end, deadline)
            if len(data) != end - offset:
                raise StorageError(f"the store returned {len(data)} bytes of {self.what} at {offset}, "
                                 f"asked for {end - offset}", path=self.path)
        self.storage.count(len(data))
        return data

    def _fetch(self, offset: int, end: int, deadline: Deadline) -> bytes:
        fs, key = self.storage.fs, self.storage.key(self.path)
        if self.storage.protocol not in _S3:
            return self.storage.run(self.path, self.what, deadline, "cat_file", key, start=offset, end=end)

        def attempt() -> bytes:
            return bounded(fs.loop, deadline,
                           lambda: _s3_range(fs, key, offset, end, self.version, self.path, self.what))

        return self.storage.call(self.path, self.what, attempt, deadline)

    def _http(self, offset: int, end: int, deadline: Deadline) -> bytes:
        fs, key, v = self.storage.fs, self.storage.key(self.path), self.version

        def attempt() -> tuple[bool, bytes]:
            return bounded(fs.loop, deadline,
                           lambda: http_range.fetch(fs, key, offset, end, self.size, self.what, v.etag, v.modified))

        whole, data = self.storage.call(self.path, self.what, attempt, deadline)
        self.storage.count(len(data))
        if not whole:
            return data
        self.storage.ignores_range(self.path)
        self._copy = data
        return data[offset:end]

    def readinto(self, buf: memoryview, offset: int) -> int:
        data = self.read(len(buf), offset)
        buf[:len(data)] = data
        return len(data)

    def close(self) -> None:
        pass


class FsspecStorage(Storage):
    """One fsspec filesystem (one protocol and set of options)."""

    hierarchical = False

    def __init__(self, fs: Any, protocol: str, open_url: Opener, contact_until: float | None = None) -> None:
        self.fs = fs
        self.open_url = open_url  # a file of any store: a commit's `link` may copy one in
        self.protocol = protocol
        self.transferred = 0  # bytes read from the store (for tests and benchmarks)
        self._count_lock = threading.Lock()
        self.answered = False  # the store has answered once: its calls are no longer bounded
        self._contact_until = contact_until  # when the first-contact window ends (None: not begun)
        self._made = time.monotonic()
        self._tried = False
        self._without_range: set[str] = set()  # hosts named as ignoring Range requests

    def call(self, path: str, what: str, fn: Callable[[], T], deadline: Deadline | None = None) -> T:
        """`call(path, what, fn)`, bounded by FIRST_CONTACT_SECONDS until the store has
        answered once. The window began when the store was made (making it may have looked
        for credentials on the network) if this call follows at once; else, and after a
        failure, it begins now."""
        if self.answered:
            return call(path, what, fn, deadline)
        now = time.monotonic()
        if self._contact_until is None or (not self._tried and now > self._made + _AT_ONCE_SECONDS):
            self._contact_until = now + FIRST_CONTACT_SECONDS
        self._tried = True
        try:
            result = within(self._contact_until - time.monotonic(), path, lambda: call(path, what, fn, deadline))
        except NotFoundError:
            self.answered = True
            raise
        except CheckpointError:
            self._contact_until = None
            raise
        self.answered = True
        return result

    def run(self, path: str, what: str, deadline: Deadline, method: str, *args: Any, **kwargs: Any) -> Any:
        """`fs.<method>(*args, **kwargs)`, retried as `call` retries, all within `deadline`:
        an async store's coroutine is cancelled then, a blocking store's call left behind."""
        fs = self.fs

        def attempt() -> Any:
            if getattr(fs, "async_impl", False) and getattr(fs, "loop", None) is not None:
                return bounded(fs.loop, deadline, lambda: getattr(fs, "_" + method)(*args, **kwargs))
            if self.protocol in _IN_PROCESS:
                return getattr(fs, method)(*args, **kwargs)
            return within(deadline.left(), path, lambda: getattr(fs, method)(*args, **kwargs), deadline.error)

        return self.call(path, what, attempt, deadline)

    def ignores_range(self, path: str) -> None:
        """Say once per server that it ignores Range requests (reads still work, at the cost
        of each file read whole)."""
        host = "/".join(path.split("/")[:3])
        with self._count_lock:
            if host in self._without_range:
                return
            self._without_range.add(host)
        _log.warning("%s: %s: each file is read whole once (up to %d MiB) and reads are served from that copy",
                     host, http_range.IGNORES_RANGE, http_range.WHOLE_FILE_LIMIT >> 20)

    def count(self, n: int) -> None:
        with self._count_lock:  # reads run in several threads
            self.transferred += n

    def key(self, path: str) -> str:
        """What the fsspec filesystem calls `path` (HTTP keeps the whole URL)."""
        return self.fs._strip_protocol(path)

    @staticmethod
    def identity_of(info: dict) -> Identity:
        tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("generation") or ""
        modified = info.get("LastModified") or info.get("Last-Modified") or info.get("mtime") or info.get("created") \
            or info.get("updated") or ""
        return (str(tag), str(modified), int(info.get("size") or 0))

    def version_of(self, info: dict) -> Version:
        """The version reads of this file pin (see the module's docstring): HTTP's ETag and
        Last-Modified, S3's VersionId and ETag; nothing for other stores."""
        if self.protocol in _HTTP:
            return Version(etag=str(info.get("ETag") or ""), modified=str(info.get("Last-Modified") or ""))
        if self.protocol in _S3:
            vid = info.get("VersionId")
            return Version(etag=str(info.get("ETag") or ""),
                           version_id=vid if isinstance(vid, str) and vid not in ("", "null") else "")
        return Version()

    def _info(self, path: str, what: str = "file") -> dict:
        return self.run(path, what, Deadline(path), "info", self.key(path))

    def open(self, path: str, what: str, pending: Mapping[str, str] | None = None) -> RemoteHandle:
        info = self._info(path, what)
        if info.get("type") == "directory":
            raise CheckpointError(f"{what} is a directory", path=path)
        return RemoteHandle(self, path, what, info)

    def kind(self, path: str) -> str | None:
        """As Storage.kind; a store that can't answer (refused, denied, timing out after the
        retries) is a CheckpointError naming `path`, not "absent"."""
        try:
            info = self._info(path)
        except NotFoundError:
            return None
        kind = info.get("type")
        return "dir" if kind == "directory" else "file" if kind == "file" else "other"

    def entries(self, directory: str) -> list[tuple[str, str]]:
        def listing() -> list:
            try:
                return self.fs.ls(self.key(directory), detail=True)
            except Exception as exc:  # unlistable (HTTP without an index page): no entries
                if _transient(exc) or _unresolved(exc):
                    raise  # ... but an unreachable store is an error
                return []

        found = self.call(directory, "directory", listing)  # an unreachable store still fails
        return [(os.path.basename(str(e["name"]).rstrip("/")),
                 "dir" if e.get("type") == "directory" else "file") for e in found]

    def size(self, path: str) -> int:
        return int(self._info(path).get("size") or 0)

    def mtime(self, path: str) -> float | None:
        try:
            return self.fs.modified(self.key(path)).timestamp()
        except Exception:  # noqa: BLE001 - not every store keeps times
            return None

    def identity(self, path: str) -> Identity | None:
        try:
            return self.identity_of(self._info(path))  # within a read's deadline, as every read
        except Exception:  # noqa: BLE001
            return None

    def makedirs(self, directory: str) -> None:
        pass  # object stores have no directories; a file's name makes its "directory"

    def remove(self, path: str) -> bool:
        try:
            self.call(path, "file", lambda: self.fs.rm_file(self.key(path)))
        except NotFoundError:
            return False
        return True

    def commit(self, directory: str, *, lock_timeout: float | None = EDIT_WAIT_SECONDS,
               role: str = EDIT) -> ObjectCommit:
        return ObjectCommit(self, directory)


# Stores whose uploads appear only when completed (multipart / resumable uploads): files
# stream straight to them. Anything else (memory://, ftp, ...) may show a file while it
# is written, so its bytes are spooled to a local temp file and put whole at publication.
_DEFERRED_UPLOADS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"}


class _Upload:
    """One new object: streamed to its final name (or spooled), completed by `commit()`."""

    def __init__(self, storage: FsspecStorage, path: str) -> None:
        self.storage = storage
        self.path = path
        self.offset = 0
        self.done = False
        self._spooled = storage.protocol not in _DEFERRED_UPLOADS
        if self._spooled:
            self.file: Any = tempfile.TemporaryFile()
        else:
            self.file = call(path, "new file", lambda: storage.fs.open(storage.key(path), "wb"))

    def write(self, data: AnyBuffer, crc: int = 0) -> int:
        view = byte_view(data)
        call(self.path, "new file", lambda: self.file.write(view))
        self.offset += len(view)
        return crc32c(view, crc)

    def close(self) -> None:
        """Nothing to do before publication: completing an upload publishes it."""

    def commit(self) -> None:
        if self._spooled:
            self.file.flush()
            fs, key = self.storage.fs, self.storage.key(self.path)
            call(self.path, "new file", lambda: self._send(fs, key))
            self.file.close()
        else:
            call(self.path, "new file", self.file.close)
        self.done = True

    def _send(self, fs: Any, key: str) -> None:
        self.file.seek(0)
        if self.offset < _PIPE_LIMIT:
            fs.pipe_file(key, self.file.read())
            return
        with fs.open(key, "wb") as out:
            shutil.copyfileobj(self.file, out, COPY_CHUNK)

    def discard(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            if self._spooled:
                self.file.close()
            else:
                if hasattr(self.file, "discard"):  # abort a multipart upload
                    self.file.discard()
                # marked closed, a buffered file never uploads (s3fs's, once discarded, would
                # otherwise fail to flush when collected: an "exception ignored" on stderr)
                self.file.closed = True
        except Exception as exc:  # noqa: BLE001
            _log.debug("discarding %s: %s", self.path, exc)


class ObjectCommit:
    """The `Transaction` of object stores (`LocalCommit`'s interface): files completed in creation order."""

    def __init__(self, storage: FsspecStorage, directory: str) -> None:
        self.storage = storage
        self.directory = directory
        self._parts: list[_Upload] = []
        self._deletes: list[str] = []
        self._guards: dict[str, Identity | None] = {}
        self._published = False

    def __enter__(self) -> ObjectCommit:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._published:
            self.abort()

    def _own(self, path: str) -> str:
        if os.path.dirname(path).rstrip("/") != self.directory.rstrip("/"):
            raise CheckpointError(f"refusing to write outside {self.directory}", path=path)
        return path

    def file(self, path: str) -> _Upload:
        part = _Upload(self.storage, self._own(path))
        self._parts.append(part)
        return part

    shard = file

    def link(self, source: str, path: str, what: str = "data shard", progress: Progress | None = None) -> None:
        """Publish a copy of `source` (same store) at `path`, copied by the store at publication."""
        self._own(path)
        with self.storage.open_url(source, what) as src:  # the source may live in another store
            copy_range(src, 0, src.size, self.file(path), path=source, progress=progress)

    def delete_after(self, path: str) -> None:
        self._deletes.append(self._own(path))

    def guard(self, path: str, since: Identity | None) -> None:
        self._guards[path] = since

    def publish(self) -> None:
        check_unchanged(self._guards, self.storage.identity)
        self._published = True
        finals = {p.path for p in self._parts}
        for part in self._parts:
            part.commit()
        for path in dict.fromkeys(self._deletes):
            if path not in finals:
                self.storage.remove(path)

    def abort(self) -> None:
        for part in self._parts:
            part.discard()
        self._parts.clear()
