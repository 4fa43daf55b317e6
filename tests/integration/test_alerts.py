"""Issue 15: the command lifecycle and the alerts read model, on real SQLite/PostgreSQL.

Time is a FrozenClock; device answers and liveness go through the DeviceService, exactly
as the MQTT runtime calls it (the runtime with real brokers and the real client is in
tests/reliability/test_operator_safety.py).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from backend.domain.contract import CommandResponse
from backend.domain.errors import InvalidInput, NotFound, RuleViolation
from backend.domain.outcomes import Disposition
from backend.domain.timeutil import FrozenClock
from backend.service import LockerService
from backend.store.tables import CommandTransactionRow, OutboxRow
from tests.support.banks import beat, provisioned
from tests.support.scenario import dump_read_models


async def publish_all(service: LockerService) -> None:
    """What the relay does after the broker's PUBACK."""
    for item in await service.devices.outbox_due(100):
        await service.devices.outbox_published(item)


def answer(txn_id: str, result: str = "success", **extra: object) -> CommandResponse:
    return CommandResponse.model_validate(
        {
            "type": "command_response",
            "action": "open_compartment",
            "result": result,
            "transaction_id": txn_id,
            "timestamp": "2026-01-01T12:00:00Z",
            **extra,
        }
    )


async def online(service: LockerService, clock: FrozenClock, bank: str) -> None:
    await service.devices.record_heartbeats([beat(bank, clock.now())])


async def test_flapping_bank_is_one_alert_counting_21_flaps(
    service: LockerService, clock: FrozenClock
) -> None:
    bank = await provisioned(service)
    await online(service, clock, bank)
    for _ in range(21):  # 21 flaps in 12 minutes: offline, back 20 s later, 14 s online
        assert await service.devices.record_last_will(bank)
        clock.advance(20)
        await online(service, clock, bank)
        clock.advance(14)
    assert clock.now() - timedelta(minutes=12) < clock.now() - timedelta(seconds=21 * 34)
    alerts = await service.list_alerts()
    assert len(alerts) == 1, alerts
    (alert,) = alerts
    assert (alert.kind, alert.count, alert.state) == ("bank_offline", 21, "open")
    metrics = await service.open_alert_counts()
    assert metrics["bank_offline"] == 1
    clock.advance(45)  # online for 59 s: still open
    assert [a.id for a in await service.list_alerts()] == [alert.id]
    clock.advance(1)  # a minute online: resolved
    assert await service.list_alerts() == []
    (resolved,) = await service.list_alerts(include_resolved=True)
    assert resolved.state == "resolved" and resolved.count == 21
    # the next outage is a new alert
    await service.devices.record_last_will(bank)
    alerts = await service.list_alerts(include_resolved=True)
    assert [(a.count, a.state) for a in alerts] == [(1, "open"), (21, "resolved")]
    before = await dump_read_models(service)
    await service.rebuild_projections()
    assert await dump_read_models(service) == before


async def test_answer_after_expiry_is_late_and_alerted_never_success(
    service: LockerService, clock: FrozenClock
) -> None:
    bank = await provisioned(service)
    await online(service, clock, bank)
    txn = await service.request_open(bank, 1, actor="night-op")
    assert txn.expires_at - txn.requested_at == timedelta(seconds=30)  # OPEN_TTL = timeout
    await publish_all(service)
    clock.advance(30)
    counts = await service.devices.sweep()
    assert counts["expired"] == 1  # (and the config pushed when it came online timed out)
    expired = await service.get_transaction(txn.transaction_id)
    assert expired.status == "expired"
    alerts = await service.list_alerts()
    assert len(alerts) == 1, alerts
    (alert,) = alerts
    assert alert.kind == "command_expired" and alert.transaction_id == txn.transaction_id
    clock.advance(20)  # the device opens anyway (it ignores expires_at) and says so
    outcome = await service.devices.record_response(bank, answer(txn.transaction_id))
    assert outcome.disposition is Disposition.APPLIED
    late = await service.get_transaction(txn.transaction_id)
    assert late.status == "late" and late.late
    alerts = await service.list_alerts()
    assert [a.kind for a in alerts] == ["late_execution"]
    assert "after expiry" in alerts[0].detail and "compartment 1" in alerts[0].detail
    events = [
        e.event_type
        for e in await service.events_after(0, 1000)
        if e.payload.get("transaction_id") == txn.transaction_id
    ]
    assert events == [
        "CompartmentOpeningRequested",
        "CommandSent",
        "CommandExpired",
        "CompartmentOpened",
    ]
    # a duplicate of that answer changes nothing
    await service.devices.record_response(bank, answer(txn.transaction_id))
    assert len(await service.list_alerts()) == 1


async def test_failed_command_alert_acknowledged_with_actor_and_note(
    service: LockerService, clock: FrozenClock
) -> None:
    bank = await provisioned(service)
    await online(service, clock, bank)
    txn = await service.request_open(bank, 2, actor="op")
    await publish_all(service)
    await service.devices.record_response(
        bank, answer(txn.transaction_id, "error", error_code="DOOR_JAMMED", message="stuck")
    )
    alerts = await service.list_alerts()
    assert len(alerts) == 1, alerts
    (alert,) = alerts
    assert alert.kind == "command_failed" and "DOOR_JAMMED" in alert.detail
    with pytest.raises(NotFound):
        await service.acknowledge_alert(alert.id + 1000, actor="op")
    with pytest.raises(InvalidInput):
        await service.acknowledge_alert(alert.id, "x" * 600, actor="op")
    acked = await service.acknowledge_alert(alert.id, "freed the door", actor="anna")
    assert (acked.acknowledged_by, acked.ack_note, acked.state) == (
        "anna",
        "freed the door",
        "resolved",
    )
    with pytest.raises(RuleViolation):
        await service.acknowledge_alert(alert.id, actor="bob")
    (event,) = [
        e for e in await service.events_after(0, 1000) if e.event_type == "AlertAcknowledged"
    ]
    assert event.metadata["actor"] == "anna" and event.payload["alert_id"] == alert.id
    assert await service.list_alerts() == []
    before = await dump_read_models(service)
    await service.rebuild_projections()
    assert await dump_read_models(service) == before


async def test_restart_asks_again_every_sent_unanswered_unexpired_command(
    service: LockerService, clock: FrozenClock
) -> None:
    bank = await provisioned(service)
    await online(service, clock, bank)
    answered = await service.request_open(bank, 1, actor="op")
    waiting = await service.request_open(bank, 2, actor="op")
    stale = await service.request_open(bank, 3, actor="op")
    await publish_all(service)
    await service.devices.record_response(bank, answer(answered.transaction_id))
    clock.advance(5)
    unanswered = {
        t.transaction_id for t in await service.list_transactions(bank) if t.status == "sent"
    }
    assert {waiting.transaction_id, stale.transaction_id} <= unanswered  # and the config push
    assert answered.transaction_id not in unanswered
    recovered = await service.devices.recover_after_restart()
    assert recovered == {"reasked": len(unanswered), "in_doubt": 0}

    def queued() -> list[str | None]:
        with service.db.read_session() as session:
            rows = session.execute(select(OutboxRow).where(OutboxRow.status == "pending"))
            return [r.transaction_id for r in rows.scalars()]

    assert sorted(queued()) == sorted(unanswered)
    # asking again twice queues nothing more; an expired command is never asked again
    assert (await service.devices.recover_after_restart())["reasked"] == 0
    await publish_all(service)
    clock.advance(30)  # the opens have expired, the config (TTL 1 h) has not
    assert (await service.devices.recover_after_restart())["reasked"] == 1
    assert waiting.transaction_id not in queued() and stale.transaction_id not in queued()
    with service.db.read_session() as session:
        rows = session.execute(select(CommandTransactionRow)).scalars()
        assert not any(r.in_doubt for r in rows)


async def test_opens_are_refused_a_ttl_longer_than_the_timeout(tmp_path: object) -> None:
    from pathlib import Path

    from backend.config import SettingsError
    from tests.support.settings import make_settings

    with pytest.raises(SettingsError, match="OPEN_TTL"):
        make_settings(Path(str(tmp_path)), command_timeout=30, open_ttl=31)
    old = make_settings(Path(str(tmp_path)), command_ttl=300)
    assert old.open_ttl_seconds == 30 and old.config_ttl_seconds == 300
    assert make_settings(Path(str(tmp_path))).config_ttl_seconds == 3600


async def test_lost_answer_of_an_openlocker_device_ends_unknown_not_expired(
    service: LockerService, clock: FrozenClock
) -> None:
    """The upstream client never re-sends a stored answer: after a restart (an acked answer
    may have died with the process) its unanswered command cannot be recovered by asking
    again; unanswered at expiry it is `unknown`, with an alert to check the door."""
    created = await service.create_bank("Field", "Depot", 4, dialect="openlocker", actor="op")
    assert await service.devices.register(created.token, "locker-client-1") == "success"
    bank = created.uuid
    await online(service, clock, bank)
    seed = await provisioned(service)
    await online(service, clock, seed)
    lost = await service.request_open(bank, 1, actor="op")
    asked = await service.request_open(seed, 1, actor="op")
    await publish_all(service)
    recovered = await service.devices.recover_after_restart()
    assert recovered["in_doubt"] >= 1  # the open (and the config pushed when it came online)
    clock.advance(service.settings.open_ttl_seconds)
    await service.devices.sweep()
    unknown = await service.get_transaction(lost.transaction_id)
    assert unknown.status == "unknown"
    assert (await service.get_transaction(asked.transaction_id)).status == "expired"
    kinds = {a.transaction_id: a.kind for a in await service.list_alerts()}
    assert kinds[lost.transaction_id] == "outcome_unknown"
    assert kinds[asked.transaction_id] == "command_expired"
    # the answer turns up after all: a late execution, the `unknown` alert is settled
    await service.devices.record_response(bank, answer(lost.transaction_id))
    assert (await service.get_transaction(lost.transaction_id)).status == "late"
    kinds = {a.transaction_id: a.kind for a in await service.list_alerts()}
    assert kinds[lost.transaction_id] == "late_execution"
    before = await dump_read_models(service)
    await service.rebuild_projections()
    assert await dump_read_models(service) == before


async def test_webhook_posts_each_alert_opening_and_resolution(
    service: LockerService, clock: FrozenClock
) -> None:
    from aiohttp import web

    from backend.alert_notifier import AlertNotifier
    from tests.support.mosquitto import free_port
    from tests.support.waiting import until

    received: list[dict[str, object]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/alerts", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    notifier = AlertNotifier(service, f"http://127.0.0.1:{port}/alerts?key=secret")
    await notifier.start()
    try:
        bank = await provisioned(service)
        await online(service, clock, bank)
        await service.devices.record_last_will(bank)  # opens a bank-offline alert
        await until(lambda: len(received) == 1, what="offline alert posted", timeout=5)
        clock.advance(10)
        await online(service, clock, bank)
        clock.advance(60)
        assert await notifier.check_resolutions() == 1  # a minute online: resolved
        await until(lambda: len(received) == 2, what="resolution posted", timeout=5)
        txn = await service.request_open(bank, 1, actor="op")
        await publish_all(service)
        await service.devices.record_response(
            bank, answer(txn.transaction_id, "error", error_code="DOOR_JAMMED")
        )
        await until(lambda: len(received) == 3, what="failure posted", timeout=5)
        alert = (await service.list_alerts())[0]
        await service.acknowledge_alert(alert.id, "seen", actor="op")
        await until(lambda: len(received) == 4, what="acknowledgement posted", timeout=5)
    finally:
        await notifier.stop()
        await runner.cleanup()
    assert [(b["event"], b["alert"]["kind"]) for b in received] == [  # type: ignore[index]  # JSON bodies
        ("alert_opened", "bank_offline"),
        ("alert_resolved", "bank_offline"),
        ("alert_opened", "command_failed"),
        ("alert_resolved", "command_failed"),
    ]
    assert notifier.failed == 0 and notifier.sent == 4


async def test_device_clock_offset_is_estimated_from_heartbeats_and_flagged(
    service: LockerService, clock: FrozenClock
) -> None:
    from backend.device_service import HeartbeatIn
    from backend.domain.contract import Heartbeat, HeartbeatData

    bank = await provisioned(service)
    fine = await provisioned(service)

    async def beat(uuid: str, device_ahead: float, transit: float) -> None:
        sent = clock.now() + timedelta(seconds=device_ahead)
        received = clock.now() + timedelta(seconds=transit)
        hb = Heartbeat(data=HeartbeatData(timestamp=sent, uptime_seconds=1))
        await service.devices.record_heartbeats([HeartbeatIn(uuid, hb, received)])
        clock.advance(5)

    for transit in (0.8, 0.05, 0.3, 1.5):  # the device's clock runs 9 s ahead
        await beat(bank, 9.0, transit)
        await beat(fine, -1.0, transit)
    skewed = await service.get_bank(bank)
    assert skewed.clock_offset_seconds is not None
    assert 8.5 <= skewed.clock_offset_seconds <= 9.0  # near the least delayed sample
    assert skewed.clock_skewed
    ok = await service.get_bank(fine)
    assert ok.clock_offset_seconds is not None and -1.5 <= ok.clock_offset_seconds <= -1.0
    assert not ok.clock_skewed
    assert skewed.to_json()["clock_skewed"] is True


async def test_store_unwritable_is_a_runtime_condition_of_this_instance(
    service: LockerService, clock: FrozenClock
) -> None:
    """Not stored (it could not be): shown by status(), /healthz, /metrics, the console."""
    from sqlalchemy import text

    from backend.gateway import InProcessGateway
    from backend.store.errors import StoreUnavailable

    if service.db.dialect != "sqlite":
        pytest.skip("one database is enough to break on purpose")
    bank = await provisioned(service)
    gateway = InProcessGateway(service, actor="op", broker_connected=lambda: True)
    assert (await gateway.status()).conditions == []

    def rename(old: str, new: str) -> None:
        with service.db.write_engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))

    await service.db.write(rename, "outbox", "outbox_away")
    with pytest.raises(StoreUnavailable):  # the store's own error, not SQLAlchemy's
        await service.request_open(bank, 1, actor="op")
    assert (await gateway.status()).conditions == ["store_unwritable"]
    await service.db.write(rename, "outbox_away", "outbox")
    await service.request_open(bank, 1, actor="op")
    assert (await gateway.status()).conditions == []


async def test_banks_coming_online_in_one_batch_each_settle_their_own_offline_alert(
    service: LockerService, clock: FrozenClock
) -> None:
    """A batch brings banks online with their newest offline alerts read together: each
    bank's alert is the one set to resolve, as one by one (and as a rebuild replays it)."""
    never, once, twice = [await provisioned(service) for _ in range(3)]
    await service.devices.record_heartbeats([beat(b, clock.now()) for b in (once, twice)])
    assert await service.devices.record_last_will(once)
    assert await service.devices.record_last_will(twice)
    clock.advance(20)
    await online(service, clock, twice)
    clock.advance(61)  # twice's first outage resolved
    assert await service.devices.record_last_will(twice)  # a second episode
    clock.advance(5)
    await service.devices.record_heartbeats([beat(b, clock.now()) for b in (never, once, twice)])
    assert {(await service.get_bank(b)).status for b in (never, once, twice)} == {"online"}
    open_now = {(a.bank_uuid, a.count) for a in await service.list_alerts()}
    assert open_now == {(once, 1), (twice, 1)}  # back online, resolving within a minute
    clock.advance(60)
    assert await service.list_alerts() == []
    everything = await service.list_alerts(include_resolved=True)
    assert sorted((a.bank_uuid == twice, a.state) for a in everything) == [
        (False, "resolved"),
        (True, "resolved"),
        (True, "resolved"),
    ]
    before = await dump_read_models(service)
    await service.rebuild_projections()
    assert await dump_read_models(service) == before
