"""The import structure (docs/ARCHITECTURE.md): no cycle between any two modules, and
the contracts of ``[tool.importlinter]`` in pyproject.toml kept.

import-linter's ``layers`` contract orders the packages of ``digest`` and so forbids a
cycle *between* packages; it says nothing about a cycle between modules of one package
(``ops.health`` → ``ops.scheduler`` → ``ops.jobs`` → ``ops.health``). This test looks
at every module of ``digest`` and ``subscribers``: the strongly connected components of
the direct-import graph, which grimp builds from every import statement, those inside
functions and under ``TYPE_CHECKING`` too. Any component of two or more modules is a
cycle, reported with the import lines that close it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from itertools import pairwise
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parent.parent


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected component of two or more modules (Tarjan, iterative),
    each sorted, the list sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = []
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work.append((root, sorted(graph.find_modules_directly_imported_by(root))))
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.find_modules_directly_imported_by(nxt))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def a_cycle(graph: grimp.ImportGraph, component: list[str]) -> list[str]:
    """One shortest cycle through the first module of ``component``, staying inside it:
    ``[a, b, …, a]``."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph.find_modules_directly_imported_by(node) & members):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start} in {component}")  # not a component


def describe(graph: grimp.ImportGraph, component: list[str]) -> str:
    """One cycle of ``component`` with the import lines that make it, and, when the
    component is larger than that cycle, all its modules (each is on some cycle)."""
    cycle = a_cycle(graph, component)
    lines = [" → ".join(cycle)]
    if len(component) > len(cycle) - 1:
        lines.append(f"    (the whole group, each on some cycle: {', '.join(component)})")
    for importer, imported in pairwise(cycle):
        for detail in graph.get_import_details(importer=importer, imported=imported):
            lines.append(f"    {importer}:{detail['line_number']}: {detail['line_contents']}")
    return "\n".join(lines)


def test_the_cycle_finder_finds_cycles() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [
        ("p.a", "p.b"),
        ("p.b", "p.c"),
        ("p.c", "p.a"),
        ("p.c", "p.d"),
        ("p.d", "p.e"),
        ("p.x", "p.y"),
        ("p.y", "p.x"),
    ]:
        graph.add_import(importer=importer, imported=imported, line_number=1, line_contents="")
    assert strongly_connected(graph) == [["p.a", "p.b", "p.c"], ["p.x", "p.y"]]
    assert a_cycle(graph, ["p.a", "p.b", "p.c"]) == ["p.a", "p.b", "p.c", "p.a"]


def test_no_module_imports_itself_back() -> None:
    # cache_dir=None: nothing written into the checkout.
    graph = grimp.build_graph("digest", "subscribers", cache_dir=None)
    assert "digest.pipeline" in graph.modules and "subscribers.repository" in graph.modules
    cycles = [describe(graph, c) for c in strongly_connected(graph)]
    assert not cycles, (
        f"{len(cycles)} group(s) of modules import each other, one cycle shown for each; "
        "break it by moving the function to the module that owns it (or to a small new "
        "one), not by hiding the import in a function (grimp sees those too):\n" + "\n".join(cycles)
    )


def test_the_import_contracts_are_kept() -> None:
    """``lint-imports`` (the venv's, next to this interpreter) from the repository root,
    with the root first on sys.path so the checkout is analysed, never an installed copy."""
    tool = Path(sys.executable).parent / "lint-imports"
    assert tool.exists(), f"{tool} is missing: pip install '.[test]' installs import-linter"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [str(tool), "--no-cache", "--no-logo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
