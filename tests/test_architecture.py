"""ARCHITECTURE.md's layer table, checked against the code: every ckptkit import made at
run time (lazy ones included; not those for type annotations) goes to the same layer or
one below it, except the debts listed here,
each also named under "Known debts" in ARCHITECTURE.md."""
from __future__ import annotations

import ast
import os
import re

from helpers import REPO

PACKAGE = os.path.join(REPO, "ckptkit")
# (importer, imported) pairs that go upward today; remove a line when its debt is paid.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _modules() -> dict[str, str]:
    """{dotted module name: file} of ckptkit, generated protobuf modules left out."""
    found = {}
    for root, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d not in ("proto", "__pycache__")]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def _layers() -> dict[str, int]:
    """{module or package prefix: layer number} from the table's second column, bottom up."""
    with open(os.path.join(REPO, "ARCHITECTURE.md"), encoding="utf-8") as f:
        text = f.read()
    table = text[text.index("| layer |"):text.index("\n\n", text.index("| layer |"))]
    layers = {}
    for number, row in enumerate(table.splitlines()[2:]):
        for name in re.findall(r"`([\w/]+(?:\.py|/))`", row.split("|")[2]):
            layers["ckptkit." + name.removesuffix(".py").rstrip("/").replace("/", ".")] = number
    layers["ckptkit"] = max(layers.values(), default=0) + 1  # the public API: above everything
    return layers


def _layer_of(module: str, layers: dict[str, int]) -> int:
    while module not in layers:
        module = module.rsplit(".", 1)[0]
    return layers[module]


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` but those under `if TYPE_CHECKING:` (imports for annotations only)."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)
    return out


def _imports(module: str, path: str, modules: dict[str, str]) -> set[str]:
    """The ckptkit modules `module` imports at run time (relative imports; lazy ones too)."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    out = set()
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join([*parts, *([node.module] if node.module else [])])
            names = [f"{target}.{alias.name}" for alias in node.names]
            out.add(next((n for n in names if n in modules), target))
    return {m for m in out if m != module}


def test_every_module_has_a_layer_and_imports_go_down():
    modules, layers = _modules(), _layers()
    assert len(layers) > 10, "the layer table of ARCHITECTURE.md was not found"
    named = {m for m in layers if m not in ("ckptkit", "ckptkit.__init__", "ckptkit.proto")}  # proto: generated
    assert named <= set(modules), f"the table names modules that do not exist: {sorted(named - set(modules))}"
    upward = set()
    for module, path in modules.items():
        mine = _layer_of(module, layers)
        for imported in _imports(module, path, modules):
            if imported == "ckptkit" and mine < layers["ckptkit"]:
                continue  # `from . import __version__`: the one name taken from the package
            if _layer_of(imported, layers) > mine:
                upward.add((module, imported))
    assert upward == KNOWN_UPWARD, sorted(upward ^ KNOWN_UPWARD)
