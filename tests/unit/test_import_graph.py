"""medcl's modules import each other without a cycle.

The graph is read from the source with ``ast``: an edge for every import a module runs when it is
imported (statements at module level, inside ``if``/``try`` too, but not under ``TYPE_CHECKING``),
to the imported module and to the packages above it (whose ``__init__`` runs first, unless the
importer is inside that package, which is then already being imported). ``from package import
name`` is an edge to ``package.name`` when that is a module, else to the package.
"""
from __future__ import annotations

import ast
from pathlib import Path

import medcl

PACKAGE = Path(medcl.__file__).parent


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _runtime_imports(statements):
    for node in statements:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            type_checking = "TYPE_CHECKING" in ast.unparse(node.test)
            yield from _runtime_imports(node.orelse if type_checking else node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _runtime_imports(node.body + node.orelse + node.finalbody
                                        + [s for handler in node.handlers for s in handler.body])


def _targets(node, package: str, known: dict) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        up = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(up + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def import_graph(deferred: bool = False) -> dict[str, set[str]]:
    """Module -> the medcl modules it imports when imported; ``deferred``: also those imported
    inside functions (as if they were at module level)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        tree = ast.parse(path.read_text())
        nodes = ([n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))] if deferred
                 else _runtime_imports(tree.body))
        for node in nodes:
            for target in _targets(node, package, known):
                if target not in known:
                    continue
                edges.add(target)
                parts = target.split(".")
                edges |= {p for p in (".".join(parts[:i]) for i in range(1, len(parts)))
                          if p in known and name != p and not name.startswith(p + ".")}
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None (depth-first search, iterative)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(graph[child])))
    return None


def test_medcl_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# Imports deferred into a function on purpose: the experiment file's own fields are checked without
# loading the plugin registries (torch, open_clip).
DEFERRED_ON_PURPOSE = {("medcl.config", "medcl.strategies")}


def test_no_deferred_import_hides_a_cycle():
    """A function-level import of medcl's own module is for weight (torch in a light command), not to
    dodge a cycle: moved to module level, none closes one (but the one named above)."""
    graph = {name: {t for t in edges if (name, t) not in DEFERRED_ON_PURPOSE}
             for name, edges in import_graph(deferred=True).items()}
    cycle = find_cycle(graph)
    assert cycle is None, "a function-level import hides the cycle " + " -> ".join(cycle)


def test_the_graph_sees_package_imports_and_the_cycle_finder_finds_cycles():
    graph = import_graph()
    assert "medcl.strategies.base" in graph["medcl.strategies"]  # the package imports its contract
    assert "medcl.errors" in graph["medcl.registry"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
