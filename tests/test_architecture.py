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
    """The ckptkit modules `module` imports at run time (lazy ones too)."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    out = set()
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "ckptkit"):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
            out.add(next((n for n in names if n in modules), target))
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name.split(".")[0] == "ckptkit")
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


# Modules over the line limit today, each a debt under "Known debts" in ARCHITECTURE.md.
KNOWN_LONG = {"ckptkit/formats/bundle.py"}
MAX_LINES = 700
MAX_ROOT_MODULES = 10


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) & set(modules) for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    """Counting lazy imports too: a module imported inside a function is still a dependency."""
    assert _cycles(_graph()) == []


def test_at_most_ten_modules_in_the_package_root():
    root = sorted(n for n in os.listdir(PACKAGE) if n.endswith(".py"))
    assert len(root) <= MAX_ROOT_MODULES, root


def test_no_module_over_the_line_limit():
    long = set()
    for path in _modules().values():
        with open(path, encoding="utf-8") as f:
            if sum(1 for _ in f) > MAX_LINES:
                long.add(os.path.relpath(path, REPO))
    assert long == KNOWN_LONG, sorted(long ^ KNOWN_LONG)


def test_no_private_name_crosses_a_module():
    """`from .x import _y` and `x._y` (x a ckptkit module) reach into another module's
    internals: what a module offers others has a public name."""
    crossing = []
    for module, path in _modules().items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        imported_modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("ckptkit")):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        crossing.append(f"{module}: imports {alias.name}")
                    imported_modules.add(alias.asname or alias.name)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in imported_modules and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                crossing.append(f"{module}: uses {node.value.id}.{node.attr}")
    assert crossing == []


def test_every_package_says_what_it_owns():
    for module, path in _modules().items():
        if path.endswith("__init__.py"):
            with open(path, encoding="utf-8") as f:
                assert ast.get_docstring(ast.parse(f.read())), f"{module} has no docstring"
