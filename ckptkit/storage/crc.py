"""crc32c (Castagnoli) of raw bytes, and buffers as bytes: what the storage layer sums
while it writes a shard. Format rules about crcs (TF's masking, combining) live in
`formats/coding.py`, which takes the function from here.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias, cast

if TYPE_CHECKING:
    import numpy as np
    from typing_extensions import Buffer

    # What crc32c reads: any buffer (numpy's stubs declare ndarray one from Python 3.12 on).
    AnyBuffer: TypeAlias = Buffer | np.ndarray

__all__ = ["AnyBuffer", "byte_view", "crc32c"]


def _load_crc32c() -> Callable[..., int]:  # (buffer, value) -> crc
    """The `crc32c` package's C function, without running the package's __init__.

    That __init__ looks up its own version through importlib.metadata, which costs
    ~30 ms: a tenth of a `ckptkit ls`. Loading the extension module from the package's
    folder gives the same function; any surprise falls back to the plain import.
    """
    try:
        import importlib.machinery  # noqa: PLC0415 - needed once, at import
        import importlib.util  # noqa: PLC0415 - needed once, at import

        package = importlib.util.find_spec("crc32c")
        locations = package.submodule_search_locations if package is not None else None
        spec = importlib.machinery.PathFinder.find_spec("crc32c._crc32c", list(locations or ()))
        if spec is None or spec.loader is None:
            raise ImportError("no crc32c._crc32c next to the crc32c package")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        fn: Callable[..., int] = module.crc32c
        return fn
    except Exception:  # noqa: BLE001 - any layout we don't know: the documented way
        import crc32c  # noqa: PLC0415 - the fallback only

        return crc32c.crc32c


_crc32c_fn = _load_crc32c()


def crc32c(data: AnyBuffer, value: int = 0) -> int:
    """crc32c (Castagnoli) of `data`, extending `value`; hardware accelerated, buffers welcome."""
    return _crc32c_fn(data, value)


def byte_view(data: AnyBuffer) -> memoryview:
    """`data` (any buffer, a numpy array among them) as a flat memoryview of bytes."""
    return memoryview(cast("Buffer", data)).cast("B")  # ndarray's stubs call it a buffer only on 3.12+
