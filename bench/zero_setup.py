"""Zero-setup broker: banks sustained at a 5 s heartbeat with the broker `--headless` starts.

Issue 19. The README's run command starts the backend with its embedded broker: amqtt in
the backend's own process (the default), or a managed Mosquitto child
(`--embedded-broker mosquitto`, dynsec) where Mosquitto is installed. This benchmark runs
the same fleet through both, in the same run, and reports the CPU each path spends per
heartbeat:

* amqtt: the backend process's CPU (broker, hook, runtime and store all live there);
* Mosquitto: the backend process's CPU plus the Mosquitto child's (`/proc/PID/stat`).

The load is real per-bank connections (`bench/devices.py fleet`: every bank its own MQTT
session with its own credentials, as the devices connect). A load generator publishing
many banks' heartbeats over a few superuser connections (`bench/fleet.py`'s default) is not
possible here: `MQTT_SUPERUSERS` are names only, whose passwords another go-auth backend
checks; the embedded brokers (amqtt asking our hook, Mosquitto with dynsec) have no such
backend, so they refuse them, as they should.

Each path is one step of `bench/fleet.py` (seeded SQLite store, N provisioned banks with a
5 s heartbeat, devices online and configured, outbox empty, then a measured window); the
step passes when the liveness lag p99 < 1 s, >= 95 % of the expected heartbeats were taken
and no bank was set offline for silence.

Figure: amqtt's CPU per heartbeat; baseline: the Mosquitto path's CPU per heartbeat in the
same run; ratio = figure / baseline. Target: 2,000 banks sustained with amqtt.

    .venv/bin/python bench/zero_setup.py [--quick] [--banks 2000] [--brokers amqtt,mosquitto]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.broker.mosquitto import find_mosquitto
from backend.service import LockerService
from bench.common import (
    bench_settings,
    emit,
    free_port,
    log,
    raise_fd_limit,
    result,
    seed_banks,
    sqlite_url,
    write_device_states,
)
from bench.devices import DeviceProcess
from bench.dynsec import seeded_plugin_file
from bench.fleet import Backend, judge_step, profile, settle

TARGET_BANKS = 2_000
BROKERS = ("amqtt", "mosquitto")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (`/proc/PID/stat`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


async def seed(
    workdir: Path, db_url: str, port: int, banks: int, per_process: int, broker: str
) -> list[Path]:
    """The store with `banks` provisioned banks, a simulator state dir per process, and for
    Mosquitto the dynsec plugin's file holding their accounts (as provisioning leaves it;
    the simulated devices connect with their uuid as client id)."""
    settings = bench_settings(workdir, db_url, mqtt_port=port)
    service = LockerService(settings)
    try:
        await service.migrate()
        seeded = await seed_banks(service, banks, compartments=12, heartbeat_interval=5)
    finally:
        service.close()
    if broker == "mosquitto":
        plugin_file = workdir / "mosquitto" / "dynamic-security.json"
        seeded_plugin_file(plugin_file, seeded, settings.mqtt_accept_legacy_status)
        config = json.loads(plugin_file.read_text())
        for client in config["clients"]:
            client["clientid"] = client["username"]
        plugin_file.write_text(json.dumps(config))
    dirs = []
    for index, start in enumerate(range(0, banks, per_process)):
        state_dir = workdir / "sim" / f"p{index}"
        write_device_states(state_dir, seeded[start : start + per_process])
        dirs.append(state_dir)
    return dirs


def mosquitto_pid(workdir: Path) -> int | None:
    pid_file = workdir / "mosquitto" / "mosquitto.pid"
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


async def run_path(args: argparse.Namespace, broker: str, banks: int) -> dict[str, Any]:
    """One broker path at `banks`: set up, settle, measure a window, tear down."""
    with tempfile.TemporaryDirectory(prefix=f"bench-zero-{broker}-{banks}-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        db_url = sqlite_url(workdir)
        started = time.perf_counter()
        dirs = await seed(workdir, db_url, port, banks, args.per_process, broker)
        log(f"{broker} {banks}: seeded in {time.perf_counter() - started:.1f} s")
        overrides = {
            "locker_data_dir": str(workdir),
            "database_url": db_url,
            "locker_broker": broker,  # no MQTT_HOST: the embedded broker, as --headless
            "mqtt_port": port,
            "mqtt_password": "bench-backend-password",
            "mqtt_provisioning_password": "bench-provisioning-password",
            "mosq_secret": "bench-mosq-secret",
            "secret_key": "bench-secret-key",
            "mqtt_client_id": f"bench-zero-backend-{broker}",
            "http_host": "127.0.0.1",
            "http_port": 0,
        }
        backend = await Backend.start(overrides)
        sims: list[DeviceProcess] = []
        try:
            ready = await backend.read("ready", timeout=300)
            started = time.perf_counter()
            for state_dir in dirs:
                sims.append(
                    await DeviceProcess.fleet(
                        port, state_dir, args.interval, args.settle_timeout, args.ramp / len(dirs)
                    )
                )
            for sim in sims:
                line = await sim.wait_for(
                    "online", "online_timeout", timeout=args.settle_timeout + 30
                )
                if line["type"] != "online":
                    return _failed(broker, banks, "devices did not all connect", line)
            online_s = time.perf_counter() - started
            status, why = await settle(backend, banks, args.settle_timeout)
            settle_s = time.perf_counter() - started
            if status is None:
                return _failed(broker, banks, why, await backend.ask("status", "status"))
            log(f"{broker} {banks}: settled after {settle_s:.1f} s; measuring {args.window:g} s")
            child = mosquitto_pid(workdir) if broker == "mosquitto" else None
            sent_before = [await sim.next_stats(30) for sim in sims]
            child_cpu0 = process_cpu_s(child) if child else 0.0
            await backend.ask("mark", "marked")
            if args.profile_dir:  # investigations only: py-spy samples the backend
                await profile(backend, banks, args.window, Path(args.profile_dir) / broker)
            else:
                await asyncio.sleep(args.window)
            report = await backend.ask("report", "report", timeout=120)
            child_cpu = (process_cpu_s(child) - child_cpu0) if child else 0.0
            sent_after = [await sim.next_stats(30) for sim in sims]
        finally:
            for sim in sims:
                await sim.stop()
            await backend.stop()
    step = judge_step(args, banks, ready, report, sent_before, sent_after, online_s, settle_s)
    taken = step["heartbeats_taken"]
    backend_cpu = report["cpu_percent"] / 100 * report["window_s"]
    step.update(
        broker=broker,
        backend_cpu_s=round(backend_cpu, 3),
        broker_child_cpu_s=round(child_cpu, 3),
        cpu_ms_per_heartbeat=round((backend_cpu + child_cpu) / taken * 1e3, 4) if taken else None,
    )
    log(
        f"{broker} {banks}: {'PASS' if step['pass'] else 'FAIL'}; "
        f"{step['cpu_ms_per_heartbeat']} ms CPU per heartbeat (backend {backend_cpu:.2f} s"
        f" + broker child {child_cpu:.2f} s for {taken} heartbeats)"
    )
    return step


def _failed(broker: str, banks: int, why: str, detail: dict[str, Any]) -> dict[str, Any]:
    log(f"{broker} {banks}: FAILED: {why}")
    return {"broker": broker, "banks": banks, "pass": False, "why": why, "detail": detail}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    brokers = [b for b in args.brokers if b != "mosquitto" or find_mosquitto()]
    if "mosquitto" in args.brokers and "mosquitto" not in brokers:
        log("mosquitto is not installed: the Mosquitto path is skipped")
    paths = {broker: await run_path(args, broker, args.banks) for broker in brokers}
    amqtt = paths.get("amqtt", {})
    mosq = paths.get("mosquitto", {})
    figure = amqtt.get("cpu_ms_per_heartbeat")
    baseline = mosq.get("cpu_ms_per_heartbeat")
    target = TARGET_BANKS if not args.quick else args.banks
    return result(
        "zero_setup",
        figure=figure,
        unit=f"ms CPU per heartbeat, amqtt in-process ({args.banks} banks, per-bank connections)",
        baseline=baseline,
        baseline_unit="ms CPU per heartbeat, managed Mosquitto (backend + broker child)",
        ratio=figure / baseline if figure and baseline else None,
        target=f">= {target} banks sustained with amqtt (5 s heartbeat, lag p99 < 1 s)",
        passed=bool(amqtt.get("pass")) and args.banks >= target,
        params={
            "banks": args.banks,
            "brokers": brokers,
            "interval_s": args.interval,
            "window_s": args.window,
            "per_process": args.per_process,
            "ramp_per_s": args.ramp,
            "load": "devices (per-bank connections)",
            "quick": args.quick,
        },
        amqtt_banks_sustained=args.banks if amqtt.get("pass") else 0,
        mosquitto_banks_sustained=(args.banks if mosq.get("pass") else 0) if mosq else None,
        paths=paths,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banks", type=int, default=TARGET_BANKS)
    parser.add_argument("--brokers", default=",".join(BROKERS))
    parser.add_argument("--interval", type=float, default=5.0, help="heartbeat seconds")
    parser.add_argument("--window", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--per-process", type=int, default=1000, help="devices per simulator")
    parser.add_argument("--ramp", type=float, default=40.0, help="banks started per second")
    parser.add_argument("--settle-timeout", type=float, default=600.0)
    parser.add_argument("--profile-dir", help="py-spy the backend during each window")
    parser.add_argument("--quick", action="store_true", help="tiny size (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.banks, args.window, args.settle_timeout, args.ramp = 10, 5.0, 60.0, 0.0
    args.brokers = [b.strip() for b in str(args.brokers).split(",") if b.strip()]
    return args


def main() -> None:
    emit(asyncio.run(main_async(parse_args())))


if __name__ == "__main__":
    main()
