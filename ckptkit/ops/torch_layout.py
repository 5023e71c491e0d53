"""`convert --layout torch`: the layout changes every TensorFlow -> PyTorch port writes by hand.

Decided per tensor by its name and rank alone (no model code, no TensorFlow), except
where a Keras 3 file records a layer class that the name does not show:

- the *leaf* of a name is its last `/` component, after a TF2 key's trailing
  `/.ATTRIBUTES/VARIABLE_VALUE` and Keras 2's `:0` are taken off
  (`model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE`, `dense/kernel:0`: `kernel`), and one
  leading `_` of a leaf the rule knows (a TF2 checkpoint of a Keras 3 model tracks
  Dense's and Conv's kernel as `_kernel`, Embedding's as `_embeddings`);
- a `kernel` or `pointwise_kernel` leaf of rank 2 to 5 is put in torch's order, outputs
  first: a Dense kernel [in, out] -> [out, in] (nn.Linear), a convolution kernel
  WIO -> OIW, HWIO -> OIHW, DHWIO -> OIDHW (nn.Conv1d/2d/3d). The permutation is the
  same for a ConvTranspose kernel, which Keras stores [.., out, in]: it becomes
  [in, out, ..], nn.ConvTranspose's weight;
- a `depthwise_kernel` leaf of rank 3 to 5 ([.., in, multiplier]), and a `kernel` of a
  Keras 3 DepthwiseConv1D/2D (whose name does not say so), becomes torch's grouped
  layout [in * multiplier, 1, ..] (nn.Conv2d with groups=in): channel i*multiplier+m,
  as TF orders a depthwise convolution's outputs;
- a `kernel` of a Keras 3 EinsumDense is left as it is (its equation, not its name,
  gives its layout); so is every other tensor: embeddings ([vocabulary, dim] in both),
  biases, normalization parameters, optimizer slots named after their variable
  (`dense/kernel/Adam`: leaf `Adam`; Keras 2's `optimizer_weights/Adam/m/dense/kernel:0`
  ends in `kernel` and changes like its variable), and kernels of rank 0, 1 or over 5.

Names (unless `torch_names=False`): the suffixes above are taken off, `/` becomes `.`, and
the leaf becomes torch's name for it: kernel -> weight, gamma -> weight, beta -> bias,
moving_mean -> running_mean, moving_variance -> running_var, embeddings -> weight, and
depthwise_kernel -> weight unless its layer also has a pointwise_kernel (a SeparableConv,
two modules in torch: both keep their names). `conv/kernel` is written `conv.weight`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Change", "TORCH_NAMES", "leaf", "torch_layout"]

TORCH_NAMES = {"kernel": "weight", "gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
               "moving_variance": "running_var", "embeddings": "weight", "depthwise_kernel": "weight"}
_LEAVES = {*TORCH_NAMES, "pointwise_kernel", "bias"}
_TF2_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_DEPTHWISE_CLASSES = ("DepthwiseConv1D", "DepthwiseConv2D")
_KEPT_CLASSES = ("EinsumDense",)
_SPATIAL = {0: "", 1: "W", 2: "HW", 3: "DHW"}


class Change(NamedTuple):
    """What `--layout torch` does to one tensor: its new name and shape, and the axes
    permutation (then reshape) that takes the stored array there; `rule` says which
    (None: the values are left as they are)."""

    name: str
    shape: tuple[int, ...]
    perm: tuple[int, ...] | None = None
    reshape: tuple[int, ...] | None = None
    rule: str | None = None

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """The stored array in torch's layout (C-contiguous, as writers expect)."""
        import numpy as np  # noqa: PLC0415 - only when values are read

        if self.perm is None:
            return arr
        out = np.ascontiguousarray(arr.transpose(self.perm))
        return out.reshape(self.reshape) if self.reshape is not None else out


def _stem(name: str) -> str:
    """`name` without a TF2 key's `/.ATTRIBUTES/VARIABLE_VALUE` and a Keras 2 `:0`."""
    name = name.removesuffix(_TF2_SUFFIX)
    return name[:-2] if name.endswith(":0") else name


def _known(last: str) -> str:
    """`last` without the `_` a Keras 3 attribute name adds (`_kernel`: kernel)."""
    return last[1:] if last.startswith("_") and last[1:] in _LEAVES else last


def leaf(name: str) -> str:
    """The last component of `name` that the rule reads (see the module doc)."""
    return _known(_stem(name).rpartition("/")[2])


def _kernel(shape: tuple[int, ...]) -> tuple[tuple[int, ...], str] | None:
    rank = len(shape)
    if not 2 <= rank <= 5:
        return None
    perm = (rank - 1, rank - 2, *range(rank - 2))
    spatial = _SPATIAL[rank - 2]
    rule = "[in,out]->[out,in]" if rank == 2 else f"{spatial}IO->OI{spatial}"
    return perm, rule


def _depthwise(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], str] | None:
    rank = len(shape)
    if not 3 <= rank <= 5:
        return None
    s = rank - 2
    spatial = _SPATIAL[s]
    perm = (s, s + 1, *range(s))
    return perm, (shape[s] * shape[s + 1], 1, *shape[:s]), f"{spatial}IM->(I*M)1{spatial}"


def _change(name: str, shape: tuple[int, ...], layer_class: str | None, torch_names: bool,
            separable: bool) -> Change:
    stem = _stem(name)
    head, _, last = stem.rpartition("/")
    last = _known(last)
    new_leaf = last
    if torch_names and last in TORCH_NAMES and not (last == "depthwise_kernel" and separable):
        new_leaf = TORCH_NAMES[last]
    new_name = (head.replace("/", ".") + "." if head else "") + new_leaf if torch_names else name
    depthwise = last == "depthwise_kernel" or (last == "kernel" and layer_class in _DEPTHWISE_CLASSES)
    if depthwise and (dw := _depthwise(shape)) is not None:
        perm, reshape, rule = dw
        return Change(new_name, reshape, perm, reshape, rule)
    if last in ("kernel", "pointwise_kernel") and not depthwise and layer_class not in _KEPT_CLASSES:
        if (k := _kernel(shape)) is not None:
            perm, rule = k
            return Change(new_name, tuple(shape[p] for p in perm), perm, None, rule)
    return Change(new_name, tuple(shape))


def torch_layout(shapes: Mapping[str, tuple[int, ...]], layer_classes: Mapping[str, str] | None = None,
                 torch_names: bool = True) -> dict[str, Change]:
    """{name: Change} for every tensor of `shapes` ({name: stored shape}), by the module
    doc's rule; `layer_classes` ({name: Keras class}, where a Keras 3 file records it)
    tells depthwise and einsum kernels that their names do not. Values are unchanged in
    size: every permutation keeps the element count."""
    classes = layer_classes or {}
    separable = {_stem(n).rpartition("/")[0] for n in shapes if leaf(n) == "pointwise_kernel"}
    out = {}
    for name, shape in shapes.items():
        change = _change(name, tuple(shape), classes.get(name), torch_names,
                         _stem(name).rpartition("/")[0] in separable)
        assert math.prod(change.shape) == math.prod(shape)
        out[name] = change
    return out
