"""Layers: ``cellseg.core`` stands alone (no Qt, no app, no trainer), and no package imports
form a cycle. The graph is read from the source with ``ast`` (``tests/import_graph.py``: every
import at any depth, relative imports resolved; its docstring gives the rule for packages)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from .import_graph import (REPO, build_graph, cycles, describe, find_modules, named_modules,
                           third_party_imports)

UPPER_LAYERS = ("cellseg.app", "cellseg.trainer")


def test_no_import_cycle_in_the_package():
    graph = build_graph()
    assert len(graph) > 100 and "cellseg.core.config.node" in graph  # the scan found the tree
    found = cycles(graph)
    assert not found, "\n".join(describe(c, graph) for c in found)


def test_the_cycle_check_sees_function_level_and_relative_imports(tmp_path):
    # a small package tree like the real one: the check must find a cycle closed by an import
    # inside a function, one through a relative ``from . import module``, and one through a
    # name read from a package __init__; and it must not flag an __init__ that re-exports a
    # submodule importing its sibling
    pkg = tmp_path / "core"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("HELPER = 1\nfrom . import d\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from cellseg.core.sub.b import g\n")
    (pkg / "sub" / "b.py").write_text("from . import a\nfrom .c import h\n")
    (pkg / "sub" / "c.py").write_text("h = 1\n")
    (pkg / "sub" / "d.py").write_text("from . import HELPER\n")
    for other in ("app", "trainer", "resources"):
        (tmp_path / other).mkdir()
    graph = build_graph(tmp_path)
    assert graph["cellseg.core.sub.b"] == {"cellseg.core.sub.a", "cellseg.core.sub.c"}
    assert graph["cellseg.core"] == {"cellseg.core.sub.b"}
    assert cycles(graph) == [["cellseg.core.sub", "cellseg.core.sub.d"],
                             ["cellseg.core.sub.a", "cellseg.core.sub.b"]]
    (pkg / "sub" / "c.py").write_text("import cellseg.core.sub.c\n")
    assert ["cellseg.core.sub.c"] in cycles(build_graph(tmp_path))  # a self-import


# lower layers may not import (or name, to load later) a higher one; Qt only in the app
LAYERS = {"cellseg.core": 0, "cellseg.resources": 0, "cellseg.trainer": 1, "cellseg.app": 2}


def _layer(module: str) -> int:
    return LAYERS[".".join(module.split(".")[:2])]


def test_no_layer_reaches_upwards_and_qt_stays_in_the_app():
    # static: catches imports inside functions and modules named in strings (to be loaded by
    # name), which importing the modules (the next test) does not run
    graph = build_graph()
    modules = find_modules()
    known = set(modules)
    bad = [f"{name} imports {target}" for name, targets in sorted(graph.items())
           for target in sorted(targets) if _layer(target) > _layer(name)]
    bad += [f"{name} names {target!r}" for name, m in sorted(modules.items())
            for target in sorted(named_modules(m, known)) if _layer(target) > _layer(name)]
    bad += [f"{name} imports PySide6" for name, m in sorted(modules.items())
            if _layer(name) < LAYERS["cellseg.app"] and "PySide6" in third_party_imports(m)]
    assert not bad, "\n".join(bad)


def test_importing_all_of_core_loads_no_qt_app_or_trainer():
    core = sorted(name for name in find_modules() if name.startswith("cellseg.core")
                  and not name.endswith(".__main__"))  # __main__ runs the command line
    # building the parser loads every subcommand module by name, as ``cellseg.core.cli`` runs
    script = textwrap.dedent(f"""
        import importlib, sys
        for name in {core!r}:
            importlib.import_module(name)
        importlib.import_module("cellseg.core.cli").build_parser()
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] == "PySide6" or m.startswith({UPPER_LAYERS!r}))
        print(len({core!r}), loaded)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=REPO.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(core)), "[]"], done.stdout


def test_the_cellseg_program_keeps_every_subcommand(capsys):
    # the table moved from core to app: the program still offers all of them, in this order,
    # while core's own dispatcher offers only core's
    from cellseg.app import cli as program
    from cellseg.core import cli as core_cli

    full = ["predict", "eval", "convert", "project", "export", "import", "train", "doctor"]
    assert list(program.SUBCOMMANDS) == full
    assert list(core_cli.SUBCOMMANDS) == full[:6]
    with pytest.raises(SystemExit) as done:  # argparse exits after printing the help
        program.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert all(f"\n    {name} " in out for name in full), out
