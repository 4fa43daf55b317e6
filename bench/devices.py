"""The device side of a benchmark, in a process of its own (so the backend's numbers stay
the backend's).

    python bench/devices.py fleet --port P --state-dir DIR [--interval 5] [--report 5]
    python bench/devices.py echo --port P
    python bench/devices.py load --port P --banks-file F [--connections 4] [--interval 5]

* fleet: every simulated device (`simulator.Fleet`) whose state directory is under DIR
  (credentials written there by the benchmark), against the broker on 127.0.0.1:P.
* load: the fleet benchmark's load generator (issue 19): the heartbeats of every bank
  listed in F (one uuid a line), in the seed's form (retained, QoS 1, on
  `locker/{uuid}/state`), spread evenly over each interval, from a few connections
  whose usernames (`bench-load-N`) the backend lists in `MQTT_SUPERUSERS`. It also
  answers each `apply_config` with success (as a device would), so every bank settles
  `in_sync`. The backend's CPU is then spent on the backend's work, not on simulating
  20,000 devices' sessions in the same two cores.
* echo: the bare MQTT responder of the round-trip baseline: every message on
  `bench/rt/request/{id}` is published back, QoS 1, on `bench/rt/response/{id}`. Its
  socket options are the simulated devices' (TCP_NODELAY).

`BENCH_CLIENT_NODELAY=0|1` in the environment overrides the socket options of every
aiomqtt client of the process (an experiment: `bench/common.py:force_client_nodelay`).

Both print JSON lines on stdout: `{"type": "ready"}` / `{"type": "online", ...}` once up,
then `{"type": "stats", ...}` every REPORT seconds (fleet counters, CPU seconds, RSS), and
run until SIGTERM or SIGINT (a fleet then stops cleanly: DISCONNECT, no last wills).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiomqtt

from bench.stats import cpu_seconds
from simulator.connection import SOCKET_OPTIONS
from simulator.device import DeviceOptions
from simulator.fleet import Fleet

SCRIPT = str(Path(__file__).resolve())
REQUEST_FILTER = "bench/rt/request/+"
RESPONSE_PREFIX = "bench/rt/response/"


def say(kind: str, **values: Any) -> None:
    print(json.dumps({"type": kind, "t": time.time(), **values}), flush=True)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_fleet(args: argparse.Namespace) -> None:
    stop = stop_event()
    options = DeviceOptions(
        heartbeat_interval=args.interval,
        durable=False,
        keepalive=60,
        door_dwell_seconds=args.dwell if args.dwell > 0 else None,
        history_limit=100,
    )
    fleet = Fleet(
        "127.0.0.1",
        args.port,
        state_dir=args.state_dir,
        options=options,
        connect_concurrency=args.connect_concurrency,
    )
    started = time.perf_counter()
    if args.ramp_per_s > 0:
        devices = fleet.add_existing()
        for device in devices:  # a gradual start: RAMP devices per second
            await device.start()
            await asyncio.sleep(1 / args.ramp_per_s)
    else:
        devices = await fleet.resume()
    say("started", devices=len(devices))
    try:
        await fleet.wait_until_online(timeout=args.online_timeout)
    except TimeoutError as exc:
        say("online_timeout", error=str(exc), online=fleet.stats().online)
    else:
        say("online", devices=len(devices), seconds=round(time.perf_counter() - started, 2))
    try:
        while not stop.is_set():
            stats = fleet.stats()
            say(
                "stats",
                devices=stats.devices,
                online=stats.online,
                heartbeats_sent=stats.heartbeats_sent,
                commands_received=stats.commands_received,
                responses_sent=stats.responses_sent,
                events_sent=stats.events_sent,
                connection_losses=stats.connection_losses,
                cpu_s=round(cpu_seconds(), 3),
                rss_mb=round(rss_mb(), 1),
            )
            try:
                async with asyncio.timeout(args.report):
                    await stop.wait()
            except TimeoutError:
                pass
    finally:
        # aiomqtt logs "Bad file descriptor" from add_writer for every socket closed under
        # it while thousands of devices disconnect at once; only teardown noise.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        await fleet.stop()
        say("stopped")


LOAD_USER = "bench-load-{}"


def load_users(connections: int) -> list[str]:
    """The generator's usernames (the backend's MQTT_SUPERUSERS)."""
    return [LOAD_USER.format(n) for n in range(connections)]


async def run_load(args: argparse.Namespace) -> None:
    from backend.domain.contract import Command, CommandResponse, Heartbeat, HeartbeatData
    from backend.domain.contract import config_hash as seed_hash
    from backend.domain.outcomes import ResponseResult
    from backend.domain.topics import device_topic

    stop = stop_event()
    banks = [line.strip() for line in args.banks_file.read_text().splitlines() if line.strip()]
    users = load_users(args.connections)
    sent = 0
    configs = 0
    late: list[float] = []  # how late each round's publishes start against the schedule
    started = time.monotonic()

    answering: set[asyncio.Task[None]] = set()
    failed_answers = 0

    async def answer(client: aiomqtt.Client, topic: str, body: bytes) -> None:
        nonlocal configs, failed_answers
        try:
            await client.publish(topic, body, qos=1)
        except Exception as exc:  # a lost answer must not end the answering (it did)
            failed_answers += 1
            say("answer_failed", error=type(exc).__name__)
        else:
            configs += 1

    async def answer_configs(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            command = Command.model_validate_json(payload)
            if command.action != "apply_config":
                continue
            data = command.config_data()
            response = CommandResponse(
                action="apply_config",
                result=ResponseResult.SUCCESS,
                transaction_id=command.transaction_id,
                timestamp=datetime.now(UTC),
                applied_config_hash=seed_hash(data.compartments, data.heartbeat_interval_seconds),
            )
            bank = message.topic.value.split("/")[1]
            # answered concurrently: one PUBACK round trip each in sequence fell behind
            task = asyncio.create_task(
                answer(client, device_topic(bank, "response"), response.to_bytes())
            )
            answering.add(task)
            task.add_done_callback(answering.discard)

    async def beat(client: aiomqtt.Client, mine: list[str], offset: float) -> None:
        nonlocal sent
        gate = asyncio.Semaphore(args.in_flight)
        period = args.interval
        uptime0 = time.monotonic()

        async def one(bank: str) -> None:
            try:
                now = datetime.now(UTC)
                data = HeartbeatData(
                    timestamp=now, uptime_seconds=round(time.monotonic() - uptime0)
                )
                body = Heartbeat(data=data).to_bytes()
                await client.publish(device_topic(bank, "state"), body, qos=1, retain=True)
            finally:
                gate.release()

        tasks: set[asyncio.Task[None]] = set()
        round_start = started + offset
        share = args.ramp_per_s / args.connections  # this connection's banks started per s
        while not stop.is_set():
            # A gradual start (a fleet does not come online in one instant): the banks
            # started so far, spread evenly over this round.
            ramped = int((time.monotonic() - started) * share) if share > 0 else len(mine)
            active = mine[: max(1, min(len(mine), ramped))]
            step = period / len(active)
            for index, bank in enumerate(active):
                due = round_start + index * step
                wait = due - time.monotonic()
                if wait > 0.005:
                    await asyncio.sleep(wait)
                if index == 0:
                    late.append(max(0.0, time.monotonic() - due))
                await gate.acquire()
                task = asyncio.create_task(one(bank))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
                if stop.is_set():
                    break
            round_start += period

    clients = [
        aiomqtt.Client(
            "127.0.0.1",
            args.port,
            identifier=user,
            username=user,
            password="bench-load",
            socket_options=SOCKET_OPTIONS,
            max_inflight_messages=args.in_flight,
            max_queued_outgoing_messages=0,
        )
        for user in users
    ]
    for client in clients:
        client.pending_calls_threshold = 10 * args.in_flight  # many publishes fly by design
    async with contextlib.AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(client)
        await clients[0].subscribe("locker/+/command", qos=1)
        say("ready", banks=len(banks), connections=len(clients))
        share = [banks[n :: len(clients)] for n in range(len(clients))]
        workers = [asyncio.create_task(answer_configs(clients[0]))] + [
            asyncio.create_task(beat(c, mine, args.interval * n / len(banks)))
            for n, (c, mine) in enumerate(zip(clients, share, strict=True))
        ]
        try:
            while not stop.is_set():
                say(
                    "stats",
                    banks=len(banks),
                    heartbeats_sent=sent,
                    configs_answered=configs,
                    config_answers_failed=failed_answers,
                    round_start_late_p99_ms=round(
                        sorted(late)[int(len(late) * 0.99)] * 1000 if late else 0.0, 1
                    ),
                    cpu_s=round(cpu_seconds(), 3),
                    rss_mb=round(rss_mb(), 1),
                )
                late.clear()
                try:
                    async with asyncio.timeout(args.report):
                        await stop.wait()
                except TimeoutError:
                    pass
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    say("stopped")


async def run_raw(args: argparse.Namespace) -> None:
    """A bare aiomqtt subscriber to every bank's state topic: the same-run baseline of
    CPU per received message (QoS 1, as the backend subscribes)."""
    stop = stop_event()
    count = 0
    client = aiomqtt.Client(
        "127.0.0.1", args.port, identifier="bench-raw-receive", socket_options=SOCKET_OPTIONS
    )
    async with client:
        await client.subscribe("locker/+/state", qos=1)
        say("ready")

        async def receive() -> None:
            nonlocal count
            async for _message in client.messages:
                count += 1

        task = asyncio.create_task(receive())
        try:
            while not stop.is_set():
                say("stats", received=count, cpu_s=round(cpu_seconds(), 3))
                try:
                    async with asyncio.timeout(args.report):
                        await stop.wait()
                except TimeoutError:
                    pass
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def run_echo(args: argparse.Namespace) -> None:
    stop = stop_event()
    echo_client = aiomqtt.Client(
        "127.0.0.1", args.port, identifier="bench-echo", socket_options=SOCKET_OPTIONS
    )
    async with echo_client as client:
        await client.subscribe(REQUEST_FILTER, qos=1)
        say("ready")

        async def echo() -> None:
            async for message in client.messages:
                key = message.topic.value.rsplit("/", 1)[-1]
                payload = message.payload if isinstance(message.payload, bytes) else b""
                await client.publish(RESPONSE_PREFIX + key, payload, qos=1)

        task = asyncio.create_task(echo())
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class DeviceProcess:
    """The parent's handle on a `bench/devices.py` process: its JSON lines and its end."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, *args: str) -> DeviceProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            *args,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    @classmethod
    async def fleet(
        cls, port: int, state_dir: Path, interval: float, online_timeout: float, ramp: float
    ) -> DeviceProcess:
        """A `fleet` process: the simulated banks provisioned into `state_dir`."""
        return await cls.start(
            "fleet",
            "--port",
            str(port),
            "--state-dir",
            str(state_dir),
            "--interval",
            str(interval),
            "--report",
            "2",
            "--online-timeout",
            str(online_timeout),
            "--ramp-per-s",
            str(ramp),
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                continue
            self._changed.set()
        self._changed.set()

    def last(self, kind: str) -> dict[str, Any] | None:
        return next((line for line in reversed(self.lines) if line["type"] == kind), None)

    async def wait_for(self, *kinds: str, timeout: float) -> dict[str, Any]:
        """The first line of one of `kinds` (TimeoutError, or RuntimeError if it exited)."""
        async with asyncio.timeout(timeout):
            while True:
                found = next((line for line in self.lines if line["type"] in kinds), None)
                if found is not None:
                    return found
                if self._reader.done():
                    raise RuntimeError(f"device process exited ({self.process.returncode})")
                self._changed.clear()
                await self._changed.wait()

    async def next_stats(self, timeout: float) -> dict[str, Any]:
        """The next `stats` line after now."""
        seen = len(self.lines)
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines[seen:]:
                    if line["type"] == "stats":
                        return line
                self._changed.clear()
                await self._changed.wait()

    async def stop(self, timeout: float = 60.0) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await asyncio.gather(self._reader, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    fleet = sub.add_parser("fleet")
    fleet.add_argument("--port", type=int, required=True)
    fleet.add_argument("--state-dir", type=Path, required=True)
    fleet.add_argument("--interval", type=float, default=5.0)
    fleet.add_argument("--dwell", type=float, default=5.0, help="door open seconds (0: never)")
    fleet.add_argument("--report", type=float, default=5.0)
    fleet.add_argument("--online-timeout", type=float, default=600.0)
    fleet.add_argument("--connect-concurrency", type=int, default=64)
    fleet.add_argument("--ramp-per-s", type=float, default=0.0, help="0: start all at once")
    load = sub.add_parser("load")
    load.add_argument("--port", type=int, required=True)
    load.add_argument("--banks-file", type=Path, required=True)
    load.add_argument("--connections", type=int, default=4)
    load.add_argument("--interval", type=float, default=5.0)
    load.add_argument("--in-flight", type=int, default=500, help="QoS 1 publishes per connection")
    load.add_argument("--report", type=float, default=5.0)
    load.add_argument("--ramp-per-s", type=float, default=0.0, help="banks started per s (0: all)")
    raw = sub.add_parser("raw")
    raw.add_argument("--port", type=int, required=True)
    raw.add_argument("--report", type=float, default=2.0)
    echo = sub.add_parser("echo")
    echo.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if os.environ.get("BENCH_CLIENT_NODELAY") in ("0", "1"):
        from bench.common import force_client_nodelay

        force_client_nodelay(os.environ["BENCH_CLIENT_NODELAY"] == "1")
    runs = {"fleet": run_fleet, "load": run_load, "raw": run_raw, "echo": run_echo}
    asyncio.run(runs[args.mode](args))


if __name__ == "__main__":
    main()
