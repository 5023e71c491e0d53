"""Push files out of the page cache before a cold-read measurement (shared by the benches)."""
from __future__ import annotations

import os


def evict(paths: list[str], drop_caches: bool) -> str:
    """Push these files out of the page cache; say how (for the printed conditions).

    `posix_fadvise(DONTNEED)` per file after a sync works unprivileged; `drop_caches`
    also asks the kernel to drop every clean page (root only; refused elsewhere).
    """
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    how = "posix_fadvise(DONTNEED) per file"
    if drop_caches:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            how += " + drop_caches"
        except OSError as exc:
            how += f" (drop_caches refused: {exc.strerror})"
    return how
