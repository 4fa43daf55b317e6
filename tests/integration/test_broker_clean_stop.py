"""A clean stop of the embedded broker logs no traceback, with clients still connected and
messages in flight (upstream amqtt logs "Broadcast loop stopped by exception" with a
traceback when its broadcast task is cancelled instead of ended)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import aiomqtt
import pytest

from tests.integration.broker_fixtures import (
    BACKEND_USER,
    DEVICE_A,
    client,
    embedded_broker,
    running_hook,
)

A_STATE = f"locker/{DEVICE_A}/state"


async def test_a_stop_with_clients_and_deliveries_logs_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_hook() as hook, contextlib.AsyncExitStack() as clients:
        clients.push_async_exit(_ignore_disconnected)  # runs last: the clients' exits
        broker = embedded_broker(hook, tmp_path, persistence=True)
        await broker.start()
        try:
            backend = await clients.enter_async_context(client(broker, BACKEND_USER))
            await backend.subscribe("locker/+/state", qos=1)
            device = await clients.enter_async_context(client(broker, DEVICE_A))
            for beat in range(20):  # retained heartbeats: deliveries and store writes pending
                await device.publish(A_STATE, b"%d" % beat, qos=1, retain=True)
            async for message in backend.messages:  # the broker is delivering
                if message.payload == b"0":
                    break
        finally:
            await broker.stop()  # clients still connected
    # The broker's records only: the test's own clients (paho's logger "mqtt") may log the
    # broken pipe of the connection the stop closed under them.
    tracebacks = [
        r for r in caplog.records if r.name != "mqtt" and (r.exc_info or r.levelno >= logging.ERROR)
    ]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]
    assert "embedded MQTT broker stopped" in caplog.text


async def _ignore_disconnected(
    exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
) -> bool:
    return isinstance(exc, aiomqtt.MqttError)
