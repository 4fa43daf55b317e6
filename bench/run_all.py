"""Run every benchmark, collect their JSON lines, write the results and the table.

    .venv/bin/python bench/run_all.py            # full sizes: bench/results.json + BENCHMARKS.md
    .venv/bin/python bench/run_all.py --quick    # tiny sizes: bench/results-quick.json only
    .venv/bin/python bench/run_all.py --only ingest,hook
    BENCH_FLEET_ARGS="--settle-timeout 300" .venv/bin/python bench/run_all.py --only fleet

Each benchmark runs as its own process (its progress goes to this stderr). PostgreSQL
(for ingest) comes from BENCH_DATABASE_URL or TEST_DATABASE_URL; if neither is set and
postgresql://postgres@127.0.0.1:5432/test answers, that is used. The table in
bench/BENCHMARKS.md between the `results` markers is replaced; the rest of the file (the
analysis) is left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine

BENCH = Path(__file__).resolve().parent
BENCHES = (
    "ingest",
    "hook",
    "hook_start",
    "roundtrip",
    "fleet",
    "storm",
    "console",
    "dynsec",
    "zero_setup",
    "receive_window",
)
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
START = "<!-- results:start -->"
END = "<!-- results:end -->"
TIMEOUT_S = {"fleet": 3600.0, "dynsec": 5400.0, "zero_setup": 3600.0}


def postgres_url() -> str | None:
    for name in ("BENCH_DATABASE_URL", "TEST_DATABASE_URL"):
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    try:
        import psycopg

        with psycopg.connect(DEFAULT_POSTGRES, connect_timeout=3):
            return DEFAULT_POSTGRES
    except Exception:
        return None


def git_state() -> str:
    """The commit measured, and how many tracked files outside bench/ differed from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=BENCH.parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=BENCH.parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    dirty = [line for line in status if not line[3:].startswith("bench/")]
    return f"{head}" + (f" (+{len(dirty)} modified files)" if dirty else "")


def run_one(name: str, quick: bool, env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """Run one benchmark; its result line (or an error record) and its wall time."""
    extra = shlex.split(env.get(f"BENCH_{name.upper()}_ARGS", ""))  # e.g. BENCH_FLEET_ARGS
    command = [sys.executable, str(BENCH / f"{name}.py"), *(["--quick"] if quick else []), *extra]
    print(f"==> {' '.join(command[1:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            timeout=TIMEOUT_S.get(name, 1800.0),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"bench": name, "error": "timed out"}, time.perf_counter() - started
    elapsed = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        return {"bench": name, "error": f"exit code {done.returncode}"}, elapsed
    try:
        return dict(json.loads(lines[-1])), elapsed
    except ValueError:
        return {"bench": name, "error": "no JSON result line"}, elapsed


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def table(report: dict[str, Any]) -> str:
    """The Markdown block that goes between the markers."""
    m = report["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    lines = [
        START,
        "",
        f"Run {report['started']} at commit {report.get('commit', '?')} "
        f"({'quick' if report['quick'] else 'full'} sizes); "
        f"`bench/run_all.py` took {report['total_s'] / 60:.1f} min.",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['ram_gb']} GB RAM, {m['os']}, "
        f"Python {m['python']}; {packages}.",
        "",
        "| benchmark | figure | baseline (same run) | ratio | target | pass | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in BENCHES:
        r = report["results"].get(name)
        if r is None:
            continue
        took = f"{report['durations_s'].get(name, 0):.0f} s"
        ran = report.get("ran_at", {}).get(name)
        if ran and ran != report["started"]:
            took += f" (run {ran})"  # a partial rerun kept this one from an earlier run
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} | | | | | {took} |")
            continue
        passed = {True: "yes", False: "**no**", None: "-"}[r.get("pass")]
        lines.append(
            f"| {name} | {_fmt(r['figure'])} {r['unit']} | {_fmt(r['baseline'])} "
            f"{r['baseline_unit']} | {_fmt(r['ratio'])} | {r['target']} | {passed} | {took} |"
        )
    lines += ["", END]
    return "\n".join(lines)


def write_markdown(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke)")
    parser.add_argument("--only", default=",".join(BENCHES))
    parser.add_argument("--out", type=Path, help="results JSON (default by size)")
    parser.add_argument("--markdown", type=Path, default=BENCH / "BENCHMARKS.md")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n in BENCHES]
    out = args.out or BENCH / ("results-quick.json" if args.quick else "results.json")
    env = dict(os.environ)
    url = postgres_url()
    if url and not env.get("BENCH_DATABASE_URL"):
        env["BENCH_DATABASE_URL"] = url
    report: dict[str, Any] = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "machine": machine(),
        "commit": git_state(),
        "postgres": bool(url),
        "rerun": "bench/run_all.py" + (" --quick" if args.quick else ""),
        "results": {},
        "durations_s": {},
    }
    started = time.perf_counter()
    report["ran_at"] = {}
    for name in names:
        line, elapsed = run_one(name, args.quick, env)
        report["results"][name] = line
        report["durations_s"][name] = round(elapsed, 1)
        report["ran_at"][name] = report["started"]
        print(f"<== {name}: {json.dumps(line)[:300]}", file=sys.stderr, flush=True)
    report["total_s"] = round(time.perf_counter() - started, 1)
    if not args.quick and args.out is None and out.exists() and set(names) != set(BENCHES):
        previous = json.loads(out.read_text())  # a partial rerun updates its benchmarks only
        previous["results"].update(report["results"])
        previous["durations_s"].update(report["durations_s"])
        previous.setdefault("ran_at", {}).update(report["ran_at"])
        previous["started"] = report["started"]
        previous["total_s"] = round(sum(previous["durations_s"].values()), 1)
        previous["machine"] = report["machine"]
        previous["commit"] = report["commit"]
        report = previous
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {out}", file=sys.stderr)
    if not args.quick:
        write_markdown(args.markdown, table(report))
        print(f"table written to {args.markdown}", file=sys.stderr)
    failed = [n for n, r in report["results"].items() if "error" in r]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
