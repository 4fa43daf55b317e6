"""Storm: 10,000 device CONNECT authentications through the hook, as after a broker restart.

Every device reconnects at once and Mosquitto + go-auth asks the hook for each CONNECT:
`POST /api/mosq/auth?mosq_secret=...` with `{"username", "password", "clientid"}`. This
sends exactly those calls, one per device with its valid credentials (BANKS provisioned
banks in a SQLite store; the hook's directory loaded from it as at start), from a separate
process (aiohttp client, keep-alive):

* sequential (concurrency 1): how Mosquitto + go-auth sends them -- Mosquitto's auth
  plugin calls block its single thread, so one check at a time. This is the figure.
* concurrent (CONCURRENCY): how a broker that asks in parallel (EMQX, amqtt) would.

Baseline: the same calls to a bare aiohttp handler (reads the body, answers 200) served
the same way. Target: all BANKS authentications in < 5 s; ratio = hook time / bare time.

    .venv/bin/python bench/storm.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.service import LockerService
from bench.common import bench_settings, emit, log, result, seed_banks, sqlite_url
from bench.hook import measured, start_servers
from console.logging_setup import configure

TARGET_S = 5.0
AUTH_PATH = "/api/mosq/auth"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as tmp:
        workdir = Path(tmp)
        settings = bench_settings(workdir, sqlite_url(workdir))
        configure(settings, to_file=False)
        service = LockerService(settings)
        try:
            await service.migrate()
            log(f"seeding {args.banks} provisioned banks")
            banks = await seed_banks(service, args.banks, compartments=4)
            servers = await start_servers(service)
            bodies = [
                {"username": b.uuid, "password": b.password, "clientid": b.uuid} for b in banks
            ]
            runs: dict[str, dict[str, Any]] = {}
            for concurrency in (1, args.concurrency):
                for which in ("bare", "hook"):
                    out = await measured(
                        {
                            "url": servers.url(which, AUTH_PATH),
                            "mode": "closed",
                            "concurrency": concurrency,
                            "requests": len(bodies),
                            "warmup": 0,
                        },
                        bodies,
                    )
                    key = f"{which}_c{concurrency}"
                    runs[key] = out
                    log(
                        f"{which}, concurrency {concurrency}: {len(bodies)} auths in "
                        f"{out['elapsed_s']:.2f} s ({out['rate']:.0f}/s), "
                        f"p99 {out['latency']['p99_ms']} ms"
                    )
            await servers.hook.stop()
            await servers.bare.stop()
        finally:
            service.close()
    hook_s = float(runs["hook_c1"]["elapsed_s"])
    bare_s = float(runs["bare_c1"]["elapsed_s"])
    conc = args.concurrency
    return result(
        "storm",
        figure=hook_s,
        unit=f"s for {args.banks} auths (sequential, as Mosquitto + go-auth)",
        baseline=bare_s,
        baseline_unit="s for the same calls to a bare aiohttp handler",
        ratio=hook_s / bare_s,
        target=f"< {TARGET_S} s for {args.banks} (ratio = hook time / bare time)",
        passed=hook_s < TARGET_S,
        params={"banks": args.banks, "concurrency": conc, "quick": args.quick},
        concurrent_s=runs[f"hook_c{conc}"]["elapsed_s"],
        concurrent_bare_s=runs[f"bare_c{conc}"]["elapsed_s"],
        concurrent_pass=float(runs[f"hook_c{conc}"]["elapsed_s"]) < TARGET_S,
        server_cpu_us_per_auth=runs["hook_c1"]["server_cpu_us_per_req"],
        server_cpu_us_per_bare=runs["bare_c1"]["server_cpu_us_per_req"],
        runs=runs,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banks", type=int, default=10_000, help="devices reconnecting")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="tiny size (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.banks = 200
    return args


def main() -> None:
    emit(asyncio.run(main_async(parse_args())))


if __name__ == "__main__":
    main()
