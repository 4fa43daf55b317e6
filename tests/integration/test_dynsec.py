"""AUTH_MODE=dynsec against a real Mosquitto 2.0 with its dynamic-security plugin: accounts
created at provisioning, revocation, reply privacy, reconcile at start, health, and the
embedded Mosquitto's life cycle. Devices are raw MQTT clients (nothing of ours)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiomqtt
import pytest
from aiohttp import ClientSession

from backend.accounts import NoAccountDirectory
from backend.broker.mosquitto import MosquittoChild
from backend.domain.acl import UserKind
from backend.dynsec.policy import account_acls, bank_role
from backend.runner import BackendServices
from backend.service import LockerService
from tests.support.dynsec import (
    Credentials,
    admin_command,
    device_client,
    dynsec_backend,
    dynsec_settings,
    needs_dynsec,
    provision,
    provisioned_device,
    read_until_disconnected,
)
from tests.support.mosquitto import free_port
from tests.support.waiting import until

pytestmark = [pytest.mark.mosquitto, needs_dynsec]


async def test_provisioning_creates_the_bank_account_with_exactly_its_topics(
    tmp_path: Path,
) -> None:
    settings = dynsec_settings(tmp_path)
    async with dynsec_backend(settings) as services:
        creds = await provisioned_device(services, "locker-client-0a1b2c3d")
        client, role = await admin_command(
            settings,
            {"command": "getClient", "username": creds.user},
            {"command": "getRole", "rolename": bank_role(creds.user)},
        )
        record = client["data"]["client"]
        assert record["clientid"] == "locker-client-0a1b2c3d"  # pinned
        assert not record.get("disabled")
        assert [r["rolename"] for r in record["roles"]] == [bank_role(creds.user)]
        acls = {(a["acltype"], a["topic"]) for a in role["data"]["role"]["acls"]}
        assert acls == set(account_acls(UserKind.DEVICE, creds.user))
        assert all(a["allow"] for a in role["data"]["role"]["acls"])

        # The device logs in with its pinned id and gets its commands ...
        async with device_client(settings, creds) as device:
            granted = await device.subscribe(f"locker/{creds.user}/command", qos=1)
            assert granted[0].value < 0x80
            txn = await services.service.request_open(creds.user, 1)
            async with asyncio.timeout(5):
                async for message in device.messages:
                    assert json.loads(message.payload)["transaction_id"] == txn.transaction_id
                    break
        # ... and with no other client id (its UUID included: the plugin pins exactly one).
        with pytest.raises(aiomqtt.MqttCodeError, match="authori"):
            async with device_client(settings, creds, identifier=creds.user):
                pass
        health = services.service.accounts.health()
        assert health is not None and health.ok, health


async def test_revocation_disconnects_within_a_second_and_reconnects_fail(
    tmp_path: Path,
) -> None:
    settings = dynsec_settings(tmp_path)
    async with dynsec_backend(settings) as services:
        creds = await provisioned_device(services, "locker-client-5e6f7a8b")
        device = device_client(settings, creds)
        async with device:
            await device.subscribe(f"locker/{creds.user}/command", qos=1)
            lost = asyncio.Event()

            async def read() -> None:
                await read_until_disconnected(device)
                lost.set()

            reader = asyncio.create_task(read())
            started = time.monotonic()
            await services.service.revoke(creds.user, reason="stolen")
            async with asyncio.timeout(1.0):  # DESIGN: within 1 s
                await lost.wait()
            print(f"revocation -> disconnect: {1000 * (time.monotonic() - started):.0f} ms")
            await reader
        for _ in range(3):
            with pytest.raises(aiomqtt.MqttCodeError, match="authori"):
                async with device_client(settings, creds):
                    pass


async def test_provisioning_reply_reaches_only_the_client_that_registered(
    tmp_path: Path,
) -> None:
    """A second provisioning connection (same account, every filter it can think of, the
    victim's own reply topic included) reads nothing but its own reply."""
    settings = dynsec_settings(tmp_path)
    victim_id = "locker-client-c0ffee00"
    async with dynsec_backend(settings) as services:
        async with aiomqtt.Client(
            "127.0.0.1",
            settings.mqtt_port,
            username=settings.mqtt_provisioning_user,
            password=settings.secret("mqtt_provisioning_password"),
            identifier="eavesdropper-1",
        ) as spy:
            filters = [
                f"locker/provisioning/reply/{victim_id}",
                "locker/provisioning/reply/+",
                "locker/provisioning/reply/#",
                "locker/provisioning/#",
                "locker/#",
                "#",
                "+/provisioning/reply/+",
            ]
            await spy.subscribe([(f, 1) for f in filters])
            created = await services.service.create_bank("victim", "x", 4)
            reply = await provision(settings, created.token, victim_id)
            assert reply["status"] == "success"
            # The spy's own registration (a wrong token): the backend answers on the spy's
            # topic after the victim's reply went out, on the same connection, so a leaked
            # reply would arrive before it.
            await spy.publish(
                "locker/register/not-a-token", json.dumps({"client_id": "eavesdropper-1"}), qos=1
            )
            seen: list[tuple[str, bytes]] = []
            async with asyncio.timeout(10):
                async for message in spy.messages:
                    seen.append((str(message.topic), bytes(message.payload)))
                    if str(message.topic) == "locker/provisioning/reply/eavesdropper-1":
                        break
        assert [topic for topic, _ in seen] == ["locker/provisioning/reply/eavesdropper-1"]
        assert json.loads(seen[0][1])["status"] == "error"
        assert reply["data"]["mqtt_password"].encode() not in b"".join(p for _, p in seen)


async def test_reconcile_at_start_follows_the_store_and_reports_what_mosquitto_lacks(
    tmp_path: Path,
) -> None:
    settings = dynsec_settings(tmp_path)
    stranger = "00000000-0000-4000-8000-00000000dead"
    async with dynsec_backend(settings) as services:
        kept = await provisioned_device(services, "dev-kept", "kept")
        lost = await provisioned_device(services, "dev-lost", "lost")
        revoked = await provisioned_device(services, "dev-revoked", "revoked")
    # Meanwhile (backend down, broker up as in production): the store revokes one bank,
    # someone deletes an account and adds one for a bank the store never had.
    offline = LockerService(settings, accounts=NoAccountDirectory())  # broker unreachable
    await offline.revoke(revoked.user, reason="revoked while the backend was down")
    offline.close()
    async with MosquittoChild(
        data_dir=settings.locker_data_dir,
        port=settings.mqtt_port,
        admin_user=settings.dynsec_admin_user,
        admin_password=settings.secret("dynsec_admin_password"),
    ):
        answers = await admin_command(
            settings,
            {"command": "deleteClient", "username": lost.user},
            {"command": "createClient", "username": stranger, "password": "x"},
            {"command": "createRole", "rolename": bank_role(stranger)},
        )
        assert not any("error" in a for a in answers), answers
    async with dynsec_backend(settings) as services:
        report = services.service.accounts.report  # type: ignore[attr-defined]  # the dynsec directory's
        assert report.missing == [lost.user]
        assert report.disabled == [revoked.user]
        assert report.removed == [stranger]
        listed = await services.service.accounts.listed_clients()  # type: ignore[attr-defined]  # the dynsec directory's
        assert stranger not in listed and lost.user not in listed
        assert listed[revoked.user].get("disabled") is True
        assert not listed[kept.user].get("disabled")
        health = services.service.accounts.health()
        assert health is not None and "1 provisioned bank(s) have no Mosquitto account" in (
            health.detail
        )


async def test_healthz_says_when_the_plugin_cannot_be_administered(tmp_path: Path) -> None:
    settings = dynsec_settings(tmp_path)
    async with dynsec_backend(settings) as services, ClientSession() as http:
        url = f"http://127.0.0.1:{settings.http_port}/healthz"
        async with http.get(url) as response:
            body = await response.json()
            assert response.status == 200, body
            assert body["accounts"]["ok"] is True
        assert services.mosquitto is not None and services.mosquitto.process is not None
        services.mosquitto.process.terminate()

        async def probe() -> tuple[int, dict[str, object]]:
            async with http.get(url) as response:
                return response.status, await response.json()

        _status, body = await until(probe, lambda r: r[0] == 503, "healthz 503", timeout=10)
        accounts = body["accounts"]
        assert isinstance(accounts, dict) and accounts["ok"] is False
        assert "dynsec" in str(accounts["detail"])


async def test_a_provisioning_reply_waits_for_its_account(tmp_path: Path) -> None:
    """The relay installs the account before the password leaves: the device can log in
    the moment it has the reply (no window of 'not authorized')."""
    settings = dynsec_settings(tmp_path)
    async with dynsec_backend(settings) as services:
        for i in range(5):
            creds = await provisioned_device(services, f"dev-fast-{i}", f"fast {i}")
            async with device_client(settings, creds):
                pass


async def test_embedded_mosquitto_left_by_a_killed_run_is_stopped(tmp_path: Path) -> None:
    port = free_port()
    kwargs = {
        "data_dir": tmp_path,
        "port": port,
        "admin_user": "admin",
        "admin_password": "pw",
    }
    first = MosquittoChild(**kwargs)  # type: ignore[arg-type]  # keywords of the right types
    await first.start()
    assert first.process is not None
    stale_pid = first.process.pid
    first.process = None  # "killed": nobody stops it
    second = MosquittoChild(**kwargs)  # type: ignore[arg-type]  # keywords of the right types
    try:
        await second.start()
        assert second.process is not None and second.process.pid != stale_pid
        assert _gone(stale_pid)
        assert oct(os.stat(tmp_path / "mosquitto").st_mode & 0o777) == "0o700"
        for name in ("mosquitto.conf", "dynamic-security.json", "provisioning.acl"):
            assert oct(os.stat(tmp_path / "mosquitto" / name).st_mode & 0o777) == "0o600"
    finally:
        await second.stop()


def _gone(pid: int) -> bool:
    """Exited (a zombie until we reap it: it was our child)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


async def _event_processed(services: BackendServices, creds: Credentials, n: int) -> None:
    """Publish one door event as the device and wait until the store has it."""
    async with device_client(services.settings, creds) as device:
        payload = {
            "type": "event",
            "event": "qr_scanned",
            "event_id": f"takeover-{n}",
            "timestamp": "2026-12-01T10:00:00Z",
            "data": {"qr_payload": f"ticket-{n}", "scanner": "front"},
        }
        await device.publish(f"locker/{creds.user}/event", json.dumps(payload), qos=1)

    async def scanned() -> int:
        events = await services.service.events_after(0, limit=10_000)
        return sum(1 for e in events if e.event_type == "QrScanned")

    await until(scanned, lambda count: count >= n, f"event {n} processed", timeout=10)


async def test_backend_client_id_takeover_is_detected_and_recovered(tmp_path: Path) -> None:
    """Mosquitto's plugin cannot refuse a CONNECT that takes over another client's id. The
    backend's id carries a suffix only its password derives: the guessable
    `MQTT_CLIENT_ID` takes nothing over; and if the full id leaks, the backend notices
    the lost connection, logs in again (pushing the intruder off) and processes again."""
    settings = dynsec_settings(tmp_path, mqtt_probe_interval=0.5, mqtt_probe_timeout=3.0)
    async with dynsec_backend(settings) as services:
        creds = await provisioned_device(services, "dev-takeover")
        metrics = services.runtime.metrics
        probe = services.runtime.connection.probe
        await _event_processed(services, creds, 1)
        connects_before = metrics.connects
        intruder = {
            "hostname": "127.0.0.1",
            "port": settings.mqtt_port,
            "username": settings.mqtt_provisioning_user,
            "password": settings.secret("mqtt_provisioning_password"),
        }
        assert settings.backend_client_id != settings.mqtt_client_id
        async with aiomqtt.Client(identifier=settings.mqtt_client_id, **intruder):  # type: ignore[arg-type]  # aiomqtt's keywords
            await _event_processed(services, creds, 2)
        assert metrics.connects == connects_before  # nothing happened to the backend

        # The full id leaked: Mosquitto hands the session to the intruder ...
        kicked = asyncio.Event()

        async def intrude() -> None:
            try:
                async with aiomqtt.Client(
                    identifier=settings.backend_client_id,
                    clean_session=True,
                    **intruder,  # type: ignore[arg-type]  # aiomqtt's keywords
                ) as client:
                    await read_until_disconnected(client)
            except aiomqtt.MqttError:
                pass
            kicked.set()

        intruder_task = asyncio.create_task(intrude())
        # ... the backend notices and logs in again, which pushes the intruder off ...
        await until(
            lambda: asyncio.sleep(0, metrics.connects),
            lambda n: n > connects_before,
            "the backend connected again",
            timeout=10,
        )
        async with asyncio.timeout(10):
            await kicked.wait()
        await intruder_task
        await services.runtime.state.wait_for(True)
        # ... and processes again (its subscriptions restored on the new session), its
        # self-probe on server/probe/{instance} coming back on the new session.
        await _event_processed(services, creds, 3)
        returned = probe.returned
        await until(
            lambda: asyncio.sleep(0, probe.returned),
            lambda n: n > returned,
            "the self-probe back on the new session",
            timeout=10,
        )
        assert probe.problem() is None
        print(
            f"takeover: backend connects {connects_before} -> {metrics.connects}, "
            f"disconnects {metrics.disconnects}"
        )


async def test_deleting_a_bank_removes_its_account_and_role(tmp_path: Path) -> None:
    settings = dynsec_settings(tmp_path)
    async with dynsec_backend(settings) as services:
        creds = await provisioned_device(services, "dev-deleted")
        await services.service.accounts.deleted(creds.user)
        await services.service.accounts.deleted(creds.user)  # idempotent
        client, role = await admin_command(
            settings,
            {"command": "getClient", "username": creds.user},
            {"command": "getRole", "rolename": bank_role(creds.user)},
        )
        assert "not found" in client["error"].lower() and "not found" in role["error"].lower()
        with pytest.raises(aiomqtt.MqttCodeError, match="authori"):
            async with device_client(settings, creds):
                pass


async def test_admin_commands_wait_out_a_broker_restart(tmp_path: Path) -> None:
    """A command sent while the broker is down is answered once it is back (the admin
    connection reconnects; unanswered batches are sent again)."""
    from backend.dynsec.admin import DynsecAdmin

    settings = dynsec_settings(tmp_path)
    child = MosquittoChild(
        data_dir=tmp_path,
        port=settings.mqtt_port,
        admin_user=settings.dynsec_admin_user,
        admin_password=settings.secret("dynsec_admin_password"),
    )
    admin = DynsecAdmin(
        "127.0.0.1",
        settings.mqtt_port,
        settings.dynsec_admin_user,
        settings.secret("dynsec_admin_password"),
        timeout=5,
        attempts=4,
    )
    await child.start()
    try:
        await admin.start()
        (first,) = await admin.execute([{"command": "listClients"}])
        assert "error" not in first
        await child.stop()
        pending = asyncio.create_task(
            admin.execute([{"command": "createClient", "username": "late", "password": "x"}])
        )
        await until(
            lambda: asyncio.sleep(0, admin.connected),
            lambda connected: not connected,
            "the admin noticed the broker is gone",
            timeout=10,
        )
        assert not pending.done()
        await child.start()
        (created,) = await asyncio.wait_for(pending, 30)
        assert "error" not in created, created
        (again,) = await admin.execute(
            [{"command": "createClient", "username": "late", "password": "x"}]
        )
        assert "already exists" in again["error"].lower()  # the directory treats it as done
    finally:
        await admin.close()
        await child.stop()


async def test_embedded_mosquitto_dies_with_a_killed_backend_and_restarts(
    tmp_path: Path,
) -> None:
    """`--headless` with LOCKER_BROKER=mosquitto, SIGKILLed: its Mosquitto goes with it
    (no orphan holding the port), and the next start serves again at once."""
    from tests.support.headless_instances import headless_instance

    backend = headless_instance(
        "embedded-mosquitto",
        tmp_path,
        {
            "LOCKER_BROKER": "mosquitto",
            "MQTT_PORT": str(free_port()),
            "MQTT_PASSWORD": "backend-pw",
            "MQTT_PROVISIONING_PASSWORD": "provisioning-pw",
            "SECRET_KEY": "test-secret-key",
        },
    )
    pid_file = tmp_path / "data" / "mosquitto" / "mosquitto.pid"
    async with ClientSession() as http:
        try:
            await backend.start()
            await backend.wait_healthy(http, 60)
            broker_pid = int(pid_file.read_text())
            await backend.kill()
            await until(
                lambda: asyncio.to_thread(_gone, broker_pid),
                bool,
                "the embedded Mosquitto exited with its backend",
                timeout=10,
            )
            await backend.start()
            await backend.wait_healthy(http, 60)
            assert int(pid_file.read_text()) != broker_pid
        finally:
            await backend.stop()
    assert not pid_file.exists()
