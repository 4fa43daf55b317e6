"""Hook: auth-hook ACL checks per second over a bare aiohttp handler, same server setup.

The server side runs in this process: the backend's real aiohttp app (`build_app`: the
go-auth hook, its middleware, the credential follower) over a SQLite store with BANKS
provisioned banks, and beside it a bare app whose one handler reads the body and answers
200 `{"ok": true}`, served the same way (`HttpServer`, same access logger, same loop,
logging configured as `--headless` does). The load comes from a separate process (an
aiohttp client, keep-alive, `bench/httpload.py`).

Bodies are go-auth's JSON for the checks a running fleet causes, all allowed: a device
publishing its heartbeat (acc 2), the backend receiving it (acc 1), a device subscribing to
its command topic (acc 4) and receiving a command (acc 1), cycling over the banks. Each
URL carries `?mosq_secret=...`.

1. Throughput: CONCURRENCY workers, REQUESTS requests per run, bare and hook alternately,
   ROUNDS times; the best run of each counts (noise only ever slows a run down). The
   server's CPU time per request is reported too: it does not depend on the client.
2. Latency: an open-loop schedule at RATE req/s for DURATION s against each; p50/p99.

Target: hook/bare >= 0.8, and the hook's p99 < 2 ms at 1,000 req/s.

    .venv/bin/python bench/hook.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from backend.domain.topics import command_topic, device_topic
from backend.gc_tuning import tune_gc
from backend.http.credentials import load_directory
from backend.http.server import HttpServer, build_app
from backend.service import LockerService
from bench.common import (
    SeededBank,
    bench_settings,
    emit,
    log,
    result,
    seed_banks,
    sqlite_url,
)
from bench.httpload import run_load_async
from bench.stats import cpu_seconds
from console.logging_setup import configure

TARGET_RATIO = 0.8
TARGET_P99_MS = 2.0
TARGET_CPU = 1.25  # server CPU per check over the bare handler's (DESIGN 15.2)
ACL_PATH = "/api/mosq/acl"


def bare_app() -> web.Application:
    """The baseline: one handler that reads the body and says yes."""

    async def bare(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"ok": true}', content_type="application/json")

    app = web.Application()
    app.router.add_post(ACL_PATH, bare)
    app.router.add_post("/api/mosq/auth", bare)
    return app


def acl_bodies(banks: list[SeededBank], backend_user: str, backend_id: str) -> list[dict[str, Any]]:
    """go-auth's ACL bodies for the checks a running fleet causes (all allowed)."""
    bodies: list[dict[str, Any]] = []
    for bank in banks:
        u = bank.uuid
        state = device_topic(u, "state")
        bodies += [
            {"username": u, "clientid": u, "topic": state, "acc": 2},
            {"username": backend_user, "clientid": backend_id, "topic": state, "acc": 1},
            {"username": u, "clientid": u, "topic": command_topic(u), "acc": 4},
            {"username": u, "clientid": u, "topic": command_topic(u), "acc": 1},
        ]
    return bodies


class Servers:
    """The hook app and the bare app, both served by HttpServer on loopback."""

    def __init__(self, hook: HttpServer, bare: HttpServer, secret: str) -> None:
        self.hook = hook
        self.bare = bare
        self.secret = secret

    def url(self, which: str, path: str = ACL_PATH) -> str:
        server = self.hook if which == "hook" else self.bare
        return f"{server.url}{path}?mosq_secret={self.secret}"


async def start_servers(service: LockerService) -> Servers:
    settings = service.settings
    directory = await load_directory(service, settings)
    hook = HttpServer(build_app(service, directory, settings))
    await hook.start("127.0.0.1", 0)
    bare = HttpServer(bare_app())
    await bare.start("127.0.0.1", 0)
    tune_gc()  # as the --headless process does once started (both servers live here)
    return Servers(hook, bare, settings.secret("mosq_secret"))


async def measured(config: dict[str, Any], bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """One load-generator run, with this (server) process's CPU time per request."""
    before = cpu_seconds()
    out = await run_load_async(config, bodies, timeout=600)
    used = cpu_seconds() - before
    handled = out["count"] + int(config.get("warmup", 0))
    out["server_cpu_us_per_req"] = round(used / max(1, handled) * 1e6, 1)
    if out["errors"] or set(out["statuses"]) != {"200"}:
        raise RuntimeError(f"unexpected answers: {out['statuses']}")
    return out


async def profiled(
    args: argparse.Namespace, servers: Servers, which: str, bodies: list[dict[str, Any]]
) -> None:
    """One more closed-loop run of `which` with py-spy recording this (server) process
    (`--threads -f raw`, non-blocking), into `{args.spy}/{which}.txt`; not counted."""
    out_dir = Path(args.spy)  # made by parse_args
    spy = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(os.getpid()),
        "--rate", "200", "--format", "raw", "--threads", "--nonblocking",
        "--output", str(out_dir / f"{which}.txt"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(1.0)  # py-spy attaches
    try:
        out = await measured(
            {"url": servers.url(which), "mode": "closed", "concurrency": args.concurrency,
             "requests": args.requests, "warmup": 0},
            bodies,
        )  # fmt: skip
    finally:
        spy.send_signal(signal.SIGINT)
        await spy.wait()
    log(f"profiled {which}: server {out['server_cpu_us_per_req']} us CPU/req (py-spy attached)")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-hook-") as tmp:
        workdir = Path(tmp)
        settings = bench_settings(workdir, sqlite_url(workdir))
        configure(settings, to_file=False)
        service = LockerService(settings)
        try:
            await service.migrate()
            log(f"seeding {args.banks} provisioned banks")
            banks = await seed_banks(service, args.banks, compartments=4)
            servers = await start_servers(service)
            bodies = acl_bodies(banks, settings.mqtt_user, settings.mqtt_client_id)
            runs: dict[str, list[dict[str, Any]]] = {"bare": [], "hook": []}
            for round_ in range(args.rounds):
                for which in ("bare", "hook"):
                    out = await measured(
                        {
                            "url": servers.url(which),
                            "mode": "closed",
                            "concurrency": args.concurrency,
                            "requests": args.requests,
                            "warmup": min(500, args.requests),
                        },
                        bodies,
                    )
                    runs[which].append(out)
                    log(
                        f"round {round_ + 1} {which}: {out['rate']:.0f} req/s, "
                        f"p99 {out['latency']['p99_ms']} ms, "
                        f"server {out['server_cpu_us_per_req']} us CPU/req, "
                        f"client CPU {out['client_cpu_s']:.1f} s in {out['elapsed_s']:.1f} s"
                    )
            if args.spy:
                for which in ("bare", "hook"):
                    await profiled(args, servers, which, bodies)
            fixed: dict[str, dict[str, Any]] = {}
            for which in ("bare", "hook"):
                fixed[which] = await measured(
                    {
                        "url": servers.url(which),
                        "mode": "open",
                        "concurrency": 32,
                        "rate": args.rate,
                        "duration": args.duration,
                        "warmup": 200,
                    },
                    bodies,
                )
                log(f"{which} at {args.rate:.0f} req/s: {fixed[which]['latency']}")
            await servers.hook.stop()
            await servers.bare.stop()
        finally:
            service.close()
    best = {w: max(runs[w], key=lambda r: float(r["rate"])) for w in runs}
    hook_rate, bare_rate = float(best["hook"]["rate"]), float(best["bare"]["rate"])
    ratio = hook_rate / bare_rate
    p99 = float(fixed["hook"]["latency"]["p99_ms"])
    cpu_hook = min(float(r["server_cpu_us_per_req"]) for r in runs["hook"])
    cpu_bare = min(float(r["server_cpu_us_per_req"]) for r in runs["bare"])
    return result(
        "hook",
        figure=hook_rate,
        unit="ACL checks/s",
        baseline=bare_rate,
        baseline_unit="requests/s (bare aiohttp handler)",
        ratio=ratio,
        target=(
            f"ratio >= {TARGET_RATIO}; server CPU per check <= {TARGET_CPU}x bare; "
            f"p99 < {TARGET_P99_MS} ms at {args.rate:.0f} req/s"
        ),
        passed=ratio >= TARGET_RATIO and p99 < TARGET_P99_MS and cpu_hook <= TARGET_CPU * cpu_bare,
        params={
            "banks": args.banks,
            "concurrency": args.concurrency,
            "requests": args.requests,
            "rounds": args.rounds,
            "rate": args.rate,
            "duration_s": args.duration,
            "quick": args.quick,
        },
        p99_ms_at_rate=p99,
        p50_ms_at_rate=fixed["hook"]["latency"]["p50_ms"],
        bare_p99_ms_at_rate=fixed["bare"]["latency"]["p99_ms"],
        bare_p50_ms_at_rate=fixed["bare"]["latency"]["p50_ms"],
        server_cpu_us_per_req={"hook": cpu_hook, "bare": cpu_bare},
        cpu_ratio=round(cpu_bare / cpu_hook, 3),
        closed_runs=runs,
        fixed_rate=fixed,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banks", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20_000, help="per closed-loop run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop requests/s")
    parser.add_argument("--duration", type=float, default=10.0, help="open-loop seconds")
    parser.add_argument("--py-spy", dest="spy", help="record one more run of each with py-spy")
    parser.add_argument("--quick", action="store_true", help="tiny size (smoke test)")
    args = parser.parse_args(argv)
    if args.spy:
        Path(args.spy).mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.banks, args.requests, args.rounds, args.duration = 20, 300, 1, 0.5
    return args


def main() -> None:
    emit(asyncio.run(main_async(parse_args())))


if __name__ == "__main__":
    main()
