"""Shared test helpers.

TensorFlow is the oracle. Where it is absent, interop tests skip, except under
CKPTKIT_REQUIRE_TF=1 (CI), where a missing TensorFlow fails the run instead.
"""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_tf():
    try:
        import tensorflow as tf  # noqa: PLC0415 - deliberately lazy
    except ImportError as exc:
        if os.environ.get("CKPTKIT_REQUIRE_TF") == "1":
            pytest.fail(f"CKPTKIT_REQUIRE_TF=1 but tensorflow cannot be imported: {exc}")
        pytest.skip("tensorflow not installed")
    return tf


@pytest.fixture(scope="session")
def tf():
    """The tensorflow module (skip, or fail under CKPTKIT_REQUIRE_TF=1, when missing)."""
    return _import_tf()


@pytest.fixture(scope="session")
def tf1(tf):
    """tf.compat.v1 for graph-mode (Saver, Session) tests; each test builds its own Graph."""
    return tf.compat.v1
