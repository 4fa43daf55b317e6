"""The type checker: mypy over the packages named in `[tool.mypy]` of pyproject.toml
(strict on `backend.domain` and `backend.store`), as the README's test command runs it.

Every `# type: ignore` names its error code and says why, in the checked packages and in
`tests/` (checked here: mypy checks only the code)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
# `# type: ignore[code]  # why`: the code, then a comment that gives the reason
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")


def test_mypy_is_clean() -> None:
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent))
    assert mypy, "mypy is part of the test extras"
    out = subprocess.run([mypy], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout


def test_the_checked_packages_are_the_product_and_the_benchmarks() -> None:
    assert set(CONFIG["files"]) >= {"backend", "console", "widgets", "simulator", "bench"}
    strict = [o for o in CONFIG["overrides"] if o.get("disallow_untyped_defs")]
    modules = {m for o in strict for m in o["module"]}
    assert {"backend.domain.*", "backend.store.*"} <= modules


def test_every_type_ignore_names_its_code_and_reason() -> None:
    bare: list[str] = []
    for package in [*CONFIG["files"], "tests"]:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations/versions" in path.as_posix():
                continue
            if path.name == "test_type_check.py":
                continue  # this file speaks of the comment
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                found = IGNORE.search(line)
                if found is None:
                    continue
                reason = found["rest"].strip().lstrip("#").strip()
                if not found["codes"] or not reason:
                    bare.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bare, "a `# type: ignore` without [code] or reason:\n" + "\n".join(bare)
