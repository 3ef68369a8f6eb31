"""The code's own imports point one way: the Lambda package at the bottom, then reading template.yaml
(infra), the model, the local AWS (devstack/aws), the model's tools, the commands run on the local stack
(devstack/workloads); the tools for a real account (cli/, tools/) import neither devstack nor each other's
folders, and no module imports another that imports it back, directly or through others."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The import roots (pyproject.toml's pytest pythonpath), each a folder whose modules import by flat name.
ROOTS = (REPO, REPO / "functions", REPO / "model" / "serving", REPO / "model" / "training", REPO / "model" / "tools")
CODE = ("functions", "infra", "model", "devstack", "cli", "tools")

# Each folder and what it may import besides itself.
MAY_IMPORT: dict[str, set[str]] = {
    "functions": set(),
    "infra": set(),
    "model": {"functions"},  # model/serving and model/training: the answer contract
    "devstack/aws": {"functions", "infra"},
    "model/tools": {"functions", "infra", "model", "devstack/aws"},
    "devstack/workloads": {"functions", "infra", "model", "devstack/aws", "model/tools", "cli"},
    "cli": {"functions", "infra"},
    "tools": {"functions", "infra"},
}


def folder(path: Path) -> str:
    """The folder a module belongs to, as MAY_IMPORT names them (model/serving and model/training are "model")."""
    parts = path.relative_to(REPO).parts
    if (len(parts) > 2 and parts[0] == "devstack") or parts[:2] == ("model", "tools"):
        return "/".join(parts[:2])
    return parts[0]


def modules() -> dict[str, Path]:
    """Every module of the project's code by the name it is imported as."""
    found: dict[str, Path] = {}
    for top in CODE:
        for path in sorted((REPO / top).rglob("*.py")):
            root = max((r for r in ROOTS if path.is_relative_to(r)), key=lambda r: len(r.parts))
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The project's modules a file imports, at any depth of its code (function-level imports count)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                yield name


def graph() -> tuple[dict[str, Path], dict[str, set[str]]]:
    known = modules()
    return known, {name: set(imported(path, known)) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_each_folder_imports_only_the_folders_below_it() -> None:
    known, edges = graph()
    wrong = sorted(
        f"{known[source].relative_to(REPO)} imports {target} ({folder(known[target])})"
        for source, targets in edges.items()
        for target in targets
        if folder(known[target]) != folder(known[source])
        and folder(known[target]) not in MAY_IMPORT[folder(known[source])]
    )
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_one_that_imports_it_back() -> None:
    _, edges = graph()
    assert cycles(edges) == []


def test_the_prerequisites_check_runs_on_the_machines_python_alone() -> None:
    """make runs it before any virtual environment exists: the standard library only."""
    tree = ast.parse((REPO / "devstack" / "prerequisites.py").read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {name.split(".")[0] for name in names} <= set(sys.stdlib_module_names) | {"__future__"}


def test_the_checks_find_a_wrong_direction_and_a_cycle() -> None:
    """The rules above can fail: a cycle of three is found, and cli importing devstack is a wrong direction."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "devstack/aws" not in MAY_IMPORT[folder(REPO / "cli" / "query.py")]
    assert folder(REPO / "devstack" / "aws" / "stack.py") == "devstack/aws"
    assert folder(REPO / "model" / "tools" / "benchmark.py") == "model/tools"
    assert folder(REPO / "model" / "serving" / "inference.py") == "model"
