"""Fleet: how many banks one backend sustains at a 5 s heartbeat with liveness lag p99 < 1 s.

Steps up through sizes until a step fails. Two ways to make the load (`--load`):

* `generator` (default; DESIGN 15.4's figure): `bench/devices.py load` publishes every
  bank's heartbeats from a few superuser connections (`MQTT_SUPERUSERS`) and answers
  each `apply_config`, so the two cores go to the backend and the broker, not to
  simulating thousands of device sessions. Default steps 10,000, 20,000.
  After the window, a bare aiomqtt subscriber to the same heartbeats runs for a few
  seconds (`bench/devices.py raw`): the backend's CPU per heartbeat over its CPU per
  message is the heartbeat path's same-run ratio (target <= 3).
* `devices`: full simulated devices (`bench/devices.py fleet`, a session each), the
  figure beside it. Default steps 1,000, 2,500, 5,000, 7,500, 10,000.

Each step runs three kinds of processes, so the backend's measurements are its own:

* this process (the orchestrator): a private Mosquitto; the store (SQLite) seeded with N
  provisioned banks (5 s heartbeat, 12 compartments); a simulator state file per device;
* the backend (`fleet.py --backend`): `BackendServices` as `--headless` runs it (store,
  HTTP hook and API, MQTT runtime; production options) against that broker;
* the load: the generator, or the simulated devices (`bench/devices.py fleet`,
  PER_PROCESS per process).

The devices connect and heartbeat; the backend brings every bank online and pushes its
configuration (apply_config) once. When all N banks are online and configured and the
outbox is empty, a WINDOW-second measurement starts. Liveness lag is measured per
heartbeat from the device's send time (the `data.timestamp` it puts in the payload) to
the commit of the `record_heartbeats` transaction that wrote its `last_heartbeat_at` (an
observing wrapper around the runtime's heartbeat batcher flush).

A step passes when the lag p99 < 1 s, the backend took >= 95 % of the heartbeats the
devices were expected to send in the window, and no bank was set offline for silence.
Reported per step: lag p50/p99/max, heartbeats expected/sent/taken, the backend's CPU %,
RSS and peak RSS, event-loop lag, lanes in flight, the load's CPU. Target (DESIGN 15.4):
20,000 banks per backend process with RSS < 300 MB and heartbeat CPU <= 3x raw receive.

    .venv/bin/python bench/fleet.py [--quick] [--load generator|devices] [--steps 5000,20000]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import logging
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select
from sqlmodel import col

from backend.config import load_settings
from backend.device_service import HeartbeatIn
from backend.mqtt.handlers import Arrival
from backend.runner import BackendServices
from backend.service import LockerService
from backend.store.tables import LockerBankRow
from bench.common import (
    bench_settings,
    emit,
    log,
    mosquitto,
    raise_fd_limit,
    result,
    rss_mb,
    seed_banks,
    sqlite_url,
    write_device_states,
)
from bench.devices import DeviceProcess, load_users
from bench.stats import cpu_seconds, percentile, summary_ms

TARGET_BANKS = 20_000
TARGET_CPU_RATIO = 3.0
RAW_SECONDS = 8.0
TARGET_RSS_MB = 300.0
LAG_P99_S = 1.0
TAKEN_MIN = 0.95
MOSQUITTO_EXTRA = "max_connections -1\n"
OUTAGE_S = 600.0  # deploy/mosquitto.conf: the backend's queue holds this long an outage


def broker_config(banks: int, interval: float) -> str:
    """The broker sized for the fleet as deploy/mosquitto.conf says: the backend's queue
    holds banks x outage / heartbeat interval messages (the fixture's 100,000 is 25 s of a
    20,000-bank fleet: a start-up backlog longer than that dropped config answers)."""
    queued = max(100_000, int(banks * OUTAGE_S / interval))
    return f"{MOSQUITTO_EXTRA}max_queued_messages {queued}\n"


DEVICE_STEPS = "1000,2500,5000,7500,10000"


# ----- the backend process -----------------------------------------------------------------


class Probe:
    """What the backend process measures: heartbeat lag at commit, loop lag, lanes."""

    def __init__(self, services: BackendServices) -> None:
        self.services = services
        self.lags: list[float] = []
        self.loop_lags: list[float] = []
        self.pending_max = 0
        self.mark_at = time.perf_counter()
        self.cpu_at = cpu_seconds()
        self.metrics_at: dict[str, Any] = services.runtime.metrics.snapshot()
        batcher = services.runtime.listener.heartbeats
        inner = batcher._flush

        async def timed_flush(items: list[HeartbeatIn]) -> Sequence[Arrival]:
            out = await inner(items)
            now = datetime.now(UTC)
            self.lags.extend((now - i.heartbeat.data.timestamp).total_seconds() for i in items)
            return out

        batcher._flush = timed_flush

    async def watch_loop(self) -> None:
        """Event-loop lag (how late a 100 ms sleep wakes) and the lanes in flight."""
        dispatcher = self.services.runtime.listener.dispatcher
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.1)
            self.loop_lags.append(time.perf_counter() - started - 0.1)
            self.pending_max = max(self.pending_max, dispatcher.pending)

    def mark(self) -> None:
        self.lags.clear()
        self.loop_lags.clear()
        self.pending_max = 0
        self.mark_at = time.perf_counter()
        self.cpu_at = cpu_seconds()
        self.metrics_at = self.services.runtime.metrics.snapshot()

    def report(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.mark_at
        now = self.services.runtime.metrics.snapshot()
        before = self.metrics_at
        batches = now["batches"].get("heartbeats", 0) - before["batches"].get("heartbeats", 0)
        items = now["batch_items"].get("heartbeats", 0) - before["batch_items"].get("heartbeats", 0)
        return {
            "window_s": round(wall, 2),
            "lag": summary_ms(self.lags),
            "lag_p99_s": round(percentile(self.lags, 99), 3) if self.lags else None,
            "heartbeats_committed": len(self.lags),
            "heartbeats_taken": now["heartbeats_taken"] - before["heartbeats_taken"],
            "heartbeats_ignored": now["heartbeats_ignored"] - before["heartbeats_ignored"],
            "banks_set_offline": now["banks_offline"] - before["banks_offline"],
            "last_wills": now["last_wills"] - before["last_wills"],
            "handler_errors": now["handler_errors"] - before["handler_errors"],
            "heartbeat_batches": batches,
            "mean_batch": round(items / batches, 1) if batches else 0,
            "cpu_percent": round(100 * (cpu_seconds() - self.cpu_at) / wall, 1),
            "rss_mb": round(rss_mb(), 1),
            "peak_rss_mb": round(rss_mb(field="VmHWM"), 1),
            "loop_lag": summary_ms(self.loop_lags),
            "lanes_pending_max": self.pending_max,
        }


async def bank_counts(service: LockerService) -> dict[str, int]:
    def work() -> dict[str, int]:
        with service.db.read_session() as session:
            rows = session.execute(
                select(
                    col(LockerBankRow.status), col(LockerBankRow.config_state), func.count()
                ).group_by(col(LockerBankRow.status), col(LockerBankRow.config_state))
            ).all()
        counts: dict[str, int] = {}
        for status, config_state, n in rows:
            counts[status] = counts.get(status, 0) + n
            counts[f"config_{config_state}"] = counts.get(f"config_{config_state}", 0) + n
        return counts

    return await service.db.read(work)


def write_memory_report(path: Path) -> None:
    """Python objects by type, count and shallow size; with PYTHONTRACEMALLOC=1 also the
    allocations by line (investigations only)."""
    sizes: dict[str, list[int]] = {}
    for thing in gc.get_objects():
        name = f"{type(thing).__module__}.{type(thing).__qualname__}"
        entry = sizes.setdefault(name, [0, 0])
        entry[0] += 1
        entry[1] += sys.getsizeof(thing)
    total = sum(size for _, size in sizes.values())
    lines = [f"gc-tracked objects {total / 1e6:.1f} MB (shallow), rss {rss_mb():.1f} MB"]
    for name, (count, size) in sorted(sizes.items(), key=lambda kv: -kv[1][1])[:50]:
        lines.append(f"{size / 1e6:8.2f} MB {count:9d}  {name}")
    messages = [thing for thing in gc.get_objects() if type(thing).__name__ == "Message"]
    kinds: dict[tuple[int, str, bool], int] = {}
    for message in messages:
        kind = (message.qos, str(message.topic).rsplit("/", 1)[-1], message.retain)
        kinds[kind] = kinds.get(kind, 0) + 1
    lines.append(f"== received messages by (qos, topic end, retain): {kinds}")
    lines.append(f"== who holds {len(messages)} received messages (3 samples, 2 levels)")
    for message in messages[:: max(1, len(messages) // 3)][:3]:
        for holder in gc.get_referrers(message):
            if holder is messages:
                continue
            lines.append(
                f"  {type(holder).__module__}.{type(holder).__qualname__}"
                f" len={len(holder) if hasattr(holder, '__len__') else '-'}"
            )
            for outer in gc.get_referrers(holder)[:6]:
                lines.append(f"      <- {type(outer).__module__}.{type(outer).__qualname__}")
    del messages
    if tracemalloc.is_tracing():  # PYTHONTRACEMALLOC=1 in the environment
        lines.append(f"== traced {tracemalloc.get_traced_memory()[0] / 1e6:.1f} MB, by line")
        for stat in tracemalloc.take_snapshot().statistics("lineno")[:60]:
            where = stat.traceback.format()[-1].strip()
            lines.append(f"{stat.size / 1e6:8.2f} MB {stat.count:9d}  {where}")
    path.write_text("\n".join(lines) + "\n")


def say(kind: str, **values: Any) -> None:
    print(json.dumps({"type": kind, **values}), flush=True)


async def backend_main(overrides: dict[str, Any]) -> None:
    from console.logging_setup import configure

    settings = load_settings(_env_file=None, **overrides)
    configure(settings, to_file=False, level=logging.WARNING)
    services = BackendServices(settings, tune_gc=True)  # as --headless
    probe = Probe(services)
    # investigations only: FLEET_CPROFILE=path profiles the loop thread during the window
    # (py-spy cannot attach to a running process on some machines)
    profiler = cProfile.Profile() if os.environ.get("FLEET_CPROFILE") else None
    # FLEET_MEMORY=path: the backend's Python objects by type, written at each report
    await services.start()
    await services.runtime.wait_connected(30)
    watcher = asyncio.create_task(probe.watch_loop())
    say("ready", rss_mb=round(rss_mb(), 1))
    try:
        while True:
            line = (await asyncio.to_thread(sys.stdin.readline)).strip()
            if line in ("", "quit"):
                break
            if line == "status":
                counts = await bank_counts(services.service)
                depth = await services.service.devices.outbox_depth()
                metrics = services.runtime.metrics
                say(
                    "status",
                    banks=counts,
                    outbox_depth=depth,
                    rss_mb=round(rss_mb(), 1),
                    banks_set_offline=metrics.banks_offline,
                    commands=dict(metrics.commands),
                    receive_backlog_s=round(services.runtime.connection.probe.backlog(), 3),
                )
            elif line == "memory":  # a step that did not settle: where its memory is
                if os.environ.get("FLEET_MEMORY"):
                    write_memory_report(Path(os.environ["FLEET_MEMORY"]))
                say("memory")
            elif line == "mark":
                probe.mark()
                if profiler is not None:
                    profiler.enable()  # the event-loop thread, for the window
                say("marked")
            elif line == "report":
                if profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(os.environ["FLEET_CPROFILE"])
                if os.environ.get("FLEET_MEMORY"):
                    write_memory_report(Path(os.environ["FLEET_MEMORY"]))
                say("report", **probe.report(), banks=await bank_counts(services.service))
    finally:
        watcher.cancel()
        await services.stop()


class Backend:
    """The orchestrator's handle on the backend process (JSON lines over stdin/stdout)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, overrides: dict[str, Any]) -> Backend:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "--backend",
            json.dumps(overrides),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def read(self, kind: str, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise RuntimeError(f"backend exited ({self.process.returncode})")
                with_type = json.loads(line)
                if with_type.get("type") == kind:
                    return dict(with_type)

    async def ask(self, command: str, kind: str, timeout: float = 60.0) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        return await self.read(kind, timeout)

    async def stop(self) -> None:
        if self.process.returncode is None and self.process.stdin is not None:
            self.process.stdin.write(b"quit\n")
            try:
                await self.process.stdin.drain()
                async with asyncio.timeout(60):
                    await self.process.wait()
            except (TimeoutError, ConnectionError):
                self.process.kill()
                await self.process.wait()


SCRIPT = str(Path(__file__).resolve())


# ----- the orchestrator --------------------------------------------------------------------


async def seed(
    workdir: Path, db_url: str, port: int, banks: int, per_process: int, load: str
) -> list[Path]:
    """The store with `banks` provisioned banks, and what the load needs: the generator's
    list of bank uuids (one file), or the simulator state dirs (one per process)."""
    service = LockerService(bench_settings(workdir, db_url, mqtt_port=port))
    try:
        await service.migrate()
        seeded = await seed_banks(service, banks, compartments=12, heartbeat_interval=5)
    finally:
        service.close()
    if load == "generator":
        listing = workdir / "banks.txt"
        listing.write_text("".join(f"{b.uuid}\n" for b in seeded))
        return [listing]
    dirs = []
    for index, start in enumerate(range(0, banks, per_process)):
        state_dir = workdir / "sim" / f"p{index}"
        write_device_states(state_dir, seeded[start : start + per_process])
        dirs.append(state_dir)
    return dirs


async def run_step(args: argparse.Namespace, banks: int) -> dict[str, Any]:
    """One fleet size: set up, settle, measure a window, tear down."""
    with tempfile.TemporaryDirectory(prefix=f"bench-fleet-{banks}-") as tmp:
        workdir = Path(tmp)
        with mosquitto(workdir, broker_config(banks, args.interval)) as broker:
            db_url = sqlite_url(workdir)
            started = time.perf_counter()
            dirs = await seed(workdir, db_url, broker.port, banks, args.per_process, args.load)
            log(f"{banks}: seeded in {time.perf_counter() - started:.1f} s")
            overrides = {
                "locker_data_dir": str(workdir),
                "database_url": db_url,
                "mqtt_host": "127.0.0.1",
                "mqtt_port": broker.port,
                "mqtt_password": "bench-backend-password",
                "mqtt_provisioning_password": "bench-provisioning-password",
                "mosq_secret": "bench-mosq-secret",
                "secret_key": "bench-secret-key",
                "mqtt_client_id": f"bench-fleet-backend-{banks}",
                "http_host": "127.0.0.1",
                "http_port": 0,
                "mqtt_superusers": ",".join(load_users(args.connections)),
            }
            backend = await Backend.start(overrides)
            sims: list[DeviceProcess] = []
            try:
                ready = await backend.read("ready", timeout=120)
                started = time.perf_counter()
                if args.load == "generator":
                    sims.append(
                        await DeviceProcess.start(
                            "load",
                            "--port",
                            str(broker.port),
                            "--banks-file",
                            str(dirs[0]),
                            "--connections",
                            str(args.connections),
                            "--interval",
                            str(args.interval),
                            "--report",
                            "2",
                            "--ramp-per-s",
                            str(args.ramp),
                        )
                    )
                    await sims[0].wait_for("ready", timeout=60)
                for state_dir in dirs if args.load == "devices" else []:
                    sims.append(
                        await DeviceProcess.fleet(
                            broker.port,
                            state_dir,
                            args.interval,
                            args.settle_timeout,
                            args.ramp / len(dirs),
                        )
                    )
                for sim in sims if args.load == "devices" else []:
                    line = await sim.wait_for(
                        "online", "online_timeout", timeout=args.settle_timeout + 30
                    )
                    if line["type"] != "online":
                        return failed_step(banks, "devices did not all connect", line)
                online_s = time.perf_counter() - started
                log(f"{banks}: all devices online after {online_s:.1f} s; settling")
                status, why = await settle(backend, banks, args.settle_timeout)
                settle_s = time.perf_counter() - started
                if status is None:
                    last = await backend.ask("status", "status")
                    if os.environ.get("FLEET_MEMORY"):
                        await backend.ask("memory", "memory", timeout=300)
                    return failed_step(banks, why, last | {"after_s": round(settle_s, 1)})
                log(f"{banks}: settled after {settle_s:.1f} s; measuring {args.window:.0f} s")
                sent_before = [await sim.next_stats(30) for sim in sims]
                await backend.ask("mark", "marked")
                if args.profile_dir:
                    await profile(backend, banks, args.window, Path(args.profile_dir))
                else:
                    await asyncio.sleep(args.window)
                report = await backend.ask("report", "report", timeout=120)
                sent_after = [await sim.next_stats(30) for sim in sims]
                raw = await raw_receive(broker.port) if args.load == "generator" else None
            finally:
                for sim in sims:
                    await sim.stop()
                await backend.stop()
    step = judge_step(args, banks, ready, report, sent_before, sent_after, online_s, settle_s)
    step["set_offline_during_startup"] = status.get("banks_set_offline")
    step["load"] = args.load
    if raw is not None:
        taken = step["heartbeats_taken"]
        backend_ms = report["cpu_percent"] / 100 * report["window_s"] / taken * 1e3 if taken else 0
        step["backend_cpu_ms_per_heartbeat"] = round(backend_ms, 4)
        step["raw_cpu_ms_per_message"] = raw["cpu_ms_per_message"]
        step["raw_received_per_s"] = raw["per_s"]
        step["heartbeat_cpu_ratio"] = (
            round(backend_ms / raw["cpu_ms_per_message"], 2) if raw["cpu_ms_per_message"] else None
        )
        log(
            f"{banks}: backend {backend_ms:.3f} ms CPU per heartbeat, raw receive "
            f"{raw['cpu_ms_per_message']:.3f} ms per message: ratio {step['heartbeat_cpu_ratio']}"
        )
    return step


async def raw_receive(port: int) -> dict[str, float]:
    """The same heartbeats received by a bare aiomqtt subscriber for RAW_SECONDS: its CPU
    per message (the same-run baseline of the heartbeat path)."""
    raw = await DeviceProcess.start("raw", "--port", str(port), "--report", "1")
    try:
        await raw.wait_for("ready", timeout=30)
        first = await raw.next_stats(10)
        await asyncio.sleep(RAW_SECONDS)  # a measured window of steady load
        last = await raw.next_stats(10)
    finally:
        await raw.stop()
    received = last["received"] - first["received"]
    cpu = last["cpu_s"] - first["cpu_s"]
    seconds = last["t"] - first["t"]
    return {
        "cpu_ms_per_message": round(cpu / received * 1e3, 4) if received else 0.0,
        "per_s": round(received / seconds, 1) if seconds else 0.0,
    }


async def settle(backend: Backend, banks: int, timeout: float) -> tuple[dict[str, Any] | None, str]:
    """Until every bank is online and configured, the outbox is empty and the receive side
    has caught up (self-probe round trip < 1 s). (None, why) on a
    timeout, or as soon as banks flap: set offline for silence although their devices
    heartbeat (their heartbeats are committed too late), back online with the next one."""
    deadline = time.monotonic() + timeout
    flap_limit = max(50, banks // 2)
    while time.monotonic() < deadline:
        status = await backend.ask("status", "status")
        counts = status["banks"]
        if (
            counts.get("online", 0) >= banks
            and counts.get("config_in_sync", 0) >= banks
            and status["outbox_depth"] == 0
            # and the start-up's inbound backlog is worked off (the self-probe's round
            # trip): the window measures the steady state, not the catching up
            and status["receive_backlog_s"] < LAG_P99_S
        ):
            return status, ""
        if status["banks_set_offline"] > flap_limit:
            return None, (
                f"did not settle: {status['banks_set_offline']} times a bank was set offline "
                "for silence while its device heartbeated (heartbeat writes fell behind; "
                "each comes back online with its next heartbeat: flapping)"
            )
        await asyncio.sleep(2)  # polling the backend's read model for a condition
    return None, f"did not settle within {timeout:.0f} s"


async def profile(backend: Backend, banks: int, seconds: float, directory: Path) -> None:
    """Sample the backend with py-spy for the window (investigations only; py-spy is not a
    dependency: `.venv/bin/pip install py-spy`)."""
    spy = Path(sys.executable).with_name("py-spy")
    out = directory / f"fleet-{banks}.txt"
    process = await asyncio.create_subprocess_exec(
        str(spy),
        "record",
        "--pid",
        str(backend.process.pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        "50",
        "--threads",
        "--format",
        "raw",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await process.wait()
    log(f"{banks}: py-spy samples in {out}")


def failed_step(banks: int, why: str, detail: dict[str, Any]) -> dict[str, Any]:
    log(f"{banks}: FAILED: {why}: {detail}")
    return {"banks": banks, "pass": False, "why": why, "detail": detail}


def judge_step(
    args: argparse.Namespace,
    banks: int,
    ready: dict[str, Any],
    report: dict[str, Any],
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    online_s: float,
    settle_s: float,
) -> dict[str, Any]:
    window = float(report["window_s"])
    expected = banks * window / args.interval
    sim_wall = max(a["t"] - b["t"] for a, b in zip(after, before, strict=True))
    sent = sum(
        a["heartbeats_sent"] - b["heartbeats_sent"] for a, b in zip(after, before, strict=True)
    )
    sent_rate = sent / sim_wall if sim_wall else 0.0
    sim_cpu = sum(a["cpu_s"] - b["cpu_s"] for a, b in zip(after, before, strict=True))
    taken = int(report["heartbeats_taken"])
    lag_p99 = report["lag_p99_s"]
    reasons = []
    if lag_p99 is None or lag_p99 >= LAG_P99_S:
        reasons.append(f"liveness lag p99 {lag_p99} s >= {LAG_P99_S} s")
    if taken < TAKEN_MIN * expected:
        reasons.append(
            f"backend took {taken} of {expected:.0f} expected heartbeats "
            f"(devices sent {sent_rate * window:.0f} in the window)"
        )
    if report["banks_set_offline"]:
        reasons.append(f"{report['banks_set_offline']} banks set offline for silence")
    step = {
        "banks": banks,
        "pass": not reasons,
        "why": "; ".join(reasons) or None,
        "lag_p50_ms": report["lag"].get("p50_ms"),
        "lag_p99_ms": report["lag"].get("p99_ms"),
        "lag_max_ms": report["lag"].get("max_ms"),
        "heartbeats_expected": round(expected),
        "heartbeats_sent_rate": round(sent_rate, 1),
        "heartbeats_taken": taken,
        "backend_cpu_percent": report["cpu_percent"],
        "backend_rss_mb": report["rss_mb"],
        "backend_peak_rss_mb": report["peak_rss_mb"],
        "backend_rss_at_start_mb": ready.get("rss_mb"),
        "loop_lag_p99_ms": report["loop_lag"].get("p99_ms"),
        "lanes_pending_max": report["lanes_pending_max"],
        "mean_heartbeat_batch": report["mean_batch"],
        "simulator_cpu_percent": round(100 * sim_cpu / sim_wall, 1) if sim_wall else None,
        "simulator_processes": len(before),
        "devices_online_s": round(online_s, 1),
        "settled_s": round(settle_s, 1),
        "report": report,
    }
    log(
        f"{banks}: {'PASS' if step['pass'] else 'FAIL'} lag p50 {step['lag_p50_ms']} ms "
        f"p99 {step['lag_p99_ms']} ms, taken {taken}/{expected:.0f}, backend CPU "
        f"{step['backend_cpu_percent']} %, RSS {step['backend_rss_mb']} MB"
        + (f" -- {step['why']}" if step["why"] else "")
    )
    return step


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    steps: list[dict[str, Any]] = []
    for banks in args.steps:
        log(f"step {banks} banks")
        step = await run_step(args, banks)
        steps.append(step)
        if not step["pass"] and not args.keep_going:
            break
    passing = [s for s in steps if s["pass"]]
    largest = max((int(s["banks"]) for s in passing), default=0)
    at_largest = next((s for s in passing if s["banks"] == largest), None)
    rss = at_largest.get("backend_rss_mb") if at_largest else None
    broke = next((s for s in steps if not s["pass"]), None)
    target = TARGET_BANKS if not args.quick else max(args.steps)
    ratio_at = at_largest.get("heartbeat_cpu_ratio") if at_largest else None
    ratio_ok = (
        args.load != "generator"
        or args.quick  # a few banks: idle costs, not the path
        or (ratio_at is not None and ratio_at <= TARGET_CPU_RATIO)
    )
    return result(
        "fleet",
        figure=largest,
        unit=f"banks sustained (5 s heartbeat, liveness lag p99 < 1 s; load: {args.load})",
        baseline=None,
        baseline_unit="none (absolute figure; ratio = figure / target)",
        ratio=largest / target,
        target=(
            f">= {target} banks with backend RSS < {TARGET_RSS_MB:.0f} MB"
            + (
                f"; heartbeat CPU <= {TARGET_CPU_RATIO:g}x raw receive"
                if args.load == "generator"
                else ""
            )
        ),
        passed=largest >= target and rss is not None and rss < TARGET_RSS_MB and ratio_ok,
        params={
            "load": args.load,
            "steps": args.steps,
            "interval_s": args.interval,
            "window_s": args.window,
            "connections": args.connections,
            "per_process": args.per_process,
            "ramp_per_s": args.ramp,
            "quick": args.quick,
        },
        backend_rss_mb=rss,
        heartbeat_cpu_ratio=ratio_at,
        backend_cpu_ms_per_heartbeat=at_largest.get("backend_cpu_ms_per_heartbeat")
        if at_largest
        else None,
        raw_cpu_ms_per_message=at_largest.get("raw_cpu_ms_per_message") if at_largest else None,
        breaks_at=broke["banks"] if broke else None,
        breaks_because=broke["why"] if broke else None,
        steps=steps,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", choices=("generator", "devices"), default="generator")
    parser.add_argument("--steps", help="bank counts (default: by --load)")
    parser.add_argument("--connections", type=int, default=4, help="generator connections")
    parser.add_argument("--interval", type=float, default=5.0, help="heartbeat seconds")
    parser.add_argument("--window", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--per-process", type=int, default=2500, help="devices per simulator")
    parser.add_argument(
        "--ramp",
        type=float,
        default=None,
        help="banks started per second (0: all at once, as after a backend restart; "
        "default 200 with the generator, 40 with devices)",
    )
    parser.add_argument("--settle-timeout", type=float, default=600.0)
    parser.add_argument("--keep-going", action="store_true", help="run every step")
    parser.add_argument("--profile-dir", help="py-spy the backend during each window")
    parser.add_argument("--quick", action="store_true", help="tiny size (smoke test)")
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = "10000,20000" if args.load == "generator" else DEVICE_STEPS
    if args.ramp is None:
        args.ramp = 200.0 if args.load == "generator" else 40.0
    if args.quick:
        args.steps, args.window, args.settle_timeout, args.ramp = "10", 3.0, 120.0, 0.0
    args.steps = [int(s) for s in str(args.steps).split(",") if s.strip()]
    return args


def main() -> None:
    args = parse_args()
    if args.backend:
        asyncio.run(backend_main(json.loads(args.backend)))
        return
    emit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
