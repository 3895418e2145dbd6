"""The package layout of docs/architecture.md holds: imports flow down the layers, no cycles, small files.

Read off the source with `ast` (no imports needed), plus fresh interpreters for
what only running can show: every module imports on its own, and the CLI's
--help loads no server or Kafka library.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "usage_metering"
MAX_LINES = 500
MAX_FUNCTION_LINES = 50

LIBRARY = {"metering", "access", "client", "hooks", "forwarding", "interface"}
# What each part may import (besides itself); docs/architecture.md's package table.
BELOW_LIBRARY = {"utilities", "schemas", "producer", "store", "ingest", "kafka", "reports"}
ALLOWED: dict[str, set[str]] = {
    "utilities": set(),
    "schemas": {"utilities"},
    "producer": {"utilities", "schemas"},
    "store": {"utilities", "schemas"},
    "ingest": {"utilities", "schemas", "store"},
    "kafka": {"utilities", "schemas", "store", "ingest"},
    "reports": {"utilities", "schemas", "store"},
    "library": BELOW_LIBRARY | {"library"},
    "api": BELOW_LIBRARY | {"library"},
    "node": BELOW_LIBRARY | {"library", "api"},
    "cli": BELOW_LIBRARY | {"library", "node"},
    "entry": BELOW_LIBRARY | {"library", "cli"},  # __main__
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def part_of(module: str) -> str:
    """The layer a module belongs to: its subpackage, 'library' for the root modules."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "utilities":
        return "utilities"
    if len(parts) == 1 or parts[1] in LIBRARY:
        return "library"
    if parts[1] == "__main__":
        return "entry"
    if parts[1] in ALLOWED:
        return parts[1]
    raise AssertionError(f"{module} belongs to no layer of docs/architecture.md")


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_modules(module: str, path: Path, *, top_level_only: bool) -> set[str]:
    """The usage_metering modules `module` imports (resolved relative imports; `from p import m` gives p.m)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking_block(child):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names if alias.name.startswith("usage_metering"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if base.startswith("usage_metering"):
                    for alias in child.names:
                        candidate = f"{base}.{alias.name}"
                        found.add(candidate if candidate in MODULES else base)
            nested_scope = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if not (top_level_only and nested_scope):
                visit(child, top and not nested_scope)

    visit(tree, True)
    found.discard(module)
    return found


@pytest.mark.unit
def test_every_module_belongs_to_a_layer_and_imports_only_downward() -> None:
    wrong = []
    for module, path in MODULES.items():
        part = part_of(module)
        for target in imported_modules(module, path, top_level_only=False):
            target_part = part_of(target)
            if target_part != part and target_part not in ALLOWED[part]:
                wrong.append(f"{module} ({part}) imports {target} ({target_part})")
    assert wrong == []


@pytest.mark.unit
def test_no_import_cycles() -> None:
    graph = {m: imported_modules(m, p, top_level_only=True) & MODULES.keys() for m, p in MODULES.items()}
    # A package's __init__ re-exporting its own submodules is not a cycle of concern.
    graph = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def walk(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                walk(target, stack + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert cycles == []


@pytest.mark.unit
def test_no_source_file_over_the_limit() -> None:
    long = {module: n for module, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.unit
def test_no_function_over_the_limit() -> None:
    long = {}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{module}.{node.name}:{node.lineno}"] = length
    assert long == {}


def _import_alone(module: str) -> tuple[str, str]:
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=120)
    return module, result.stderr.strip().splitlines()[-1] if result.returncode else ""


@pytest.mark.integration
def test_every_module_imports_on_its_own_in_a_fresh_interpreter() -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = {module: error for module, error in pool.map(_import_alone, sorted(MODULES)) if error}
    assert failures == {}


@pytest.mark.integration
@pytest.mark.parametrize("heavy", ["starlette", "uvicorn", "prometheus_client", "kafka"])
def test_cli_help_loads_no_server_or_kafka_library(heavy: str) -> None:
    code = (
        "import sys\nfrom usage_metering.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] == {heavy!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=120, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
