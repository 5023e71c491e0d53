"""Framework tensors: `load(path, framework="torch", device="cuda")` and the reader's
`framework=`/`device=` options hand back torch tensors or jax arrays instead of numpy.

torch and jax are optional: they are imported only when asked for (a missing one is an
UnsupportedError saying what to install), so `import ckptkit` never imports them.

torch: the tensor is built over the buffer the data was read into (`torch.from_numpy`
on the fresh array: no copy). With `mmap=True` (or `get_tensor(name, copy=False)`) a
V2 bundle tensor is instead a view of a copy-on-write mapping of its data shard:
zero-copy from the page cache, crc32c still checked, and writable (writes stay private
to the process and never reach the file; torch has no read-only tensors, so the
read-only numpy views are never handed to it). For a CUDA device, a V2 bundle tensor is
streamed from the file through two 32 MiB pinned (page-locked) staging buffers into a
tensor allocated on the device, each chunk copied with `non_blocking=True` while the
next is read, its crc32c checked on the way (see Staging); other tensors (partitioned,
strings, big-endian, V1, .npz/.safetensors) are read as arrays and copied to the
device. Every TF dtype torch has maps to it (bfloat16 to torch.bfloat16, float8 types,
uint16/32/64 on torch >= 2.3); strings, int4/uint4 and float8_e4m3b11fnuz raise
UnsupportedError.

jax: `jax.device_put` of the array (to `device`, default jax's default device). jax
silently narrows 64-bit types (float64, int64, uint64, complex128) to 32 bits unless
`jax_enable_x64` is on, so those raise UnsupportedError instead of changing values;
strings raise too. With a `sharding` (`get_tensor(name, sharding=...)`, `load(...,
sharding=...)`), the array is built by `jax.make_array_from_callback`: each device's
window is read alone (`get_slice`: only its bytes), a window several devices share
(replication) once (see `Target.sharded`).

Names: "numpy", "torch", "jax", and safetensors' names for the same ("np", "pt",
"flax"; see ALIASES), so `framework=` takes what `safe_open(path, framework=...)` takes.
`Target.refusal(dtype)` says why a framework cannot hold a dtype: `get_tensor` raises
it, and `ckptkit.load` leaves such tensors out (see reader.load).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import dtypes as _dtypes
from ..errors import DataLossError, InvalidArgumentError, UnsupportedError
from ..formats.bundle import BIG, BundleReader
from ..formats.coding import crc32c, unmask_crc

if TYPE_CHECKING:
    from ..formats.window import ByteSource
    from ..proto.tensor_bundle_pb2 import BundleEntryProto

    # what the fast paths read: a V2 entry's data, entry, dtype and shape
    PlainEntry = tuple[BundleReader, BundleEntryProto, _dtypes.DType, tuple[int, ...]]

__all__ = ["ALIASES", "FRAMEWORKS", "Target", "Staging", "canonical", "target", "TORCH_DTYPES", "Sharding",
           "sharding_for"]

# What `sharding=` takes: one jax Sharding for every tensor, {name: Sharding} (other
# tensors unsharded), or a function (name, shape) -> Sharding or None (None: unsharded).
Sharding = Any

FRAMEWORKS = ("numpy", "torch", "jax")
# safetensors' framework names (safe_open(..., framework="pt")) -> ours: the one alias table
ALIASES = {"np": "numpy", "pt": "torch", "flax": "jax"}


def canonical(framework: str | None, *, path: str | None = None) -> str:
    """`framework` as one of FRAMEWORKS (None is numpy; aliases resolved); an unknown
    name is an InvalidArgumentError naming `path`."""
    if framework is None:
        return "numpy"
    name = ALIASES.get(framework, framework) if isinstance(framework, str) else framework
    if name not in FRAMEWORKS:
        known = ", ".join(FRAMEWORKS + tuple(f"{a}={b}" for a, b in ALIASES.items()))
        raise InvalidArgumentError(f"unknown framework {framework!r}: use one of {known}", path=path)
    return name

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


def _import(framework: str, path: str | None) -> Any:
    try:
        return importlib.import_module(framework)
    except ImportError as exc:
        package = {"torch": "torch", "jax": "jax jaxlib"}[framework]
        raise UnsupportedError(f"framework={framework!r} needs {framework}, which cannot be imported "
                               f"({exc}): pip install {package}", path=path) from None


class Target:
    """A framework and device to turn arrays into; the framework is imported and the
    device checked once, when the reader opens."""

    def __init__(self, framework: str, device: Any = None, *, path: str | None = None) -> None:
        framework = canonical(framework, path=path)
        if framework == "numpy":
            raise InvalidArgumentError("framework='numpy' needs no Target (see target())", path=path)
        self.framework = framework
        self.path = path  # named in errors about the device
        self.module = _import(framework, path)
        self.device = self._torch_device(device) if framework == "torch" else self._jax_device(device)
        self._staging: Staging | None = None  # pinned buffers, made on the first CUDA read

    def _torch_device(self, device: Any) -> Any:
        torch = self.module
        try:
            dev = torch.device("cpu" if device is None else device)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"bad torch device {device!r}: {exc}", path=self.path) from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UnsupportedError(f"torch device {device!r}: this torch build has no usable CUDA device",
                                   path=self.path)
        return dev

    def _jax_device(self, device: Any) -> Any:
        jax = self.module
        if device is None or not isinstance(device, str):
            return device  # None: jax's default device; else a jax Device
        kind, _, number = device.partition(":")
        try:
            return jax.devices(kind)[int(number or 0)]
        except (RuntimeError, ValueError, IndexError) as exc:
            raise InvalidArgumentError(f"bad jax device {device!r}: {exc}", path=self.path) from None

    @property
    def pinned(self) -> bool:
        """Whether reads go through pinned host memory (torch on a CUDA device)."""
        return self.framework == "torch" and self.device.type == "cuda"

    # ---- conversion

    def refusal(self, dtype: _dtypes.DType) -> str | None:
        """Why this framework cannot hold `dtype` (the message get_tensor raises), or None
        if it can: the one place that decides what `load` leaves out."""
        if self.framework == "torch":
            name = TORCH_DTYPES.get(dtype.name)
            if name is not None and getattr(self.module, name, None) is not None:
                return None
            hint = "strings have no torch tensor; " if dtype.is_string else ""
            return f"torch {self.module.__version__} has no {dtype.name} dtype: {hint}read it with framework='numpy'"
        if dtype.is_string:
            return "strings have no jax array: read it with framework='numpy'"
        if dtype.name in _JAX_X64 and not self.module.config.jax_enable_x64:
            return (f"jax would narrow {dtype.name} to 32 bits (jax_enable_x64 is off): turn it on with "
                    "jax.config.update('jax_enable_x64', True), or read with framework='numpy'")
        return None

    def convert(self, arr: np.ndarray, dtype: _dtypes.DType, *, path: str | None = None,
                key: str | None = None) -> Any:
        """`arr` (of TF dtype `dtype`) as this framework's tensor on this device."""
        if self.framework == "torch":
            return self._torch(arr, dtype, path, key)
        return self._jax(arr, dtype, path, key)

    def torch_dtype(self, dtype: _dtypes.DType, path: str | None = None, key: str | None = None) -> Any:
        refusal = self.refusal(dtype)
        if refusal is not None:
            raise UnsupportedError(refusal, path=path, key=key)
        return getattr(self.module, TORCH_DTYPES[dtype.name])

    def _torch(self, arr: np.ndarray, dtype: _dtypes.DType, path: str | None, key: str | None) -> Any:
        torch = self.module
        torch_dtype = self.torch_dtype(dtype, path, key)
        if arr.dtype != dtype.numpy or not (arr.flags.c_contiguous and arr.flags.writeable):
            # a read-only mmap view, a strided one, or a big-endian .npz member
            arr = np.array(arr, dtype=dtype.numpy, order="C")
        # Through raw bytes: torch.from_numpy knows no ml_dtypes types (bfloat16, float8).
        tensor = torch.from_numpy(arr.reshape(-1).view(np.uint8)).view(torch_dtype).reshape(arr.shape)
        if self.device.type != "cpu":
            tensor = tensor.to(self.device)
        return tensor

    def _jax(self, arr: np.ndarray, dtype: _dtypes.DType, path: str | None, key: str | None) -> Any:
        jax = self.module
        refusal = self.refusal(dtype)
        if refusal is not None:
            raise UnsupportedError(refusal, path=path, key=key)
        try:
            return jax.device_put(arr.astype(dtype.numpy, copy=False), self.device)  # native byte order
        except TypeError as exc:
            raise UnsupportedError(f"jax cannot hold {dtype.name}: {exc}", path=path, key=key) from None

    def sharded(self, shape: tuple[int, ...], dtype: _dtypes.DType, sharding: Any,
                window: Callable[[tuple[slice, ...]], np.ndarray], *, path: str | None = None,
                key: str | None = None) -> Any:
        """A jax.Array of `shape` laid out by `sharding`, each device's part read by
        `window(index)` (a get_slice read: only that window's bytes); devices holding the
        same window (replication) share one read."""
        refusal = self.refusal(dtype)
        if refusal is not None:
            raise UnsupportedError(refusal, path=path, key=key)
        jax = self.module
        read: dict[tuple, np.ndarray] = {}

        def part(index: tuple[slice, ...]) -> np.ndarray:
            bounds = tuple(s.indices(d) for s, d in zip(index, shape, strict=True))
            if bounds not in read:
                read[bounds] = window(index).astype(dtype.numpy, copy=False)
            return read[bounds]

        try:
            return jax.make_array_from_callback(shape, sharding, part)
        except (TypeError, ValueError, IndexError) as exc:  # a sharding that does not fit the shape, not a sharding
            raise InvalidArgumentError(f"cannot lay out shape {list(shape)} by {sharding!r}: {exc}",
                                       path=path, key=key) from None

    # ---- reading

    def read(self, backend: Any, name: str, verify: bool, copy: bool, *, path: str | None = None) -> Any:
        """Tensor `name` of a CheckpointReader backend as this framework's tensor (`copy`:
        the reader's choice between a new array and a mapped view, see convert)."""
        if self.pinned:
            found = self._read_pinned(backend, name, verify)
            if found is not None:
                return found
        elif not copy and self.framework == "torch" and self.device.type == "cpu":
            found = self._map_private(backend, name, verify)
            if found is not None:
                return found
        arr = backend.read(name, verify, copy)
        return self.convert(arr, _dtypes.from_enum(backend.dtype_enum(name), path=path, key=name),
                            path=path, key=name)

    def _plain_entry(self, backend: Any, name: str) -> PlainEntry | None:
        """(BundleReader, entry, dtype, shape) of a V2 plain little-endian numeric entry with
        data, or None: what the fast paths below handle."""
        data = getattr(backend, "data", None)
        if not isinstance(data, BundleReader):
            return None
        entry, dtype, shape, _ = data.checked(name)
        if dtype is None or dtype.is_string or entry.slices or not entry.size \
                or (data.index.header.endianness == BIG and dtype.itemsize > 1):
            return None
        return data, entry, dtype, shape

    def _map_private(self, backend: Any, name: str, verify: bool) -> Any:
        """A torch tensor over its own copy-on-write mapping of the entry's bytes (zero-copy
        from the page cache; writable, and writes reach neither the file nor another
        read); crc32c checked over the mapped bytes unless `verify` is off. None where
        `_plain_entry` is."""
        found = self._plain_entry(backend, name)
        if found is None:
            return None
        data, entry, dtype, shape = found
        torch = self.module
        torch_dtype = self.torch_dtype(dtype, data.index.path, name)
        path = data.shard_path(entry.shard_id)
        from ..formats.window import map_private, shard_source  # noqa: PLC0415 - the byte-range primitives

        view = map_private(shard_source(data, entry.shard_id), entry.offset, entry.size, path=path, key=name)
        if view is None:  # a store without maps: read a copy instead
            return None
        if verify and crc32c(view) != unmask_crc(entry.crc32c):
            raise DataLossError("checksum mismatch in tensor data", path=path, key=name)
        # frombuffer keeps the mapping alive as long as the tensor lives
        return torch.frombuffer(view, dtype=torch.uint8).view(torch_dtype).reshape(shape)

    def _read_pinned(self, backend: Any, name: str, verify: bool) -> Any:
        """A V2 plain little-endian numeric entry streamed to the device through pinned
        staging buffers; None for anything else (read the ordinary way)."""
        found = self._plain_entry(backend, name)
        if found is None:
            return None
        data, entry, dtype, shape = found
        torch = self.module
        out = torch.empty(shape, dtype=self.torch_dtype(dtype, data.index.path, name), device=self.device)
        if self._staging is None:
            self._staging = Staging(torch, self.device, pin=True)
        path = data.shard_path(entry.shard_id)
        from ..formats.window import shard_source  # noqa: PLC0415 - the byte-range primitives

        crc = self._staging.upload(shard_source(data, entry.shard_id), entry.offset, entry.size,
                                   out.reshape(-1).view(torch.uint8), verify, key=name)
        if verify and crc != unmask_crc(entry.crc32c):
            raise DataLossError("checksum mismatch in tensor data", path=path, key=name)
        return out


class Staging:
    """Host buffers through which file bytes reach a device: `count` buffers of `chunk`
    bytes (pinned when `pin`), used in turn. Each chunk is read (pread), its crc32c
    extended, and copied to the device without blocking; a buffer is reused only after
    the copy out of it has finished (a CUDA event per buffer), so reading the next
    chunk overlaps the transfer of the last. Host memory stays `count * chunk` whatever
    the tensor's size.
    """

    def __init__(self, torch: Any, device: Any, *, pin: bool, chunk: int = 32 << 20, count: int = 2) -> None:
        self.torch = torch
        self.chunk = chunk
        self.cuda = device.type == "cuda"
        self.buffers = [torch.empty(chunk, dtype=torch.uint8, pin_memory=pin) for _ in range(count)]
        self.events: list[Any] = [None] * count
        self.turn = 0

    def upload(self, source: ByteSource, offset: int, size: int, dest: Any, verify: bool, *,
               key: str | None = None) -> int:
        """Copy `size` bytes at `offset` of `source` (a format.window.ByteSource) into `dest` (a
        uint8 device tensor of that size); return their crc32c when `verify` (else 0)."""
        from ..formats.window import read_ranges  # noqa: PLC0415 - the one byte-range primitive

        crc = 0
        for start in range(0, size, self.chunk):
            n = min(self.chunk, size - start)
            k, self.turn = self.turn, (self.turn + 1) % len(self.buffers)
            if self.events[k] is not None:
                self.events[k].synchronize()  # the copy out of this buffer is done
            host = self.buffers[k][:n]
            view = host.numpy()
            read_ranges(source, [(offset + start, view.data)], key=key)
            if verify:
                crc = crc32c(view, crc)
            dest[start:start + n].copy_(host, non_blocking=self.cuda)
            if self.cuda:
                event = self.torch.cuda.Event()
                event.record()
                self.events[k] = event
        return crc


def sharding_for(sharding: Sharding, name: str, shape: tuple[int, ...]) -> Any:
    """The jax Sharding `sharding=` gives tensor `name` (None: none, read unsharded)."""
    if sharding is None:
        return None
    if isinstance(sharding, Mapping):
        return sharding.get(name)
    if callable(sharding) and not hasattr(sharding, "addressable_devices"):  # a function, not a Sharding
        return sharding(name, shape)
    return sharding


def target(framework: str | None, device: Any = None, *, path: str | None = None) -> Target | None:
    """The Target for a reader's `framework`/`device` options (errors name `path`); None
    for plain numpy ("numpy", "np" or None)."""
    name = canonical(framework, path=path)
    if name == "numpy":
        if device not in (None, "cpu"):
            raise InvalidArgumentError(f"device={device!r} needs framework='torch' or 'jax' "
                                       "(numpy arrays live in host memory)", path=path)
        return None
    return Target(name, device, path=path)
