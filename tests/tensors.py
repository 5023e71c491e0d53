"""Test data: one tensor of every dtype the bundle format supports, in several shapes."""
from __future__ import annotations

import ml_dtypes
import numpy as np

NUMERIC_DTYPES = ["float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64",
                  "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128"]

STRINGS = [b"", "ünïcödé ✓".encode(), bytes(range(256)), b"x" * 70000, b"\x00\xff\x80"]


def random_array(dtype: str, shape, rng: np.random.Generator) -> np.ndarray:
    """Random values covering each dtype's range (incl. negative, inf/nan for floats)."""
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.startswith("complex"):
        real = np.float32 if dtype == "complex64" else np.float64
        return (rng.standard_normal(shape).astype(real) + 1j * rng.standard_normal(shape).astype(real)).astype(dtype)
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    npd = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    values = (rng.standard_normal(shape) * 1000).astype(npd)
    flat = values.reshape(-1)
    if flat.size >= 3:
        flat[:3] = [np.inf, -np.inf, np.nan]
    return values


def variety(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every dtype as a matrix, a scalar and an empty tensor, plus string tensors."""
    out: dict[str, np.ndarray] = {}
    for dtype in NUMERIC_DTYPES:
        out[f"{dtype}/matrix"] = random_array(dtype, (3, 5), rng)
        out[f"{dtype}/scalar"] = random_array(dtype, (), rng)
        out[f"{dtype}/empty"] = random_array(dtype, (0, 4), rng)
    out["string/vector"] = np.array(STRINGS, dtype=object)
    out["string/scalar"] = np.array("ünïcödé".encode(), dtype=object)
    out["string/matrix"] = np.array([[b"a", b""], [b"bc", "✓".encode()]], dtype=object)
    out["string/empty"] = np.zeros((0,), dtype=object)
    out["scope/deep/name with space"] = np.arange(7, dtype=np.int32)
    return out


def assert_same_tensor(actual: np.ndarray, expected: np.ndarray, key: str = "") -> None:
    """Same shape and the same bytes (strings: the same byte strings)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, key
    if expected.dtype.kind in "OS":  # TF hands back a string scalar as plain bytes
        assert actual.dtype.kind in "OS", key
        assert [bytes(x) for x in actual.reshape(-1)] == [bytes(x) for x in expected.reshape(-1)], key
    else:
        assert actual.dtype == expected.dtype, (key, actual.dtype, expected.dtype)
        assert actual.tobytes() == expected.tobytes(), key
