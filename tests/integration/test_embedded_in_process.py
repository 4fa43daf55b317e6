"""The embedded broker deciding in process: the hook's `HookDecisions` awaited directly.

The backend runs amqtt with the decisions the HTTP hook serves (`backend/runner.py`), so no
check makes an HTTP request. These tests hold the same promises as `test_embedded_broker.py`
(which asks the hook over HTTP) on that path: logins, one bank never sees or forges
another's traffic, the will topic, fail-closed, and a revocation applying at the very next
check (nothing cached). A recorder around the real decisions notes every check asked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from backend.broker import EmbeddedBroker
from backend.domain.acl import Decision
from backend.http.hook import HookMetrics
from backend.http.hook_decisions import HookDecisions
from tests.integration.broker_fixtures import (
    BACKEND_USER,
    DEVICE_A,
    DEVICE_B,
    DEVICE_PASSWORDS,
    TIMEOUT,
    Inbox,
    client,
    connect_packet,
    make_directory,
    raw_connection,
)

A_STATE = f"locker/{DEVICE_A}/state"
A_EVENT = f"locker/{DEVICE_A}/event"
A_COMMAND = f"locker/{DEVICE_A}/command"
B_EVENT = f"locker/{DEVICE_B}/event"
B_COMMAND = f"locker/{DEVICE_B}/command"
NOT_AUTHORIZED = 5


@dataclass(frozen=True)
class Check:
    username: str
    topic: str
    acc: int
    allowed: bool


@dataclass
class Recorder:
    """The real decisions, each topic check noted (and waitable); a check of a topic in
    `failing` raises instead."""

    decisions: HookDecisions
    checks: list[Check] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def login(self, username: str, password: str, client_id: str) -> Decision:
        return await self.decisions.login(username, password, client_id)

    async def acl(self, username: str, client_id: str, topic: str, acc: int) -> Decision:
        if topic in self.failing:
            raise RuntimeError("decision failed")
        decision = await self.decisions.acl(username, client_id, topic, acc)
        async with self._changed:
            self.checks.append(Check(username, topic, acc, decision.allowed))
            self._changed.notify_all()
        return decision

    async def wait_for(self, check: Check) -> None:
        async with asyncio.timeout(TIMEOUT), self._changed:
            await self._changed.wait_for(lambda: check in self.checks)


@dataclass
class InProcess:
    broker: EmbeddedBroker
    recorder: Recorder
    metrics: HookMetrics


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[InProcess]:
    metrics = HookMetrics()
    decisions = HookDecisions(make_directory(), legacy_status=lambda: True, metrics=metrics)
    recorder = Recorder(decisions)
    broker = EmbeddedBroker(port=0, decisions=recorder, data_dir=tmp_path, persistence=False)
    async with broker:
        yield InProcess(broker, recorder, metrics)


@contextlib.asynccontextmanager
async def listening(mqtt: aiomqtt.Client) -> AsyncIterator[Inbox]:
    inbox = Inbox(mqtt)
    try:
        yield inbox
    finally:
        await inbox.close()


def test_the_broker_asks_the_hook_one_way(tmp_path: Path) -> None:
    decisions = HookDecisions(make_directory(), legacy_status=lambda: True)
    with pytest.raises(ValueError, match="one way"):
        EmbeddedBroker(decisions=decisions, hook_url="http://127.0.0.1:1", data_dir=tmp_path)
    with pytest.raises(ValueError, match="decisions or hook_url"):
        EmbeddedBroker(data_dir=tmp_path)


async def test_logins_are_the_hooks_decisions_and_counted(running: InProcess) -> None:
    broker = running.broker
    with pytest.raises(aiomqtt.MqttCodeError):
        async with client(broker, DEVICE_A, "wrong-password"):
            pass
    async with client(broker, DEVICE_A):
        assert broker.is_connected(DEVICE_A)
    counts = running.metrics.snapshot()
    assert counts[("auth", "deny")] == 1
    assert counts[("auth", "allow")] == 1


async def test_one_bank_never_receives_or_forges_another_banks_traffic(
    running: InProcess,
) -> None:
    broker = running.broker
    async with (
        client(broker, BACKEND_USER) as backend,
        listening(backend) as backend_inbox,
        client(broker, DEVICE_A) as device_a,
        listening(device_a) as inbox,
    ):
        await backend.subscribe("locker/#", qos=1)
        refused = await device_a.subscribe([(B_COMMAND, 1), ("locker/#", 1)])
        assert [code.value for code in refused] == [128, 128]
        await device_a.subscribe(A_COMMAND, qos=1)
        await device_a.publish(B_EVENT, b"forged", qos=1)  # wrong topic: dropped
        await device_a.publish(A_EVENT, b"own", qos=1)
        received = await backend_inbox.wait_for(A_EVENT, b"own")
        assert backend_inbox.before(received) == []
        await backend.publish(B_COMMAND, b"for-b", qos=1)  # nobody else's reply
        await backend.publish(A_COMMAND, b"for-a", qos=1)
        mine = await inbox.wait_for(A_COMMAND, b"for-a")
        assert inbox.before(mine) == []
    assert Check(DEVICE_A, B_EVENT, 2, False) in running.recorder.checks
    assert Check(DEVICE_A, A_COMMAND, 1, True) in running.recorder.checks


async def test_a_revocation_applies_at_the_next_check(running: InProcess) -> None:
    broker, recorder = running.broker, running.recorder
    async with (
        client(broker, BACKEND_USER) as backend,
        listening(backend) as backend_inbox,
        client(broker, DEVICE_A) as device_a,
        listening(device_a) as inbox,
        client(broker, DEVICE_B) as device_b,
    ):
        await backend.subscribe("locker/+/event", qos=1)
        await device_a.subscribe(A_COMMAND, qos=1)
        await backend.publish(A_COMMAND, b"before", qos=1)
        await inbox.wait_for(A_COMMAND, b"before")

        recorder.decisions.directory.device_revoked(DEVICE_A)
        await backend.publish(A_COMMAND, b"after", qos=1)
        await recorder.wait_for(Check(DEVICE_A, A_COMMAND, 1, False))  # withheld
        await device_a.publish(A_EVENT, b"revoked-publish", qos=1)
        await recorder.wait_for(Check(DEVICE_A, A_EVENT, 2, False))  # dropped
        # another bank's later message still flows, and nothing from A came first
        await device_b.publish(B_EVENT, b"marker", qos=1)
        marker = await backend_inbox.wait_for(B_EVENT, b"marker")
        assert backend_inbox.before(marker) == []
    assert [m.payload for m in inbox.messages] == [b"before"]
    with pytest.raises(aiomqtt.MqttCodeError):
        async with client(broker, DEVICE_A):
            pass


async def test_a_will_on_another_banks_topic_is_refused(running: InProcess) -> None:
    packet = connect_packet(
        "device-a-evil", DEVICE_A, DEVICE_PASSWORDS[DEVICE_A], will_topic=B_COMMAND,
        will_payload=b'{"action":"open_compartment"}',
    )  # fmt: skip
    async with raw_connection(running.broker, packet) as (code, _writer):
        assert code == NOT_AUTHORIZED


async def test_a_failing_decision_denies(running: InProcess) -> None:
    broker, recorder = running.broker, running.recorder
    async with (
        client(broker, BACKEND_USER) as backend,
        listening(backend) as backend_inbox,
        client(broker, DEVICE_A) as device_a,
    ):
        await backend.subscribe(f"locker/{DEVICE_A}/+", qos=1)
        recorder.failing.add(A_STATE)
        await device_a.publish(A_STATE, b"while-failing", qos=1)  # its check raises
        await device_a.publish(A_EVENT, b"after", qos=1)
        after = await backend_inbox.wait_for(A_EVENT, b"after")
        assert backend_inbox.before(after) == []
