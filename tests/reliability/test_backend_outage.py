"""The fleet survives its backend (issue 16): the backend SIGKILLed and away for a minute
while the auth hook (`locker-console hook`, its own process) stays up, behind the real
Mosquitto 2.0 + mosquitto-go-auth started from deploy/mosquitto.conf as shipped.

100 simulated banks (CI; 500 at full size) heartbeat every 5 s and answer commands 3 s
after executing them. Twenty opens are published, then the backend is SIGKILLed: their
answers arrive while it is away. Ten seconds before it returns, 20 more opens and 10
configuration pushes are requested through the store (as the CLI or another console
would). Then `--headless` starts again with the same client id.

Must hold:
- 0 device disconnects (each device connected exactly once, no connection lost);
- 0 `LockerBankWentOffline` events from the kill on (a bank is silent only after 3
  heartbeat intervals of the backend listening again, and the backlog is handled first);
- every heartbeat sent while the backend was away processed by the new process;
- every command `success`, executed exactly once by its device (the answers that waited
  in the broker's queue count as in time: none is `late`), nothing rejected;
- go-auth logged no failed call (so no secret in Mosquitto's log).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from backend.service import LockerService
from simulator.device import DeviceOptions
from simulator.faults import Faults
from simulator.fleet import Fleet
from tests.support.databases import TEST_DATABASE_URL
from tests.support.goauth_broker import goauth_available, run_goauth_mosquitto
from tests.support.headless_instances import HeadlessInstance, headless_instance
from tests.support.hook_process import hook_process
from tests.support.reliability_tools import SqlProbe, log, size
from tests.support.settings import TEST_SECRETS_ENV, make_settings
from tests.support.waiting import until

BANKS = size("outage_banks", 100, 500)
DOWN_SECONDS = size("backend_down_seconds", 60, 120)
HEARTBEAT = 5
LATENCY = 3.0
BEFORE_KILL = 20
DURING_OPENS = 20
DURING_CONFIGS = 10

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.mosquitto,
    pytest.mark.skipif(not goauth_available(), reason="mosquitto or go-auth.so missing"),
    pytest.mark.timeout(240 + 2 * DOWN_SECONDS + 2 * BANKS),
]

SECRETS = TEST_SECRETS_ENV


@pytest.fixture
def store_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """PostgreSQL (production's store) when the run has one, else SQLite."""
    if TEST_DATABASE_URL:
        from tests.support.databases import truncate_all

        url: str = request.getfixturevalue("postgres_url")
        truncate_all(url)
        return url
    return f"sqlite:///{tmp_path / 'locker.db'}"


class Store(SqlProbe):
    async def online_in_sync(self) -> int:
        return int(
            await self.scalar(
                "SELECT count(*) FROM locker_banks WHERE status = 'online' "
                "AND config_state = 'in_sync'"
            )
        )

    async def position(self) -> int:
        return int(await self.scalar("SELECT coalesce(max(id), 0) FROM stored_events"))

    async def offline_events_after(self, position: int) -> int:
        return int(
            await self.scalar(
                "SELECT count(*) FROM stored_events WHERE id > :p "
                "AND event_type = 'LockerBankWentOffline'",
                p=position,
            )
        )

    async def statuses(self, tids: list[str]) -> Counter[str]:
        wanted = set(tids)
        rows = await self.rows("SELECT transaction_id, status, late FROM command_transactions")
        return Counter(
            f"{r.status}{'+late' if r.late else ''}" for r in rows if r.transaction_id in wanted
        )

    async def sent(self, tids: list[str]) -> int:
        counts = await self.statuses(tids)
        return sum(n for status, n in counts.items() if status != "pending")


async def test_backend_killed_for_a_minute_the_fleet_never_notices(
    tmp_path: Path, store_url: str
) -> None:
    figures: dict[str, Any] = {"banks": BANKS, "down_seconds": DOWN_SECONDS}
    settings = {"DATABASE_URL": store_url, **SECRETS}
    operator = LockerService(make_settings(tmp_path / "operator", database_url=store_url))
    await operator.migrate()
    store = Store(store_url)
    hook = hook_process("hook", tmp_path / "hook", settings)
    fleet: Fleet | None = None
    backend = None
    broker_log = ""
    async with aiohttp.ClientSession() as session:
        try:
            await hook.start()
            await hook.wait_ready(session, 30)
            with run_goauth_mosquitto(
                tmp_path, hook_port=hook.port, secret=SECRETS["MOSQ_SECRET"]
            ) as broker:
                backend = headless_instance(
                    "backend",
                    tmp_path / "backend",
                    settings,
                    MQTT_HOST=broker.host,
                    MQTT_PORT=str(broker.port),
                    MQTT_INSTANCE_ID="outage-test",
                )
                await backend.start()
                await backend.wait_healthy(session, 60)

                # ----- the fleet, through the real provisioning flow ----------------------
                created = [
                    await operator.create_bank(
                        f"Bank {n:03d}", "Outage", 4, heartbeat_interval_seconds=HEARTBEAT
                    )
                    for n in range(BANKS)
                ]
                fleet = Fleet(
                    broker.host,
                    broker.port,
                    state_dir=tmp_path / "sim",
                    provisioning_password=SECRETS["MQTT_PROVISIONING_PASSWORD"],
                    options=DeviceOptions(
                        heartbeat_interval=HEARTBEAT,
                        compartments=4,
                        door_dwell_seconds=None,
                        durable=False,
                    ),
                    faults=Faults(latency_seconds=LATENCY),
                )
                await fleet.start([c.token for c in created])
                # Provisioning 500 banks on a busy 2-core machine takes minutes.
                await fleet.wait_until_online(60 + BANKS * 0.5)
                await until(
                    store.online_in_sync,
                    lambda n: n == BANKS,
                    "fleet online and in sync",
                    60 + BANKS * 0.5,
                )
                devices = {c.uuid: fleet.by_bank(c.uuid) for c in created}
                connects = {u: d.stats.connects for u, d in devices.items() if d}
                log("fleet online")

                # ----- commands in flight when the backend dies ---------------------------
                before = [
                    (await operator.request_open(created[n].uuid, 1)).transaction_id
                    for n in range(BEFORE_KILL)
                ]
                await until(
                    lambda: store.sent(before), lambda n: n == BEFORE_KILL, "published", 30, 0.05
                )
                kill_position = await store.position()
                await backend.kill()
                died = time.monotonic()
                sent_at_death = fleet.stats().heartbeats_sent
                log("backend SIGKILLed")

                # ----- while it is away ---------------------------------------------------
                await asyncio.sleep(max(0.0, DOWN_SECONDS - 10))  # the outage itself
                during = [
                    (await operator.request_open(created[n].uuid, 2)).transaction_id
                    for n in range(DURING_OPENS)
                ] + [
                    (await operator.request_config_push(created[n].uuid)).transaction_id
                    for n in range(DURING_CONFIGS)
                ]
                await asyncio.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - died)))
                figures["answers_waiting"] = sum(
                    len(d.responses_for(t)) for d in devices.values() if d for t in before
                )
                log("backend starting again")
                await backend.start()
                await backend.wait_healthy(session, 60)
                back = time.monotonic()
                figures["down_for"] = round(back - died, 1)
                sent_while_away = fleet.stats().heartbeats_sent - sent_at_death

                # ----- everything sent meanwhile processed, every command once ------------
                # Answered while the backend was away: success, none late. Requested while it
                # was away: configs (1 h TTL) success; opens success if the backend was back
                # within their 30 s TTL, else expired unsent (on a saturated machine the
                # restart itself can take that long): never late, never executed.
                opens_during, configs_during = during[:DURING_OPENS], during[DURING_OPENS:]
                await until(
                    lambda: store.statuses(before + configs_during),
                    lambda c: c == Counter(success=BEFORE_KILL + DURING_CONFIGS),
                    "answered-while-away and configs all success (none late)",
                    90,
                )
                figures["opens_requested_while_away"] = dict(
                    await until(
                        lambda: store.statuses(opens_during),
                        lambda c: (
                            sum(c.values()) == DURING_OPENS and set(c) <= {"success", "expired"}
                        ),
                        "opens requested while away: success or expired",
                        90,
                    )
                )
                expired_sent = await store.scalar(
                    "SELECT count(*) FROM command_transactions WHERE status = 'expired' "
                    "AND sent_at IS NOT NULL"
                )
                figures["expired_after_publish"] = expired_sent
                rows = await store.rows(
                    "SELECT transaction_id FROM command_transactions WHERE status = 'expired'"
                )
                expired_opens = {r.transaction_id for r in rows} & set(opens_during)

                async def processed() -> float:
                    m = await backend.metrics(session)
                    return m.get("locker_mqtt_heartbeats_taken_total") + m.get(
                        "locker_mqtt_heartbeats_ignored_total"
                    )

                figures["heartbeats_sent_while_away"] = sent_while_away
                figures["heartbeats_processed_by_new_process"] = await until(
                    processed, lambda n: n >= sent_while_away, "heartbeats processed", 60
                )
                # Three heartbeat intervals and more after the restart: nobody went offline.
                await asyncio.sleep(max(0.0, back + 3 * HEARTBEAT + 2 - time.monotonic()))
                figures["offline_events_after_kill"] = await store.offline_events_after(
                    kill_position
                )
                figures["online"] = await store.online_in_sync()
                stats = fleet.stats()
                figures["connection_losses"] = stats.connection_losses
                figures["reconnects"] = sum(
                    d.stats.connects - connects[u] for u, d in devices.items() if d
                )
                executions = Counter(
                    n for d in devices.values() if d for t, n in d.executed.items()
                )
                figures["executions"] = dict(executions)
                figures["rejected"] = await store.scalar("SELECT count(*) FROM rejected_messages")
                broker_log = broker.log_text()
                figures["go_auth_failures"] = broker.log_count(r"(?i)error|fail")
                # Devices and backend leave before the broker does.
                await _leave(fleet, backend)
        finally:
            print("figures:", json.dumps(figures))
            await _leave(fleet, backend)
            if backend is not None:
                print(f"--- backend\n{backend.log_tail(20)}")
            await hook.stop()
            print(f"--- hook\n{hook.log_tail(10)}")
            operator.close()
            store.close()

    assert figures["connection_losses"] == 0
    assert figures["reconnects"] == 0
    assert figures["offline_events_after_kill"] == 0
    assert figures["online"] == BANKS
    assert figures["heartbeats_processed_by_new_process"] >= sent_while_away
    # Every device executed what it was sent exactly once: 20 + 20 opens, 10 configs on top
    # of the provisioning config (apply_config executions are counted too).
    assert set(executions) == {1}, executions
    assert figures["expired_after_publish"] == 0
    executed = {t for d in devices.values() if d for t in d.executed}
    assert not (expired_opens & executed), "an expired open was executed"
    assert set(opens_during) - expired_opens <= executed
    assert figures["rejected"] == 0
    assert figures["go_auth_failures"] == 0, broker_log[-3000:]
    assert SECRETS["MOSQ_SECRET"] not in broker_log


async def _leave(fleet: Fleet | None, backend: HeadlessInstance | None) -> None:
    if fleet is not None:
        await fleet.stop()
    if backend is not None:
        await backend.stop()
