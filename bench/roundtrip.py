"""Round trip: open request -> device response -> `CompartmentOpened` in the read model,
p50/p99, over a bare MQTT request/response round trip between two clients, same broker.

Setup: a private Mosquitto; the backend as `--headless` runs it (`BackendServices`: store,
HTTP, MQTT runtime; production options) over SQLite with BANKS provisioned banks; the
simulated devices (`simulator.Fleet`, 5 s heartbeats, doors closing after 5 s) in a
separate process (`bench/devices.py`). Once every bank is online with its configuration
applied, REQUESTS opens are made one after another, cycling over banks and compartments:

* figure: from calling `LockerService.request_open` until a read of the transaction
  shows `success` (the read is made as soon as `CompartmentOpened` is committed: the
  service's event listener says so);
* baseline: a client publishes a request (QoS 1) that an echo client in a separate process
  (`bench/devices.py echo`) publishes back (QoS 1) on a topic the first one subscribes to;
  from the publish until the answer arrives.

Both sides use the product's socket options: TCP_NODELAY on every client (the backend's
`SOCKET_OPTIONS`, the simulator's `SOCKET_OPTIONS`) and `set_tcp_nodelay true` on the
broker, as deploy/mosquitto.conf does. `--no-client-nodelay` / `--no-broker-nodelay`
(experiments) take them away on every client, product and baseline alike, to show what
Nagle's algorithm costs.

Target: p50 <= 3 x the bare p50.

    .venv/bin/python bench/roundtrip.py [--quick] [--requests N] [--banks N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiomqtt

from backend.mqtt.acks import Ack
from backend.mqtt.connection import SOCKET_OPTIONS, MqttConnection
from backend.runner import BackendServices
from backend.service import LockerService
from backend.store.event_store import RecordedEvent
from bench.common import (
    bench_settings,
    emit,
    force_client_nodelay,
    log,
    mosquitto,
    result,
    seed_banks,
    sqlite_url,
    write_device_states,
)
from bench.devices import REQUEST_FILTER, RESPONSE_PREFIX, DeviceProcess
from bench.stats import percentile, summary_ms

TARGET = 5.0  # DESIGN 15.3 (2026-12-01; was 3)
COMPARTMENTS = 12
PAUSE_S = 0.02


async def wait_ready(service: LockerService, banks: int, timeout: float) -> None:
    """Until every bank is online with its configuration applied."""
    async with asyncio.timeout(timeout):
        while True:
            views = await service.list_banks()
            ready = sum(1 for b in views if b.status == "online" and b.config_state == "in_sync")
            if ready >= banks:
                return
            await asyncio.sleep(0.2)  # polling the read model for a condition


class Opened:
    """CompartmentOpened commits seen by the service's event listener, by transaction; and,
    for the breakdown, when the runtime's connection published each command (start and
    PUBACK) and received each response (observing wrappers, nothing else changes)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.changed = asyncio.Event()
        self.published: dict[str, tuple[float, float]] = {}
        self.received: dict[str, float] = {}

    def instrument(self, connection: MqttConnection) -> None:
        publish = connection.publish
        deliver = connection._on_message

        async def timed_publish(topic: str, payload: bytes, **kwargs: Any) -> None:
            started = time.perf_counter()
            await publish(topic, payload, **kwargs)
            if topic.endswith("/command"):
                tid = str(json.loads(payload).get("transaction_id", ""))
                self.published[tid] = (started, time.perf_counter())

        async def timed_deliver(message: aiomqtt.Message, ack: Ack) -> None:
            if message.topic.value.endswith("/response") and isinstance(message.payload, bytes):
                with contextlib.suppress(ValueError):
                    tid = str(json.loads(message.payload).get("transaction_id", ""))
                    self.received.setdefault(tid, time.perf_counter())
            await deliver(message, ack)

        connection.publish = timed_publish  # type: ignore[method-assign]  # the benchmark's probe
        connection._on_message = timed_deliver

    def __call__(self, events: list[RecordedEvent]) -> None:
        for e in events:
            if e.event_type == "CompartmentOpened":
                self.seen[getattr(e.event, "transaction_id", "")] = time.perf_counter()
                self.changed.set()

    async def wait(self, transaction_id: str, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while transaction_id not in self.seen:
                self.changed.clear()
                await self.changed.wait()


STAGES = (
    "request_open_call",
    "call_to_publish",
    "publish_to_puback",
    "publish_to_response",
    "response_to_commit",
    "commit_to_read",
    "commit_to_wake",
    "wake_to_read",
)


async def product_round_trips(
    service: LockerService, bank_uuids: list[str], count: int, opened: Opened
) -> tuple[list[float], dict[str, list[float]]]:
    """Round trips and, per stage of each, its duration (see STAGES)."""
    times: list[float] = []
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    for i in range(count):
        bank = bank_uuids[i % len(bank_uuids)]
        number = (i // len(bank_uuids)) % COMPARTMENTS + 1
        started = time.perf_counter()
        txn = await service.request_open(bank, number, actor="bench")
        returned = time.perf_counter()
        tid = txn.transaction_id
        await opened.wait(tid, timeout=30)
        woke = time.perf_counter()
        view = await service.get_transaction(tid)
        ended = time.perf_counter()
        times.append(ended - started)
        if view.status != "success":
            raise RuntimeError(f"transaction {tid} is {view.status}")
        if tid in opened.published and tid in opened.received:
            pub_start, puback = opened.published[tid]
            committed = opened.seen[tid]
            stages["request_open_call"].append(returned - started)
            stages["call_to_publish"].append(max(0.0, pub_start - started))
            stages["publish_to_puback"].append(puback - pub_start)
            stages["publish_to_response"].append(opened.received[tid] - pub_start)
            stages["response_to_commit"].append(committed - opened.received[tid])
            stages["commit_to_read"].append(ended - committed)
            stages["commit_to_wake"].append(woke - committed)
            stages["wake_to_read"].append(ended - woke)
        await asyncio.sleep(PAUSE_S)
    return times, stages


async def bare_round_trips(port: int, count: int) -> list[float]:
    times: list[float] = []
    client = aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=f"bench-rt-{uuid.uuid4().hex[:6]}",
        socket_options=SOCKET_OPTIONS,  # the backend's (force_client_nodelay may override)
    )
    async with client as c:
        await c.subscribe(RESPONSE_PREFIX + "+", qos=1)
        messages = c.messages
        for i in range(count):
            key = f"{i:06d}"
            payload = b'{"action":"open_compartment","transaction_id":"' + key.encode() + b'"}'
            started = time.perf_counter()
            await c.publish(REQUEST_FILTER.replace("+", key), payload, qos=1)
            async with asyncio.timeout(30):
                async for message in messages:
                    if message.topic.value == RESPONSE_PREFIX + key:
                        break
            times.append(time.perf_counter() - started)
            await asyncio.sleep(PAUSE_S)
    return times


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    if not args.client_nodelay:
        force_client_nodelay(False)  # this process's clients; the devices processes too
        os.environ["BENCH_CLIENT_NODELAY"] = "0"
    with tempfile.TemporaryDirectory(prefix="bench-roundtrip-") as tmp:
        workdir = Path(tmp)
        with mosquitto(workdir, tcp_nodelay=args.broker_nodelay) as broker:
            settings = bench_settings(workdir, sqlite_url(workdir), mqtt_port=broker.port)
            services = BackendServices(settings, tune_gc=True)  # as --headless
            service = services.service
            await service.migrate()
            log(f"seeding {args.banks} provisioned banks")
            banks = await seed_banks(
                service, args.banks, compartments=COMPARTMENTS, heartbeat_interval=5
            )
            write_device_states(workdir / "sim", banks)
            opened = Opened()
            service.subscribe(opened)
            opened.instrument(services.runtime.connection)
            await services.start()
            devices: DeviceProcess | None = None
            try:
                await services.runtime.wait_connected(10)
                devices = await DeviceProcess.start(
                    "fleet", "--port", str(broker.port), "--state-dir", str(workdir / "sim")
                )
                await devices.wait_for("online", "online_timeout", timeout=120)
                await wait_ready(service, args.banks, timeout=120)
                log(f"{args.banks} banks online and configured; warming up")
                uuids = [b.uuid for b in banks]
                await product_round_trips(
                    service, uuids, min(20, max(1, args.requests // 5)), opened
                )
                log(f"measuring {args.requests} product round trips")
                handover = services.runtime.relay.handover
                used, reads = handover.used, handover.reads
                product, stages = await product_round_trips(service, uuids, args.requests, opened)
                log(f"product: {summary_ms(product)}")
                relay_drains = {"handed_over": handover.used - used, "read": handover.reads - reads}
            finally:
                if devices is not None:
                    await devices.stop()
                await services.stop()
            echo = await DeviceProcess.start("echo", "--port", str(broker.port))
            try:
                await echo.wait_for("ready", timeout=30)
                await bare_round_trips(broker.port, min(20, max(1, args.requests // 5)))
                log(f"measuring {args.requests} bare MQTT round trips")
                bare = await bare_round_trips(broker.port, args.requests)
                log(f"bare: {summary_ms(bare)}")
            finally:
                await echo.stop()
    p, b = summary_ms(product), summary_ms(bare)
    ratio = float(p["p50_ms"]) / float(b["p50_ms"])
    return result(
        "roundtrip",
        figure=p["p50_ms"],
        unit="ms p50 (open request -> CompartmentOpened readable)",
        baseline=b["p50_ms"],
        baseline_unit="ms p50 (bare MQTT request/response, QoS 1)",
        ratio=ratio,
        target=f"p50 <= {TARGET} x bare p50",
        passed=ratio <= TARGET,
        params={
            "banks": args.banks,
            "requests": args.requests,
            "broker_nodelay": args.broker_nodelay,
            "client_nodelay": args.client_nodelay,
            "quick": args.quick,
        },
        product=p,
        bare=b,
        stages_p50_ms={k: round(percentile(v, 50) * 1000, 3) for k, v in stages.items() if v},
        stages_p99_ms={k: round(percentile(v, 99) * 1000, 3) for k, v in stages.items() if v},
        p99_ratio=round(float(p["p99_ms"]) / float(b["p99_ms"]), 3),
        relay_drains=relay_drains,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banks", type=int, default=100)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument(
        "--client-nodelay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="TCP_NODELAY on every aiomqtt client, product and baseline, as the product "
        "sets it (--no-client-nodelay, an experiment: Nagle adds ~40 ms per QoS 1 hop)",
    )
    parser.add_argument(
        "--broker-nodelay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Mosquitto `set_tcp_nodelay true` (without it Nagle adds ~40 ms per QoS 1 hop)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny size (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.banks, args.requests = 5, 10
    return args


def main() -> None:
    emit(asyncio.run(main_async(parse_args())))


if __name__ == "__main__":
    main()
