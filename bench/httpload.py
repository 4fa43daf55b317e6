"""An HTTP load generator in a process of its own (aiohttp client), and the parent's side.

    python bench/httpload.py CONFIG.json

CONFIG: `{"url", "bodies_file", "mode": "closed"|"open", "concurrency", "requests",
"warmup", "rate", "duration"}`. `bodies_file` holds a JSON list of request bodies (objects),
sent in turn as `application/json` POSTs over keep-alive connections.

* closed: `concurrency` workers send `requests` requests back to back (after `warmup`
  unmeasured ones); reports requests/s and latencies.
* open: requests start on a fixed schedule, `rate` per second for `duration` seconds,
  whatever the answers do (each on its own task, at most `concurrency` connections);
  latency is from the moment a request is handed to the client to its full answer.

Prints one JSON line: count, errors, statuses, elapsed_s, rate, latency summary (ms), the
client's CPU seconds, and how late the open-loop schedule ran (client saturation).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench.stats import cpu_seconds, summary_ms

HEADERS = {"Content-Type": "application/json"}


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, statuses: Counter[int]
) -> bool:
    try:
        async with session.post(url, data=body, headers=HEADERS) as response:
            await response.read()
            statuses[response.status] += 1
            return True
    except (aiohttp.ClientError, OSError) as exc:
        statuses[-1] += 1
        print(f"request failed: {exc!r}", file=sys.stderr)
        return False


async def closed_loop(config: dict[str, Any], bodies: list[bytes]) -> dict[str, Any]:
    url = config["url"]
    concurrency = int(config["concurrency"])
    total = int(config["requests"])
    warmup = int(config.get("warmup", 0))
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        warm: Counter[int] = Counter()
        for i in range(warmup):
            await _post(session, url, bodies[i % len(bodies)], warm)
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < total:
                index = next_index
                next_index += 1
                started = time.perf_counter()
                await _post(session, url, bodies[index % len(bodies)], statuses)
                latencies.append(time.perf_counter() - started)

        cpu_before = cpu_seconds()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds() - cpu_before
    return {
        "mode": "closed",
        "count": len(latencies),
        "errors": statuses.get(-1, 0),
        "statuses": {str(k): v for k, v in statuses.items()},
        "elapsed_s": round(elapsed, 4),
        "rate": round(len(latencies) / elapsed, 1),
        "latency": summary_ms(latencies),
        "client_cpu_s": round(cpu, 3),
    }


async def open_loop(config: dict[str, Any], bodies: list[bytes]) -> dict[str, Any]:
    url = config["url"]
    rate = float(config["rate"])
    count = int(rate * float(config["duration"]))
    warmup = int(config.get("warmup", 0))
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    lateness: list[float] = []
    connector = aiohttp.TCPConnector(limit=int(config["concurrency"]), force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        warm: Counter[int] = Counter()
        for i in range(warmup):
            await _post(session, url, bodies[i % len(bodies)], warm)

        async def one(index: int) -> None:
            started = time.perf_counter()
            await _post(session, url, bodies[index % len(bodies)], statuses)
            latencies.append(time.perf_counter() - started)

        tasks: list[asyncio.Task[None]] = []
        cpu_before = cpu_seconds()
        begin = time.perf_counter() + 0.01
        for index in range(count):
            due = begin + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lateness.append(max(0.0, time.perf_counter() - due))
            tasks.append(asyncio.create_task(one(index)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - begin
        cpu = cpu_seconds() - cpu_before
    return {
        "mode": "open",
        "count": len(latencies),
        "errors": statuses.get(-1, 0),
        "statuses": {str(k): v for k, v in statuses.items()},
        "elapsed_s": round(elapsed, 4),
        "rate": round(len(latencies) / elapsed, 1),
        "target_rate": rate,
        "latency": summary_ms(latencies),
        "schedule_lateness": summary_ms(lateness),
        "client_cpu_s": round(cpu, 3),
    }


def run_load(
    config: dict[str, Any], bodies: list[dict[str, Any]], timeout: float
) -> dict[str, Any]:
    """Run the load generator as a subprocess; returns its JSON result (raises on failure)."""
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        bodies_file = Path(tmp) / "bodies.json"
        bodies_file.write_text(json.dumps(bodies))
        config_file = Path(tmp) / "config.json"
        config_file.write_text(json.dumps({**config, "bodies_file": str(bodies_file)}))
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), str(config_file)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return dict(json.loads(lines[-1]))


async def run_load_async(
    config: dict[str, Any], bodies: list[dict[str, Any]], timeout: float
) -> dict[str, Any]:
    """`run_load` without blocking the caller's event loop (the server runs on it)."""
    return await asyncio.to_thread(run_load, config, bodies, timeout)


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    bodies = [json.dumps(b).encode() for b in json.loads(Path(config["bodies_file"]).read_text())]
    runner = closed_loop if config["mode"] == "closed" else open_loop
    print(json.dumps(asyncio.run(runner(config, bodies))), flush=True)


if __name__ == "__main__":
    main()
