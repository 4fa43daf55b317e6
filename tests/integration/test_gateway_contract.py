"""The ConsoleGateway contract: in-process and over HTTP, the console gets the same answers.

One suite, parametrized over both gateways (``InProcessGateway`` on the
service; ``HttpGateway`` against a real server on the same service) and over
the databases of the ``service`` fixture. Each answer is compared with what
the service itself says; each refusal must raise the same domain error type
with the same message as the service, and change nothing.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from backend.device_service import HeartbeatIn
from backend.domain.contract import Heartbeat, HeartbeatData
from backend.domain.dialect import openlocker_config_hash
from backend.domain.errors import DomainError, InvalidInput, NotFound, RuleViolation
from backend.domain.events import CompartmentSpec
from backend.domain.timeutil import FrozenClock
from backend.gateway import ConsoleGateway, InProcessGateway
from backend.http import client_gateway
from backend.http.client_gateway import AccessDenied, BackendUnreachable, HttpGateway
from backend.service import LockerService
from backend.views import (
    AlertView,
    BankView,
    CreatedBank,
    EventView,
    IssuedToken,
    TransactionView,
)
from tests.support.http_api import OPERATOR, BrokerFlag, provision, serve_api

UNKNOWN_UUID = "00000000-0000-4000-8000-000000000000"
KINDS = ["in-process", "http"]


class Subject:
    """The gateway under test, the broker flag behind it, and how it reports its mode."""

    def __init__(self, kind: str, gateway: ConsoleGateway, broker: BrokerFlag, mode: str) -> None:
        self.kind = kind
        self.gateway = gateway
        self.broker = broker
        self.mode = mode


@pytest.fixture(params=KINDS)
async def subject(request: pytest.FixtureRequest, service: LockerService) -> AsyncIterator[Subject]:
    if request.param == "in-process":
        broker = BrokerFlag()
        yield Subject(
            "in-process",
            InProcessGateway(
                service,
                actor=OPERATOR,
                broker_connected=broker.is_connected,
                broker_detail=broker.describe,
            ),
            broker,
            "standalone",
        )
        return
    async with serve_api(service) as api:
        gateway = HttpGateway(api.base_url, api.operator_token)
        try:
            assert await gateway.whoami() == (OPERATOR, "operator")
            yield Subject("http", gateway, api.broker, "attach")
        finally:
            await gateway.close()


async def everything(service: LockerService) -> dict[str, Any]:
    return {
        "events": [e.to_json() for e in await service.events_after(0, 100_000)],
        "banks": [b.to_json() for b in await service.list_banks()],
        "transactions": [t.to_json() for t in await service.list_transactions(None, 1000)],
        "outbox": await service.devices.outbox_depth(),
    }


# ----- reads ---------------------------------------------------------------------------------


async def test_actor_is_the_operator(subject: Subject) -> None:
    assert subject.gateway.actor == OPERATOR


async def test_list_and_get_banks(subject: Subject, service: LockerService) -> None:
    assert await subject.gateway.list_banks() == []
    ready = await provision(service, "Ready")
    await service.create_bank("Fresh", "Hamburg", 3, actor="setup")
    banks = await subject.gateway.list_banks()
    assert banks == await service.list_banks()
    assert all(type(b) is BankView for b in banks)
    one = await subject.gateway.get_bank(ready.uuid)
    assert one == await service.get_bank(ready.uuid)
    assert one.open_compartments == 0 and len(one.compartments) == 4


async def test_transactions(subject: Subject, service: LockerService) -> None:
    a = await provision(service, "A")
    b = await provision(service, "B")
    await service.request_open(a.uuid, 1, actor="setup")
    await service.request_open(a.uuid, 2, actor="setup")
    txn = await service.request_open(b.uuid, 3, actor="setup")
    gateway = subject.gateway
    assert await gateway.list_transactions() == await service.list_transactions()
    assert await gateway.list_transactions(a.uuid) == await service.list_transactions(a.uuid)
    assert await gateway.list_transactions(a.uuid, 1) == await service.list_transactions(a.uuid, 1)
    assert await gateway.list_transactions(None, 2) == await service.list_transactions(None, 2)
    got = await gateway.get_transaction(txn.transaction_id)
    assert type(got) is TransactionView and got == txn


async def test_events_after(subject: Subject, service: LockerService) -> None:
    assert await subject.gateway.events_after() == []
    await provision(service, "A")
    await service.create_bank("B", "", 2, actor="setup")
    every = await service.events_after(0)
    assert len(every) >= 5
    for position, limit in ((0, 500), (0, 2), (every[1].position, 3), (every[-1].position, 10)):
        got = await subject.gateway.events_after(position, limit)
        assert got == await service.events_after(position, limit)
        assert all(type(e) is EventView for e in got)


async def test_search_events_matches_full_values_on_the_server(
    subject: Subject, service: LockerService
) -> None:
    """The filter syntax over the whole stored log: full event types and payloads, field
    names, negation, quotes; the newest matches before a position, oldest first."""
    a = await provision(service, "Main hall")
    b = await provision(service, "Depot 10")
    await service.request_open(a.uuid, 1, actor="setup")
    await service.request_open(b.uuid, 2, actor="bob")
    await beat(service, b.uuid)
    assert await service.devices.record_last_will(b.uuid)
    gateway = subject.gateway
    offline = await gateway.search_events("offline")
    assert [e.event_type for e in offline] == ["LockerBankWentOffline"]
    assert offline == await service.search_events("offline")
    assert [e.aggregate_uuid for e in offline] == [b.uuid]
    assert [e.event_type for e in await gateway.search_events("event:LockerBankWentOffline")] == [
        "LockerBankWentOffline"
    ]
    by_name = await gateway.search_events('bank:"main hall" event:requested')
    assert [(e.aggregate_uuid, e.payload["compartment_number"]) for e in by_name] == [(a.uuid, 1)]
    not_a = await gateway.search_events(f"-bank:{a.uuid[:8]} compartmentopening")
    assert [e.aggregate_uuid for e in not_a] == [b.uuid]
    assert [e.metadata["actor"] for e in await gateway.search_events("actor:bob")] == ["bob"]
    every = await gateway.search_events("")
    assert every == await service.events_after(0)
    newest_two = await gateway.search_events("", 2)
    assert newest_two == every[-2:]
    before = await gateway.search_events("", 2, before=every[-1].position)
    assert before == every[-3:-1]


async def beat(service: LockerService, uuid: str, lag: float = 0.0) -> None:
    now = service.clock.now()
    sent = now - timedelta(seconds=lag)
    heartbeat = Heartbeat(data=HeartbeatData(timestamp=sent, uptime_seconds=1))
    await service.devices.record_heartbeats([HeartbeatIn(uuid, heartbeat, now)])


async def test_bank_events_and_heartbeats(subject: Subject, service: LockerService) -> None:
    a = await provision(service, "A")
    b = await provision(service, "B")
    await service.request_open(a.uuid, 1, actor="setup")
    gateway = subject.gateway
    mine = await gateway.bank_events(a.uuid)
    assert mine and {e.aggregate_uuid for e in mine} == {a.uuid}
    assert mine == [e for e in await service.events_after(0) if e.aggregate_uuid == a.uuid]
    assert await gateway.bank_events(a.uuid, 1) == mine[-1:]
    assert await gateway.heartbeat_history(b.uuid) == []
    now = service.clock.now()
    for lag in (0.25, 1.5):
        await beat(service, b.uuid, lag)
    samples = await gateway.heartbeat_history(b.uuid)
    assert [s.lag_seconds for s in samples] == [0.25, 1.5]
    assert all(abs((s.received_at - now).total_seconds()) < 0.01 for s in samples)
    with pytest.raises(NotFound):
        await gateway.heartbeat_history(UNKNOWN_UUID)


async def test_large_and_tiny_limits(
    subject: Subject, service: LockerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Limits beyond one API page are fetched in pages; 0 means nothing."""
    monkeypatch.setattr(client_gateway, "MAX_LIMIT", 2)  # pages of 2 over HTTP
    a = await provision(service, "A")
    for number in (1, 2, 3):
        await service.request_open(a.uuid, number, actor="setup")
    every = await service.events_after(0)
    assert len(every) > 5
    gateway = subject.gateway
    for position, limit in ((0, 5), (0, 100), (every[2].position, 3), (0, 0)):
        assert await gateway.events_after(position, limit) == await service.events_after(
            position, limit
        )
    assert await gateway.list_transactions(None, 0) == []
    assert len(await gateway.list_transactions(a.uuid, 2)) == 2


async def test_status(subject: Subject) -> None:
    status = await subject.gateway.status()
    assert status.broker_connected is True and status.database_ok is True
    assert status.broker_detail == subject.broker.detail
    assert status.mode == subject.mode
    subject.broker.connected = False
    subject.broker.detail = "reconnecting"
    status = await subject.gateway.status()
    assert status.broker_connected is False and status.broker_detail == "reconnecting"


# ----- commands ------------------------------------------------------------------------------


async def test_create_bank(subject: Subject, service: LockerService) -> None:
    created = await subject.gateway.create_bank("Hall A", "Berlin", 5, 10)
    assert type(created) is CreatedBank
    assert (created.name, created.location, created.compartments) == ("Hall A", "Berlin", 5)
    assert created.heartbeat_interval_seconds == 10
    assert await service.bank_by_token(created.token) == created.uuid
    bank = await service.get_bank(created.uuid)
    assert bank.token_expires_at == created.token_expires_at
    assert bank.status == "unprovisioned" and len(bank.compartments) == 5
    events = await service.events_after(0)
    assert {e.metadata["actor"] for e in events} == {OPERATOR}


async def test_update_bank(subject: Subject, service: LockerService) -> None:
    """Edit name, dialect and mapping: the view says so and the new mapping is pushed as a
    new apply_config in the bank's (new) dialect."""
    bank = await provision(service)
    mapping = [
        CompartmentSpec(number=1, slave_id=1, address=0),
        CompartmentSpec(number=2, slave_id=2, address=5),
    ]
    updated = await subject.gateway.update_bank(
        bank.uuid, name="Hall B", dialect="openlocker", compartments=mapping
    )
    assert type(updated) is BankView
    assert (updated.name, updated.dialect, updated.dialect_setting) == (
        "Hall B",
        "openlocker",
        "openlocker",
    )
    assert [(c.number, c.slave_id, c.address) for c in updated.compartments] == [
        (1, 1, 0),
        (2, 2, 5),
    ]
    (push,) = [t for t in await service.list_transactions(bank.uuid) if t.action == "apply_config"]
    assert push.config_hash == updated.desired_config_hash and push.requested_by == OPERATOR
    assert updated.desired_config_hash == openlocker_config_hash([(1, 1, 0), (2, 2, 5)])
    before = len(await service.events_after(0))
    await subject.gateway.update_bank(bank.uuid, location=updated.location)
    assert len(await service.events_after(0)) == before, "nothing changed: no event"
    with pytest.raises(RuleViolation, match="slaveId >= 1"):
        await subject.gateway.update_bank(
            bank.uuid, compartments=[CompartmentSpec(number=1, slave_id=0, address=0)]
        )


async def test_issue_token(subject: Subject, service: LockerService) -> None:
    created = await service.create_bank("Hall A", "", 2, actor="setup")
    issued = await subject.gateway.issue_token(created.uuid)
    assert type(issued) is IssuedToken and issued.uuid == created.uuid
    assert await service.bank_by_token(issued.token) == created.uuid
    assert await service.bank_by_token(created.token) is None
    assert (await service.get_bank(created.uuid)).token_expires_at == issued.token_expires_at


async def test_revoke(subject: Subject, service: LockerService) -> None:
    bank = await provision(service)
    await subject.gateway.revoke(bank.uuid, "stolen")
    assert (await service.get_bank(bank.uuid)).status == "revoked"
    last = (await service.events_after(0))[-1]
    assert last.event_type == "CredentialsRevoked" and last.metadata["actor"] == OPERATOR
    assert last.payload["reason"] == "stolen"


async def test_revoke_in_every_state_voids_pending_tokens(
    subject: Subject, service: LockerService
) -> None:
    """Issue 14, finding 6: an unprovisioned bank's leaked token, and a token issued to a
    provisioned bank, are void once the bank is revoked."""
    fresh = await service.create_bank("Fresh", "", 2)
    await subject.gateway.revoke(fresh.uuid, "token leaked")
    assert await service.bank_by_token(fresh.token) is None
    assert (await service.get_bank(fresh.uuid)).status == "revoked"
    bank = await provision(service)
    issued = await service.issue_token(bank.uuid)
    await subject.gateway.revoke(bank.uuid, "stolen")
    assert await service.bank_by_token(issued.token) is None
    await subject.gateway.revoke(bank.uuid, "still stolen")  # again: recorded again
    reasons = [
        e.payload["reason"]
        for e in await service.events_after(0)
        if e.event_type == "CredentialsRevoked"
    ]
    assert reasons == ["token leaked", "stolen", "still stolen"]


async def test_request_open(subject: Subject, service: LockerService) -> None:
    bank = await provision(service)
    txn = await subject.gateway.request_open(bank.uuid, 3)
    assert type(txn) is TransactionView
    assert txn == await service.get_transaction(txn.transaction_id)
    assert (txn.action, txn.compartment_number, txn.status) == ("open_compartment", 3, "pending")
    assert txn.requested_by == OPERATOR
    compartment = (await service.get_bank(bank.uuid)).compartments[2]
    assert compartment.open_transaction_id == txn.transaction_id


async def test_request_config_push(subject: Subject, service: LockerService) -> None:
    bank = await provision(service)
    txn = await subject.gateway.request_config_push(bank.uuid)
    assert type(txn) is TransactionView
    assert txn == await service.get_transaction(txn.transaction_id)
    assert (txn.action, txn.status, txn.requested_by) == ("apply_config", "pending", OPERATOR)
    assert txn.config_hash == (await service.get_bank(bank.uuid)).desired_config_hash


# ----- refusals ------------------------------------------------------------------------------

Call = Callable[[ConsoleGateway, dict[str, str]], Awaitable[object]]

REFUSALS: list[tuple[str, Call, type[DomainError]]] = [
    ("get-unknown-bank", lambda g, b: g.get_bank(UNKNOWN_UUID), NotFound),
    ("get-not-a-uuid", lambda g, b: g.get_bank("not-a-uuid"), NotFound),
    ("get-unknown-transaction", lambda g, b: g.get_transaction("nope"), NotFound),
    ("transactions-unknown-bank", lambda g, b: g.list_transactions(UNKNOWN_UUID), NotFound),
    ("create-empty-name", lambda g, b: g.create_bank("", "", 2), InvalidInput),
    ("create-blank-name", lambda g, b: g.create_bank("   ", "", 2), InvalidInput),
    ("create-long-name", lambda g, b: g.create_bank("x" * 101, "", 2), InvalidInput),
    ("create-long-location", lambda g, b: g.create_bank("X", "y" * 201, 2), InvalidInput),
    ("create-no-compartments", lambda g, b: g.create_bank("X", "", 0), InvalidInput),
    ("create-too-many", lambda g, b: g.create_bank("X", "", 1001), InvalidInput),
    ("create-bad-interval", lambda g, b: g.create_bank("X", "", 2, 0), InvalidInput),
    ("token-unknown-bank", lambda g, b: g.issue_token(UNKNOWN_UUID), NotFound),
    ("revoke-unknown-bank", lambda g, b: g.revoke(UNKNOWN_UUID, "x"), NotFound),
    ("revoke-without-reason", lambda g, b: g.revoke(b["ready"], "  "), InvalidInput),
    ("open-unknown-bank", lambda g, b: g.request_open(UNKNOWN_UUID, 1), NotFound),
    ("open-unprovisioned", lambda g, b: g.request_open(b["fresh"], 1), RuleViolation),
    ("open-unknown-compartment", lambda g, b: g.request_open(b["ready"], 99), NotFound),
    ("open-compartment-zero", lambda g, b: g.request_open(b["ready"], 0), NotFound),
    ("open-in-flight", lambda g, b: g.request_open(b["ready"], 1), RuleViolation),
    ("open-revoked", lambda g, b: g.request_open(b["revoked"], 1), RuleViolation),
    ("config-unknown-bank", lambda g, b: g.request_config_push(UNKNOWN_UUID), NotFound),
    ("config-unprovisioned", lambda g, b: g.request_config_push(b["fresh"]), RuleViolation),
]


@pytest.fixture
async def banks(service: LockerService) -> dict[str, str]:
    ready = await provision(service, "Ready")
    await service.request_open(ready.uuid, 1, actor="setup")
    revoked = await provision(service, "Revoked")
    await service.revoke(revoked.uuid, reason="setup", actor="setup")
    fresh = await service.create_bank("Fresh", "", 2, actor="setup")
    return {"ready": ready.uuid, "fresh": fresh.uuid, "revoked": revoked.uuid}


@pytest.mark.parametrize(
    ("call", "expected"), [(c, e) for _, c, e in REFUSALS], ids=[i for i, _, _ in REFUSALS]
)
async def test_refusals_match_the_service(
    subject: Subject,
    service: LockerService,
    banks: dict[str, str],
    call: Call,
    expected: type[DomainError],
) -> None:
    oracle = InProcessGateway(service, actor=OPERATOR)
    with pytest.raises(DomainError) as reference:
        await call(oracle, banks)
    assert type(reference.value) is expected
    before = await everything(service)
    with pytest.raises(DomainError) as raised:
        await call(subject.gateway, banks)
    assert type(raised.value) is expected
    assert str(raised.value) == str(reference.value)
    assert await everything(service) == before


# ----- the HTTP gateway's own failures ------------------------------------------------------


def closed_port() -> int:
    """A port nobody listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ----- alerts (issue 15) ---------------------------------------------------------------------


async def test_alerts_listed_and_acknowledged(
    subject: Subject, service: LockerService, clock: FrozenClock
) -> None:
    gateway = subject.gateway
    assert await gateway.list_alerts() == []
    bank = await provision(service)
    txn = await service.request_open(bank.uuid, 1, actor="setup")
    for item in await service.devices.outbox_due(100):
        await service.devices.outbox_published(item)
    clock.advance(service.settings.open_ttl_seconds)
    await service.devices.sweep()  # the open expires: one `command expired` alert
    alerts = await gateway.list_alerts()
    assert alerts == await service.list_alerts()
    assert all(type(a) is AlertView for a in alerts)
    (alert,) = [a for a in alerts if a.transaction_id == txn.transaction_id]
    assert (alert.kind, alert.state, alert.bank_name) == ("command_expired", "open", "Hall A")
    acked = await gateway.acknowledge_alert(alert.id, "door checked, closed")
    assert type(acked) is AlertView and acked == await service.get_alert(alert.id)
    assert (acked.acknowledged_by, acked.ack_note, acked.state) == (
        OPERATOR,
        "door checked, closed",
        "resolved",
    )
    last = (await service.events_after(0))[-1]
    assert last.event_type == "AlertAcknowledged" and last.metadata["actor"] == OPERATOR
    assert alert.id not in [a.id for a in await gateway.list_alerts()]
    assert await gateway.list_alerts(include_resolved=True) == await service.list_alerts(True)
    before = await everything(service)
    for bad_id, note, error in (
        (alert.id, "", RuleViolation),  # already acknowledged
        (alert.id + 10_000, "", NotFound),
        (0, "", InvalidInput),
    ):
        with pytest.raises(error) as got:
            await gateway.acknowledge_alert(bad_id, note)
        with pytest.raises(error) as expected:
            await service.acknowledge_alert(bad_id, note, actor=OPERATOR)
        assert str(got.value) == str(expected.value)
    assert await everything(service) == before


async def test_http_gateway_backend_unreachable() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with HttpGateway(url, "some-token") as gateway:
        with pytest.raises(BackendUnreachable, match=f"backend unreachable at {url}") as info:
            await gateway.list_banks()
        assert isinstance(info.value, DomainError)
        assert "some-token" not in str(info.value)
        with pytest.raises(BackendUnreachable):
            await gateway.request_open(UNKNOWN_UUID, 1)
        with pytest.raises(BackendUnreachable):
            await gateway.status()


async def test_http_gateway_refused_tokens(service: LockerService) -> None:
    async with serve_api(service) as api:
        async with HttpGateway(api.base_url, "wrong-token") as stranger:
            with pytest.raises(AccessDenied, match="invalid or revoked API token") as info:
                await stranger.list_banks()
            assert "wrong-token" not in str(info.value) and "wrong-token" not in repr(stranger)
        async with HttpGateway(api.base_url, api.app_token) as app_client:
            assert await app_client.whoami() == ("mobile-app", "app")
            assert await app_client.list_banks() == []
            before = await everything(service)
            with pytest.raises(AccessDenied, match="may not do this"):
                await app_client.create_bank("X", "", 2)
            assert await everything(service) == before


async def test_http_gateway_quotes_path_segments(service: LockerService) -> None:
    async with serve_api(service) as api, HttpGateway(api.base_url, api.operator_token) as gw:
        for odd in ("a/b", "../locker-banks", "x?y=1", "%2F", "#frag"):
            with pytest.raises(NotFound):
                await gw.get_bank(odd)
            with pytest.raises(NotFound):
                await gw.get_transaction(odd)


async def test_actions_name_the_operator_and_where_from(
    subject: Subject, service: LockerService
) -> None:
    """Attribution (issue 15): standalone, the SSH client address of the console's own
    session; attached, the address the console reports (labelled so) next to the HTTP peer
    address the server saw."""
    from backend.attribution import current_origin

    bank = await provision(service)
    token = current_origin.set("ssh from 203.0.113.7")
    try:
        txn = await subject.gateway.request_open(bank.uuid, 1)
    finally:
        current_origin.reset(token)
    event = next(
        e for e in await service.events_after(0) if e.event_type == "CompartmentOpeningRequested"
    )
    assert event.metadata["actor"] == OPERATOR
    if subject.kind == "in-process":
        expected = "ssh from 203.0.113.7"
    else:  # the HTTP gateway reports this process's own origin; the server adds the peer
        from backend.attribution import local_origin

        expected = f"{local_origin()} (reported by client), HTTP peer 127.0.0.1"
    assert event.metadata["origin"] == expected
    stored = await service.get_transaction(txn.transaction_id)
    assert stored.requested_from == expected and stored.requested_by == OPERATOR
    assert (await subject.gateway.get_transaction(txn.transaction_id)).requested_from == expected
