"""Every benchmark runs at its `--quick` size and prints one JSON result line.

The benchmarks run at once as subprocesses (so the whole module takes about as long as the
slowest); each test then checks its benchmark's exit code and line. Nothing here judges
timings or targets: that is what `bench/run_all.py` and BENCHMARKS.md are for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.mosquitto import mosquitto_available

REPO = Path(__file__).resolve().parents[2]
BENCHES = (
    "ingest",
    "hook",
    "roundtrip",
    "fleet",
    "storm",
    "console",
    "dynsec",
    "zero_setup",
    "receive_window",
)
KEYS = {"bench", "figure", "unit", "baseline", "ratio", "target", "pass", "params"}
TIMEOUT_S = 110.0

pytestmark = [
    pytest.mark.mosquitto,
    pytest.mark.slow,
    pytest.mark.skipif(not mosquitto_available(), reason="needs the mosquitto binary"),
]


@dataclass(frozen=True)
class Finished:
    returncode: int | None
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Finished]]:
    logs = tmp_path_factory.mktemp("bench-smoke")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    running: dict[str, tuple[subprocess.Popen[bytes], Path, Path]] = {}
    for name in BENCHES:
        out, err = logs / f"{name}.out", logs / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, str(REPO / "bench" / f"{name}.py"), "--quick"],
                cwd=REPO,
                env=env,
                stdout=stdout,
                stderr=stderr,
            )
        running[name] = (process, out, err)
    deadline = time.monotonic() + TIMEOUT_S
    results: dict[str, Finished] = {}
    try:
        for name, (process, out, err) in running.items():
            try:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                results[name] = Finished(None, out.read_text(), err.read_text())
                continue
            results[name] = Finished(process.returncode, out.read_text(), err.read_text())
        yield results
    finally:
        for process, _out, _err in running.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.timeout(TIMEOUT_S + 30)
@pytest.mark.parametrize("name", BENCHES)
def test_benchmark_prints_one_result_line(name: str, finished: dict[str, Finished]) -> None:
    run = finished[name]
    tail = run.stderr[-3000:]
    assert run.returncode is not None, f"{name} did not finish in time:\n{tail}"
    assert run.returncode == 0, f"{name} exited {run.returncode}:\n{tail}"
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"{name} printed {len(lines)} lines on stdout: {lines[:3]}"
    line = json.loads(lines[0])
    assert set(line) >= KEYS, f"{name} result lacks {KEYS - set(line)}"
    assert line["bench"] == name
    assert line["params"]["quick"] is True
    assert isinstance(line["pass"], bool)
