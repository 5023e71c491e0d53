"""Fixtures shared by every tests/ subfolder (plain helpers are in helpers.py).

TensorFlow is the oracle. Where it is absent, interop tests skip, except under
CKPTKIT_REQUIRE_TF=1 (CI), where a missing TensorFlow fails the run instead.

Real checkpoints written by released TF builds live outside the repository (a bare
clone has none of them), so the tests that read them are opt-in: marked `testdata`,
deselected unless CKPTKIT_TESTDATA names the folder. `.ci/run` names it. The same for
the tests that drive a real browser (`ckptkit view`): marked `browser`, deselected
unless CKPTKIT_BROWSER names a Chromium executable (`.ci/run` installs Debian's
chromium and names /usr/bin/chromium).
"""
from __future__ import annotations

import os
import pathlib

import pytest
from helpers import BROWSER, BROWSER_ENV, TESTDATA, TESTDATA_ENV, copy_dir, make_dtypes, make_partitioned, make_seed

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_tf():
    try:
        import tensorflow as tf  # noqa: PLC0415 - deliberately lazy
    except ImportError as exc:
        if os.environ.get("CKPTKIT_REQUIRE_TF") == "1":
            pytest.fail(f"CKPTKIT_REQUIRE_TF=1 but tensorflow cannot be imported: {exc}")
        pytest.skip("tensorflow not installed")
    return tf


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselects the `testdata` tests when CKPTKIT_TESTDATA is unset and the `browser`
    tests when CKPTKIT_BROWSER is (a bare clone's run stays free of skips); fails the run
    when either names something that is not there."""
    off = []
    if TESTDATA is not None:
        if not TESTDATA.is_dir():
            raise pytest.UsageError(f"{TESTDATA_ENV}={TESTDATA} is not a directory")
    else:
        off.append("testdata")
    if BROWSER is not None:
        if not (os.path.isfile(BROWSER) and os.access(BROWSER, os.X_OK)):
            raise pytest.UsageError(f"{BROWSER_ENV}={BROWSER} is not an executable file")
    else:
        off.append("browser")
    chosen = [item for item in items if not any(item.get_closest_marker(m) for m in off)]
    if len(chosen) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in chosen])
        items[:] = chosen


@pytest.fixture(scope="session")
def testdata() -> pathlib.Path:
    """The folder of real TF-written checkpoints (tests using it are marked `testdata`)."""
    assert TESTDATA is not None, f"a test using the testdata fixture must be marked testdata ({TESTDATA_ENV})"
    return TESTDATA


@pytest.fixture(scope="session")
def tf():
    """The tensorflow module (skip, or fail under CKPTKIT_REQUIRE_TF=1, when missing)."""
    return _import_tf()


@pytest.fixture(scope="session")
def tf1(tf):
    """tf.compat.v1 for graph-mode (Saver, Session) tests; each test builds its own Graph."""
    return tf.compat.v1


# --------------------------------------------------------------------------- TF-written checkpoints
# TF writes each kind once per session; tests get a private copy to edit.

@pytest.fixture(scope="session")
def seed_dir(tf, tf1, tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("seed")
    make_seed(tf1, os.fspath(directory))
    return os.fspath(directory)


@pytest.fixture(scope="session")
def dtypes_dir(tf, tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("dtypes")
    make_dtypes(tf, os.fspath(directory))
    return os.fspath(directory)


@pytest.fixture(scope="session")
def partitioned_dir(tf, tf1, tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("part")
    make_partitioned(tf1, os.fspath(directory))
    return os.fspath(directory)


@pytest.fixture
def seed(seed_dir, tmp_path) -> str:
    """A private copy of the seed example; returns its prefix."""
    return os.path.join(copy_dir(seed_dir, tmp_path / "seed"), "model.ckpt")


@pytest.fixture
def dtypes_ckpt(dtypes_dir, tmp_path) -> str:
    return os.path.join(copy_dir(dtypes_dir, tmp_path / "dtypes"), "dtypes.ckpt")


@pytest.fixture
def partitioned(partitioned_dir, tmp_path) -> str:
    return os.path.join(copy_dir(partitioned_dir, tmp_path / "part"), "part.ckpt")
