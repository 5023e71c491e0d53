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
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from numbers import Real
from typing import Any

import numpy as np

from ckptkit.errors import InvalidArgumentError, UnsupportedError

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
    return np.asarray(_flush(np.asarray(ufunc(a, b))).astype(dtype))


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

    Mirrors ``tf.compat.v1.train.ExponentialMovingAverage`` for variables, keyed by
    variable name instead of ``tf.Variable``. The first ``apply`` of a name creates its
    shadow from that value (TF starts the shadow at the variable's initial value) and
    then updates it like every ``apply`` does - as TF's first run of the apply op does;
    that update leaves finite values unchanged. To mirror a TF program that changes the
    variable between initialization and the first update, apply the initial value first.

    Values keep their numpy dtype; plain Python floats become float32, as
    ``tf.Variable(0.)`` does. Only float16, bfloat16, float32 and float64 are accepted,
    like TF.

    ``zero_debias=True`` raises UnsupportedError: TF honours it only for plain tensors
    (whose averages start at zero and get extra ``biased``/``local_step`` variables) and
    silently ignores it for variables, which is what ckptkit's values stand for.
    """

    def __init__(self, decay: float, num_updates: int | float | None = None,
                 zero_debias: bool = False, name: str = "ExponentialMovingAverage") -> None:
        if zero_debias:
            raise UnsupportedError(
                "zero_debias=True is not supported: TF applies it only to tensors, "
                "never to variables")
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"name must be a non-empty string, got {name!r}")
        self._decay = _to_float32(_real(decay, "decay"))
        self._num_updates = None if num_updates is None else _real(num_updates, "num_updates")
        self._name = name
        self._averages: dict[str, np.ndarray] = {}  # variable op name -> shadow value

    @property
    def name(self) -> str:
        """The suffix of every shadow name (``v`` -> ``v/<name>``)."""
        return self._name

    def _effective_decay(self, num_updates: float | None) -> np.float32:
        """TF's float32 decay, lowered early in training when num_updates is known."""
        decay = self._decay
        if num_updates is not None:
            n = np.asarray(_to_float32(num_updates))
            one, ten = np.asarray(np.float32(1.0)), np.asarray(np.float32(10.0))
            ratio = _op(np.divide, _op(np.add, one, n), _op(np.add, ten, n))
            decay = np.minimum(decay, ratio[()])
        return decay

    def apply(self, values: Mapping[str, Any], num_updates: int | float | None = None) -> None:
        """Update (creating where new) the shadow of every variable in ``values``.

        ``num_updates`` overrides the constructor's for this step (pass the global step).
        Every value is checked before any shadow changes, so a bad input changes nothing.
        """
        if not isinstance(values, Mapping):
            raise InvalidArgumentError(
                f"values must be a mapping of variable name to value, got {type(values).__name__}")
        if num_updates is None:
            num_updates = self._num_updates
        else:
            num_updates = _real(num_updates, "num_updates")
        arrays = {}
        for key, value in values.items():
            name = _op_name(key)
            arrays[name] = self._check_value(name, value)
        one_minus_decay = np.float32(1.0) - self._effective_decay(num_updates)
        for name, value in arrays.items():
            shadow = self._averages.get(name)
            if shadow is None:
                shadow = value.copy()
            d = np.asarray(one_minus_decay).astype(value.dtype)
            shadow = _op(np.subtract, shadow, _op(np.multiply, _op(np.subtract, shadow, value), d))
            shadow.flags.writeable = False  # handed out by average(); never mutated in place
            self._averages[name] = shadow

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
        """The shadow value of variable ``name`` (read-only), or None if never applied."""
        return self._averages.get(_op_name(name))

    def average_name(self, name: str) -> str:
        """The checkpoint key of ``name``'s shadow: ``name/<ema name>`` (``:0`` dropped)."""
        return f"{_op_name(name)}/{self._name}"

    def shadow_variables(self) -> dict[str, np.ndarray]:
        """Every shadow by checkpoint key, ready to save next to the variables."""
        return {self.average_name(n): v for n, v in self._averages.items()}

    def variables_to_restore(self, names: Iterable[str] | None = None, *,
                             global_names: Iterable[str] | None = None) -> dict[str, str]:
        """Checkpoint key -> variable name, to load averages into the variables themselves.

        As TF: each of ``names`` (default: every variable applied so far) restores from
        its shadow's key - even a name that is itself a shadow name. Each other name in
        ``global_names`` (TF's ``global_variables()``; default: the applied variables and
        their shadows) restores from its own name unless that key is already taken.
        """
        averaged = list(dict.fromkeys(_op_name(n) for n in
                                      (self._averages if names is None else _names(names))))
        if global_names is None:
            everything = list(self._averages) + [self.average_name(n) for n in self._averages]
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
