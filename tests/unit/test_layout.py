"""The layout rules import-linter cannot express (its contracts are in pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("atp", "api", "adapters", "projections", "loadtests", "tests")
MAX_LINES = 600


def _python_files(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_module_imports_a_test_module() -> None:
    """Invariant: what tests and benchmarks share lives in tests/support (or beside the
    tests as a non-test module); no module imports a `tests/**/test_*.py` module, so a
    test file can be moved, renamed or deselected without breaking another."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _python_files(*PACKAGES)
        for name in _imported(path)
        if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_")
    ]
    assert offenders == []


def test_no_api_module_is_over_600_lines() -> None:
    """Invariant: every module of the service and HTTP layers fits in 600 lines (one
    thing per module; issue 11)."""
    long = {
        str(path.relative_to(ROOT)): n
        for path in _python_files("api")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
