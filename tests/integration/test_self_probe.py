"""The backend's self-probe (DESIGN section 4) against a broker that drops a session but
keeps its socket: upstream amqtt 0.12.1, whose `Broker` deletes the session of a client id
when another clean-session CONNECT uses that id, and leaves the first connection open. The
backend must notice (state and /healthz say so), reconnect and receive again."""

from __future__ import annotations

from pathlib import Path

from amqtt.broker import Broker

from backend.broker.config import build_broker_config
from backend.mqtt.runtime import MqttRuntime
from backend.service import LockerService
from tests.integration.broker_fixtures import (
    BACKEND_PASSWORD,
    BACKEND_USER,
    SECRET,
    Address,
    client,
    running_hook,
)
from tests.support.mosquitto import free_port
from tests.support.settings import make_settings
from tests.support.waiting import until

CLIENT_ID = "locker-backend-probed"


async def test_a_silently_dropped_session_is_noticed_and_replaced(tmp_path: Path) -> None:
    async with running_hook() as hook:
        port = free_port()
        config = build_broker_config(
            host="127.0.0.1", port=port, hook_url=hook.url, mosq_secret=SECRET, db_file=None
        )
        upstream = Broker(config)
        await upstream.start()
        settings = make_settings(
            tmp_path,
            mqtt_host="127.0.0.1",
            mqtt_port=port,
            mqtt_user=BACKEND_USER,
            mqtt_password=BACKEND_PASSWORD,
            mqtt_client_id=CLIENT_ID,
            mqtt_protocol="3.1.1",  # upstream amqtt speaks MQTT 3.1.1 only
            mqtt_probe_interval=0.3,
            mqtt_probe_timeout=1.0,
        )
        service = LockerService(settings)
        await service.migrate()
        runtime = MqttRuntime(service)
        try:
            await runtime.start()
            await runtime.wait_connected(10)
            probe = runtime.connection.probe
            await until(lambda: _value(probe.returned), lambda n: n >= 1, "first probe", 10)
            seen: list[tuple[bool, str | None]] = []
            runtime.state.add_listener(lambda s: seen.append((s.connected, s.last_error)))

            # another CONNECT with our client id: upstream drops our session, keeps our socket
            async with client(Address("127.0.0.1", port), BACKEND_USER, identifier=CLIENT_ID):
                pass

            await until(
                lambda: _value(runtime.metrics.probe_failures), lambda n: n == 1, "noticed", 15
            )
            assert any(not up and "self-probe" in (why or "") for up, why in seen), seen
            await runtime.wait_connected(15)
            returned = probe.returned
            await until(
                lambda: _value(probe.returned), lambda n: n > returned, "receives again", 10
            )
            assert runtime.state.connected
        finally:
            await runtime.stop()
            await upstream.shutdown()
            service.close()


async def _value(value: int) -> int:
    return value
