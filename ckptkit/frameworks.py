"""Framework tensors: `load(path, framework="torch", device="cuda")` and the reader's
`framework=`/`device=` options hand back torch tensors or jax arrays instead of numpy.

torch and jax are optional: they are imported only when asked for (a missing one is an
UnsupportedError saying what to install), so `import ckptkit` never imports them.

torch: the tensor is built over the buffer the data was read into (`torch.from_numpy`
on the fresh array: no copy). For a CUDA device, a V2 bundle tensor is read straight
into pinned (page-locked) host memory, its crc32c checked there, and copied to the
device with `non_blocking=True` (torch's pinned allocator keeps the buffer until the
copy is done); other tensors are copied from the array. Memory-mapped views
(`mmap=True`) are copied first: torch has no read-only tensors, and a tensor over a
read-only mapping would crash the process when written. Every TF dtype torch has maps
to it (bfloat16 to torch.bfloat16, float8 types, uint16/32/64 on torch >= 2.3);
strings, int4/uint4 and float8_e4m3b11fnuz raise UnsupportedError.

jax: `jax.device_put` of the array (to `device`, default jax's default device). jax
silently narrows 64-bit types (float64, int64, uint64, complex128) to 32 bits unless
`jax_enable_x64` is on, so those raise UnsupportedError instead of changing values;
strings raise too.
"""
from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from . import dtypes as _dtypes
from .errors import DataLossError, InvalidArgumentError, UnsupportedError
from .format.bundle import BIG, BundleData
from .format.coding import unmask_crc

__all__ = ["FRAMEWORKS", "Target", "target", "TORCH_DTYPES"]

FRAMEWORKS = ("numpy", "torch", "jax")

# TF dtype name -> torch dtype attribute: the one place for this fact. A name missing
# from the installed torch (uint16/32/64 before torch 2.3) is reported when asked for.
TORCH_DTYPES = {
    "float16": "float16", "float32": "float32", "float64": "float64", "bfloat16": "bfloat16",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "bool": "bool", "complex64": "complex64", "complex128": "complex128",
    "float8_e5m2": "float8_e5m2", "float8_e4m3fn": "float8_e4m3fn",
    "float8_e4m3fnuz": "float8_e4m3fnuz", "float8_e5m2fnuz": "float8_e5m2fnuz",
}
_JAX_X64 = {"float64", "int64", "uint64", "complex128"}  # narrowed by jax without jax_enable_x64


def _import(framework: str):
    try:
        return importlib.import_module(framework)
    except ImportError as exc:
        package = {"torch": "torch", "jax": "jax jaxlib"}[framework]
        raise UnsupportedError(f"framework={framework!r} needs {framework}, which cannot be imported "
                               f"({exc}): pip install {package}") from None


class Target:
    """A framework and device to turn arrays into; the framework is imported and the
    device checked once, when the reader opens."""

    def __init__(self, framework: str, device: Any = None) -> None:
        if framework not in FRAMEWORKS[1:]:
            raise InvalidArgumentError(f"unknown framework {framework!r}: use one of {', '.join(FRAMEWORKS)}")
        self.framework = framework
        self.module = _import(framework)
        self.device = self._torch_device(device) if framework == "torch" else self._jax_device(device)

    def _torch_device(self, device):
        torch = self.module
        try:
            dev = torch.device("cpu" if device is None else device)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"bad torch device {device!r}: {exc}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UnsupportedError(f"torch device {device!r}: this torch build has no usable CUDA device")
        return dev

    def _jax_device(self, device):
        jax = self.module
        if device is None or not isinstance(device, str):
            return device  # None: jax's default device; else a jax Device
        kind, _, number = device.partition(":")
        try:
            return jax.devices(kind)[int(number or 0)]
        except (RuntimeError, ValueError, IndexError) as exc:
            raise InvalidArgumentError(f"bad jax device {device!r}: {exc}") from None

    @property
    def pinned(self) -> bool:
        """Whether reads go through pinned host memory (torch on a CUDA device)."""
        return self.framework == "torch" and self.device.type == "cuda"

    # ---- conversion

    def convert(self, arr: np.ndarray, dtype: _dtypes.DType, *, path=None, key=None) -> Any:
        """`arr` (of TF dtype `dtype`) as this framework's tensor on this device."""
        if self.framework == "torch":
            return self._torch(arr, dtype, path, key)
        return self._jax(arr, dtype, path, key)

    def torch_dtype(self, dtype: _dtypes.DType, path=None, key=None):
        name = TORCH_DTYPES.get(dtype.name)
        found = getattr(self.module, name, None) if name else None
        if found is None:
            hint = "strings have no torch tensor; " if dtype.is_string else ""
            raise UnsupportedError(f"torch {self.module.__version__} has no {dtype.name} dtype: {hint}"
                                   "read it with framework='numpy'", path=path, key=key)
        return found

    def _torch(self, arr: np.ndarray, dtype: _dtypes.DType, path, key):
        torch = self.module
        torch_dtype = self.torch_dtype(dtype, path, key)
        if not (arr.flags.c_contiguous and arr.flags.writeable):
            arr = np.array(arr, order="C")  # a read-only mmap view, or a strided one
        # Through raw bytes: torch.from_numpy knows no ml_dtypes types (bfloat16, float8).
        tensor = torch.from_numpy(arr.reshape(-1).view(np.uint8)).view(torch_dtype).reshape(arr.shape)
        if self.device.type != "cpu":
            tensor = tensor.to(self.device)
        return tensor

    def _jax(self, arr: np.ndarray, dtype: _dtypes.DType, path, key):
        jax = self.module
        if dtype.is_string:
            raise UnsupportedError("strings have no jax array: read it with framework='numpy'", path=path, key=key)
        if dtype.name in _JAX_X64 and not jax.config.jax_enable_x64:
            raise UnsupportedError(f"jax would narrow {dtype.name} to 32 bits (jax_enable_x64 is off): "
                                   "turn it on with jax.config.update('jax_enable_x64', True), or read "
                                   "with framework='numpy'", path=path, key=key)
        try:
            return jax.device_put(arr, self.device)
        except TypeError as exc:
            raise UnsupportedError(f"jax cannot hold {dtype.name}: {exc}", path=path, key=key) from None

    # ---- reading

    def read(self, backend: Any, name: str, verify: bool, copy: bool, *, path=None) -> Any:
        """Tensor `name` of a CheckpointReader backend as this framework's tensor (`copy`:
        the reader's choice between a new array and a mapped view, see convert)."""
        if self.pinned:
            found = self._read_pinned(backend, name, verify)
            if found is not None:
                return found
        arr = backend.read(name, verify, copy)
        return self.convert(arr, _dtypes.from_enum(backend.dtype_enum(name), path=path, key=name),
                            path=path, key=name)

    def _read_pinned(self, backend: Any, name: str, verify: bool):
        """A V2 plain little-endian numeric entry read into pinned memory and sent to the
        device without blocking; None for anything else (read the ordinary way)."""
        data = getattr(backend, "data", None)
        if not isinstance(data, BundleData):
            return None
        entry, dtype, shape, _ = data.checked(name)
        if dtype is None or dtype.is_string or entry.slices or not entry.size \
                or (data.index.header.endianness == BIG and dtype.itemsize > 1):
            return None
        torch = self.module
        torch_dtype = self.torch_dtype(dtype, data.index.path, name)
        staging = torch.empty(entry.size, dtype=torch.uint8, pin_memory=True)
        crc = data._read_into(name, entry, staging.numpy(), verify)  # BundleData's chunked, crc'd read
        if verify and crc != unmask_crc(entry.crc32c):
            raise DataLossError("checksum mismatch in tensor data", path=data.shard_path(entry.shard_id), key=name)
        return staging.view(torch_dtype).reshape(shape).to(self.device, non_blocking=True)


def target(framework: str | None, device: Any = None) -> Target | None:
    """The Target for a reader's `framework`/`device` options; None for plain numpy."""
    if framework in (None, "numpy"):
        if device not in (None, "cpu"):
            raise InvalidArgumentError(f"device={device!r} needs framework='torch' or 'jax' "
                                       "(numpy arrays live in host memory)")
        return None
    return Target(framework, device)
