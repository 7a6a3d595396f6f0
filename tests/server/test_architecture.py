"""The dependency rules of docs/ARCHITECTURE.md ("Dependency rules"), checked on
the source of all three packages (chatcore, chat_server, chat_client): no import
circles (every import counts, also the ones made lazily inside a function or only
for type checking), the layering between the packages, a codec without I/O, lazy
imports only where the contract allows them, and no reaching into another
class's private state."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import chat_client
import chat_server
import chatcore

PACKAGES = {
    pkg.__name__: Path(pkg.__file__).parent for pkg in (chatcore, chat_server, chat_client)
}

#: Modules a codec must not import: it is sans-IO (bytes in, events out).
IO_MODULES = {
    "asyncio", "socket", "ssl", "select", "selectors", "time", "logging", "threading",
    "subprocess", "os", "io", "concurrent",
}

#: The only modules that may import a module of ours inside a function (and
#: name it under TYPE_CHECKING for the type checker): the entry point (each
#: subcommand imports only what it runs: `chat-server healthcheck` runs every few
#: seconds and must not load the server), the store's opener (psycopg only with a
#: PostgreSQL CHAT_DB) and the backends (the `openai` package, ~0.8 s to import,
#: only with an OpenAI-compatible backend). Every import still counts for circles.
LAZY_IMPORTERS = {"chat_server.cli", "chat_server.store", "chat_server.backends",
                  "chat_server.backends.pool"}

#: Private names of the standard library's own API (namedtuple, sys, os).
STDLIB_PRIVATE = {"_replace", "_asdict", "_fields", "_exit", "_getframe", "_Environ"}


def _modules() -> dict[str, Path]:
    found = {}
    for pkg, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = [p for p in path.relative_to(root).with_suffix("").parts if p != "__init__"]
            found[".".join([pkg, *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path, tree: ast.AST | None = None
             ) -> Iterator[tuple[ast.stmt, list[str]]]:
    """Each import statement of a module and the dotted names it may refer to."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree or ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            yield node, [f"{prefix}.{a.name}" for a in node.names] + [prefix]
        elif isinstance(node, ast.Import):
            yield node, [a.name for a in node.names]


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for _node, targets in _imports(name, path):
            for target in targets:
                if target in MODULES and target != name and target not in PACKAGES:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_there_are_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _edges() -> list[tuple[str, str]]:
    return [(a, b) for a, targets in import_graph().items() for b in targets]


def test_the_shared_core_imports_neither_the_server_nor_the_client():
    assert [(a, b) for a, b in _edges()
            if a.startswith("chatcore") and not b.startswith("chatcore")] == []


def test_the_server_and_the_client_share_only_the_core():
    assert [(a, b) for a, b in _edges() if {a.split(".")[0], b.split(".")[0]}
            == {"chat_server", "chat_client"}] == []


def test_the_codec_does_no_io():
    found = []
    for name, path in MODULES.items():
        if name.startswith("chatcore.protocol"):
            for node, targets in _imports(name, path):
                if isinstance(node, ast.ImportFrom) and node.level:
                    continue
                found += [(name, t) for t in targets if t.split(".")[0] in IO_MODULES]
    assert found == []


def test_the_data_layer_imports_nothing_else_of_the_server():
    assert [(a, b) for a, b in _edges()
            if a.startswith("chat_server.store") and not b.startswith("chat_server.store")] == []


def test_a_turn_depends_on_neither_the_session_nor_the_service():
    graph = import_graph()
    assert not graph["chat_server.turn"] & {"chat_server.session", "chat_server.app"}
    assert "chat_server.app" not in graph["chat_server.session"]


def test_the_entry_points_are_imported_by_nobody_else():
    def importers(module: str) -> set[str]:
        return {a for a, b in _edges() if b == module}

    assert importers("chat_server.cli") == {"chat_server.__main__"}
    assert importers("chat_client.cli") == {"chat_client.__main__"}
    assert importers("chat_server.app") == {"chat_server.cli"}


def lazy_or_type_only_imports(name: str, path: Path) -> list[int]:
    """Lines that import a module of ours inside a function or under ``if
    TYPE_CHECKING`` (the usual ways to hide a circle)."""
    tree = ast.parse(path.read_text())
    hidden: set[int] = set()
    for node in ast.walk(tree):
        in_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        type_only = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        if type_only or in_function:
            hidden |= {id(n) for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)}
    return sorted(node.lineno for node, targets in _imports(name, path, tree)
                  if id(node) in hidden and any(t in MODULES for t in targets))


def test_modules_of_ours_are_imported_at_the_top_except_where_the_contract_says():
    found = {name: lines for name, path in MODULES.items()
             if name not in LAZY_IMPORTERS and (lines := lazy_or_type_only_imports(name, path))}
    assert found == {}


def test_the_lazy_import_check_finds_function_level_and_type_only_imports(tmp_path: Path):
    path = tmp_path / "m.py"
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "from chat_server import config\n"
        "if TYPE_CHECKING:\n"
        "    from chat_server.store import Store\n"
        "def f():\n"
        "    from chat_server import app\n"
        "    import json\n"
    )
    assert lazy_or_type_only_imports("chat_server.m", path) == [4, 6]


def _class_members(cls: ast.ClassDef) -> set[str]:
    """Names a class defines for its instances: methods, class attributes,
    ``__slots__`` entries and ``self.x = ...`` assignments."""
    names: set[str] = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries
    return names


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in STDLIB_PRIVATE


def private_reaches(source: str) -> list[str]:
    """``obj._name`` (or ``getattr(obj, "_name")``, ``setattr``, ``hasattr``)
    where ``obj`` is not ``self``/``cls`` and ``_name`` is not a member of the
    class the code is in (another class's private state)."""
    found: list[str] = []

    def own(obj: ast.expr) -> bool:
        return isinstance(obj, ast.Name) and obj.id in ("self", "cls")

    def walk(node: ast.AST, members: set[str]) -> None:
        if isinstance(node, ast.ClassDef):
            members = _class_members(node)
        if (isinstance(node, ast.Attribute) and _private(node.attr)
                and not own(node.value) and node.attr not in members):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and isinstance(name := node.args[1].value, str) and _private(name)
                and not own(node.args[0]) and name not in members):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        for child in ast.iter_child_nodes(node):
            walk(child, members)

    walk(ast.parse(source), set())
    return found


def test_no_module_reaches_into_another_class_private_state():
    found = {name: hits for name, path in MODULES.items()
             if (hits := private_reaches(path.read_text()))}
    assert found == {}


def test_the_private_state_check_tells_own_class_from_another():
    source = (
        "class A:\n"
        "    def __init__(self): self._x = 1\n"
        "    def same(self, other): return other._x\n"
        "    def other(self, b): return b._y\n"
        "def outside(a): return a._x\n"
        "def hidden(a): return getattr(a, '_z', None), getattr(a, 'z'), getattr(self, '_z')\n"
    )
    assert private_reaches(source) == ["4: b._y", "5: a._x", "6: getattr(a, '_z', None)"]


TESTS = Path(__file__).resolve().parents[1]

#: The only tests that read another object's private state, and why no public
#: observable can stand in: a database connection's own session settings
#: (SQLite PRAGMAs, PostgreSQL SET) are visible on that connection alone, and
#: the store opens its connections itself.
TESTS_READING_PRIVATE_STATE = {
    "server_data/test_store_postgres.py": {"store._query"},
    "server_data/test_store_sqlite.py": {"store._call", "store._connection"},
}


def test_no_test_reaches_into_private_state():
    """Tests assert on what the code shows (return values, public read-only
    properties, metrics, the wire), so that a refactoring of internals does not
    break them and a test cannot pass on state nobody else can see."""
    found = {}
    for path in sorted(TESTS.rglob("*.py")):
        name = path.relative_to(TESTS).as_posix()
        hits = [hit for hit in private_reaches(path.read_text())
                if hit.split(": ", 1)[1] not in TESTS_READING_PRIVATE_STATE.get(name, set())]
        if hits:
            found[name] = hits
    assert found == {}


#: Tests that import a private module of ours (``pkg._module``) and why: the
#: state table is the data docs/PROTOCOL.md §5 names as the source of its table.
TESTS_IMPORTING_PRIVATE_MODULES = {
    "protocol/test_connection.py": {"chatcore.protocol._state"},
}


def private_module_imports(source: str) -> set[str]:
    """Modules of our packages with a private part (``_name``) that ``source``
    imports by absolute name."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        found |= {n for n in names if n.split(".")[0] in PACKAGES
                  and any(part.startswith("_") and not part.startswith("__")
                          for part in n.split(".")[1:])}
    return found


def test_tests_use_the_public_interface_of_our_modules():
    """A test that imports ``chatcore.protocol._v1`` pins an internal layout
    that the package is free to change; the public names are re-exported."""
    found = {}
    for path in sorted(TESTS.rglob("*.py")):
        name = path.relative_to(TESTS).as_posix()
        extra = private_module_imports(path.read_text()) - TESTS_IMPORTING_PRIVATE_MODULES.get(
            name, set())
        if extra:
            found[name] = sorted(extra)
    assert found == {}


def test_no_package_imports_a_private_module_of_another():
    found = {name: sorted(hits) for name, path in MODULES.items()
             if (hits := {m for m in private_module_imports(path.read_text())
                          if m.split(".")[0] != name.split(".")[0]})}
    assert found == {}


def test_the_private_import_check_finds_absolute_imports_of_private_modules():
    source = ("from chatcore.protocol._v1 import to_v1_text\n"
              "import chat_server._x.y\n"
              "from chatcore.protocol import to_v1_text\n"
              "from ._support import raw\n"
              "from os import _exit\n")
    assert private_module_imports(source) == {"chatcore.protocol._v1", "chat_server._x.y"}


def test_no_test_module_imports_another():
    """Shared test code lives in fixtures, conftest or helper modules (not named
    test_*), so each test module stands for its own package's behaviour."""
    tests = Path(__file__).resolve().parents[1]
    found = []
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [f"{path.relative_to(tests)}: {n}" for n in names
                      if n.startswith("tests.") and n.rsplit(".", 1)[-1].startswith("test_")]
    assert found == []
