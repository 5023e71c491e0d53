"""TensorFlow's ExponentialMovingAverage for values held as numpy arrays.

A training loop written in numpy/JAX/PyTorch can keep the same shadow variables a TF1
model keeps (``v/ExponentialMovingAverage``), bit for bit, so checkpoints written with
them restore in TF exactly as if TF had trained the model.

Bitwise equality needs TF's exact arithmetic, which is (``moving_averages.py``):

* ``decay`` is a float32 constant; with ``num_updates`` n, ``n`` is cast to float32 and
  ``decay = minimum(decay, (1.0 + n) / (10.0 + n))``, every op in float32;
* ``d = 1.0 - decay`` in float32, then cast to the variable's dtype;
* ``shadow = shadow - (shadow - value) * d``: a Sub, a Mul and an AssignSub kernel, each
  rounding to the variable's dtype (float16/bfloat16 kernels compute in float32 and
  round back after every op);
* TF's CPU threads run with denormals flushed to zero (FTZ + DAZ): every float32 or
  float64 operand and result below the smallest normal number becomes a signed zero.
  float16's own subnormals survive, because its arithmetic happens in float32.

Plain tensors (TF1 graphs may average a computed tensor, not only a variable) have
their shadow start at zero, and with ``zero_debias=True`` TF's ``_zero_debias`` keeps
two more variables per tensor, ``<shadow>/biased`` and ``<shadow>/local_step``, and sets
``shadow = biased / (1 - (1 - d) ** local_step)``, each op again in the tensor's dtype.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections.abc import Iterable, Mapping
from numbers import Real
from typing import Any

import numpy as np

from ckptkit.errors import InvalidArgumentError

__all__ = ["ExponentialMovingAverage"]

# TF's apply() accepts exactly these (it raises TypeError for the rest).
_FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")


def _flush(x: np.ndarray) -> np.ndarray:
    """Subnormals to signed zero, as TF's FTZ/DAZ CPU mode does (x is float32/float64)."""
    tiny = np.finfo(x.dtype).tiny
    return np.where(np.abs(x) < tiny, np.copysign(np.zeros_like(x), x), x)


def _op(ufunc: np.ufunc, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One TF CPU kernel: operands flushed, computed, result flushed and rounded to a's dtype."""
    dtype = a.dtype
    work = np.float64 if dtype == np.float64 else np.float32
    a = _flush(np.asarray(a, dtype=work))
    b = _flush(np.asarray(b, dtype=work))
    with np.errstate(all="ignore"):  # inf/NaN results are TF's too (e.g. decay=1 debiased)
        result = np.asarray(ufunc(a, b))
    return np.asarray(_flush(result).astype(dtype))


def _load_powf() -> Any:
    """The C library's powf, which TF's Pow kernel calls for a float32 scalar (std::pow)."""
    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        powf = libm.powf
    except (OSError, AttributeError):  # no C math library to load: round a float64 pow
        return None
    powf.restype = ctypes.c_float
    powf.argtypes = [ctypes.c_float, ctypes.c_float]
    return powf


_POWF = _load_powf()


def _pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """TF's Pow kernel on two 0-d operands of one float dtype (flushed like _op).

    On one element Eigen calls std::pow: C's pow for float64, powf for float32 (and
    float16/bfloat16, computed in float32). numpy's power differs from powf in the
    last bit for many inputs (it has its own SIMD loops), so the C functions are
    called themselves; where the C library can't be loaded, a float64 pow rounded to
    float32 (which differs from powf in about one case in a thousand).
    """
    dtype = a.dtype
    work = np.float64 if dtype == np.float64 else np.float32
    x = float(_flush(np.asarray(a, dtype=work)))
    y = float(_flush(np.asarray(b, dtype=work)))
    try:
        if work == np.float32 and _POWF is not None:
            result = _POWF(x, y)
        else:
            result = math.pow(x, y)
    except (OverflowError, ValueError):  # C returns inf / NaN where Python raises
        with np.errstate(all="ignore"):
            result = float(np.power(np.float64(x), np.float64(y)))
    return np.asarray(_flush(np.asarray(result, dtype=work)).astype(dtype))


def _real(x: Any, what: str) -> float:
    """A finite real number, or InvalidArgumentError (TF would silently produce NaNs)."""
    # one boolean, not two isinstance() branches: x stays Any (numpy's stubs reject numbers.Real)
    is_real = not isinstance(x, (bool, np.bool_)) and isinstance(x, (Real, np.integer, np.floating))
    if not is_real:
        raise InvalidArgumentError(f"{what} must be a real number, got {x!r}")
    if not np.isfinite(x):
        raise InvalidArgumentError(f"{what} must be finite, got {x!r}")
    return x


def _to_float32(x: float) -> np.float32:
    """Cast like TF: ints convert straight to float32 (no double rounding via float64)."""
    if isinstance(x, (int, np.integer)):
        return np.float32(np.asarray(x, dtype=np.int64).astype(np.float32))  # 0-d array -> scalar, exact
    return np.float32(x)


class ExponentialMovingAverage:
    """Shadow copies of variables, updated as ``shadow -= (shadow - value) * (1 - decay)``.

    Mirrors ``tf.compat.v1.train.ExponentialMovingAverage``, keyed by variable name
    instead of ``tf.Variable``. The first ``apply`` of a variable creates its shadow
    from that value (TF starts the shadow at the variable's initial value) and then
    updates it like every ``apply`` does - as TF's first run of the apply op does; that
    update leaves finite values unchanged. To mirror a TF program that changes the
    variable between initialization and the first update, apply the initial value first.

    A value named in ``apply(..., tensors=...)`` stands for a plain tensor (TF1 graph
    mode: ``ema.apply([loss])``), whose shadow starts at zero, as TF's does. Only for
    those does ``zero_debias=True`` do anything (as in TF, which ignores it for
    variables): the shadow is then the debiased average, and two more variables per
    tensor, ``<shadow>/biased`` and ``<shadow>/local_step``, join `shadow_variables()`.

    Values keep their numpy dtype; plain Python floats become float32, as
    ``tf.Variable(0.)`` does. Only float16, bfloat16, float32 and float64 are accepted,
    like TF.
    """

    def __init__(self, decay: float, num_updates: int | float | None = None,
                 zero_debias: bool = False, name: str = "ExponentialMovingAverage") -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"name must be a non-empty string, got {name!r}")
        if not isinstance(zero_debias, (bool, np.bool_)):
            raise InvalidArgumentError(f"zero_debias must be True or False, got {zero_debias!r}")
        self._decay = _to_float32(_real(decay, "decay"))
        self._num_updates = None if num_updates is None else _real(num_updates, "num_updates")
        self._zero_debias = bool(zero_debias)
        self._name = name
        self._averages: dict[str, np.ndarray] = {}  # variable/tensor op name -> shadow value
        self._keys: dict[str, str] = {}  # op name -> checkpoint key of its shadow
        self._tensors: set[str] = set()  # op names applied as plain tensors
        self._debias: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # tensor -> (biased, local_step)

    @property
    def name(self) -> str:
        """The suffix of every shadow name (``v`` -> ``v/<name>``)."""
        return self._name

    @property
    def zero_debias(self) -> bool:
        return self._zero_debias

    def _effective_decay(self, num_updates: float | None) -> np.float32:
        """TF's float32 decay, lowered early in training when num_updates is known."""
        decay = self._decay
        if num_updates is not None:
            n = np.asarray(_to_float32(num_updates))
            one, ten = np.asarray(np.float32(1.0)), np.asarray(np.float32(10.0))
            ratio = _op(np.divide, _op(np.add, one, n), _op(np.add, ten, n))
            decay = np.minimum(decay, ratio[()])
        return decay

    def apply(self, values: Mapping[str, Any], num_updates: int | float | None = None, *,
              tensors: Iterable[str] = (), scope: str | None = None) -> None:
        """Update (creating where new) the shadow of every value in ``values``.

        ``num_updates`` overrides the constructor's for this step (pass the global step).
        ``tensors``: the names among ``values`` that are plain tensors, not variables
        (their shadows start at zero; a name keeps the kind it was first applied as).
        ``scope``: the TF variable scope ``apply`` runs in, which prefixes the names of
        the shadows this call creates (``apply`` inside ``variable_scope("outer")``
        names ``v``'s shadow ``outer/v/ExponentialMovingAverage``).
        Every value is checked before any shadow changes, so a bad input changes nothing.
        """
        if not isinstance(values, Mapping):
            raise InvalidArgumentError(
                f"values must be a mapping of variable name to value, got {type(values).__name__}")
        if num_updates is None:
            num_updates = self._num_updates
        else:
            num_updates = _real(num_updates, "num_updates")
        if scope is not None and (not isinstance(scope, str) or not scope.strip("/")):
            raise InvalidArgumentError(f"scope must be None or a non-empty string, got {scope!r}")
        arrays = {}
        for key, value in values.items():
            name = _op_name(key)
            arrays[name] = self._check_value(name, value)
        tensor_names = {_op_name(n) for n in _names(tensors)}
        for name in sorted(tensor_names - set(arrays)):
            raise InvalidArgumentError(f"tensors names {name!r}, which is not among the values")
        for name in arrays:
            if name in self._averages and (name in tensor_names) != (name in self._tensors):
                first = "a tensor" if name in self._tensors else "a variable"
                raise InvalidArgumentError(f"{name!r} was first applied as {first}; it can't change kind")
        one_minus_decay = np.float32(1.0) - self._effective_decay(num_updates)
        for name, value in arrays.items():
            is_tensor = name in tensor_names
            shadow = self._averages.get(name)
            if shadow is None:
                shadow = np.zeros_like(value) if is_tensor else value.copy()
                self._create(name, shadow, is_tensor, scope)
            d = np.asarray(one_minus_decay).astype(value.dtype)
            if name in self._debias:
                shadow = self._debiased_update(name, value, d)
            else:
                shadow = _op(np.subtract, shadow, _op(np.multiply, _op(np.subtract, shadow, value), d))
            shadow.flags.writeable = False  # handed out by average(); never mutated in place
            self._averages[name] = shadow

    def _create(self, name: str, shadow: np.ndarray, is_tensor: bool, scope: str | None) -> None:
        """Name a new shadow as TF does: ``[scope/]name/<ema name>``; its debias variables
        (TF: a variable_scope named after the shadow, inside ``scope`` again) after it."""
        prefix = f"{scope.strip('/')}/" if scope else ""
        key = f"{prefix}{name}/{self._name}"
        self._keys[name] = key
        self._averages[name] = shadow
        if is_tensor:
            self._tensors.add(name)
            if self._zero_debias:
                self._debias[name] = (np.zeros_like(shadow), np.zeros((), shadow.dtype))

    def _debiased_update(self, name: str, value: np.ndarray, d: np.ndarray) -> np.ndarray:
        """TF's _zero_debias: biased -= (biased - value) * d; local_step += 1;
        shadow = biased / (1 - (1 - d) ** local_step), each op in the value's dtype."""
        biased, step = self._debias[name]
        one = np.ones((), value.dtype)
        biased = _op(np.subtract, biased, _op(np.multiply, _op(np.subtract, biased, value), d))
        step = _op(np.add, step, one)
        factor = _op(np.subtract, one, _pow(_op(np.subtract, one, d), step))
        for array in (biased, step):
            array.flags.writeable = False
        self._debias[name] = (biased, step)
        return _op(np.divide, biased, factor)

    def _check_value(self, name: str, value: Any) -> np.ndarray:
        """The value as an array of the variable's float dtype and shape, or an error."""
        shadow = self._averages.get(name)
        numpy_typed = isinstance(value, (np.ndarray, np.generic))
        try:
            if shadow is not None and not numpy_typed:
                array = np.asarray(value, dtype=shadow.dtype)
            else:
                array = np.asarray(value)
                if not numpy_typed and array.dtype == np.float64:
                    array = array.astype(np.float32)  # TF's default float
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"value of {name!r} is not numeric: {exc}") from None
        if array.dtype.name not in _FLOAT_NAMES:
            raise InvalidArgumentError(
                f"value of {name!r} has dtype {array.dtype.name}; moving averages need "
                f"one of {', '.join(_FLOAT_NAMES)}")
        if shadow is not None and (array.dtype != shadow.dtype or array.shape != shadow.shape):
            raise InvalidArgumentError(
                f"value of {name!r} is {array.dtype.name}{list(array.shape)} but its average "
                f"is {shadow.dtype.name}{list(shadow.shape)}")
        return array

    def average(self, name: str) -> np.ndarray | None:
        """The shadow value of ``name`` (read-only), or None if never applied."""
        return self._averages.get(_op_name(name))

    def average_name(self, name: str) -> str:
        """The checkpoint key of ``name``'s shadow: ``[scope/]name/<ema name>`` (``:0`` dropped)."""
        op = _op_name(name)
        return self._keys.get(op, f"{op}/{self._name}")

    def _debias_names(self, name: str) -> tuple[str, str]:
        key = self._keys[name]
        scope = key[: -len(name) - len(self._name) - 1]  # "outer/" or ""
        return f"{scope}{key}/biased", f"{scope}{key}/local_step"

    def shadow_variables(self) -> dict[str, np.ndarray]:
        """Every variable this EMA made, by checkpoint key, ready to save next to the
        variables: the shadows, then each debiased tensor's ``biased`` and ``local_step``."""
        found = {self._keys[n]: v for n, v in self._averages.items()}
        for name, (biased, step) in self._debias.items():
            biased_key, step_key = self._debias_names(name)
            found[biased_key] = biased
            found[step_key] = step
        return found

    def variables_to_restore(self, names: Iterable[str] | None = None, *,
                             global_names: Iterable[str] | None = None) -> dict[str, str]:
        """Checkpoint key -> variable name, to load averages into the variables themselves.

        As TF: each of ``names`` (default: every variable applied so far, not tensors)
        restores from its shadow's key - even a name that is itself a shadow name. Each
        other name in ``global_names`` (TF's ``global_variables()``; default: the applied
        variables and every variable `shadow_variables` holds) restores from its own
        name unless that key is already taken.
        """
        variables = [n for n in self._averages if n not in self._tensors]
        averaged = list(dict.fromkeys(_op_name(n) for n in
                                      (variables if names is None else _names(names))))
        if global_names is None:
            everything = variables + list(self.shadow_variables())
        else:
            everything = [_op_name(n) for n in _names(global_names)]
        name_map = {self.average_name(n): n for n in averaged}
        for n in everything:
            if n not in averaged and n not in name_map:
                name_map[n] = n
        return name_map


def _names(names: Iterable[str]) -> Iterable[str]:
    """Reject a lone string, which would otherwise iterate as one-letter names."""
    if isinstance(names, str):
        raise InvalidArgumentError(f"expected a collection of names, got the string {names!r}")
    return names


def _op_name(name: Any) -> str:
    """A variable's op name: ``v:0`` -> ``v``, as TF's ``var.op.name``."""
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"variable names must be non-empty strings, got {name!r}")
    return name[:-2] if name.endswith(":0") else name
