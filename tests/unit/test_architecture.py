"""Layering: the backend never imports the TUI; the simulator never touches the store; SQL
lives in the store (no SQLAlchemy or SQLModel in HTTP, MQTT or the console)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import backend.service",
        "import backend.device_service",
        "import console.cli",
        "import console.admin",
    ],
)
def test_backend_and_cli_do_not_import_textual(statement: str) -> None:
    modules = imported_after(statement)
    assert "backend" in modules or "console" in modules
    assert not {m for m in modules if m == "textual" or m.startswith("textual.")}
    assert not {m for m in modules if m.startswith("widgets")}


def test_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is part of the test extras"
    out = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: " in out.stdout and " broken" in out.stdout


SQL_FREE = ("backend.http", "backend.mqtt", "console")
SQL_LIBRARIES = ("sqlalchemy", "sqlmodel")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_sql_contract_covers_http_mqtt_and_the_console() -> None:
    """The import-linter contract that keeps SQL in the store names these packages."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
    sql = [c for c in contracts if set(c.get("forbidden_modules", ())) >= set(SQL_LIBRARIES)]
    assert len(sql) == 1 and set(sql[0]["source_modules"]) == set(SQL_FREE)


def test_no_sql_library_is_imported_outside_the_store_layers() -> None:
    """The same rule, read from the source (also imports inside functions)."""
    found = {
        path.relative_to(ROOT).as_posix(): sorted(
            name for name in _imports(path) if name.split(".")[0] in SQL_LIBRARIES
        )
        for package in SQL_FREE
        for path in (ROOT / package.replace(".", "/")).rglob("*.py")
    }
    assert {path: names for path, names in found.items() if names} == {}
