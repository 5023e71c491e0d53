"""ckptkit must work without TensorFlow: importing and using it never imports tensorflow."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import REPO

ROOT = Path(REPO)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_every_module_and_a_roundtrip_without_tensorflow(tmp_path):
    result = run_python(f"""
        import importlib, pkgutil, sys
        import numpy as np
        import ckptkit
        for info in pkgutil.walk_packages(ckptkit.__path__, "ckptkit."):
            if info.name != "ckptkit.__main__":
                importlib.import_module(info.name)
        prefix = ckptkit.save({str(tmp_path / 'x')!r}, {{"v": np.ones(3), "s": [b"a"]}})
        assert ckptkit.load(prefix)["v"].tolist() == [1, 1, 1]
        bad = [m for m in sys.modules if m == "tensorflow" or m.startswith(("tensorflow.", "keras", "tf_keras"))]
        assert not bad, bad
        print("ok", len(sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_tensorflow_made_unimportable_changes_nothing(tmp_path):
    """With tensorflow blocked outright, the library still works."""
    result = run_python(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "tensorflow" or name.startswith("tensorflow."):
                    raise ImportError("tensorflow is blocked in this test")
        sys.meta_path.insert(0, Block())
        import numpy as np, ckptkit
        prefix = ckptkit.save({str(tmp_path / 'y')!r}, {{"v": np.arange(4)}})
        r = ckptkit.NewCheckpointReader(prefix)
        assert r.get_variable_to_dtype_map()["v"].name == "int64"
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
