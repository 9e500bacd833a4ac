"""The import graph of ``src/medseg``: no cycles (function-local imports count too) and no upward imports.

Built with ``ast`` from the source, so nothing is imported. An edge ``a -> b`` is any ``import`` statement in
``a`` naming ``b`` (at module level, in a class, or inside a function); ``if TYPE_CHECKING:`` blocks are
skipped (never run). Importing ``a.b.c`` also imports the packages ``a.b`` and ``a`` first, so those are edges
too, except a module's own enclosing packages (Python has imported them already).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "medseg"

#: lowest first; a module may import from its own level or below. The root package ``medseg`` is the public API
#: (it lazily re-exports engine and api names), hence the top.
LAYERS: list[tuple[str, ...]] = [
    ("medseg._version", "medseg.utils", "medseg.catalog", "medseg.recipes", "medseg.progress", "medseg.tables"),
    ("medseg.config",),
    ("medseg.layers", "medseg.metrics"),
    ("medseg.models",),
    ("medseg.losses",),
    ("medseg.data",),
    ("medseg.engine",),
    ("medseg.stats", "medseg.export", "medseg.experiments", "medseg.api", "medseg.app"),
    ("medseg.cli", "medseg.__main__", "medseg"),
]


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The medseg modules ``path`` (module ``name``) imports anywhere, with the packages that implies."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    todo: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
    while todo:
        node = todo.pop()
        if _type_checking(node):
            todo.extend(node.orelse)  # type: ignore[attr-defined]
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # "from pkg import submodule"
        todo.extend(ast.iter_child_nodes(node))
    deps = set()
    for target in found:
        if target not in modules:
            continue
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            dep = ".".join(parts[:i])
            if dep in modules and dep != name and not name.startswith(dep + "."):
                deps.add(dep)
    return deps


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    return {name: imports_of(path, name, set(files)) for name, path in files.items()}


@functools.cache
def medseg_graph() -> dict[str, frozenset[str]]:
    return {k: frozenset(v) for k, v in import_graph().items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of ``graph``, or ``None`` (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def layer_of(name: str) -> int:
    best = None
    for level, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (level, len(p))
    if best is None:
        raise AssertionError(f"{name} is in no layer of tests/test_import_graph.py: add it to LAYERS")
    return best[0]


def test_find_cycle_and_graph_on_a_tiny_package(tmp_path):
    pkg = tmp_path / "medseg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from medseg.sub.a import f\n")
    (pkg / "sub" / "a.py").write_text("from . import b\nimport os\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from medseg.sub import c\n"
                                      "def g():\n    from medseg.sub.c import h\n")
    (pkg / "sub" / "c.py").write_text("from medseg.sub.a import f\n")
    graph = import_graph(pkg)
    assert graph == {"medseg": set(), "medseg.sub": {"medseg.sub.a"}, "medseg.sub.a": {"medseg.sub.b"},
                     "medseg.sub.b": {"medseg.sub.c"}, "medseg.sub.c": {"medseg.sub.a"}}
    assert find_cycle(graph) == ["medseg.sub.a", "medseg.sub.b", "medseg.sub.c", "medseg.sub.a"]
    graph["medseg.sub.b"] = set()
    assert find_cycle(graph) is None


def test_medseg_imports_have_no_cycle():
    cycle = find_cycle(medseg_graph())
    assert cycle is None, "import cycle (function-local imports count): " + " -> ".join(cycle or [])


def test_no_module_imports_from_a_higher_layer():
    graph = medseg_graph()
    upward = sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps if layer_of(b) > layer_of(a))
    assert not upward, "imports from a higher layer: " + "; ".join(upward)


@pytest.mark.parametrize("registry", ["medseg.models._registry", "medseg.losses._registry"])
def test_registries_import_none_of_their_members(registry):
    graph = medseg_graph()
    package = registry.rsplit(".", 1)[0]
    members = {m for m in graph if m.startswith(package + ".") and m != registry}
    assert not graph[registry] & members, graph[registry] & members
