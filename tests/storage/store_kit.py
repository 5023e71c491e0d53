"""The store conformance kit: what every `Storage` promises (ckptkit/storage/base.py),
as test classes any store's tests inherit (as zarr-python's StoreTests).

A store's test class (see test_store_kit.py) provides a `place` fixture: a `Place`, a
fresh empty directory on the store plus a back door to it (the store's files written and
read without ckptkit), and inherits the mixins its store supports:

- `ReadTests`: open, size, reads at offsets, identity, isfile/exists, errors for missing files;
- `ListTests`: directories, listings and `storage.match`;
- `WriteTests`: makedirs, remove, and the `Transaction` (commit): publish order, abort,
  delete_after, guard, link.

A read-only store (an HTTP server) inherits `ReadTests` only: nothing is skipped, the
tests it cannot pass are simply not its tests.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from ckptkit import storage
from ckptkit.errors import CheckpointError, ConcurrentModificationError, DataLossError, NotFoundError
from ckptkit.storage.base import Storage
from ckptkit.storage.crc import crc32c
from ckptkit.storage.lock import EDIT, LOCK_FILENAME

DATA = bytes(range(256)) * 4 + b"tail"  # 1028 bytes: every byte value, and a tail to find


class Place:
    """A fresh directory `root` on the store under test, and a back door to its files.
    `watch_publications(monkeypatch, published)` (writable stores) makes the store append
    the final path of each file to `published` as it publishes it, by watching (not
    replacing) the store's own publishing step."""

    def __init__(self, root: str, put: Callable[[str, bytes], None], get: Callable[[str], bytes | None],
                 names: Callable[[str], set[str]], watch_publications: Callable[[pytest.MonkeyPatch, list[str]], None]
                 | None = None) -> None:
        self.root = root
        self._put, self._get, self._names = put, get, names
        self.watch_publications = watch_publications

    @property
    def store(self) -> Storage:
        return storage.of(self.root)

    def path(self, *names: str) -> str:
        return "/".join([self.root.rstrip("/"), *names])

    def put(self, name: str, data: bytes) -> str:
        """Write (or replace) the file `name` under root without ckptkit; return its path."""
        path = self.path(name)
        self._put(path, data)
        return path

    def get(self, name: str) -> bytes | None:
        """The bytes of `name` under root, read without ckptkit (None: absent)."""
        return self._get(self.path(name))

    def names(self, directory: str = "") -> set[str]:
        """The file names in `directory` (under root), listed without ckptkit (the local lock file left out)."""
        return self._names(self.path(directory) if directory else self.root) - {LOCK_FILENAME}


class ReadTests:
    """Reading and looking: what every store, read-only ones included, does."""

    def test_open_reads_exact_bytes_at_offsets(self, place: Place) -> None:
        path = place.put("model.data-00000-of-00001", DATA)
        with place.store.open(path, "data shard") as f:
            assert (f.path, f.what, f.size) == (path, "data shard", len(DATA))
            assert f.read(10, 0) == DATA[:10]
            assert f.read(300, 500) == DATA[500:800]
            assert f.read(len(DATA), 0) == DATA
            assert f.read_all() == DATA
            buf = bytearray(16)
            f.read_exactly(memoryview(buf), 100, key="w")
            assert bytes(buf) == DATA[100:116]
        assert place.store.size(path) == len(DATA)
        assert place.store.read_bytes(path, "index file") == DATA

    def test_a_read_at_the_end_is_short_and_past_it_empty(self, place: Place) -> None:
        path = place.put("model.index", DATA)
        with place.store.open(path, "index file") as f:
            assert f.read(100, len(DATA) - 4) == b"tail"  # short: the file ends first
            assert f.read(10, len(DATA)) == b""
            assert f.read(10, len(DATA) + 1000) == b""
            buf = memoryview(bytearray(8))
            assert f.readinto(buf, len(DATA)) == 0
            with pytest.raises(DataLossError) as caught:  # read_exactly never returns short
                f.read_exactly(memoryview(bytearray(8)), len(DATA) - 4, key="w")
            assert (caught.value.path, caught.value.key) == (path, "w")

    def test_an_empty_file(self, place: Place) -> None:
        path = place.put("empty", b"")
        with place.store.open(path, "state file") as f:
            assert f.size == 0
            assert f.read_all() == b""
            assert f.read(10, 0) == b""
        assert place.store.isfile(path)

    def test_as_file_seeks_and_reads(self, place: Place) -> None:
        path = place.put("archive.npz", DATA)
        with place.store.open(path, "npz file") as handle:
            f = handle.as_file()
            assert f.seek(-4, os.SEEK_END) == len(DATA) - 4
            assert f.read(100) == b"tail"
            f.seek(256)
            assert f.read(4) == bytes([0, 1, 2, 3])

    def test_a_missing_file_is_not_found_naming_it(self, place: Place) -> None:
        missing = place.path("nope.index")
        with pytest.raises(NotFoundError) as caught:
            place.store.open(missing, "index file")
        assert caught.value.path == missing and "index file" in str(caught.value)
        with pytest.raises(NotFoundError):
            place.store.read_bytes(missing, "index file")
        store = place.store
        assert (store.kind(missing), store.isfile(missing), store.exists(missing), store.identity(missing)) == \
            (None, False, False, None)

    def test_a_file_is_a_file(self, place: Place) -> None:
        path = place.put("model.index", DATA)
        store = place.store
        assert (store.kind(path), store.isfile(path), store.isdir(path), store.exists(path)) == \
            ("file", True, False, True)
        assert storage.isfile(path) and storage.exists(path) and not storage.isdir(path)

    def test_identity_is_stable_and_changes_when_the_file_is_replaced(self, place: Place) -> None:
        path = place.put("model.index", DATA)
        first = place.store.identity(path)
        assert first is not None and place.store.identity(path) == first
        with place.store.open(path, "index file") as f:
            assert f.identity == first  # the version opened is the one identity() names
        place.put("model.index", DATA[::-1] + b"longer")
        assert place.store.identity(path) not in (None, first)
        assert place.store.published_identity(path) == place.store.identity(path)
        with place.store.open(path, "index file") as f:
            assert f.read_all() == DATA[::-1] + b"longer"

    def test_mtime_is_a_time_or_unknown(self, place: Place) -> None:
        path = place.put("model.index", DATA)
        mtime = place.store.mtime(path)
        assert mtime is None or mtime > 1e9  # seconds since the epoch: after 2001


class ListTests:
    """Directories and listings: stores that can list (not a plain HTTP server)."""

    def test_entries_listdir_and_directories(self, place: Place) -> None:
        place.put("a.index", b"i")
        place.put("sub/b.data-00000-of-00001", b"d")
        store = place.store
        assert sorted(store.entries(place.root)) == [("a.index", "file"), ("sub", "dir")]
        assert sorted(store.listdir(place.root)) == ["a.index", "sub"]
        sub = place.path("sub")
        assert (store.kind(sub), store.isdir(sub), store.isfile(sub), store.exists(sub)) == ("dir", True, False, True)
        assert store.listdir(place.path("missing")) == []
        with pytest.raises(CheckpointError) as caught:
            store.open(sub, "index file")
        assert caught.value.path == sub

    def test_match_is_a_one_directory_glob(self, place: Place) -> None:
        for name in ("m-1.index", "m-2.index", "m-1.data-00000-of-00001", "sub/m-3.index"):
            place.put(name, b"x")
        assert storage.match(place.root, "m-*.index") == [place.path("m-1.index"), place.path("m-2.index")]
        assert storage.match(place.root, "*.meta") == []
        assert storage.match(place.root, "m-\0*") == []  # hostile patterns match nothing
        assert storage.match(place.root, "*" * 2000) == []
        assert storage.match(place.path("missing"), "*") == []


class WriteTests:
    """Writing: makedirs, remove and the commit (`Transaction`)."""

    #: whether `remove` of an absent file says False (S3's delete answers alike either way)
    tells_absent_on_remove = True

    def test_makedirs_then_a_commit_into_the_new_directory(self, place: Place) -> None:
        directory = place.path("run", "deeper")
        place.store.makedirs(directory)
        place.store.makedirs(directory)  # already there: nothing to do
        storage.write_file(f"{directory}/checkpoint", b"state")
        assert place.get("run/deeper/checkpoint") == b"state"

    def test_remove(self, place: Place) -> None:
        path = place.put("old.meta", b"m")
        assert place.store.remove(path) is True
        assert place.get("old.meta") is None and not place.store.exists(path)
        assert place.store.remove(path) is not self.tells_absent_on_remove  # absent now

    def test_publish_makes_every_file_visible_data_before_the_index(self, place: Place,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
        data, index = place.path("m.data-00000-of-00001"), place.path("m.index")
        published: list[str] = []
        assert place.watch_publications is not None, "a writable store's Place says how it publishes"
        place.watch_publications(monkeypatch, published)
        with place.store.commit(place.root, lock_timeout=5.0, role=EDIT) as tx:
            shard = tx.shard(data)
            assert shard.path == data
            crc = shard.write(DATA[:1000])
            assert shard.write(DATA[1000:], crc) == crc32c(DATA)  # the running crc32c, unmasked
            assert shard.offset == len(DATA)
            shard.close()
            tx.file(index).write(b"the index")
            assert not place.store.exists(data) and not place.store.exists(index)  # nothing before publish
            tx.publish()
        assert place.get("m.data-00000-of-00001") == DATA and place.get("m.index") == b"the index"
        assert place.names() == {"m.data-00000-of-00001", "m.index"}  # no temp file left
        assert [p for p in published if p in (data, index)] == [data, index]

    @pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # no noise from dropped uploads
    def test_leaving_the_block_without_publishing_leaves_nothing(self, place: Place) -> None:
        place.put("m.index", b"old")

        def write(tx: storage.Transaction) -> None:
            tx.shard(place.path("m.data-00000-of-00001")).write(DATA)
            tx.file(place.path("m.index")).write(b"new")
            tx.delete_after(place.path("m.index"))

        with pytest.raises(RuntimeError), storage.Commit(place.root) as tx:
            write(tx)
            raise RuntimeError("the writer failed")
        with storage.Commit(place.root) as tx:
            write(tx)  # no publish
        with storage.Commit(place.root) as tx:
            write(tx)
            tx.abort()
        assert place.names() == {"m.index"} and place.get("m.index") == b"old"

    def test_delete_after_deletes_old_files_but_not_new_ones(self, place: Place) -> None:
        old_shard = place.put("m.data-00000-of-00002", b"old")
        place.put("m.index", b"old index")
        with storage.Commit(place.root) as tx:
            tx.file(place.path("m.index")).write(b"new index")
            tx.delete_after(old_shard)
            tx.delete_after(place.path("m.index"))  # published by this commit: kept
            tx.delete_after(place.path("never-was"))  # absent: nothing to do
            tx.publish()
        assert place.names() == {"m.index"} and place.get("m.index") == b"new index"

    def test_a_guarded_file_changed_meanwhile_stops_the_publication(self, place: Place) -> None:
        index = place.put("m.index", b"read by the edit")
        since = place.store.identity(index)
        with pytest.raises(ConcurrentModificationError) as caught, storage.Commit(place.root) as tx:
            tx.guard(index, since)
            tx.file(place.path("m.meta")).write(b"meta")
            place.put("m.index", b"rewritten by another program")
            tx.publish()
        assert caught.value.path == index
        assert place.names() == {"m.index"} and place.get("m.index") == b"rewritten by another program"

    def test_an_unchanged_guard_lets_it_publish(self, place: Place) -> None:
        index = place.put("m.index", b"read by the edit")
        with storage.Commit(place.root) as tx:
            tx.guard(index, place.store.identity(index))
            tx.guard(place.path("absent"), None)  # absent then, absent now
            tx.file(index).write(b"edited")
            tx.publish()
        assert place.get("m.index") == b"edited"

    def test_link_publishes_a_copy_of_a_file_in_the_store(self, place: Place) -> None:
        source = place.put("src/m.data-00000-of-00001", DATA)
        place.store.makedirs(place.path("out"))
        done: list[int] = []
        with storage.Commit(place.path("out")) as tx:
            tx.link(source, place.path("out", "m.data-00000-of-00001"), progress=done.append)
            tx.publish()
        assert place.get("out/m.data-00000-of-00001") == DATA and sum(done) == len(DATA)
        assert place.get("src/m.data-00000-of-00001") == DATA  # the source is left as it was

    def test_a_file_outside_the_directory_is_refused(self, place: Place) -> None:
        place.store.makedirs(place.path("a"))
        with storage.Commit(place.path("a")) as tx:
            with pytest.raises(CheckpointError) as caught:
                tx.file(place.path("b", "m.index"))
            assert caught.value.path == place.path("b", "m.index")
            with pytest.raises(CheckpointError):
                tx.delete_after(place.path("m.index"))
        assert place.names("a") == set()
