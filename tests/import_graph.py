"""The import graph of the ``cellseg`` package, read from the source with ``ast``.

Run as a script (``python tests/import_graph.py``) it prints every import cycle; the tests in
``test_layers.py`` use :func:`build_graph` and :func:`cycles`.

What counts as an edge ``A -> B`` (A and B modules of ``cellseg.*``):

* every ``import``/``from`` statement anywhere in A (module level, in functions, under ``if``
  or ``try``, under ``if TYPE_CHECKING``): an import in a function is as much a dependency as
  one at the top, it only runs later, and a type-only import is a dependency of the design;
* ``import cellseg.x.y`` -> ``cellseg.x.y``; relative imports are resolved against A's package;
* ``from P import name`` -> ``P.name`` when that is a module, else ``P`` (``name`` is read
  from ``P/__init__``);
* a literal string passed to ``import_module(...)`` / ``importlib.import_module(...)`` -> that
  module (loading a module by name is an import too).

The package rule: importing ``P.sub`` runs ``P/__init__`` first, but that implicit step is
*not* an edge. Otherwise every package whose ``__init__`` re-exports a submodule would be in a
cycle with each submodule that imports a sibling (``P.sub -> P -> P.sub``), which is no
dependency at all: Python initialises ``P`` before ``P.sub`` whatever either contains. A
submodule depends on its package's ``__init__`` only when it reads a name defined there
(``from . import helper``); that edge is counted, and if the ``__init__`` imports the submodule
back, it is a real cycle (the outcome depends on which of the two is imported first).
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# repository folder -> package name (setup.py's mapping)
ROOTS = {"app": "cellseg.app", "core": "cellseg.core", "trainer": "cellseg.trainer",
         "resources": "cellseg.resources"}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


def find_modules(repo: Path = REPO) -> dict[str, Module]:
    """Every ``.py`` file under the package roots, by dotted module name."""
    modules = {}
    for folder, package in ROOTS.items():
        for path in sorted((repo / folder).rglob("*.py")):
            parts = list(path.relative_to(repo / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            name = ".".join([package, *parts])
            modules[name] = Module(name, path, is_package)
    return modules


def _resolve_relative(module: Module, level: int, target: str | None) -> str:
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    parts = package.split(".")
    if level - 1 > len(parts) - 1:
        raise ImportError(f"{module.path}: relative import beyond the top-level package")
    base = ".".join(parts[:len(parts) - (level - 1)])
    return f"{base}.{target}" if target else base


def imports_of(module: Module, known: set[str]) -> set[str]:
    """The ``cellseg`` modules that ``module`` imports, by the rules of the module docstring."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = (_resolve_relative(module, node.level, node.module) if node.level
                      else node.module or "")
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.add(sub if sub in known else source)
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Name) and node.func.id == "import_module")
                   or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"))):
            out.add(node.args[0].value)
    return {name for name in out if name in known}


def build_graph(repo: Path = REPO) -> dict[str, set[str]]:
    """module -> the ``cellseg`` modules it imports (self-imports kept)."""
    modules = find_modules(repo)
    known = set(modules)
    return {name: imports_of(m, known) for name, m in modules.items()}


def third_party_imports(module: Module) -> set[str]:
    """Top-level names of every module ``module`` imports (``PySide6``, ``torch``, ...)."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def named_modules(module: Module, known: set[str]) -> set[str]:
    """String constants in ``module`` that are the name of a ``cellseg`` module (a module to be
    loaded by name later, e.g. a table of subcommands)."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value in known}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself
    (Tarjan's algorithm, iterative), each sorted, the list sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph[node]:
                        found.append(sorted(component))
    return sorted(found)


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    """One line per edge inside the component: which import closes the cycle."""
    members = set(component)
    edges = [f"    {a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return f"cycle of {len(component)} module(s):\n" + "\n".join(edges)


if __name__ == "__main__":
    g = build_graph()
    found = cycles(g)
    for c in found:
        print(describe(c, g))
    print(f"{len(g)} modules, {sum(map(len, g.values()))} imports, {len(found)} cycle(s)")
    sys.exit(1 if found else 0)
