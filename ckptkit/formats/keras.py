"""Keras weight files, read with h5py (the `keras` extra), without TensorFlow or Keras.

Four kinds of file, told apart by what the HDF5 file holds (not by extension):

- Keras 3 `.weights.h5` (`model.save_weights`): each layer's variables by position,
  `layers/dense/vars/0`, the `vars` group's `name` attribute the layer's name;
- Keras 3 `.keras` (`model.save`): a zip holding that file as `model.weights.h5`, and
  `config.json` (read for the layer classes and the options that drop variables);
- Keras 2 / tf_keras `save_weights` `.h5` (root attribute `layer_names`, each layer's
  `weight_names`: the layout of Hugging Face's `tf_model.h5`) and full-model `.h5`
  (the same under `model_weights`, plus `optimizer_weights`; what Keras 3 writes for
  `model.save("x.h5")`).

Names: a Keras 2 weight is its `weight_names` entry without TF's `:0` (`dense/kernel`).
A Keras 3 variable is `LAYER/VAR` (`head/kernel`, `bn/moving_mean`): LAYER is its `vars`
group's `name` attribute, VAR its position in the build order of the layer's class
(`_BUILD_ORDER`; the class from `config.json` where the file has one, else from the
group's name, which Keras makes from the class: `batch_normalization_1` is a
BatchNormalization). A variable keeps its raw HDF5 path (`layers/lstm/cell/vars/0`,
`optimizer/vars/3`) where its class is not in the table, the count of variables is not
one the class builds (without a config, only optional variables at the end may be
missing), or two variables would get one name. `KerasFile(path, raw_names=True)` names
every tensor by its raw path; `metadata()` maps each renamed tensor to its raw path, and
`layer_classes` each to its layer's class where the file records it (a `.keras` config,
a full-model `.h5`'s `model_config`: what `convert --layout torch` needs to know a
Keras 3 DepthwiseConv's `kernel`).

Hostile files: the HDF5 signature is checked before h5py sees a byte; on open every
dataset's dtype (numbers and bools only), shape and stored size are checked against the
file's size, so nothing larger than the file is allocated; each global heap collection
(the string attributes) is walked before the HDF5 library parses it, which loops forever
on some corrupt ones (hdf5_heap.py); whatever h5py raises on a damaged file becomes a
DataLossError naming the file and key. Keras files carry no
checksums: `verify` checks this structure and reads every tensor.
"""
from __future__ import annotations

import json
import math
import re
import zipfile
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import dtypes as _dtypes
from .. import storage
from ..errors import CheckpointError, DataLossError, UnsupportedError
from .hdf5_heap import GuardedFile
from .tensor_file import TensorFileBackend
from .window import Axis, select

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["KerasFile", "HDF5_SIGNATURE", "holds", "open_file", "open_backend"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_WEIGHTS_MEMBER = "model.weights.h5"  # a .keras archive's weights
_CONFIG_MEMBER = "config.json"
_DEFLATE_MAX_RATIO = 1032  # zlib's best case: a compressed chunk can't inflate beyond this
_COMPACT_MAX = 1 << 16     # an HDF5 compact dataset lives in its object header (< 64 KiB)
# What h5py, zipfile and json raise on a damaged file.
_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError,
           EOFError, OverflowError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError)

# Each Keras 3 layer class's variables in the order its build() creates them; a name
# marked by an option is created only when that config option is true.
_DENSE = (("kernel", None), ("bias", "use_bias"))
_BUILD_ORDER: dict[str, tuple[tuple[str, str | None], ...]] = {
    "Dense": _DENSE, "EinsumDense": _DENSE,
    **{c: _DENSE for c in ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
                           "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D")},
    **{c: (("depthwise_kernel", None), ("pointwise_kernel", None), ("bias", "use_bias"))
       for c in ("SeparableConv1D", "SeparableConv2D")},
    "BatchNormalization": (("gamma", "scale"), ("beta", "center"), ("moving_mean", None),
                           ("moving_variance", None)),
    "LayerNormalization": (("gamma", "scale"), ("beta", "center")),
    "Embedding": (("embeddings", None),),
}
# the group name Keras 3 gives a layer of each class (`Conv2DTranspose`: conv2d_transpose)
_SNAKE = {re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", c).lower(): c for c in _BUILD_ORDER}


def _h5py(path: str) -> ModuleType:
    try:
        import h5py  # type: ignore[import-untyped]  # noqa: PLC0415 - the `keras` extra, only to read a Keras file
    except ImportError:
        raise UnsupportedError('reading Keras files needs h5py: pip install "tf-ckptkit[keras]"',
                               path=path) from None
    return h5py


class KerasFile:
    """An open Keras weights file: every dataset checked on open, each read when asked for."""

    metadata: dict[str, str] | None

    def __init__(self, path: str, raw_names: bool = False) -> None:
        self.path = path
        h5py = _h5py(path)
        self.handle = storage.of(path).open(path, "Keras file")
        self.zip: zipfile.ZipFile | None = None
        self.h5: Any = None
        try:
            self._open(h5py, raw_names)
        except BaseException:
            self.close()
            raise

    def _open(self, h5py: ModuleType, raw_names: bool) -> None:
        path = self.path
        magic = self.handle.read(8, 0)
        config: dict | None = None
        if magic[:4] == b"PK\x03\x04":
            file, size, config = self._from_zip()
        elif magic == HDF5_SIGNATURE:
            file, size = self.handle.as_file(), self.handle.size
        else:
            raise DataLossError("not a Keras weights file (no HDF5 signature, not a .keras zip)", path=path)
        try:
            self.h5 = h5py.File(GuardedFile(file, size, path), "r")
            raw, vars_names = _entries(self.h5, h5py, path)
            stored_config = self.h5.attrs.get("model_config") if config is None else None
        except CheckpointError:
            raise
        except _ERRORS as exc:
            raise DataLossError(f"not a readable HDF5 file: {exc}", path=path) from None
        if stored_config is not None:  # a full-model file's: its layers' classes
            try:
                config = json.loads(_text(stored_config))
            except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
                raise DataLossError(f"model_config is not JSON: {exc}", path=path) from None
        config = config if isinstance(config, dict) else None
        self.metas: dict[str, tuple[_dtypes.DType, tuple[int, ...]]] = {}
        self._raw: dict[str, str] = {}
        self.layer_classes: dict[str, str] = {}
        for friendly, rawpath, cls in _named(raw, vars_names, config, raw_names):
            self._raw[friendly] = rawpath
            if cls is not None:
                self.layer_classes[friendly] = cls
            self.metas[friendly] = _checked(self.h5[rawpath], h5py, size, path, friendly)
        self.names = list(self._raw)
        self.metadata = {k: v for k, v in self._raw.items() if k != v} or None

    def _from_zip(self) -> tuple[Any, int, dict | None]:
        """The weights member of a .keras archive (a seekable file) and its config."""
        path = self.path
        try:
            self.zip = zipfile.ZipFile(self.handle.as_file())
            info = self.zip.getinfo(_WEIGHTS_MEMBER)
        except KeyError:
            raise DataLossError(f"a zip without {_WEIGHTS_MEMBER}, not a .keras archive", path=path) from None
        except _ERRORS as exc:
            raise DataLossError(f"not a readable .keras archive: {exc}", path=path) from None
        try:
            config = json.loads(self.zip.read(_CONFIG_MEMBER)) if _CONFIG_MEMBER in self.zip.namelist() else None
            member = self.zip.open(info)
            if member.read(8) != HDF5_SIGNATURE:
                raise DataLossError(f"{_WEIGHTS_MEMBER} has no HDF5 signature", path=path)
            member.seek(0)
        except CheckpointError:
            raise
        except (*_ERRORS, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataLossError(f"not a readable .keras archive: {exc}", path=path) from None
        return member, info.file_size, config if isinstance(config, dict) else None

    def meta(self, name: str) -> tuple[_dtypes.DType, tuple[int, ...]]:
        return self.metas[name]

    def raw_path(self, name: str) -> str:
        """The HDF5 path of tensor `name`."""
        return self._raw[name]

    def read(self, name: str) -> np.ndarray:
        dtype, shape = self.metas[name]
        out = np.empty(shape, dtype=dtype.numpy)
        try:
            if out.size:
                self.h5[self._raw[name]].read_direct(out)
        except _ERRORS as exc:
            raise DataLossError(f"tensor data is unreadable: {exc}", path=self.path, key=name) from None
        return out

    def read_window(self, name: str, axes: tuple[Axis, ...]) -> np.ndarray:
        """The ascending window `axes`: HDF5 reads only its hyperslab."""
        dtype, _ = self.metas[name]
        counts = tuple(a.count for a in axes)
        _dtypes.check_numpy_shape(counts, dtype, self.path, name)
        if not axes:
            return self.read(name)
        if not all(counts):
            return np.empty(counts, dtype=dtype.numpy)
        box = tuple(slice(a.first, a.first + (a.count - 1) * a.step + 1, a.step) for a in axes)
        try:
            arr = np.asarray(self.h5[self._raw[name]][box])
        except _ERRORS as exc:
            raise DataLossError(f"tensor data is unreadable: {exc}", path=self.path, key=name) from None
        if arr.shape != counts:  # never expected: read whole and cut rather than return a wrong shape
            arr = select(self.read(name), axes)
        return arr.astype(dtype.numpy, copy=False)

    def close(self) -> None:
        for part in (self.h5, self.zip, self.handle):
            if part is not None:
                try:
                    part.close()
                except _ERRORS:
                    pass

    def __enter__(self) -> KerasFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _list_attr(group: Any, attr: str) -> list[str]:
    return [_text(v) for v in np.asarray(group.attrs[attr]).reshape(-1)]


# (Keras 2 weight name, raw path, Keras 2 layer name) or (None, raw path, Keras 3 `vars` group)
Entry = tuple[str | None, str, str | None]


def _entries(h5: Any, h5py: ModuleType, path: str) -> tuple[list[Entry], dict[str, str]]:
    """The datasets in stored order, (name, raw path, its layer) in a Keras 2 file and
    (None, raw path, its `vars` group or None) in a Keras 3 one; and {`vars` group: its
    `name` attribute, the layer's name}."""
    if "layer_names" in h5.attrs or ("model_weights" in h5 and "layer_names" in h5["model_weights"].attrs):
        base = h5 if "layer_names" in h5.attrs else h5["model_weights"]
        out: list[Entry] = []
        for layer in _list_attr(base, "layer_names"):
            group = base[layer]
            for weight in _list_attr(group, "weight_names"):
                out.append((weight[:-2] if weight.endswith(":0") else weight, group[weight].name.lstrip("/"), layer))
        if "optimizer_weights" in h5 and "weight_names" in h5["optimizer_weights"].attrs:
            group = h5["optimizer_weights"]
            for weight in _list_attr(group, "weight_names"):
                raw = group[weight].name.lstrip("/")
                out.append((raw, raw, None))
        return out, {}
    if "layers" not in h5 and "vars" not in h5:
        raise DataLossError("not a Keras weights file (no layer_names, model_weights or layers)", path=path)
    found: list[Entry] = []
    layer_names: dict[str, str] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and name.rpartition("/")[2] == "vars" and "name" in obj.attrs:
            layer_names[name] = _text(obj.attrs["name"])
        elif isinstance(obj, h5py.Dataset):
            parent, _, _ = name.rpartition("/")
            found.append((None, name, parent if parent.rpartition("/")[2] == "vars" else None))

    h5.visititems(visit)
    return found, layer_names


def _named(entries: list[Entry], layer_names: dict[str, str], config: dict | None,
           raw_names: bool) -> list[tuple[str, str, str | None]]:
    """[(name, raw path, its layer's class where the file records it)]: see the module doc."""
    if raw_names:
        return [(raw, raw, None) for _, raw, _ in entries]
    layers = _layer_configs(config) if config is not None else {}
    by_group: dict[str, list[str]] = {}
    for name, raw, group in entries:
        if name is None and group is not None:
            by_group.setdefault(group, []).append(raw)
    friendly: dict[str, tuple[str, str]] = {}
    for group, raws in by_group.items():
        friendly.update(_group_names(group, raws, layer_names.get(group), layers))
    named: list[tuple[str, str, str | None]] = []
    for name, raw, group in entries:
        if name is not None:  # Keras 2: the class from the full-model file's model_config, if any
            spec = layers.get(group or "")
            named.append((name, raw, str(spec["class_name"]) if spec else None))
        else:
            given, cls = friendly.get(raw, (raw, None))
            named.append((given, raw, cls))
    counts: dict[str, int] = {}
    for name, _, _ in named:
        counts[name] = counts.get(name, 0) + 1
    return [(name, raw, cls) if counts[name] == 1 else (raw, raw, None) for name, raw, cls in named]


def _group_names(group: str, raws: list[str], layer: str | None,
                 layers: dict[str, dict]) -> dict[str, tuple[str, str]]:
    """{raw path: (LAYER/VAR, the layer's class)} of one Keras 3 `vars` group's datasets,
    or {} (raw names)."""
    owner = group.rpartition("/")[0]
    try:
        positions = sorted(raws, key=lambda r: int(r.rpartition("/")[2]))
    except ValueError:
        return {}
    if [int(r.rpartition("/")[2]) for r in positions] != list(range(len(positions))):
        return {}
    if not layer:
        return {}
    spec = layers.get(layer)
    cls = spec.get("class_name") if spec else _SNAKE.get(re.sub(r"_\d+$", "", owner.rpartition("/")[2]))
    order = _BUILD_ORDER.get(str(cls))
    if order is None:
        return {}
    options = spec.get("config", {}) if spec else None
    if isinstance(options, dict):
        names = [n for n, opt in order if opt is None or options.get(opt, True)]
    else:
        names = [n for n, _ in order]
        if len(positions) < len(names) and all(opt for _, opt in order[len(positions):]):
            names = names[:len(positions)]  # only optional variables missing, at the end (no bias)
    if len(names) != len(positions):
        return {}
    return {raw: (f"{layer}/{var}", str(cls)) for raw, var in zip(positions, names, strict=True)}


def _layer_configs(config: dict) -> dict[str, dict]:
    """{layer name: its config entry} of every layer anywhere in a .keras config."""
    out: dict[str, dict] = {}
    stack: list[Any] = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            inner = item.get("config")
            if "class_name" in item and isinstance(inner, dict) and isinstance(inner.get("name"), str):
                out.setdefault(inner["name"], item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out


def _checked(ds: Any, h5py: ModuleType, size: int, path: str, key: str) -> tuple[_dtypes.DType, tuple[int, ...]]:
    """(dtype, shape) of a dataset whose claims fit in a file of `size` bytes."""
    try:
        shape, np_dtype = ds.shape, ds.dtype
        if shape is None:
            raise DataLossError("dataset has no dataspace (an empty HDF5 dataset)", path=path, key=key)
        shape = tuple(int(d) for d in shape)
        if np_dtype.kind not in "biufc":
            raise UnsupportedError(f"dataset of HDF5 type {np_dtype} is not numbers; Keras weights are",
                                   path=path, key=key)
        try:
            dtype = _dtypes.as_dtype(np_dtype.newbyteorder("="))
        except UnsupportedError as exc:  # float128, a corrupt float type: named here
            raise UnsupportedError(str(exc), path=path, key=key) from None
        nbytes = math.prod(shape) * np_dtype.itemsize
        dcpl = ds.id.get_create_plist()
        layout = dcpl.get_layout()
        if layout == h5py.h5d.CONTIGUOUS:
            offset = ds.id.get_offset()
            if nbytes and (offset is None or offset + nbytes > size):
                raise DataLossError(f"dataset claims shape {list(shape)} of {np_dtype} ({nbytes} bytes) "
                                    f"past the end of the file ({size} bytes)", path=path, key=key)
        elif layout == h5py.h5d.COMPACT:
            if nbytes > _COMPACT_MAX:
                raise DataLossError(f"compact dataset claims {nbytes} bytes", path=path, key=key)
        else:
            stored = ds.id.get_storage_size()
            room = stored * (_DEFLATE_MAX_RATIO if dcpl.get_nfilters() else 1)
            if stored > size or nbytes > room:
                raise DataLossError(f"dataset claims shape {list(shape)} of {np_dtype} ({nbytes} bytes), "
                                    f"more than its {stored} stored bytes hold", path=path, key=key)
    except CheckpointError:
        raise
    except _ERRORS as exc:
        raise DataLossError(f"dataset header is unreadable: {exc}", path=path, key=key) from None
    return dtype, shape


def holds(dtype: _dtypes.DType) -> bool:
    """Keras files are read, not written: no dtype is a destination here."""
    return False


def open_file(path: str, raw_names: bool = False) -> KerasFile:
    """The file's tensors (convert's source; see formats/registry.py)."""
    return KerasFile(path, raw_names)


def open_backend(path: str, raw_names: bool = False) -> TensorFileBackend:
    """The file behind CheckpointReader's API (see formats/registry.py)."""
    return TensorFileBackend(KerasFile(path, raw_names), "keras")
