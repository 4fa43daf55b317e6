"""Profiles behind the findings in BENCHMARKS.md (investigation tools, not benchmarks).

    .venv/bin/python bench/profiles.py responses [--banks 300] [--postgres URL]
    .venv/bin/python bench/profiles.py sweep
    .venv/bin/python bench/profiles.py heartbeats [--banks 2000] [--batch 300]
    .venv/bin/python bench/profiles.py acl

* responses: the response write path (`DeviceService._response` in one transaction per
  batch, as `record_responses` runs it): SQL statements per response, CPU per response and a
  cProfile breakdown by stage.
* sweep: how long one `DeviceService._sweep` takes with 1,000 / 2,000 / 4,000 unanswered
  commands, and the query plan of its per-command outbox lookup.
* heartbeats: the liveness write path (`DeviceService.record_heartbeats`): CPU per bank for
  a fleet coming online at once (came-online event, config push), CPU per steady heartbeat,
  and one sweep with the whole fleet online.
* receive: end to end through the real `MqttRuntime` against a private Mosquitto, as a
  backlog drain (bench/ingest.py's method): CPU per heartbeat (banks already online) and
  CPU per command response, each beside the raw aiomqtt receive CPU per message of the
  same messages in the same run, and the ratio. `--py-spy DIR` records the runtime's drain.
* acl: microbenchmarks of the hook's decisions (`UserDirectory.acl`, `authenticate`,
  `valid_identity`).
* handler: CPU per call of the hook's ACL handler beside bench/hook.py's bare handler, both
  awaited in a loop on a stand-in request (headers, query, body; no socket, no aiohttp
  dispatch): what the hook's own code adds per check.

The fleet and console findings come from py-spy (`bench/fleet.py --profile-dir`, or
`py-spy record --threads -f raw --pid PID` during `bench/console.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import tempfile
import time
import timeit
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event, text

from backend.device_service import HeartbeatIn
from backend.domain.contract import CommandResponse, Heartbeat, HeartbeatData
from backend.domain.outcomes import ResponseResult
from backend.service import LockerService
from bench.common import bench_settings, open_commands, private_postgres, seed_banks, sqlite_url

LONG: dict[str, Any] = {
    "command_timeout": 86400.0,
    "config_ttl": 86400.0,
    "command_retry_after": 86400.0,
}

Stage = Callable[[tuple[str, int, str]], bool]
STAGES: dict[str, Stage] = {
    "UnitOfWork.execute": lambda k: k[2] == "execute" and "unit_of_work" in k[0],
    "event_store.append": lambda k: k[2] == "append" and "event_store" in k[0],
    "projections.project": lambda k: k[2] == "project" and "projections" in k[0],
    "Session.get": lambda k: k[2] == "get" and k[0].endswith("orm/session.py"),
    "Session.flush": lambda k: k[2] == "flush" and k[0].endswith("orm/session.py"),
    "Connection._exec_single_context": lambda k: k[2] == "_exec_single_context",
}


async def responses(url: str, workdir: Path, banks: int, per_bank: int, batch: int) -> None:
    service = LockerService(bench_settings(workdir, url, **LONG))
    try:
        await service.migrate()
        seeded = await seed_banks(service, banks, compartments=per_bank)
        opened = await open_commands(service, seeded, per_bank)
        now = datetime.now(UTC)
        items = []
        for round_ in range(per_bank):
            for bank_uuid, tid in opened[round_::per_bank]:
                response = CommandResponse(
                    action="open_compartment",
                    result=ResponseResult.SUCCESS,
                    transaction_id=tid,
                    timestamp=now,
                )
                items.append((bank_uuid, response, response.to_bytes()))
        statements: Counter[str] = Counter()

        def count(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
            words = statement.split()
            table = next((w for w in words[1:4] if w.islower() and w.isidentifier()), "")
            statements[f"{words[0]} {table}".strip()] += 1

        event.listen(service.db.write_engine, "before_cursor_execute", count)
        devices = service.devices
        rounds = [items[i : i + batch] for i in range(0, len(items), batch)]

        def run(chunk: list[Any]) -> None:
            service._transact_sync(lambda uow: devices._responses(uow, chunk))

        run(rounds[0])  # warm; then two fresh batches under cProfile, the rest timed
        profiler = cProfile.Profile()
        profiler.enable()
        for chunk in rounds[1:3]:
            run(chunk)
        profiler.disable()
        measured = [item for chunk in rounds[3:] for item in chunk]
        statements.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        for chunk in rounds[3:]:
            run(chunk)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        n = len(measured)
        print(f"{service.db.dialect}: {n} responses, batches of {batch}")
        print(f"  CPU {cpu / n * 1e3:.2f} ms/response, wall {wall / n * 1e3:.2f} ms/response")
        print("  statements per response:", {k: round(v / n, 2) for k, v in statements.items()})
        stats = pstats.Stats(profiler)
        raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # pstats keeps it undeclared
        total = sum(v[3] for k, v in raw.items() if k[2] == "_responses")
        print("  share of DeviceService._responses (cProfile, cumulative):")
        for name, match in STAGES.items():
            share = sum(v[3] for k, v in raw.items() if match(k)) / total
            print(f"    {name:34s} {share:6.1%}")
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(10)
        print("\n".join(out.getvalue().splitlines()[6:20]))
    finally:
        service.close()


async def sweep() -> None:
    for banks in (100, 200, 400):
        with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
            workdir = Path(tmp)
            service = LockerService(bench_settings(workdir, sqlite_url(workdir), **LONG))
            try:
                await service.migrate()
                seeded = await seed_banks(service, banks, compartments=10)
                await open_commands(service, seeded, 10)
                started = time.perf_counter()
                service._transact_sync(service.devices._sweep)
                took = time.perf_counter() - started
                print(f"{banks * 10:5d} unanswered commands: one sweep {took:.2f} s")
                with service.db.read_session() as session:
                    plan = session.execute(
                        text(
                            "EXPLAIN QUERY PLAN SELECT status, sent_at, created_at FROM outbox "
                            "WHERE bank_uuid = 'x' AND transaction_id = 'y' ORDER BY id DESC"
                        )
                    ).all()
                print(f"      re-ask lookup plan: {[row[-1] for row in plan]}")
            finally:
                service.close()


def acl() -> None:
    from backend.domain.acl import valid_identity
    from backend.domain.digests import secret_digest
    from backend.http.users import UserDirectory

    directory = UserDirectory("locker_backend", "pw", "provisioning_client", "pw2")
    u = str(uuid.uuid4())
    directory.device_provisioned(u, secret_digest("x"))
    checks: dict[str, Callable[[], object]] = {
        "valid_identity(uuid)": lambda: valid_identity(u),
        "acl: device publishes its state (acc 2)": lambda: directory.acl(
            u, u, f"locker/{u}/state", 2
        ),
        "acl: backend receives it (acc 1)": lambda: directory.acl(
            "locker_backend", "locker-backend", f"locker/{u}/state", 1
        ),
        "acl: device subscribes to commands (acc 4)": lambda: directory.acl(
            u, u, f"locker/{u}/command", 4
        ),
        "authenticate (device)": lambda: directory.authenticate(u, "x", u),
    }
    for name, call in checks.items():
        per_call = timeit.timeit(call, number=20_000) / 20_000
        print(f"{name:45s} {per_call * 1e6:6.1f} us")


class _StandInRequest:
    """What the hook's ACL handler reads of an aiohttp request, for a loop without a socket."""

    def __init__(self, path: str, body: bytes) -> None:
        from multidict import CIMultiDict, CIMultiDictProxy
        from yarl import URL

        self.headers = CIMultiDictProxy(
            CIMultiDict({"Content-Type": "application/json", "Content-Length": str(len(body))})
        )
        self.rel_url = URL(path)
        self.content_type = "application/json"
        self.remote = "127.0.0.1"
        self._body = body

    @property
    def content_length(self) -> int:
        return int(self.headers["Content-Length"])

    @property
    def query(self) -> Any:
        return self.rel_url.query

    async def read(self) -> bytes:
        return self._body


async def handler(calls: int = 20_000) -> None:
    import json

    from aiohttp import web

    from backend.domain.digests import secret_digest
    from backend.http.hook import ACL_PATH, HookMetrics, add_hook_routes
    from backend.http.users import UserDirectory
    from bench.hook import bare_app

    u = str(uuid.uuid4())
    directory = UserDirectory("locker_backend", "pw", "provisioning_client", "pw2")
    directory.device_provisioned(u, secret_digest("x"))
    app = web.Application()

    async def lookup(name: str) -> None:
        return None

    add_hook_routes(app, directory, "s3cret", metrics=HookMetrics(), lookup=lookup)
    handlers = {
        "bare": _post_handler(bare_app()),
        "hook": _post_handler(app),
    }
    body = json.dumps({"username": u, "clientid": u, "topic": f"locker/{u}/state", "acc": 2})
    path = f"{ACL_PATH}?mosq_secret=s3cret"
    await handlers["hook"](_StandInRequest(path, body.encode()))  # the secret is seen once
    for _ in range(3):
        for name, call in handlers.items():
            requests = [_StandInRequest(path, body.encode()) for _ in range(calls)]
            cpu = time.process_time()
            for request in requests:
                await call(request)
            per_call = (time.process_time() - cpu) / calls
            print(f"{name} ACL handler: {per_call * 1e6:6.2f} us CPU per call")


def _post_handler(app: Any) -> Callable[[Any], Any]:
    from backend.http.hook import ACL_PATH

    for route in app.router.routes():
        if route.method == "POST" and route.resource.canonical == ACL_PATH:
            found: Callable[[Any], Any] = route.handler
            return found
    raise LookupError(ACL_PATH)


async def heartbeats(banks: int, batch: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        workdir = Path(tmp)
        service = LockerService(bench_settings(workdir, sqlite_url(workdir), **LONG))
        try:
            await service.migrate()
            seeded = [b.uuid for b in await seed_banks(service, banks, compartments=10)]

            def beats() -> list[HeartbeatIn]:
                now = datetime.now(UTC)
                hb = Heartbeat(data=HeartbeatData(timestamp=now, uptime_seconds=1))
                return [HeartbeatIn(uuid, hb, now) for uuid in seeded]

            async def run(items: list[HeartbeatIn]) -> float:
                cpu = time.process_time()
                for start in range(0, len(items), batch):
                    await service.devices.record_heartbeats(items[start : start + batch])
                return (time.process_time() - cpu) / len(items) * 1e3

            print(f"sqlite: {banks} banks, batches of {batch}")
            online = await run(beats())
            print(f"  coming online (event + config push): {online:.3f} ms CPU per bank")
            steady = [await run(beats()) for _ in range(5)]
            print(f"  steady heartbeats: {min(steady):.3f} ms CPU per heartbeat (best of 5)")
            cpu = time.process_time()
            counts = service._transact_sync(service.devices._sweep)[0]
            took = (time.process_time() - cpu) * 1e3
            print(f"  one sweep, {banks} online banks: {took:.1f} ms CPU ({counts})")
        finally:
            service.close()


async def receive(banks: int, rounds: int, spy_dir: str | None) -> None:
    """CPU per message end to end, heartbeats and responses, against raw receive."""
    import os

    from backend.domain.topics import device_topic
    from backend.mqtt.runtime import MqttRuntime, RuntimeOptions
    from backend.mqtt.subscriptions import subscriptions
    from bench.common import mark_outbox_sent, mosquitto
    from bench.ingest import _ParkedSweeper, drain_raw, prime_session, publish_all
    from bench.stats import cpu_seconds

    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        workdir = Path(tmp)
        with mosquitto(workdir) as broker:
            settings = bench_settings(
                workdir, sqlite_url(workdir), mqtt_port=broker.port, mqtt_probe_timeout=60, **LONG
            )
            service = LockerService(settings)
            try:
                await service.migrate()
                seeded = [b.uuid for b in await seed_banks(service, banks, compartments=10)]
                now = datetime.now(UTC)
                hb = Heartbeat(data=HeartbeatData(timestamp=now, uptime_seconds=1))
                await service.devices.record_heartbeats([HeartbeatIn(u, hb, now) for u in seeded])
                await mark_outbox_sent(service)  # the config pushes of coming online
                messages = []
                for round_ in range(rounds):
                    for bank_uuid in seeded:
                        beat = Heartbeat(
                            data=HeartbeatData(
                                timestamp=datetime.now(UTC), uptime_seconds=10 + round_
                            ),
                            message_id=str(uuid.uuid4()),
                        )
                        messages.append((device_topic(bank_uuid, "state"), beat.to_bytes()))
                total = len(messages)
                filters = subscriptions(settings)
                raw_id = f"bench-raw-{uuid.uuid4().hex[:6]}"
                await prime_session(broker.port, raw_id, filters)
                await prime_session(broker.port, settings.mqtt_client_id, filters)
                await publish_all(broker.port, messages)
                cpu = cpu_seconds()
                raw_s = await drain_raw(broker.port, raw_id, total, 120)
                raw_cpu = (cpu_seconds() - cpu) / total * 1e3
                runtime = MqttRuntime(service, RuntimeOptions())
                runtime.sweeper = _ParkedSweeper()  # type: ignore[assignment]  # parked: not the path measured
                spy = None
                if spy_dir:
                    spy = await asyncio.create_subprocess_exec(
                        str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                        str(os.getpid()), "--rate", "200", "--format", "raw", "--threads",
                        "--nonblocking", "--output", str(Path(spy_dir) / "receive.txt"),
                        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                    )  # fmt: skip
                    await asyncio.sleep(1.0)  # py-spy attaches
                metrics = runtime.metrics
                first_round, all_done = asyncio.Event(), asyncio.Event()
                batcher = runtime.listener.heartbeats
                inner = batcher._flush

                async def counted_flush(items: list[HeartbeatIn]) -> Any:
                    out = await inner(items)
                    seen = metrics.heartbeats_taken + metrics.heartbeats_ignored
                    if seen >= banks:
                        first_round.set()
                    if seen >= total:
                        all_done.set()
                    return out

                batcher._flush = counted_flush
                await runtime.start()
                try:
                    # the first round (start-up: connect, banks learnt) is not counted
                    async with asyncio.timeout(120):
                        await first_round.wait()
                        cpu, wall = cpu_seconds(), time.perf_counter()
                        counted = metrics.heartbeats_taken + metrics.heartbeats_ignored
                        await all_done.wait()
                    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
                except TimeoutError:
                    print(runtime.metrics.snapshot())
                    raise
                finally:
                    if spy is not None:
                        spy.send_signal(2)
                        await spy.wait()
                    await runtime.stop()
                measured = total - counted
                per = cpu / measured * 1e3
                batches = runtime.metrics.batches["heartbeats"]
                print(f"sqlite: {banks} banks online, {total} heartbeats drained")
                print(f"  raw aiomqtt:  {raw_cpu:.3f} ms CPU/message, {total / raw_s:.0f}/s")
                print(
                    f"  MqttRuntime:  {per:.3f} ms CPU/heartbeat, {measured / wall:.0f}/s "
                    f"(the {measured} after the first {counted})"
                )
                print(f"  ratio (CPU per heartbeat / raw CPU per message): {per / raw_cpu:.2f}")
                print(f"  batches {batches}, mean {total / max(batches, 1):.0f}")
            finally:
                service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "what", choices=("responses", "sweep", "heartbeats", "receive", "acl", "handler")
    )
    parser.add_argument("--rounds", type=int, default=10, help="receive: heartbeats per bank")
    parser.add_argument("--py-spy", dest="spy", help="receive: py-spy output directory")
    parser.add_argument("--banks", type=int, default=300)
    parser.add_argument("--per-bank", type=int, default=10)
    parser.add_argument("--batch", type=int, default=300)
    parser.add_argument("--postgres", help="also profile PostgreSQL (a private database)")
    args = parser.parse_args()
    if args.what == "acl":
        acl()
        return
    if args.what == "handler":
        asyncio.run(handler())
        return
    if args.what == "sweep":
        asyncio.run(sweep())
        return
    if args.what == "receive":
        asyncio.run(receive(args.banks, args.rounds, args.spy))
        return
    if args.what == "heartbeats":
        asyncio.run(heartbeats(args.banks, args.batch))
        return
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        workdir = Path(tmp)
        asyncio.run(responses(sqlite_url(workdir), workdir, args.banks, args.per_bank, args.batch))
    if args.postgres:
        with (
            tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp,
            private_postgres(args.postgres) as url,
        ):
            asyncio.run(responses(url, Path(tmp), args.banks, args.per_bank, args.batch))


if __name__ == "__main__":
    main()
