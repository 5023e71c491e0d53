"""Errors ckptkit raises on bad input.

Every failure caused by what a user handed us (a path, a file's bytes, an argument)
is a `CheckpointError`, so callers and the CLI can catch one type and print one line.
Messages name the file and, where there is one, the tensor key.

Where TF raises a builtin for the same mistake, ours subclass it too, so code written
against TF keeps working: NotFoundError is a FileNotFoundError, TensorNotFoundError a
KeyError; InvalidArgumentError, InvalidStateError and NoCheckpointError are ValueErrors.
"""
from __future__ import annotations

import os


class CheckpointError(Exception):
    """Base of every error ckptkit raises on bad input."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None,
                 key: str | None = None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.key = key
        parts = []
        if self.path is not None:
            parts.append(self.path)
        if key is not None:
            parts.append(f"key {key!r}")
        self.message = message
        super().__init__(": ".join(parts + [message]) if parts else message)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0] if self.args else ""


class NotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint, file or shard that should exist does not."""


class SavedModelWithoutVariablesError(NotFoundError):
    """A SavedModel whose `variables/variables.index` is absent (TF1's builder writes an
    empty `variables/` for a graph without variables): whole, with no tensors. `path`
    names its directory."""


class NoCheckpointError(NotFoundError, ValueError):
    """A path given as a checkpoint to restore names none (TF's Saver.restore: ValueError)."""


class TensorNotFoundError(CheckpointError, KeyError):
    """A tensor key that the checkpoint does not hold (a KeyError, for the Mapping protocol)."""


class DataLossError(CheckpointError):
    """Bytes on disk are damaged: truncated, bad checksum, bad magic, malformed encoding."""


class InvalidStateError(DataLossError, ValueError):
    """A `checkpoint` state file that TF also refuses with a ValueError: it names no latest
    checkpoint (empty, or cut at a line end), or is not UTF-8 (TF: UnicodeDecodeError)."""


class UnsupportedError(CheckpointError):
    """Valid input that ckptkit does not handle (an unknown dtype, a compression codec)."""


class InvalidArgumentError(CheckpointError, ValueError):
    """An argument from the caller is unusable (a bad name, shape or option)."""


class ConcurrentModificationError(CheckpointError):
    """A file this write started from was changed by someone else; nothing was written."""


class CheckpointChangedError(CheckpointError):
    """The checkpoint a reader opened was replaced while it read, and what it asked for is
    not in the new one (an edit renamed or removed it): open it again to see the new names."""


class StorageError(CheckpointError, OSError):
    """The store failed, not the checkpoint: a full disk, a permission, a store at a URL
    unreachable, refusing, timing out or answering outside HTTP's rules (ignoring Range, a
    wrong Content-Range). Also an OSError, with the errno where there is one. Nothing is
    known about the file's bytes, so this is never reported as damage."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, key: str | None = None,
                 errno: int | None = None) -> None:
        super().__init__(message, path=path, key=key)
        self.errno = errno
        self.strerror = message
        self.filename = self.path

    @classmethod
    def of(cls, exc: OSError) -> StorageError:
        """The OSError a store raised, as a StorageError naming its file (errno kept)."""
        filename = exc.filename if isinstance(exc.filename, (str, bytes, os.PathLike)) else None
        path = os.fsdecode(filename) if filename is not None else None
        return cls(exc.strerror or str(exc), path=path, errno=exc.errno)


class AlreadyExistsError(CheckpointError, FileExistsError):
    """A destination already holds a checkpoint or file, and replacing it was not asked for
    (`overwrite=True`, `--overwrite`)."""
