"""Layering: the backend never imports the TUI; the simulator never touches the store; SQL
lives in the store (no SQLAlchemy or SQLModel in HTTP, MQTT, the console or the application
modules)."""

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


SQL_FREE = (
    "backend.http",
    "backend.mqtt",
    "console",
    "backend.service",
    "backend.device_service",
    "backend.provisioning",
    "backend.device_input",
    "backend.device_liveness",
    "backend.sweeps",
    "backend.outbox_marks",
    "backend.write_path",
    "backend.hook_store",
)
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


def test_the_sql_contract_covers_http_mqtt_the_console_and_the_application() -> None:
    """The import-linter contract that keeps SQL in the store names these packages and
    application modules."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
    sql = [c for c in contracts if set(c.get("forbidden_modules", ())) >= set(SQL_LIBRARIES)]
    assert len(sql) == 1 and set(sql[0]["source_modules"]) == set(SQL_FREE)


def _sources(name: str) -> list[Path]:
    """The source files of a package (all of them) or of a single module."""
    base = ROOT / name.replace(".", "/")
    module = base.with_suffix(".py")
    if module.is_file():
        return [module]
    assert base.is_dir(), name
    return sorted(base.rglob("*.py"))


def test_no_sql_library_is_imported_outside_the_store_layers() -> None:
    """The same rule, read from the source (also imports inside functions)."""
    found = {
        path.relative_to(ROOT).as_posix(): sorted(
            name for name in _imports(path) if name.split(".")[0] in SQL_LIBRARIES
        )
        for package in SQL_FREE
        for path in _sources(package)
    }
    assert len(found) > len(SQL_FREE)  # every package and module was read
    assert {path: names for path, names in found.items() if names} == {}


APPLICATION_LAYER = (
    "service",
    "device_service",
    "provisioning",
    "device_input",
    "device_liveness",
    "sweeps",
    "outbox_marks",
    "write_path",
)


def _backend_imports(name: str) -> set[str]:
    """The application-layer modules `backend/<name>.py` imports, counting imports inside
    functions and under TYPE_CHECKING (a cycle hidden there is still a cycle to a reader)."""
    found = _imports(ROOT / "backend" / f"{name}.py")
    return {
        other
        for other in APPLICATION_LAYER
        if f"backend.{other}" in found or any(m.startswith(f"backend.{other}.") for m in found)
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in `graph`, or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_application_layer_has_no_import_cycle() -> None:
    """Service, device facade, its parts and the write path import one way only (issue 20:
    `LockerService` and `DeviceService` used to import each other)."""
    graph = {name: _backend_imports(name) - {name} for name in APPLICATION_LAYER}
    assert graph["device_service"], "the facade imports its parts"
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
