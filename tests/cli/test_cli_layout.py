"""The CLI package's shape: small modules, no private name shared across them, and a
start-up that stays at the speed of click for every command's --help."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from helpers import REPO, subprocess_env

from ckptkit.cli import cli

PACKAGE = Path(REPO) / "ckptkit" / "cli"


def test_one_small_module_per_command_group():
    modules = sorted(PACKAGE.glob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "app.py", "render.py", "options.py"}
    sizes = {m.name: len(m.read_text(encoding="utf-8").splitlines()) for m in modules}
    assert max(sizes.values()) <= 500, sizes


def test_no_private_name_imported_across_modules():
    """A helper two modules use is public in the one that defines it."""
    shared = []
    for module in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 1:
                shared += [f"{module.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert shared == []


def test_every_commands_help_imports_no_heavy_modules():
    """The commands import what they use inside their functions: `ckptkit CMD --help` of
    every command loads neither numpy, rich nor protobuf (nor tensorflow)."""
    commands = sorted(cli.commands)
    assert len(commands) == 16  # the README test keeps this list equal to the documented one
    code = ("import json, sys\nfrom ckptkit.cli import main\n"
            f"for name in {commands!r}:\n"
            "    try:\n        main([name, '--help'])\n"
            "    except SystemExit as e:\n        assert not e.code, (name, e.code)\n"
            "heavy = ('numpy', 'rich', 'google.protobuf', 'tensorflow')\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(heavy))))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=subprocess_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_python_dash_m_ckptkit_cli_runs_the_command():
    result = subprocess.run([sys.executable, "-m", "ckptkit.cli", "--version"], capture_output=True,
                            text=True, env=subprocess_env(), timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("ckptkit, version "), result.stderr
