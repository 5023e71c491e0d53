"""The store conformance kit (store_kit.py) run on every store ckptkit tests: the local
filesystem, fsspec's memory://, S3 (moto's server on loopback) and a range-serving HTTP
server on loopback (read-only: it inherits the read tests only)."""
from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import fsspec
import pytest
from servers import http_server
from store_kit import ListTests, Place, ReadTests, WriteTests

from ckptkit import storage
from ckptkit.storage import remote


def _local_put(path: str, data: bytes) -> None:
    """Write `path` as another program would replace it: a new file renamed into place."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".new", "wb") as f:
        f.write(data)
    os.replace(path + ".new", path)


def _local_get(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _local_names(directory: str) -> set[str]:
    try:
        return {e.name for e in os.scandir(directory) if e.is_file()}
    except FileNotFoundError:
        return set()


def _watch_renames(monkeypatch: pytest.MonkeyPatch, published: list[str]) -> None:
    """Record the final name of every rename (a local commit publishes by renaming)."""
    rename = os.replace

    def recording(src: str, dst: str) -> None:
        rename(src, dst)
        published.append(os.fspath(dst))

    monkeypatch.setattr(os, "replace", recording)


def _watch_uploads(monkeypatch: pytest.MonkeyPatch, published: list[str]) -> None:
    """Record the path of every upload completed (an object store publishes by completing them)."""
    complete = remote._Upload.commit

    def recording(self: remote._Upload) -> None:
        complete(self)
        published.append(self.path)

    monkeypatch.setattr(remote._Upload, "commit", recording)


def _fsspec_place(root: str, options: dict | None) -> Iterator[Place]:
    """A Place on an fsspec store, its back door the store's own fsspec filesystem (one
    listing cache for both sides)."""
    with storage.options(options):
        fs = storage.of(root).fs  # type: ignore[attr-defined]

        def get(path: str) -> bytes | None:
            try:
                return fs.cat_file(path)
            except FileNotFoundError:
                return None

        def names(directory: str) -> set[str]:
            fs.invalidate_cache()
            try:
                return {os.path.basename(e["name"].rstrip("/")) for e in fs.ls(directory, detail=True)
                        if e["type"] == "file"}
            except FileNotFoundError:
                return set()

        yield Place(root, fs.pipe_file, get, names, _watch_uploads)


class TestLocal(ReadTests, ListTests, WriteTests):
    @pytest.fixture
    def place(self, tmp_path) -> Place:
        root = os.fspath(tmp_path / "store")
        os.makedirs(root)
        return Place(root, _local_put, _local_get, _local_names, _watch_renames)


class TestMemory(ReadTests, ListTests, WriteTests):
    @pytest.fixture
    def place(self) -> Iterator[Place]:
        root = f"memory://ckptkit-store-kit/{uuid.uuid4().hex[:8]}"
        yield from _fsspec_place(root, None)
        with contextlib.suppress(FileNotFoundError):  # a test that removed everything
            fsspec.filesystem("memory").rm(root, recursive=True)


class TestS3(ReadTests, ListTests, WriteTests):
    tells_absent_on_remove = False

    @pytest.fixture
    def place(self, s3) -> Iterator[Place]:
        yield from _fsspec_place(f"s3://bucket/{uuid.uuid4().hex[:8]}", s3)


class TestHTTP(ReadTests):
    """A static HTTP server answering Range requests: read-only, no listings."""

    @pytest.fixture
    def place(self, tmp_path) -> Iterator[Place]:
        served = os.fspath(tmp_path / "served")
        os.makedirs(served)
        with http_server(served) as (url, _):
            def local(path: str) -> str:
                return os.path.join(served, path[len(url):].lstrip("/"))

            yield Place(url + "/run", lambda path, data: _local_put(local(path), data),
                        lambda path: _local_get(local(path)), lambda path: _local_names(local(path)))
