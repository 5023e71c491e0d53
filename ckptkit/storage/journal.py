"""The one commit protocol every ckptkit writer uses: temp files, a journal, renames.

A checkpoint is several files (data shards, then the `.index` that makes them a
checkpoint), and a rewrite of an existing prefix (a re-save without global_step,
`compact`, an edit onto an existing `-o` output) must replace files the current index
depends on. No filesystem renames several files at once, so:

1. prepare: every new file is written under a temp name in the checkpoint's own
   directory (`files.temp_name`), flushed and fsynced; the directory is fsynced.
2. commit point: when more than one rename is needed, or old files must go, a journal
   `LAST_FILE.ckptkit-journal` (written atomically itself) lists every (temp, final)
   rename and every deletion. From this moment the new checkpoint is the checkpoint.
   (A single file — a `.meta`, a state file, an edited index — needs no journal: its
   one rename is the commit point.)
3. apply: the renames, in order (the index last), a directory fsync, the deletions,
   and the journal is removed.

The journal also records the identity (device, inode, size, mtime) of every file the
commit replaces or deletes. A journal whose files changed since (TF, which knows nothing
of journals, re-saved the prefix in between) is stale: readers ignore it, and recovery
rolls it back (deletes its temps) instead of renaming over the newer files.

A crash before 2 leaves the old checkpoint whole (its files were never touched) and
temp files that the next writer sweeps; no data file ever appears under a real name
without the index that makes it part of a checkpoint. A crash after 2 leaves the journal: the next
writer in the directory rolls it forward (`recover`) before anything else, and readers
in the meantime read the new checkpoint through it (`pending_renames`), so every
ckptkit reader sees the old checkpoint or the new one, whole, at every moment. The
old index is never unlinked first: a reader never sees "no checkpoint".

Every writer holds the directory lock (lock.py) from before it reads what it changes
until its last rename; `Commit.guard` records a file it started from (an index being
edited) and publication refuses to go on if anything outside ckptkit changed it.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import NamedTuple

from ..errors import CheckpointError, ConcurrentModificationError, NotFoundError, StorageError
from .base import Opener, Progress, check_unchanged, copy_range
from .files import STALE_TEMP_SECONDS, AtomicFile, fsync_dir, is_temp_name, open_regular, sweep_stale_temps, temp_name
from .local_handle import LocalHandle
from .lock import EDIT, EDIT_WAIT_SECONDS, DirectoryLock
from .shard_writer import ShardWriter
from .urls import is_url

__all__ = ["JOURNAL_SUFFIX", "ConcurrentModificationError", "LocalCommit", "Recovery", "identity",
           "locked_directory", "open_pending", "pending_journals", "pending_renames", "published_identity",
           "recover"]

JOURNAL_SUFFIX = ".ckptkit-journal"
_JOURNAL_VERSION = 2   # 2: with "replaces", the identity of each file replaced or deleted
_READABLE_VERSIONS = (1, 2)
FileIdentity = tuple[int, int, int, int]  # a local file's (device, inode, size, mtime_ns): see identity()
_MAX_JOURNAL_BYTES = 1 << 20

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the journal

def _journal_path(last_final: str) -> str:
    return last_final + JOURNAL_SUFFIX


class _Journal(NamedTuple):
    renames: list[tuple[str, str]]           # (temp, final) paths
    deletes: list[str]
    replaces: dict[str, FileIdentity | None] | None  # {final or deleted path: identity then}; None: v1


def _read_journal(path: str) -> _Journal | None:
    """A journal's renames, deletions and recorded identities; None if there is none.

    Every name must be a plain file name in the journal's own directory — temp names for
    rename sources, real names elsewhere — so a hostile journal can rename or delete
    nothing outside that directory and nothing but checkpoint files in it.
    """
    try:
        with open_regular(path, "commit journal") as f:
            data = f.read(_MAX_JOURNAL_BYTES + 1)
    except NotFoundError:
        return None
    directory = os.path.dirname(path)
    try:
        doc = json.loads(data.decode("utf-8"))
        if doc["version"] not in _READABLE_VERSIONS or len(data) > _MAX_JOURNAL_BYTES:
            raise ValueError("unknown journal")
        renames = [(str(t), str(f)) for t, f in doc["renames"]]
        deletes = [str(d) for d in doc["deletes"]]
        replaces = None
        if doc["version"] >= 2:
            replaces = {str(n): None if i is None else _identity_of(i) for n, i in doc["replaces"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # RecursionError: "[[[[..."
        raise CheckpointError("commit journal is damaged; remove it to keep the old files",
                              path=path) from None
    names = [n for pair in renames for n in pair] + deletes + list(replaces or ())
    if any(not n or n in (".", "..") or "/" in n or os.sep in n or "\0" in n for n in names) \
            or not all(is_temp_name(t) and not is_temp_name(f) for t, f in renames) \
            or any(is_temp_name(d) for d in deletes):
        raise CheckpointError("commit journal names files it may not touch", path=path)
    join = functools.partial(os.path.join, directory)
    return _Journal([(join(t), join(f)) for t, f in renames], [join(d) for d in deletes],
                    None if replaces is None else {join(n): i for n, i in replaces.items()})


def _identity_of(value: object) -> FileIdentity:
    """A recorded identity, as `identity` gives it (four ints), else ValueError."""
    if not (isinstance(value, list) and len(value) == 4 and all(type(v) is int for v in value)):
        raise ValueError("not an identity")
    return (value[0], value[1], value[2], value[3])


def _changed_since(journal: _Journal) -> str | None:
    """The first file the journal's commit was to replace or delete that another program
    wrote since (it exists, with another identity), or None: a stale journal must not be
    rolled forward. A final whose temp is gone was renamed by the commit itself, and a
    missing file holds nothing newer: neither is a change."""
    if journal.replaces is None:
        return None  # a version 1 journal recorded nothing to compare
    pending = {final for temp, final in journal.renames if os.path.lexists(temp)}
    for path, recorded in journal.replaces.items():
        if path in pending or path in journal.deletes:
            now = identity(path)  # gone: deleted by this commit (or by hand): nothing newer there
            if now is not None and now != recorded:
                return path
    return None


def pending_renames(last_final: str) -> dict[str, str]:
    """{final path: temp path} of a commit whose journal is `last_final`'s and not yet
    applied: readers open the temp where it still exists, so a checkpoint whose writer
    died after its commit point reads as the new checkpoint. {} when there is none, the
    journal is unusable (then the old files were never touched), or it is stale (its
    files were rewritten since by another program: those are the checkpoint now)."""
    try:
        found = _read_journal(_journal_path(last_final))
    except CheckpointError:
        return {}
    if found is None or _changed_since(found) is not None:
        return {}
    return {final: temp for temp, final in found.renames}


def open_pending(path: str, pending: Mapping[str, str], what: str) -> io.FileIO:
    """`files.open_regular` of a checkpoint file, through a pending commit's temp if any.

    A live writer may rename the temp to `path` between our look and our open: then
    `path` holds the same bytes, so falling back to it is right.
    """
    temp = pending.get(path)
    if temp is not None:
        try:
            return open_regular(temp, what)
        except NotFoundError:
            pass
    return open_regular(path, what)


def _apply(renames: list[tuple[str, str]], deletes: list[str], directory: str) -> None:
    for temp, final in renames:
        try:
            os.replace(temp, final)
        except FileNotFoundError:
            if not os.path.lexists(final):  # neither: the commit can't be completed
                raise
            # renamed already (a recovery after a crash between two renames)
        else:
            _drop_if_same(temp, final)
    fsync_dir(directory)
    for path in deletes:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    if deletes:
        fsync_dir(directory)


def _drop_if_same(temp: str, final: str) -> None:
    """rename(2) does nothing when both names are links of one file (a shard hard-linked
    again onto an output that already links it): the temp name is then left; remove it."""
    try:
        if os.path.samefile(temp, final):
            os.unlink(temp)
    except FileNotFoundError:  # renamed, as usual
        pass


class Recovery(NamedTuple):
    journal: str
    outcome: str   # "completed" (rolled forward) or "rolled back" (stale: its temps deleted)
    detail: str


def pending_journals(directory: str) -> list[str]:
    """The journals of commits a dead writer left in `directory` (sorted paths)."""
    try:
        names = [e.name for e in os.scandir(directory or os.curdir)
                 if e.name.endswith(JOURNAL_SUFFIX) and not is_temp_name(e.name)]
    except OSError:
        return []
    return [os.path.join(directory, name) for name in sorted(names)]


def recover(directory: str) -> list[Recovery]:
    """Finish every commit a dead writer left in `directory`; say what was done to each.

    A journal is rolled forward (its renames and deletions completed), unless a file it
    would replace or delete changed since its commit point (another program, such as
    TF, wrote the prefix again): then it is rolled back — its temp files deleted, the
    newer files kept. Call with the directory lock held (so no live writer is
    mid-commit). A damaged journal (it is written atomically, so only outside hands can
    damage it) is left alone with a warning, and so are the files it names.
    """
    done = []
    for path in pending_journals(directory):
        try:
            found = _read_journal(path)
            if found is None:
                continue
            changed = _changed_since(found)
            if changed is None:
                _apply(found.renames, found.deletes, directory)
                outcome, detail = "completed", f"{len(found.renames)} renames, {len(found.deletes)} deletions"
            else:
                for temp, _ in found.renames:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(temp)
                outcome, detail = "rolled back", f"{os.path.basename(changed)} changed since the commit"
            os.unlink(path)
        except (CheckpointError, OSError) as exc:
            _log.warning("cannot complete the interrupted commit %s: %s", path, exc)
            continue
        fsync_dir(directory)
        done.append(Recovery(path, outcome, detail))
    return done


# --------------------------------------------------------------------------- writing

@contextmanager
def locked_directory(directory: str, timeout: float | None = EDIT_WAIT_SECONDS, role: str = EDIT) -> Iterator[None]:
    """Hold `directory`'s lock; on first entry also complete interrupted commits and
    sweep dead writers' temp files (in that order: a journal's temps must not be swept)."""
    directory = directory or os.curdir
    lock = DirectoryLock(directory, timeout, role=role)
    lock.acquire()
    try:
        if lock.outermost:
            recover(directory)
            sweep_stale_temps(directory, max_age=STALE_TEMP_SECONDS)
        yield
    finally:
        lock.release()


def identity(path: str | int) -> FileIdentity | None:
    """What `Commit.guard` compares: a file's (path's or descriptor's) device, inode, size
    and mtime (None: absent). A rename keeps it; any rewrite or replacement changes it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def published_identity(last_final: str) -> FileIdentity | None:
    """The `identity` of the file a reader opening `last_final` now would read: the
    pending commit's temp while its journal is there, else the file itself. A reader
    compares it with what it read to learn whether a commit replaced the checkpoint."""
    temp = pending_renames(last_final).get(last_final)
    found = identity(temp) if temp is not None else None
    return found if found is not None else identity(last_final)


class LocalCommit:
    """The local filesystem's `base.Transaction`.

    `with LocalCommit(directory) as tx:` — create files with `tx.file`/`tx.shard`/`tx.link`,
    then `tx.publish()`; leaving the block without publishing deletes every temp file.

    Files are published in the order they were created, so create the index last.
    Every file lives in `directory`, whose lock the block holds (reentrantly).
    """

    def __init__(self, directory: str, *, lock_timeout: float | None = EDIT_WAIT_SECONDS, role: str = EDIT,
                 open_url: Opener | None = None) -> None:
        self.directory = directory or os.curdir
        self._open_url = open_url  # opens a source in another store (see link)
        self._lock = locked_directory(self.directory, lock_timeout, role)
        self._parts: list = []           # AtomicFile or ShardWriter, in publication order
        self._deletes: list[str] = []
        self._guards: dict[str, tuple | None] = {}
        self._published = False

    def __enter__(self) -> LocalCommit:
        self._lock.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if not self._published:
                self.abort()
        finally:
            self._lock.__exit__(exc_type, exc, tb)
        if isinstance(exc, OSError) and not isinstance(exc, (CheckpointError, FileNotFoundError)):
            # a full disk, a permission: a CheckpointError for callers too, errno kept (a missing
            # directory stays a FileNotFoundError, which writers report as NotFoundError)
            raise StorageError.of(exc) from exc

    def _own(self, path: str) -> str:
        if os.path.realpath(os.path.dirname(path) or os.curdir) != os.path.realpath(self.directory):
            raise CheckpointError(f"refusing to write outside {self.directory}", path=path)
        return path

    def file(self, path: str) -> AtomicFile:
        """A new file to be published at `path` (written through the page cache)."""
        part = AtomicFile(self._own(path))
        self._parts.append(part)
        return part

    def shard(self, path: str) -> ShardWriter:
        """A new data shard to be published at `path` (streamed, O_DIRECT where possible)."""
        part = ShardWriter(self._own(path))
        self._parts.append(part)
        return part

    def link(self, source: str, path: str, what: str = "data shard", progress: Progress | None = None) -> None:
        """Publish `source`'s bytes at `path` too: a hard link where the filesystem allows,
        else a copy. `source` must be a regular file (a FIFO or device fails, never hangs),
        and a link is kept only if it is that very file."""
        self._own(path)
        if is_url(source):  # a remote checkpoint edited into a local output: copy its bytes
            if self._open_url is None:
                raise StorageError("this commit cannot read other stores", path=source)
            with self._open_url(source, what) as remote:
                copy_range(remote, 0, remote.size, self.file(path), path=source, progress=progress)
            return
        src = LocalHandle(open_regular(source, what), source, what)
        with src:
            st = os.fstat(src.fileno())
            temp = temp_name(path)
            try:
                os.link(source, temp)
                linked = os.stat(temp, follow_symlinks=False)
                if (linked.st_dev, linked.st_ino) == (st.st_dev, st.st_ino) and stat.S_ISREG(linked.st_mode):
                    part = AtomicFile(path, temp)
                    self._parts.append(part)
                    if progress is not None:
                        progress(st.st_size)
                    return
                os.unlink(temp)  # a symlink was swapped in between: copy what we opened
            except OSError:
                pass
            copy_range(src, 0, st.st_size, self.file(path), path=source, progress=progress)

    def delete_after(self, path: str) -> None:
        """Delete `path` once the new files are published (an old file nothing will use)."""
        self._deletes.append(self._own(path))

    def guard(self, path: str, since: tuple | None) -> None:
        """Publication fails (ConcurrentModificationError) unless `path` still has the
        `identity` it had when the caller read it (`since`)."""
        self._guards[path] = since

    def publish(self) -> None:
        """Flush and fsync every file, then make them all visible (see the module docstring)."""
        for part in self._parts:
            part.close()
        check_unchanged(self._guards, identity)
        atomics = [getattr(p, "atomic", p) for p in self._parts]  # a ShardWriter's AtomicFile
        renames = [(a.temp, a.path) for a in atomics]
        finals = [final for _, final in renames]
        deletes = [d for d in dict.fromkeys(self._deletes) if d not in finals]
        fsync_dir(self.directory)
        journal = None
        if deletes or len(renames) > 1:
            journal = _journal_path(finals[-1]) if finals else _journal_path(deletes[-1])
            replaced = [*finals, *deletes]
            doc = {"version": _JOURNAL_VERSION,
                   "renames": [[os.path.basename(t), os.path.basename(f)] for t, f in renames],
                   "deletes": [os.path.basename(d) for d in deletes],
                   "replaces": {os.path.basename(p): identity(p) for p in replaced}}
            with AtomicFile(journal) as out:
                out.write(json.dumps(doc).encode("utf-8"))
                out.commit()
            fsync_dir(self.directory)
        self._published = True  # from here on the new files are the checkpoint
        for atomic in atomics:
            atomic.done = True
        _apply(renames, deletes, self.directory)
        if journal is not None:
            try:
                os.unlink(journal)
            except FileNotFoundError:  # a recovery without locks (see lock.py) completed it
                pass
            fsync_dir(self.directory)

    def abort(self) -> None:
        """Delete every temp file; each one is tried even if another fails."""
        for part in self._parts:
            try:
                part.discard()
            except Exception as exc:  # noqa: BLE001 - keep cleaning; report once below
                _log.debug("discarding %s: %s", part.path, exc)
        self._parts.clear()

