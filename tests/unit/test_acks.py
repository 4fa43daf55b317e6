"""Manual acknowledgements (RELIABILITY.md F6): a PUBACK per finished message, once, on the
connection it arrived on; the dispatcher finishes a group only when its handler is done."""

from __future__ import annotations

import asyncio

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from backend.mqtt.acks import NO_ACK, ConnectionAcks
from backend.mqtt.dispatcher import Dispatcher

PUBACK = 0x40


def paho_client() -> mqtt.Client:
    """A real paho client, never connected: what it would send waits in its packet queue."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="acks-test")
    client.manual_ack_set(True)
    return client


def pubacks(client: mqtt.Client) -> list[int]:
    return [p["mid"] for p in client._out_packet if p["command"] & 0xF0 == PUBACK]


def test_each_finished_message_is_acknowledged_once_in_finishing_order() -> None:
    client = paho_client()
    finished: list[int] = []
    acks = ConnectionAcks(client, on_finished=lambda: finished.append(acks.held))
    first, second, third = acks.take(11, 1), acks.take(12, 1), acks.take(13, 1)
    assert acks.held == 3
    assert pubacks(client) == []  # nothing on receipt

    second()
    third()
    second()  # a second call changes nothing
    first()

    assert pubacks(client) == [12, 13, 11]
    assert acks.held == 0
    assert finished == [2, 1, 0]
    assert acks.sent == 3


def test_nothing_is_acknowledged_on_a_connection_that_has_ended() -> None:
    client = paho_client()
    acks = ConnectionAcks(client)
    before, after = acks.take(1, 1), acks.take(2, 1)
    before()
    acks.close()
    after()
    assert pubacks(client) == [1]
    assert (acks.sent, acks.skipped, acks.held) == (1, 1, 0)


def test_qos0_and_automatic_acknowledgement_send_nothing() -> None:
    client = paho_client()
    acks = ConnectionAcks(client)
    acks.take(0, 0)()
    automatic = ConnectionAcks(None)  # paho acknowledged on receipt
    automatic.take(5, 1)()
    NO_ACK()
    assert pubacks(client) == []
    assert (acks.held, automatic.held, automatic.sent) == (0, 0, 0)


async def test_the_dispatcher_finishes_a_group_after_its_handler_not_when_cancelled() -> None:
    handled: list[list[str]] = []
    entered, release = asyncio.Event(), asyncio.Event()

    async def handle(lane: str, items: list[str]) -> None:
        if lane == "broken":
            raise RuntimeError("a bug in a handler")
        if lane == "slow":
            entered.set()
            await release.wait()

    dispatcher: Dispatcher[str] = Dispatcher(handle, on_handled=handled.append)
    await dispatcher.put("a", "a1")
    await dispatcher.put("broken", "b1")
    await dispatcher.drain(5)
    # a failed handler finishes its messages too (they are not retried for ever)
    assert sorted(handled) == [["a1"], ["b1"]]

    await dispatcher.put("slow", "s1")
    await asyncio.wait_for(entered.wait(), 5)  # the worker waits inside the handler
    assert dispatcher.pending == 1
    await dispatcher.abort()  # a crash: nothing finished, nothing acknowledged
    assert sorted(handled) == [["a1"], ["b1"]]
