"""Every checkpoint file-name rule TF uses, in one place.

V2 (tensor bundle): `PREFIX.index` and `PREFIX.data-SSSSS-of-NNNNN`; the graph goes in
`PREFIX.meta`. V1: one table file `PREFIX`, or shards `PREFIX-SSSSS-of-NNNNN`, which
TF's sharded Saver records as the pattern `PREFIX-?????-of-NNNNN`. A SavedModel
directory holds `saved_model.pb` (or `saved_model.pbtxt`) and its variables as the V2
checkpoint `variables/variables` (TF's saved_model/constants.py).
"""
from __future__ import annotations

import glob
import os
import re

from .. import storage

__all__ = ["INDEX_SUFFIX", "DATA_SUFFIX", "V1_SHARD_PATTERN", "V1_SHARD_GLOB", "index_filename", "data_filename",
           "existing_data_files", "v2_file_regex", "meta_graph_filename", "v1_shard_filename",
           "v1_shard_set_pattern", "existing_v1_shards", "SAVED_MODEL_FILENAMES",
           "saved_model_file", "saved_model_variables_prefix"]

INDEX_SUFFIX = ".index"
META_SUFFIX = "meta"  # TF's default meta_graph_suffix (no dot)
# The data-shard tail of a V2 file name, at the end of a path.
DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")
_DATA_GLOB = ".data-?????-of-?????"

# One V1 shard file: `base-SSSSS-of-NNNNN`.
V1_SHARD_PATTERN = re.compile(r"^(?P<base>.*)-(?P<shard>\d{5})-of-(?P<count>\d{5})$")
# The only wildcard names ckptkit globs: what TF's sharded V1 Saver records, `PREFIX-?????-of-00002`,
# and the same with the count wildcarded too (`PREFIX-?????-of-?????`, which TF's restore takes).
# Any other wildcard in a path is taken literally (state files may be hostile).
V1_SHARD_GLOB = re.compile(r"-\?{5}-of-(?:\d{5}|\?{5})$")
_V1_SHARDS_GLOB = "-?????-of-?????"
# A sharded prefix's tail, either form (dropped before adding `.meta`, as TF does).
_SHARD_TAIL = re.compile(r"-[\d?]+-of-\d+$")


# --------------------------------------------------------------------------- V2

def index_filename(prefix: str) -> str:
    return f"{prefix}{INDEX_SUFFIX}"


def data_filename(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


def existing_data_files(prefix: str) -> list[str]:
    """Every data shard file of `prefix` on disk, whatever its shard count."""
    directory, base = os.path.split(prefix)
    return storage.match(directory, glob.escape(base) + _DATA_GLOB)


def v2_file_regex(base: str) -> str:
    """A regex (source) matching exactly the V2 file names of checkpoint file name `base`."""
    return re.escape(base) + r"(?:\.index|\.data-\d{5}-of-\d{5})"


def meta_graph_filename(checkpoint_filename: str | os.PathLike, meta_graph_suffix: str = META_SUFFIX) -> str:
    """`PREFIX.meta`, with a sharded prefix's `-?????-of-NNNNN` tail dropped first (as TF)."""
    base = _SHARD_TAIL.sub("", os.fspath(checkpoint_filename))
    return f"{base}.{meta_graph_suffix}"


# --------------------------------------------------------------------------- V1

def v1_shard_filename(base: str, shard: int, count: str) -> str:
    """Shard `shard` of a V1 set of `count` (its 5 digits, as in the file names)."""
    return f"{base}-{shard:05d}-of-{count}"


def v1_shard_set_pattern(base: str, count: str) -> str:
    """The name TF's sharded V1 Saver records for a whole set: `base-?????-of-NNNNN`."""
    return f"{base}-?????-of-{count}"


def existing_v1_shards(directory: str, base: str) -> list[str]:
    """Files named like V1 shards of `base` (any shard, any count) in `directory`."""
    return storage.match(directory, glob.escape(base) + _V1_SHARDS_GLOB)


# --------------------------------------------------------------------------- SavedModel

# TF's SAVED_MODEL_FILENAME_PB, then SAVED_MODEL_FILENAME_PBTXT: the loader tries them in this order.
SAVED_MODEL_FILENAMES = ("saved_model.pb", "saved_model.pbtxt")
_VARIABLES_DIRECTORY = "variables"  # VARIABLES_DIRECTORY
_VARIABLES_FILENAME = "variables"   # VARIABLES_FILENAME


def saved_model_file(export_dir: str) -> str | None:
    """The `saved_model.pb` (or `.pbtxt`) of SavedModel directory `export_dir`, or None."""
    for name in SAVED_MODEL_FILENAMES:
        candidate = os.path.join(export_dir, name)
        if storage.of(candidate).isfile(candidate):
            return candidate
    return None


def saved_model_variables_prefix(export_dir: str) -> str:
    """The checkpoint prefix of a SavedModel's variables: `export_dir/variables/variables`."""
    return os.path.join(export_dir, _VARIABLES_DIRECTORY, _VARIABLES_FILENAME)
