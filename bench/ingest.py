"""Ingest: command responses fully processed per second through the real MqttRuntime, over
the raw aiomqtt receive rate of the same messages on the same broker, in the same run.

Setup (not measured): a private Mosquitto; a store with BANKS provisioned banks and
PER_BANK open commands each (requested and marked sent, as after the relay's PUBACK);
one `command_response` per command (result success), bank after bank interleaved.

Measured as a backlog drain, so neither side is limited by a publisher: two persistent
sessions (QoS 1, clean_session=False) subscribe -- a raw aiomqtt client, and the backend's
own client id with the backend's filters -- and go offline; the responses are published
once and Mosquitto queues them for both. Then

* baseline: the raw aiomqtt client reconnects and counts messages until it has all of
  them (time from CONNECT to the last message);
* figure: the MqttRuntime starts (production options) and the time from its start until
  the last `CompartmentOpened` is committed (validated, deduplicated by transaction,
  event appended, `command_transactions`/`compartments` projected) is taken.

The sweeper is parked during the drain by default (`--sweeper live` runs it at its
production interval): it is housekeeping, not the ingest path, and this setup's backlog of
BANKS x PER_BANK unanswered commands is what it would scan; one sweep over that backlog is
timed separately and reported as `sweep_ms_with_backlog`.

SQLite always; PostgreSQL too when BENCH_DATABASE_URL or TEST_DATABASE_URL is set (a
private database is created and dropped). The target (>= 0.25) is judged on SQLite.

    .venv/bin/python bench/ingest.py [--quick] [--banks 1000 --per-bank 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiomqtt
from sqlalchemy import func, select
from sqlmodel import col

from backend.domain.contract import CommandResponse
from backend.domain.outcomes import ResponseResult
from backend.domain.topics import device_topic
from backend.mqtt.runtime import MqttRuntime, RuntimeOptions
from backend.mqtt.subscriptions import subscriptions
from backend.service import LockerService
from backend.store.event_store import RecordedEvent
from backend.store.tables import CommandTransactionRow
from bench.common import (
    emit,
    log,
    mosquitto,
    open_commands,
    postgres_base_url,
    private_postgres,
    result,
    seed_banks,
    sqlite_url,
)
from bench.stats import cpu_seconds

TARGET = 0.25  # DESIGN 15.1 (2026-12-01; was 0.8)
QUIET = logging.getLogger("bench.mqtt")
QUIET.setLevel(logging.ERROR)  # aiomqtt warns about "pending publish calls" when many fly
PUBLISH_IN_FLIGHT = 200


@dataclass(frozen=True)
class StoreRun:
    """One store's measurement."""

    store: str
    messages: int
    raw_rate: float
    ingest_rate: float
    raw_seconds: float
    ingest_seconds: float
    raw_cpu_ms: float
    ingest_cpu_ms: float
    sweep_ms_with_backlog: float
    mean_batch: float
    batches: int
    processed_rows: int

    @property
    def ratio(self) -> float:
        return self.ingest_rate / self.raw_rate

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "messages": self.messages,
            "ingest_per_s": round(self.ingest_rate, 1),
            "raw_per_s": round(self.raw_rate, 1),
            "ratio": round(self.ratio, 3),
            "ingest_s": round(self.ingest_seconds, 3),
            "raw_s": round(self.raw_seconds, 3),
            "ingest_cpu_ms_per_message": round(self.ingest_cpu_ms, 3),
            "raw_cpu_ms_per_message": round(self.raw_cpu_ms, 3),
            "response_batches": self.batches,
            "mean_batch": round(self.mean_batch, 1),
            "sweep_ms_with_backlog": round(self.sweep_ms_with_backlog, 1),
            "success_rows": self.processed_rows,
        }


class _ParkedSweeper:
    """Stands in for the runtime's sweeper during the drain (see the module docstring)."""

    async def run(self) -> None:
        await asyncio.Event().wait()


def _client(port: int, client_id: str, **kwargs: Any) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=client_id,
        username=client_id,
        password="x",
        logger=QUIET,
        **kwargs,
    )


async def prime_session(port: int, client_id: str, filters: list[tuple[str, int]]) -> None:
    """Create a persistent session with `filters` subscribed, then go offline."""
    async with _client(port, client_id, clean_session=False) as client:
        await client.subscribe(filters)


async def publish_all(port: int, messages: list[tuple[str, bytes]]) -> float:
    """Publish every message QoS 1 (PUBACK awaited), many in flight; returns seconds."""
    started = time.perf_counter()
    gate = asyncio.Semaphore(PUBLISH_IN_FLIGHT)
    async with _client(
        port, f"bench-publisher-{uuid.uuid4().hex[:6]}", max_inflight_messages=PUBLISH_IN_FLIGHT
    ) as client:

        async def one(topic: str, payload: bytes) -> None:
            async with gate:
                await client.publish(topic, payload, qos=1)

        await asyncio.gather(*(one(t, p) for t, p in messages))
    return time.perf_counter() - started


async def drain_raw(port: int, client_id: str, expected: int, timeout: float) -> float:
    """Reconnect the raw persistent session and count messages until `expected`; seconds."""
    count = 0
    started = time.perf_counter()
    async with asyncio.timeout(timeout), _client(port, client_id, clean_session=False) as client:
        async for _message in client.messages:
            count += 1
            if count >= expected:
                break
    return time.perf_counter() - started


def response_messages(opened: list[tuple[str, str]], per_bank: int) -> list[tuple[str, bytes]]:
    """One success response per command, interleaved across banks (bank 1, 2, ..., 1, 2)."""
    now = datetime.now(UTC)
    by_round: list[tuple[str, bytes]] = []
    for round_ in range(per_bank):
        for index in range(round_, len(opened), per_bank):
            bank_uuid, tid = opened[index]
            payload = CommandResponse(
                action="open_compartment",
                result=ResponseResult.SUCCESS,
                transaction_id=tid,
                timestamp=now,
            ).to_bytes()
            by_round.append((device_topic(bank_uuid, "response"), payload))
    return by_round


async def count_success(service: LockerService) -> int:
    def work() -> int:
        with service.db.read_session() as session:
            stmt = (
                select(func.count())
                .select_from(CommandTransactionRow)
                .where(col(CommandTransactionRow.status) == "success")
            )
            return int(session.execute(stmt).scalar() or 0)

    return await service.db.read(work)


async def measure_store(
    label: str, db_url: str, workdir: Path, banks: int, per_bank: int, sweeper: str
) -> StoreRun:
    from bench.common import bench_settings

    with mosquitto(workdir) as broker:
        settings = bench_settings(
            workdir,
            db_url,
            mqtt_port=broker.port,
            command_timeout=24 * 3600.0,
            config_ttl=24 * 3600.0,
            command_retry_after=24 * 3600.0,
        )
        service = LockerService(settings)
        try:
            await service.migrate()
            log(f"{label}: seeding {banks} banks with {per_bank} open commands each")
            seeded = await seed_banks(service, banks, compartments=max(per_bank, 1))
            opened = await open_commands(service, seeded, per_bank)
            messages = response_messages(opened, per_bank)
            total = len(messages)

            started = time.perf_counter()
            await service.devices.sweep()
            sweep_ms = (time.perf_counter() - started) * 1000
            log(f"{label}: one sweep over {total} unanswered commands took {sweep_ms:.0f} ms")

            filters = subscriptions(settings)
            raw_id = f"bench-raw-{uuid.uuid4().hex[:6]}"
            await prime_session(broker.port, raw_id, filters)
            await prime_session(broker.port, settings.mqtt_client_id, filters)
            publish_s = await publish_all(broker.port, messages)
            log(f"{label}: published {total} responses in {publish_s:.2f} s (queued for both)")

            timeout = max(60.0, total / 50)
            cpu_before = cpu_seconds()
            raw_s = await drain_raw(broker.port, raw_id, total, timeout)
            raw_cpu = cpu_seconds() - cpu_before
            log(f"{label}: raw aiomqtt drained {total} in {raw_s:.3f} s ({total / raw_s:.0f}/s)")

            done = asyncio.Event()
            processed = 0
            finished_at = 0.0

            def on_events(events: list[RecordedEvent]) -> None:
                nonlocal processed, finished_at
                processed += sum(1 for e in events if e.event_type == "CompartmentOpened")
                if processed >= total and not done.is_set():
                    finished_at = time.perf_counter()
                    done.set()

            service.subscribe(on_events)
            runtime = MqttRuntime(service, RuntimeOptions())
            if sweeper == "parked":
                runtime.sweeper = _ParkedSweeper()  # type: ignore[assignment]  # a stand-in, no sweeps
            cpu_before = cpu_seconds()
            started = time.perf_counter()
            await runtime.start()
            try:
                async with asyncio.timeout(timeout):
                    await done.wait()
                ingest_cpu = cpu_seconds() - cpu_before
            finally:
                await runtime.stop()
            ingest_s = finished_at - started
            log(
                f"{label}: runtime processed {total} in {ingest_s:.3f} s ({total / ingest_s:.0f}/s)"
            )
            metrics = runtime.metrics
            batches = metrics.batches["responses"]
            return StoreRun(
                store=label,
                messages=total,
                raw_rate=total / raw_s,
                ingest_rate=total / ingest_s,
                raw_seconds=raw_s,
                ingest_seconds=ingest_s,
                raw_cpu_ms=raw_cpu / total * 1000,
                ingest_cpu_ms=ingest_cpu / total * 1000,
                sweep_ms_with_backlog=sweep_ms,
                mean_batch=metrics.batch_items["responses"] / batches if batches else 0.0,
                batches=batches,
                processed_rows=await count_success(service),
            )
        finally:
            service.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[StoreRun] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        sqlite_dir = Path(tmp) / "sqlite"
        sqlite_dir.mkdir()
        runs.append(
            await measure_store(
                "sqlite",
                sqlite_url(sqlite_dir),
                sqlite_dir,
                args.banks,
                args.per_bank,
                args.sweeper,
            )
        )
        base = None if args.no_postgres else postgres_base_url()
        postgres: dict[str, Any] | None = None
        if base is None:
            log("PostgreSQL skipped (set BENCH_DATABASE_URL or TEST_DATABASE_URL)")
        else:
            pg_dir = Path(tmp) / "postgres"
            pg_dir.mkdir()
            with private_postgres(base) as url:
                run = await measure_store(
                    "postgresql", url, pg_dir, args.banks, args.per_bank, args.sweeper
                )
            runs.append(run)
            postgres = run.as_dict()
    sqlite = runs[0]
    return result(
        "ingest",
        figure=sqlite.ingest_rate,
        unit="responses/s",
        baseline=sqlite.raw_rate,
        baseline_unit="messages/s (raw aiomqtt receive)",
        ratio=sqlite.ratio,
        target=f">= {TARGET} on SQLite",
        passed=sqlite.ratio >= TARGET,
        params={
            "banks": args.banks,
            "per_bank": args.per_bank,
            "messages": sqlite.messages,
            "sweeper": args.sweeper,
            "quick": args.quick,
        },
        sqlite=sqlite.as_dict(),
        postgresql=postgres,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banks", type=int, default=1000)
    parser.add_argument("--per-bank", type=int, default=10, help="open commands per bank")
    parser.add_argument("--sweeper", choices=("parked", "live"), default="parked")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny size (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args = replace_args(args, banks=10, per_bank=5)
    return args


def replace_args(args: argparse.Namespace, **values: Any) -> argparse.Namespace:
    merged = vars(args) | values
    return argparse.Namespace(**merged)


def main() -> None:
    args = parse_args()
    emit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
