"""Property tests: whatever ckptkit writes, ckptkit (and TF) read back exactly."""
from __future__ import annotations

import tempfile

import ml_dtypes
import numpy as np
from helpers import NUMERIC_DTYPES, assert_same_tensor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ckptkit

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)
names = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)


@st.composite
def tensors(draw) -> np.ndarray:
    dtype = draw(st.sampled_from(NUMERIC_DTYPES + ["string"]))
    shape = draw(shapes)
    if dtype == "string":
        items = draw(st.lists(st.binary(max_size=300), min_size=int(np.prod(shape)),
                              max_size=int(np.prod(shape))))
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out.reshape(shape)
    npd = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    # Arbitrary bit patterns: NaN payloads, negative zeros, subnormals all must survive.
    raw = draw(st.binary(min_size=int(np.prod(shape)) * np.dtype(npd).itemsize,
                         max_size=int(np.prod(shape)) * np.dtype(npd).itemsize))
    if dtype == "bool":
        raw = bytes(b & 1 for b in raw)
    return np.frombuffer(raw, dtype=npd).reshape(shape)


checkpoints = st.dictionaries(names, tensors(), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(checkpoints, st.integers(1, 4))
def test_save_load_roundtrip(values, num_shards):
    with tempfile.TemporaryDirectory() as d:
        prefix = ckptkit.save(f"{d}/ckpt", values, num_shards=num_shards)
        loaded = ckptkit.load(prefix)
        assert set(loaded) == set(values)
        for key, value in values.items():
            assert_same_tensor(loaded[key], value, key)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(values=checkpoints)
def test_tf_reads_what_ckptkit_writes(tf, values):
    with tempfile.TemporaryDirectory() as d:
        prefix = ckptkit.save(f"{d}/ckpt", values)
        reader = tf.train.load_checkpoint(prefix)
        assert set(reader.get_variable_to_shape_map()) == set(values)
        for key, value in values.items():
            assert_same_tensor(reader.get_tensor(key), value, key)  # TF: a string scalar is bytes
