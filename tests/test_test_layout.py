"""Test modules share code through `tests/helpers/` only: no test module imports another test module
or conftest, and the helpers define nothing pytest would collect as a test.

Read from the source with `ast` (every import, also those inside functions).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_test_modules(tree: ast.AST) -> set[str]:
    """Names of tests/ modules (top level under tests/) that `tree` imports."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            dotted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            dotted = [module] + [f"{module}.{alias.name}".lstrip(".") for alias in node.names]
            if node.level == 0 and not module.startswith("tests"):
                continue
        else:
            continue
        for name in dotted:
            parts = name.split(".")
            if parts[0] == "tests":
                parts = parts[1:]
            if parts and parts[0]:
                found.add(parts[0])
    return {name for name in found if name == "conftest" or name.startswith("test_")}


def test_tests_share_code_only_through_helpers():
    crossing = {
        path.name: sorted(_imported_test_modules(ast.parse(path.read_text())))
        for path in sorted(TESTS.glob("test_*.py"))
    }
    assert {name: modules for name, modules in crossing.items() if modules} == {}, (
        "move the shared code to tests/helpers/"
    )
    collectable = [
        f"{path.name}: {node.name}"
        for path in sorted((TESTS / "helpers").glob("*.py"))
        for node in ast.parse(path.read_text()).body
        if (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"))
        or (isinstance(node, ast.ClassDef) and node.name.startswith("Test"))
    ]
    assert collectable == [], "helpers must not define names pytest collects as tests"
