"""What every benchmark shares: output, settings, private brokers and databases, seeding.

Each benchmark is one script (`python bench/NAME.py [--quick]`) that prints progress to
stderr and ends with ONE JSON line on stdout (`result()` builds it): the figure, the
baseline measured in the same run, their ratio, the target, pass/fail and the parameters.

Seeding writes banks, credentials and open commands straight through `LockerService.transact`
in large transactions, with the same aggregate decisions the service uses (create, issue
token, provision, request_open, mark_sent): the benchmarks measure the hot paths, not setup.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import resource
import secrets
import sys
import time
import uuid as uuid_mod
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from backend.config import Settings
from backend.domain.bank import LockerBank, default_compartments
from backend.domain.events import DomainEvent, EventMetadata
from backend.domain.messages import OutboundMessage, command_message
from backend.service import LockerService, token_hmac
from backend.store import outbox
from backend.store.unit_of_work import UnitOfWork
from bench.stats import cpu_seconds, percentile, summary_ms
from simulator.state import DeviceState, StateStore
from tests.support import databases as test_databases
from tests.support.mosquitto import MosquittoBroker, free_port, run_mosquitto
from tests.support.settings import make_settings

__all__ = [
    "REPO",
    "MosquittoBroker",
    "SeededBank",
    "bench_settings",
    "cpu_seconds",
    "emit",
    "force_client_nodelay",
    "free_port",
    "log",
    "mosquitto",
    "open_commands",
    "percentile",
    "postgres_base_url",
    "private_postgres",
    "raise_fd_limit",
    "result",
    "rss_mb",
    "seed_banks",
    "sqlite_url",
    "summary_ms",
    "write_device_states",
]

REPO = Path(__file__).resolve().parent.parent
SEED_ACTOR = EventMetadata(actor="bench")
SEED_BATCH = 250
_STARTED = time.monotonic()


# ----- output ------------------------------------------------------------------------------


def log(message: str) -> None:
    """Progress on stderr, with seconds since the script started."""
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def result(
    bench: str,
    *,
    figure: float | None,
    unit: str,
    baseline: float | None,
    baseline_unit: str | None = None,
    ratio: float | None,
    target: str,
    passed: bool | None,
    params: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """The one JSON line of a benchmark (keys every benchmark has, then its own)."""
    return {
        "bench": bench,
        "figure": _round(figure),
        "unit": unit,
        "baseline": _round(baseline),
        "baseline_unit": baseline_unit or unit,
        "ratio": _round(ratio, 3),
        "target": target,
        "pass": passed,
        "params": params,
        **extra,
    }


def emit(line: dict[str, Any]) -> None:
    """Print the result line (the only thing a benchmark writes to stdout)."""
    print(json.dumps(line, default=str), flush=True)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


# ----- the process -------------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_mb(pid: int | None = None, field: str = "VmRSS") -> float:
    """Resident set size (or `VmHWM`, the peak) of a process in MiB."""
    path = Path(f"/proc/{pid or 'self'}/status")
    for line in path.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine() -> dict[str, Any]:
    """Cores, RAM, CPU model, Python and the versions of the packages that matter."""
    from importlib import metadata

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram_gb = 0.0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = int(line.split()[1]) / 1024 / 1024
    packages = {}
    for name in ("aiomqtt", "paho-mqtt", "aiohttp", "SQLAlchemy", "sqlmodel", "psycopg",
                 "pydantic", "textual", "amqtt"):  # fmt: skip
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    return {
        "cores": os.cpu_count(),
        "ram_gb": round(ram_gb, 1),
        "cpu": model,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "packages": packages,
    }


def force_client_nodelay(enabled: bool) -> None:
    """EXPERIMENT ONLY: make every aiomqtt client of this process set TCP_NODELAY
    (`enabled`) or no socket option at all (not `enabled`: paho's default, Nagle's
    algorithm on), whatever its caller asks for. The product's clients (the backend's
    connection, the simulator's devices) set TCP_NODELAY; `enabled=False` measures what
    Nagle's algorithm would cost them."""
    import socket

    import aiomqtt

    original = aiomqtt.Client.__init__
    options = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),) if enabled else ()

    def patched(self: aiomqtt.Client, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = options
        original(self, *args, **kwargs)

    aiomqtt.Client.__init__ = patched  # type: ignore[method-assign]  # the benchmark's probe


# ----- brokers and databases ---------------------------------------------------------------


@contextlib.contextmanager
def mosquitto(
    workdir: Path, extra_config: str = "", *, tcp_nodelay: bool = True
) -> Iterator[MosquittoBroker]:
    """A private anonymous Mosquitto on a free loopback port (tests/support/mosquitto.py),
    with `set_tcp_nodelay true` as deployed unless `tcp_nodelay` is False."""
    with run_mosquitto(workdir, extra_config, tcp_nodelay=tcp_nodelay) as broker:
        yield broker


def sqlite_url(workdir: Path) -> str:
    return f"sqlite:///{(workdir / 'locker.db').resolve()}"


def postgres_base_url() -> str | None:
    """BENCH_DATABASE_URL, else TEST_DATABASE_URL, else None (PostgreSQL is skipped)."""
    for name in ("BENCH_DATABASE_URL", "TEST_DATABASE_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


@contextlib.contextmanager
def private_postgres(base_url: str) -> Iterator[str]:
    """A fresh database next to `base_url`'s, dropped afterwards (the tests' own)."""
    with test_databases.private_postgres(base_url, prefix="locker_bench") as url:
        yield url


def bench_settings(
    workdir: Path, db_url: str, *, mqtt_port: int = 1883, **overrides: Any
) -> Settings:
    """Settings for a backend against the private broker (the tests' builder, with the
    benchmarks' fixed secrets)."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "mqtt_host": "127.0.0.1",
        "mqtt_port": mqtt_port,
        "mqtt_password": "bench-backend-password",
        "mqtt_provisioning_password": "bench-provisioning-password",
        "mosq_secret": "bench-mosq-secret",
        "secret_key": "bench-secret-key",
        "mqtt_client_id": f"bench-backend-{uuid_mod.uuid4().hex[:8]}",
        "http_host": "127.0.0.1",
        "http_port": 0,
    }
    values.update(overrides)
    return make_settings(workdir, **values)


# ----- seeding -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SeededBank:
    """A bank created (and usually provisioned) by the seeding: its credentials."""

    uuid: str
    password: str
    compartments: int


async def seed_banks(
    service: LockerService,
    count: int,
    *,
    compartments: int = 12,
    heartbeat_interval: int = 5,
    provision: bool = True,
    batch: int = SEED_BATCH,
) -> list[SeededBank]:
    """Create `count` banks (and provision them: username = uuid, a random password stored
    as SHA-256 like `DeviceService.register` does), `batch` banks per transaction."""
    banks = [
        SeededBank(str(uuid_mod.uuid4()), secrets.token_urlsafe(32), compartments)
        for _ in range(count)
    ]
    specs = default_compartments(compartments)
    ttl = timedelta(days=7)
    for start in range(0, count, batch):
        chunk = banks[start : start + batch]

        def work(uow: UnitOfWork, chunk: list[SeededBank] = chunk, first: int = start) -> None:
            for index, bank in enumerate(chunk, first):
                digest = token_hmac(service.secret_key, secrets.token_urlsafe(32))
                password_sha = hashlib.sha256(bank.password.encode()).hexdigest()

                def decide(
                    _existing: LockerBank,
                    bank: SeededBank = bank,
                    index: int = index,
                    digest: str = digest,
                    password_sha: str = password_sha,
                ) -> list[DomainEvent]:
                    events = LockerBank.create(
                        bank.uuid,
                        name=f"Bench bank {index:05d}",
                        location=f"Hall {index % 40}",
                        compartments=specs,
                        heartbeat_interval_seconds=heartbeat_interval,
                        now=uow.now,
                    )
                    fresh = LockerBank(bank.uuid)
                    fresh.apply(events[0])
                    token = fresh.issue_token(digest, now=uow.now, ttl=ttl)
                    events += token
                    if provision:
                        fresh.apply(token[0])
                        events += fresh.provision(
                            digest, client_id=bank.uuid, password_sha256=password_sha, now=uow.now
                        )
                    return events

                uow.execute(bank.uuid, decide, SEED_ACTOR)

        await service.transact(work)
    return banks


async def open_commands(
    service: LockerService,
    banks: Sequence[SeededBank],
    per_bank: int,
    *,
    ttl_seconds: float = 24 * 3600.0,
    batch: int = SEED_BATCH,
) -> list[tuple[str, str]]:
    """Request `per_bank` compartment openings per bank (compartments 1..per_bank) and mark
    their commands sent, as the relay does after the PUBACK. Returns (bank uuid, transaction
    id) pairs, bank by bank."""
    opened: list[tuple[str, str]] = []
    ttl = timedelta(seconds=ttl_seconds)
    for start in range(0, len(banks), batch):
        chunk = banks[start : start + batch]
        tids = {b.uuid: [str(uuid_mod.uuid4()) for _ in range(per_bank)] for b in chunk}

        def work(uow: UnitOfWork, tids: dict[str, list[str]] = tids) -> None:
            for bank_uuid, ids in tids.items():

                def decide(bank: LockerBank, ids: list[str] = ids) -> list[DomainEvent]:
                    events: list[DomainEvent] = []
                    for number, tid in enumerate(ids, 1):
                        events += bank.request_open(
                            number, transaction_id=tid, requested_by="bench", now=uow.now, ttl=ttl
                        )
                    return events

                def react(
                    _bank: LockerBank, events: list[DomainEvent], bank_uuid: str = bank_uuid
                ) -> list[OutboundMessage]:
                    return [m for e in events if (m := command_message(bank_uuid, e)) is not None]

                uow.execute(bank_uuid, decide, SEED_ACTOR, react=react)

        await service.transact(work)
        opened += [(bank_uuid, tid) for bank_uuid, ids in tids.items() for tid in ids]
    await mark_outbox_sent(service)
    return opened


async def mark_outbox_sent(service: LockerService, batch: int = 2000) -> int:
    """Mark every due outbox row sent (and record `CommandSent`), as the relay would after
    publishing it; nobody listens yet, so nothing is actually published."""
    total = 0
    for _ in range(100_000):
        items = await service.devices.outbox_due(batch)
        if not items:
            break

        def work(uow: UnitOfWork, items: list[Any] = items) -> None:
            by_bank: dict[str, list[str]] = {}
            for item in items:
                outbox.mark(uow.session, item.id, status="sent", sent_at=uow.now, attempts=1)
                if item.kind == "command" and item.bank_uuid and item.transaction_id:
                    by_bank.setdefault(item.bank_uuid, []).append(item.transaction_id)
            for bank_uuid, ids in by_bank.items():
                uow.execute(
                    bank_uuid,
                    lambda b, ids=ids: [e for t in ids for e in b.mark_sent(t, now=uow.now)],  # type: ignore[misc]  # lambda default capture
                    EventMetadata(actor="system"),
                )

        await service.transact(work)
        total += len(items)
    return total


def write_device_states(state_dir: Path, banks: Sequence[SeededBank]) -> None:
    """A simulator state directory per bank holding its credentials (as if provisioned)."""
    from backend.domain.contract import Credentials

    for bank in banks:
        store = StateStore(state_dir / f"bank-{bank.uuid}", durable=False)
        store.save(
            DeviceState(credentials=Credentials(mqtt_user=bank.uuid, mqtt_password=bank.password))
        )


@contextlib.asynccontextmanager
async def closing(service: LockerService) -> AsyncIterator[LockerService]:
    """Migrate a service's store on entry, close it on exit."""
    try:
        await service.migrate()
        yield service
    finally:
        service.close()
