"""What a user's path names: resolved once, here, into (store, checkpoint prefix, format).

A path may be a checkpoint prefix, any file of a checkpoint (`.index`, `.data-*`,
`.meta`), a legacy V1 file or shard pattern, a directory (its latest checkpoint, from the
`checkpoint` state file), a SavedModel (its `variables/variables`), a TF Serving
session_bundle export (`export.meta` beside V1 files `export-?????-of-?????`), a `.npz` or
`.safetensors` file — at a local path or at a URL (storage/).
"""
from __future__ import annotations

import os
from typing import NamedTuple

from . import storage
from .errors import NotFoundError, SavedModelWithoutVariablesError
from .formats import naming, registry
from .formats.state_file import STATE_FILENAME, checkpoint_exists, recorded_latest
from .storage.files import is_temp_name

__all__ = ["Location", "locate", "resolve_prefix"]  # and the `how` constants


# How a Location was found (`Location.how`).
PREFIX = "prefix"                    # the path is the checkpoint's prefix (or a V1 file)
FILE = "file of the checkpoint"      # one of its files: .index, .data-*, .meta
V1_PATTERN = "V1 pattern"            # a sharded V1 checkpoint: TF's shard pattern
TENSOR_FILE = "tensor file"          # a .npz or .safetensors file, read as it is
SAVED_MODEL = "SavedModel"           # a SavedModel directory or its saved_model.pb: variables/variables
STATE_FILE = "state file"            # a directory: the latest checkpoint its state file names
MOVED = "moved directory"            # ... named by an absolute path into the directory's old place
ONLY_CHECKPOINT = "only checkpoint in directory"  # a directory without a usable state file
BESIDE_DIRECTORY = "prefix beside directory"      # DIR.index beside a directory that holds none


class Location(NamedTuple):
    """A resolved checkpoint: the store holding it, its prefix (or file, for .npz and
    .safetensors; TF's shard pattern for sharded V1), and its format: "v2", "v1",
    "npz" or "safetensors"; with the path the user gave, how it was found (`how`: one
    of this module's constants), and the latest checkpoint as the directory's state file
    writes it, when one was read (`recorded`). Resolved once where a path enters (the
    API, a CLI argument): everything below takes the Location and asks nothing again,
    and a CLI note saying why a directory opened what it did reads it from here.
    `raw_names` (the CLI's --raw-names) asks every reader of it for its tensors' names
    as stored (a Keras 3 file's HDF5 paths; see registry.Format.renames)."""

    store: storage.Storage
    prefix: str
    format: str
    given: str = ""
    how: str = PREFIX
    recorded: str = ""
    raw_names: bool = False

    def __fspath__(self) -> str:
        return self.prefix

    @property
    def stale_state(self) -> bool:
        """Whether a state file named a latest checkpoint this is not, as written there
        (it does not exist, or it was found again in a moved directory)."""
        return self.how in (MOVED, ONLY_CHECKPOINT) and bool(self.recorded)


def locate(path: str | os.PathLike | Location, *, as_prefix: bool = False) -> Location:
    """The checkpoint `path` names (see `resolve_prefix`), with its store and format; a
    Location is returned as it is (it was resolved where it entered)."""
    if isinstance(path, Location):
        return path
    given = storage.fspath(path)
    found = _resolve(given, as_prefix)
    store = storage.of(found.prefix)
    fmt = found.format
    if fmt is None:  # a prefix named by a state file: only its files say what it is
        fmt = next(f.name for f in registry.FORMATS if f.holds(found.prefix))  # v1 holds what is left
    return Location(store, found.prefix, fmt, given, found.how, found.recorded)


def resolve_prefix(path: str | os.PathLike | Location, *, as_prefix: bool = False) -> str:
    """The checkpoint prefix a user's path names.

    Accepts a prefix, a `.index`, `.data-*` or `.meta` file, a SavedModel directory or
    its `saved_model.pb` (its variables, `variables/variables`), or a directory (its
    latest checkpoint, per the `checkpoint` state file, else the one checkpoint in it --
    V2, or else V1 as in a TF Serving session_bundle export --, else `DIR.index` beside
    it: a save prefix that is an existing directory, which TF's Saver writes next to the
    directory). A legacy V1 checkpoint resolves to its file,
    or for sharded V1 files to TF's pattern `PREFIX-?????-of-NNNNN`. An existing `.npz`
    or `.safetensors` file (by extension) is returned as it is. A Location gives its prefix.

    `as_prefix=True` takes `path` as a save prefix first, as TF's `Saver.restore` and
    `NewCheckpointReader` do: when `PATH.index` exists it is the checkpoint, even if
    `PATH` is also a directory holding checkpoints of its own (`tf.train.load_checkpoint`
    and the default here read the directory's latest checkpoint instead).
    """
    if isinstance(path, Location):
        return path.prefix
    return _resolve(storage.fspath(path), as_prefix).prefix


class _Found(NamedTuple):
    prefix: str
    format: str | None  # None where the checks made on the way do not tell it
    how: str
    recorded: str = ""


def _resolve(path: str, as_prefix: bool) -> _Found:
    """What `locate` gives, found: the one place a user's path is resolved (a test counts
    its calls). The format is None where the checks made on the way do not tell it (a
    directory's latest checkpoint), so that `locate` asks the store only then: each check
    is a request on a remote store."""
    if as_prefix and registry.V2.holds(path):
        return _Found(path, registry.V2.name, PREFIX)
    for fmt in registry.file_formats():
        if fmt.find(path) is not None:
            return _Found(path, fmt.name, TENSOR_FILE)  # a .npz / .safetensors file is read as it is
    if storage.isdir(path):
        return _resolve_directory(path)
    if os.path.basename(path) in naming.SAVED_MODEL_FILENAMES and storage.isfile(path):
        return _Found(_saved_model_variables(os.path.dirname(path) or "."), registry.V2.name, SAVED_MODEL)
    for fmt in registry.prefix_formats():  # v2 (its files' names, then PATH.index), then v1
        found = fmt.find(path)
        if found is not None:
            how = PREFIX if found == path else V1_PATTERN if fmt.name == "v1" and "?" in found else FILE
            return _Found(found, fmt.name, how)
    if storage.is_url(path) and storage.isfile(storage.join(path, STATE_FILENAME)):
        return _resolve_directory(path)  # HTTP has no directories to see: its state file says it is one
    if storage.exists(path):
        raise NotFoundError("not a TensorFlow checkpoint (no matching .index file, not a V1 table)", path=path)
    raise NotFoundError("no checkpoint at this path", path=path)


def _resolve_directory(directory: str) -> _Found:
    if naming.saved_model_file(directory) is not None:
        return _Found(_saved_model_variables(directory), registry.V2.name, SAVED_MODEL)
    # strict: a state file that does not parse fails here (TF's load_checkpoint fails too)
    # rather than silently opening some other checkpoint of the directory
    recorded = recorded_latest(directory, strict=True)
    named, latest = recorded if recorded is not None else ("", "")
    if latest and checkpoint_exists(latest):
        moved = latest != named and storage.isabs(named)
        return _Found(latest, None, MOVED if moved else STATE_FILE, named)
    try:
        prefix, fmt = _only_checkpoint_in(directory, latest)
        return _Found(prefix, fmt, ONLY_CHECKPOINT, named)
    except NotFoundError:
        # `Saver.save(values, "run")` with `run/` an existing directory writes `run.index`
        # beside it (as TF does); the directory itself names no checkpoint, so that one.
        # (`run/`, with its slash, names the directory only: `run/.index` is no such file.)
        if not registry.V2.holds(directory):
            raise
        return _Found(directory, registry.V2.name, BESIDE_DIRECTORY, named)


def _saved_model_variables(export_dir: str) -> str:
    """The variables checkpoint of a SavedModel directory (TF: `variables/variables`)."""
    prefix = naming.saved_model_variables_prefix(export_dir)
    if not storage.isfile(naming.index_filename(prefix)):
        raise SavedModelWithoutVariablesError("SavedModel without variables (no variables/variables.index)",
                                              path=export_dir)
    return prefix


def _only_checkpoint_in(directory: str, stale: str) -> tuple[str, str]:
    """A directory without a usable state file (files copied without it, or written by
    `ckptkit.save`) names its checkpoint, with its format, when it holds exactly one V2
    checkpoint, or no V2 one and exactly one V1 checkpoint (`v1.checkpoints_in`: a TF
    Serving session_bundle export). `stale`: the missing latest its state file names."""
    listing = [n for n in storage.of(directory).listdir(directory) if not is_temp_name(n)]
    names: list[str] = []
    for fmt in registry.prefix_formats():  # V2 ones first; V1 ones only where there is none
        names = fmt.checkpoints_in(directory, listing)
        if names:
            break
    if len(names) == 1:
        return names[0], fmt.name
    if not names:
        if stale:
            raise NotFoundError(f"the 'checkpoint' state file names {stale}, which does not exist, and no "
                                "other checkpoint is here (no .index file, no V1 checkpoint)", path=directory)
        raise NotFoundError("no checkpoint found in directory (no 'checkpoint' state file, "
                            "no .index file, no V1 checkpoint)", path=directory)
    shown = ", ".join(os.path.basename(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
    if stale:
        raise NotFoundError(f"the 'checkpoint' state file names {stale}, which does not "
                            f"exist, and {len(names)} other checkpoints are here ({shown}): name one",
                            path=directory)
    raise NotFoundError(f"no 'checkpoint' state file says which of {len(names)} checkpoints "
                        f"to use ({shown}): name one", path=directory)

