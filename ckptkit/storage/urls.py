"""Which strings are URLs of a store other than the local filesystem.

Apart from `storage/__init__.py` (which picks a store for each path) so that the modules
it builds on can tell a URL from a local path too.
"""
from __future__ import annotations

import re

URL = re.compile(r"^(?P<protocol>[a-zA-Z][a-zA-Z0-9+.-]+)://")


def is_url(path: str) -> bool:
    """A URL names a store other than the local filesystem (`file://` is local)."""
    m = URL.match(path)
    return m is not None and m["protocol"].lower() != "file"


def local_path(path: str) -> str:
    """`file://` URLs as plain paths; anything else unchanged."""
    return path[len("file://"):] if path[:7].lower() == "file://" else path
