"""The package's layering, read from its source: no import cycles, no module reaching into another's
private names, Ray only in the Ray executor, no module too long to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "pixart_batch"
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()
MAX_FUNCTION_LINES = 80
FUNCTION_ROOTS = ("pixart_batch", "tests", "jobs", "benchmarks")
TREES = {
    path: ast.parse(path.read_text(encoding="utf-8"), str(path))
    for root in FUNCTION_ROOTS
    for path in sorted((PACKAGE.parent / root).rglob("*.py"))
}
"""Every source file parsed once, when this module is collected: before any test of the session has
started a thread. CPython 3.11 keeps ``ast.parse``'s recursion counter per interpreter, not per thread,
so a parse racing one in a thread an earlier test left running (a compile worker, say) fails with
``SystemError: AST constructor recursion depth mismatch``."""


def _imports(name: str, path: Path) -> list[tuple[str, str]]:
    """``(module, imported name)`` of every import that runs (``if TYPE_CHECKING:`` blocks left out)."""
    tree = TREES[path]
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = (
                ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                if node.level
                else node.module or ""
            )
            found += [(base, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
    return found


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = set()
        for module, imported in _imports(name, path):
            full = f"{module}.{imported}"
            target = full if full in MODULES else module
            if target in MODULES and target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def test_no_import_cycles():
    edges, state, cycles, stack = _edges(), {}, [], []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []


def test_no_module_imports_another_modules_private_names():
    private = [
        f"{name} imports {imported} from {module}"
        for name, path in MODULES.items()
        for module, imported in _imports(name, path)
        if module.startswith("pixart_batch")
        and module != name
        and imported.startswith("_")
        and not imported.startswith("__")
    ]
    assert private == []


def test_only_the_ray_executor_imports_ray():
    users = sorted(
        name
        for name, path in MODULES.items()
        if any(module == "ray" or module.startswith("ray.") for module, _ in _imports(name, path))
    )
    # the Ray executor's modules: the executor, its setup (init_ray, Ray Data's context), its monitor actor
    assert users == [
        "pixart_batch.executors.ray",
        "pixart_batch.executors.ray_monitor",
        "pixart_batch.executors.ray_setup",
    ]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_too_long(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines"


def _long_functions(root: Path) -> list[str]:
    """``path:line name (N lines)`` of every function or method under ``root`` longer than
    MAX_FUNCTION_LINES, counted from its ``def`` to its last line."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(TREES[path]):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    where = path.relative_to(PACKAGE.parent)
                    found.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return found


@pytest.mark.parametrize("root", FUNCTION_ROOTS)
def test_no_function_is_too_long(root):
    """No function over MAX_FUNCTION_LINES lines (one screen) in the package, its tests, jobs and
    benchmarks: a longer one is split into named steps."""
    long = _long_functions(PACKAGE.parent / root)
    assert long == [], f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)
