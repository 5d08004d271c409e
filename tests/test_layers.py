"""One direction of dependencies: each layer of ``lib/prserv`` imports only the layers
below it, and no two modules import each other, directly or around a circle.

Read from every module's source (nothing is imported).  What an import names:

* ``import a.b`` and ``from a.b import n`` name module ``a.b`` -- or ``a.b.n`` when
  that is a submodule; ``from . import n`` names submodule ``n``, else the package
  itself (its ``__init__``); relative imports resolve against the module's package;
* imports at any depth count (inside functions, under ``TYPE_CHECKING``);
* the implicit import of parent packages does not count.

docs/architecture.md draws the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

LIB = Path(__file__).resolve().parent.parent / "lib"
PACKAGE = "prserv"

LAYERS: List[Tuple[str, Set[str]]] = [
    ("pure", {"prserv.errors", "prserv.log", "prserv.version", "prserv.revision", "prserv.policy",
              "prserv.oefile", "prserv.messages", "prserv.dumptext", "prserv.access",
              "prserv.tokens", "prserv.timestamps"}),
    ("asyncrpc", {"prserv.asyncrpc.*"}),
    ("client", {"prserv.client"}),
    ("storage", {"prserv.storage.*"}),
    ("server", {"prserv.server.*"}),
    ("runtime", {"prserv.runtime.*"}),
    ("cli", {"prserv.cli.*"}),
    ("facades", {"prserv", "prserv.serv", "prserv.db", "prserv.__main__"}),
]
"""From the ground up.  ``name.*`` is a package and every module inside it; any
other name is that one module."""


def module_files(root: Path = LIB) -> Dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    modules = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    """The package's modules that module ``name`` imports, by the rule above."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module, node.level, package)
            for alias in node.names:
                child = "%s.%s" % (base, alias.name)
                found.add(child if child in modules else base)
    return {module for module in found if module in modules and module != name}


def _resolve(module: Optional[str], level: int, package: str) -> str:
    if not level:
        return module or ""
    parts = package.split(".")
    base = parts[:len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def import_graph(root: Path = LIB) -> Dict[str, Set[str]]:
    modules = module_files(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def layer_of(module: str) -> Tuple[int, str]:
    """(height, layer name) of a module."""
    for height, (layer, names) in enumerate(LAYERS):
        for name in names:
            package = name[:-2] if name.endswith(".*") else None
            if module == name or (package and (module == package or module.startswith(package + "."))):
                return height, layer
    raise AssertionError("module %s is in no layer: add it to LAYERS" % module)


def upward_imports(graph: Dict[str, Set[str]]) -> List[str]:
    problems = []
    for module, imports in sorted(graph.items()):
        height, layer = layer_of(module)
        for target in sorted(imports):
            target_height, target_layer = layer_of(target)
            if target_height > height:
                problems.append("%s (%s) imports %s (%s), a layer above" % (module, layer, target, target_layer))
            if target == PACKAGE:
                problems.append("%s imports the package facade prserv/__init__.py" % module)
    return problems


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_every_module_is_in_a_layer():
    for module in import_graph():
        layer_of(module)


def test_each_layer_imports_only_layers_below_it():
    assert upward_imports(import_graph()) == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def imports_sqlite3(source: str) -> bool:
    """Whether ``source`` imports sqlite3 (or a submodule of it), in either form:
    ``import sqlite3 [as x]`` or ``from sqlite3[.dbapi2] import ...``, at any depth."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            if any(alias.name.partition(".")[0] == "sqlite3" for alias in node.names):
                return True
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").partition(".")[0] == "sqlite3":
                return True
    return False


def test_only_storage_imports_sqlite3():
    importers = sorted(name for name, path in module_files().items()
                       if imports_sqlite3(path.read_text(encoding="utf-8")))
    assert importers and all(name.startswith("prserv.storage.") for name in importers), importers


# --------------------------------------------------------------------------- the checker itself

def _tree(tmp_path: Path, files: Dict[str, str]) -> Path:
    for relative, text in files.items():
        path = tmp_path / PACKAGE / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_rule_for_what_an_import_names(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "server/__init__.py": "from . import session\n",
        "server/session.py": "from .. import errors\nfrom ..storage import engine\nimport prserv.client\n",
        "server/allocator.py": "from . import nothing_here\n",
        "storage/__init__.py": "",
        "storage/engine.py": "def f():\n    from ..server.session import X\n",
        "client.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from prserv import errors\n",
    })
    graph = import_graph(root)
    assert graph["prserv.server"] == {"prserv.server.session"}
    assert graph["prserv.server.session"] == {"prserv.errors", "prserv.storage.engine", "prserv.client"}
    assert graph["prserv.server.allocator"] == {"prserv.server"}        # not a submodule: the package
    assert graph["prserv.storage.engine"] == {"prserv.server.session"}  # inside a function
    assert graph["prserv.client"] == {"prserv.errors"}                  # under TYPE_CHECKING
    assert graph["prserv.storage"] == set()                             # parents are not imports


def test_an_upward_import_and_a_cycle_are_found(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "errors.py": "from .cli import tool\n",          # pure reaching the command line
        "cli/__init__.py": "",
        "cli/tool.py": "from .. import errors\n",
        "storage/__init__.py": "",
        "storage/a.py": "from . import b\n",
        "storage/b.py": "from . import a\n",
        "server/__init__.py": "import prserv\n",       # the facade, from inside
    })
    graph = import_graph(root)
    assert upward_imports(graph) == [
        "prserv.errors (pure) imports prserv.cli.tool (cli), a layer above",
        "prserv.server (server) imports prserv (facades), a layer above",
        "prserv.server imports the package facade prserv/__init__.py",
    ]
    assert sorted(cycles(graph)) == [["prserv.cli.tool", "prserv.errors"],
                                     ["prserv.storage.a", "prserv.storage.b"]]


@pytest.mark.parametrize("source, imports", [
    ("import sqlite3\n", True),
    ("import os, sqlite3 as db\n", True),
    ("import sqlite3.dbapi2\n", True),
    ("from sqlite3 import connect\n", True),
    ("from sqlite3.dbapi2 import Error as E\n", True),
    ("def f():\n    if True:\n        from sqlite3 import Row\n", True),
    ("import sqlite3x\nfrom sqlite3x import y\n", False),
    ("from . import sqlite3\nfrom .sqlite3 import engine\n", False),    # the package's own module
    ("path = 'pr.sqlite3'\n", False),
])
def test_the_sqlite3_detector_sees_both_import_forms(source, imports):
    assert imports_sqlite3(source) is imports


def test_unknown_module_must_be_placed(tmp_path):
    with pytest.raises(AssertionError, match="prserv.stray is in no layer"):
        layer_of("prserv.stray")
