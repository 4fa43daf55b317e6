"""The real Mosquitto 2.0 + mosquitto-go-auth, started from deploy/mosquitto.conf as shipped,
in front of our real hook (tests/support/goauth_broker.py).

Proves the fixture other tests build on: logins and topic checks are decided by the hook
over go-auth's HTTP backend (the hook sees the calls), a wrong password and a foreign
topic are refused, and the TLS listener serves with the documented certificate setup.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import aiomqtt
import pytest

from tests.integration.broker_fixtures import (
    BACKEND_USER,
    DEVICE_A,
    DEVICE_B,
    SECRET,
    Address,
    Inbox,
    client,
    running_hook,
)
from tests.support.goauth_broker import (
    SHIPPED_CONFIG,
    ShippedConfigChanged,
    goauth_available,
    run_goauth_mosquitto,
    shipped_config_for,
)

pytestmark = [
    pytest.mark.mosquitto,
    pytest.mark.skipif(not goauth_available(), reason="mosquitto or go-auth.so missing"),
]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_go_auth_asks_our_hook_for_logins_and_topics(tmp_path: Path) -> None:
    async with running_hook() as hook:
        with run_goauth_mosquitto(tmp_path, hook_port=_port(hook.url), secret=SECRET) as broker:
            endpoint = Address(broker.host, broker.port)
            async with client(endpoint, BACKEND_USER) as backend:
                await backend.subscribe(f"locker/{DEVICE_A}/state", qos=1)
                inbox = Inbox(backend)
                async with client(endpoint, DEVICE_A) as device:
                    await device.publish(f"locker/{DEVICE_A}/state", b'{"x":1}', qos=1)
                    # A device may not publish for another bank: go-auth drops it silently.
                    await device.publish(f"locker/{DEVICE_B}/state", b'{"x":2}', qos=1)
                    await device.publish(f"locker/{DEVICE_A}/state", b'{"x":3}', qos=1)
                    await inbox.wait_for(f"locker/{DEVICE_A}/state", b'{"x":3}')
                await inbox.close()
            topics = [(m.topic, m.payload) for m in inbox.messages]
            assert topics == [
                (f"locker/{DEVICE_A}/state", b'{"x":1}'),
                (f"locker/{DEVICE_A}/state", b'{"x":3}'),
            ]
            # The calls came from go-auth (its field names), to the shipped URIs.
            logins = [c for c in hook.calls if c.path == "/api/mosq/auth"]
            assert {c.username for c in logins} >= {BACKEND_USER, DEVICE_A}
            assert all("clientid" in c.body for c in logins)
            denied = [c for c in hook.acl_calls(acc=2) if c.topic == f"locker/{DEVICE_B}/state"]
            assert len(denied) == 1
            with pytest.raises(aiomqtt.MqttError):
                async with client(endpoint, DEVICE_A, "wrong-password"):
                    pass
            assert SECRET not in broker.log_text()  # nothing failed, so nothing leaked


async def test_tls_listener_with_the_documented_certificates(tmp_path: Path) -> None:
    async with running_hook() as hook:
        with run_goauth_mosquitto(tmp_path, hook_port=_port(hook.url), secret=SECRET) as broker:
            context = ssl.create_default_context(cafile=str(broker.ca_file))
            async with aiomqtt.Client(
                "127.0.0.1",
                broker.tls_port,
                username=DEVICE_A,
                password="password-of-a",
                identifier=DEVICE_A,  # a bank: its UUID or pinned id (DESIGN 4)
                tls_context=context,
                timeout=5,
            ) as device:
                await device.publish(f"locker/{DEVICE_A}/state", b"{}", qos=1)
            # Without the CA the handshake fails: the listener really is TLS.
            with pytest.raises(aiomqtt.MqttError):
                async with aiomqtt.Client(
                    "127.0.0.1",
                    broker.tls_port,
                    username=DEVICE_A,
                    password="password-of-a",
                    identifier="tls-device-2",
                    tls_context=ssl.create_default_context(),
                    timeout=5,
                ):
                    pass


def test_substitution_touches_only_ports_paths_addresses_and_secrets(tmp_path: Path) -> None:
    kwargs = {
        "port": 21001,
        "tls_port": 21002,
        "hook_host": "127.0.0.1",
        "hook_port": 21003,
        "secret": "s3cret",
        "persistence_dir": tmp_path,
        "certs_dir": tmp_path / "certs",
        "plugin": Path("/x/go-auth.so"),
        "as_root": False,
    }
    shipped = SHIPPED_CONFIG.read_text().splitlines()
    produced = shipped_config_for(**kwargs).splitlines()  # type: ignore[arg-type]  # the function checks its keywords
    assert len(produced) == len(shipped)
    changed = {a.split(" ")[0] for a, b in zip(shipped, produced, strict=True) if a != b}
    assert changed == {
        "listener",
        "persistence_location",
        "auth_plugin",
        "certfile",
        "keyfile",
        "auth_opt_http_host",
        "auth_opt_http_port",
        "auth_opt_http_getuser_uri",
        "auth_opt_http_aclcheck_uri",
        "#auth_opt_http_superuser_uri",
    }
    assert "listener 21001 127.0.0.1" in produced
    assert "listener 21002 127.0.0.1" in produced
    # An option the substitution needs is gone: fail loudly, never run something else.
    without_plugin = "\n".join(s for s in shipped if not s.startswith("auth_plugin "))
    with pytest.raises(ShippedConfigChanged):
        shipped_config_for(**kwargs, config_text=without_plugin)  # type: ignore[arg-type]  # the function checks its keywords
