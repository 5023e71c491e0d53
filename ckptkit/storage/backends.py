"""Which package serves which URL protocol, and how a missing one is reported.

fsspec knows the stores by name but not all of their packages are installed: `az://`
needs adlfs, `hf://` huggingface_hub, and the `remote` extra brings only some of them.
The message for a missing backend names the one thing to install for that protocol
(and the extra, where the extra brings it), from this one table.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator

REMOTE_EXTRA = "tf-ckptkit[remote]"

# protocol -> the pip packages its fsspec store needs (beyond fsspec itself)
PACKAGES: dict[str, tuple[str, ...]] = {
    "s3": ("s3fs",), "s3a": ("s3fs",),
    "gs": ("gcsfs",), "gcs": ("gcsfs",),
    "az": ("adlfs",), "abfs": ("adlfs",), "abfss": ("adlfs",), "adl": ("adlfs",),
    "hf": ("huggingface_hub",),
    "http": ("aiohttp", "requests"), "https": ("aiohttp", "requests"),
    "sftp": ("paramiko",), "ssh": ("paramiko",),
    "smb": ("smbprotocol",),
    "webdav": ("webdav4",),
    "oci": ("ocifs",),
    "oss": ("ossfs",),
    "hdfs": ("pyarrow",),
    "github": ("requests",),
}
# what `pip install "tf-ckptkit[remote]"` brings (pyproject.toml's remote extra)
IN_REMOTE_EXTRA = frozenset({"fsspec", "s3fs", "gcsfs", "huggingface_hub", "aiohttp", "requests"})


def install_hint(protocol: str, *, fsspec_missing: bool = False) -> str:
    """`pip install ...` naming what `protocol` needs: the remote extra when it brings
    all of it, else the packages themselves."""
    needed = (("fsspec",) if fsspec_missing else ()) + PACKAGES.get(protocol, ())
    if not needed:
        return f'pip install "{REMOTE_EXTRA}"'
    if set(needed) <= IN_REMOTE_EXTRA:
        return f'pip install {" ".join(needed)} (or "{REMOTE_EXTRA}", which brings it)'
    return f"pip install {' '.join(needed)}"


def missing_backend(protocol: str, exc: ImportError) -> str:
    """The one-line message for an ImportError raised while making `protocol`'s store."""
    needed = PACKAGES.get(protocol)
    what = " and ".join(needed) if needed else (exc.name or "a package that is not installed")
    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    # a broken install of a dependency (No module named 'google.iam') is worth naming too
    detail = f" ({cause})" if exc.name and needed and exc.name not in needed else ""
    return f"{protocol}:// URLs need {what}{detail}: {install_hint(protocol)}"


_GCE_METADATA_HOST = "metadata.google.internal"
_env_lock = threading.Lock()


@contextlib.contextmanager
def quick_credentials(protocol: str, options: dict) -> Iterator[None]:
    """While a store is made: skip credential probes that only cost time.

    gcsfs without a `token` asks the GCE metadata server for credentials with retries and
    back-off: 15 s off Google Cloud, online or not, before it falls back to anonymous
    access. When the metadata server's name does not even resolve there is nothing to ask,
    so its NO_GCE_CHECK switch is set for the time the store is made (on GCE, nothing changes).
    """
    if protocol not in ("gs", "gcs") or "token" in options or os.environ.get("NO_GCE_CHECK"):
        yield
        return
    try:
        socket.getaddrinfo(_GCE_METADATA_HOST, 80)
    except OSError:
        with _env_lock:
            os.environ["NO_GCE_CHECK"] = "true"
            try:
                yield
            finally:
                os.environ.pop("NO_GCE_CHECK", None)
        return
    yield
