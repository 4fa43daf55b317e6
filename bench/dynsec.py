"""dynsec provisioning: 10,000 banks provisioned into Mosquitto's dynamic-security plugin.

AUTH_MODE=dynsec (issue 17, DESIGN 5.1): each provisioning creates a role and a client in
the plugin before the reply goes out, and the plugin rewrites its whole JSON file on every
change. This provisions BANKS banks one after another through the real path (the
backend with its embedded Mosquitto; each device connects as the provisioning account
with its own client id, subscribes to its reply topic, publishes its token, waits for the
reply) and reports, per window of banks:

* the provisioning time (register -> reply received), p50/p99;
* the part of it spent administering the plugin (`provisioned`: createRole + createClient,
  each answered after the plugin saved its file);
* the plugin's file size.

Figure: p50 provisioning time over the last window; baseline: the same over the first
window (an almost empty file); ratio = last / first (how much the file rewrite costs at
this fleet size).

    .venv/bin/python bench/dynsec.py [--banks N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uuid as uuid_mod

from backend.broker.mosquitto import MosquittoChild
from backend.config import load_settings
from backend.dynsec.directory import DynsecDirectory
from backend.runner import BackendServices
from bench.common import emit, log, result
from console.logging_setup import configure
from tests.support.dynsec import provision
from tests.support.mosquitto import free_port

CREATE_BATCH = 50


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-dynsec-") as tmp:
        workdir = Path(tmp)
        settings = load_settings(
            locker_data_dir=workdir,
            locker_broker="mosquitto",
            mqtt_port=free_port(),
            http_port=free_port(),
            _env_file=None,
        )
        configure(settings, to_file=False)
        plugin_file = workdir / "mosquitto" / "dynamic-security.json"
        async with BackendServices(settings) as services:
            async with asyncio.timeout(10):
                await services.runtime.state.wait_for(True)
            accounts = services.service.accounts
            plugin_times: list[float] = []
            original = accounts.provisioned

            async def timed(bank_uuid: str, client_id: str, password: str) -> None:
                started = time.perf_counter()
                await original(bank_uuid, client_id, password)
                plugin_times.append(time.perf_counter() - started)

            accounts.provisioned = timed  # type: ignore[method-assign]
            log(f"creating {args.banks} banks")
            tokens: list[str] = []
            for start in range(0, args.banks, CREATE_BATCH):
                batch = range(start, min(args.banks, start + CREATE_BATCH))
                created = await asyncio.gather(
                    *(services.service.create_bank(f"b{i}", "bench", 2) for i in batch)
                )
                tokens += [c.token for c in created]
            log(f"warming up with {args.warmup} provisionings (not counted)")
            warm = [
                (await services.service.create_bank(f"w{i}", "bench", 2)).token
                for i in range(args.warmup)
            ]
            for i, token in enumerate(warm):
                await provision(settings, token, f"warmup-{i:04x}", timeout=60)
            plugin_times.clear()
            log("provisioning, one bank after another")
            times: list[float] = []
            windows: list[dict[str, Any]] = []
            began = time.perf_counter()
            for i, token in enumerate(tokens):
                started = time.perf_counter()
                reply = await provision(settings, token, f"locker-client-{i:08x}", timeout=60)
                times.append(time.perf_counter() - started)
                if reply["status"] != "success":
                    raise RuntimeError(f"provisioning {i} failed: {reply}")
                if (i + 1) % args.window == 0 or i + 1 == len(tokens):
                    lo = len(windows) * args.window
                    window = times[lo:]
                    plugin = plugin_times[lo : i + 1]
                    windows.append(
                        {
                            "banks": i + 1,
                            "p50_ms": round(1000 * statistics.median(window), 1),
                            "p99_ms": round(1000 * _pct(window, 0.99), 1),
                            "plugin_p50_ms": round(1000 * statistics.median(plugin), 1),
                            "file_bytes": plugin_file.stat().st_size,
                        }
                    )
                    log(f"{windows[-1]}")
            total_s = time.perf_counter() - began
    first, last = windows[0], windows[-1]
    return result(
        "dynsec",
        figure=last["p50_ms"],
        unit=f"ms p50 per provisioning at {args.banks} banks (register -> reply)",
        baseline=first["p50_ms"],
        baseline_unit=f"ms p50 over the first {args.window} banks",
        ratio=last["p50_ms"] / first["p50_ms"],
        target="measured and reported (issue 17); no target set",
        passed=None,
        params={
            "banks": args.banks,
            "window": args.window,
            "warmup": args.warmup,
            "quick": args.quick,
        },
        file_bytes=last["file_bytes"],
        bytes_per_bank=round(last["file_bytes"] / args.banks),
        total_s=round(total_s, 1),
        plugin_p50_ms=last["plugin_p50_ms"],
        windows=windows,
    )


async def plugin_only(args: argparse.Namespace) -> dict[str, Any]:
    """`--plugin-only`: the same accounts created straight through `DynsecDirectory`
    (what the relay calls before each reply), no backend, no devices: the plugin's own cost
    as its file grows, free of the rest of the machine's load on the Python side."""
    with tempfile.TemporaryDirectory(prefix="bench-dynsec-plugin-") as tmp:
        workdir = Path(tmp)
        settings = load_settings(
            locker_data_dir=workdir,
            locker_broker="mosquitto",
            mqtt_port=free_port(),
            _env_file=None,
        )
        child = MosquittoChild(
            data_dir=workdir,
            port=settings.mqtt_port,
            admin_user=settings.dynsec_admin_user,
            admin_password=settings.secret("dynsec_admin_password"),
        )
        plugin_file = workdir / "mosquitto" / "dynamic-security.json"
        windows: list[dict[str, Any]] = []
        async with child:
            directory = DynsecDirectory(settings)
            await directory.admin.start()
            directory._started = True  # a persistent admin connection, as in the backend
            await directory.bootstrap()
            times: list[float] = []
            began = time.perf_counter()
            for i in range(args.banks):
                uuid = str(uuid_mod.UUID(int=i + 1, version=4))
                started = time.perf_counter()
                await directory.provisioned(uuid, f"locker-client-{i:08x}", f"password-{i}")
                times.append(time.perf_counter() - started)
                if (i + 1) % args.window == 0 or i + 1 == args.banks:
                    window = times[len(windows) * args.window :]
                    windows.append(
                        {
                            "banks": i + 1,
                            "plugin_p50_ms": round(1000 * statistics.median(window), 1),
                            "plugin_p99_ms": round(1000 * _pct(window, 0.99), 1),
                            "file_bytes": plugin_file.stat().st_size,
                        }
                    )
                    log(f"{windows[-1]}")
            total_s = time.perf_counter() - began
            await directory.close()
    first, last = windows[0], windows[-1]
    return result(
        "dynsec_plugin",
        figure=last["plugin_p50_ms"],
        unit=f"ms p50 to create a bank's role + client at {args.banks} banks",
        baseline=first["plugin_p50_ms"],
        baseline_unit=f"ms p50 over the first {args.window} banks",
        ratio=last["plugin_p50_ms"] / first["plugin_p50_ms"],
        target="measured and reported (issue 17); no target set",
        passed=None,
        params={"banks": args.banks, "window": args.window, "quick": args.quick},
        file_bytes=last["file_bytes"],
        bytes_per_bank=round(last["file_bytes"] / args.banks),
        total_s=round(total_s, 1),
        windows=windows,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banks", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=1_000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--plugin-only", action="store_true", help="only the plugin's part (no backend)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny size (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.banks, args.window = 100, 50
    return args


def main() -> None:
    args = parse_args()
    emit(asyncio.run(plugin_only(args) if args.plugin_only else main_async(args)))


if __name__ == "__main__":
    main()
