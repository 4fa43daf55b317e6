"""Issue 14: each finding of the attack on `--headless` (embedded broker) as a test against a
real process. Every test here failed on main before the fix (see RELIABILITY.md, section
"Hardening"); figures are printed with `-s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from backend.domain.topics import command_topic, device_topic
from simulator.wire import Wire
from tests.support.hardened_headless import EmbeddedHeadless, embedded_headless
from tests.support.reliability_tools import log, size
from tests.support.service_process import parse_metrics
from tests.support.waiting import until

pytestmark = pytest.mark.reliability
START_TIMEOUT = 60.0


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[EmbeddedHeadless]:
    headless = embedded_headless(
        tmp_path / "h", MQTT_PROBE_INTERVAL="1", MQTT_PROBE_TIMEOUT="2", MQTT_CONNECT_TIMEOUT="2"
    )
    await headless.instance.start()
    try:
        async with aiohttp.ClientSession() as session:
            await headless.wait_serving(session, START_TIMEOUT)
        yield headless
    finally:
        await headless.instance.stop()


def _wire() -> Wire:
    return Wire(lambda: datetime.now(UTC), upstream=False)


async def _refused(client: aiomqtt.Client) -> bool:
    try:
        async with client:
            return False
    except aiomqtt.MqttError:
        return True


async def _metric(backend: EmbeddedHeadless, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{backend.url}/metrics") as resp:
        samples = parse_metrics(await resp.text())
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _online_device(
    backend: EmbeddedHeadless, client_id: str
) -> tuple[str, str, aiomqtt.Client]:
    """Provision a bank as the upstream client does (one client id throughout) and connect
    it as itself; returns uuid, password and the connected client (caller exits it)."""
    bank = await backend.create_bank()
    reply = await backend.provision(bank["token"], client_id)
    assert reply.status == "success" and reply.data is not None, reply
    assert reply.data.mqtt_user == bank["uuid"] and reply.data.mqtt_password
    device = backend.client(
        reply.data.mqtt_user, reply.data.mqtt_password, client_id, clean_session=False
    )
    await device.__aenter__()
    await device.subscribe(command_topic(bank["uuid"]), qos=1)
    await device.publish(device_topic(bank["uuid"], "state"), _wire().heartbeat(1.0), qos=1)
    return bank["uuid"], reply.data.mqtt_password, device


# --------------------------------------------------------------------------- finding 1


async def test_pinned_identities_refuse_hijacks_and_the_backend_keeps_serving(
    backend: EmbeddedHeadless,
) -> None:
    """Finding 1 (critical): the provisioning account (every unprovisioned device has its
    password) or a device connecting with the backend's client id, or a bank's, is refused;
    the backend keeps hearing devices; refusals are counted in /metrics."""
    uuid_a, password_a, device = await _online_device(backend, "locker-client-0a0a0a0a")
    try:
        await until(
            lambda: backend.cli("bank", "show", uuid_a, "--json"),
            lambda r: json.loads(r[1]).get("status") == "online",
            "bank online",
            20,
        )
        attacks = {
            "provisioning as the backend": backend.provisioning_client(backend.client_id),
            "provisioning as a backend instance": backend.provisioning_client(
                backend.client_id + "-2"
            ),
            "provisioning as the online bank": backend.provisioning_client(
                "locker-client-0a0a0a0a"
            ),
            "provisioning as the online bank's uuid": backend.provisioning_client(uuid_a),
            "device as the backend": backend.client(uuid_a, password_a, backend.client_id),
            "device with a foreign id": backend.client(uuid_a, password_a, "someone-else"),
        }
        accepted = [name for name, client in attacks.items() if not await _refused(client)]
        log(f"figures: {len(attacks)} hijack CONNECTs, accepted {len(accepted)}")
        assert accepted == []

        # the device is still connected and the backend still hears and commands it
        code, _out, err = await backend.cli("open", uuid_a, "1", "--json")
        assert code == 0, err
        async with asyncio.timeout(20):
            async for message in device.messages:
                if str(message.topic) == command_topic(uuid_a):
                    break
        assert await _metric(backend, "locker_mqtt_refused_total", reason="reserved_client_id") == 3
        assert (
            await _metric(backend, "locker_mqtt_refused_total", reason="pinned_id_of_online_bank")
            == 2
        )
        assert (
            await _metric(backend, "locker_mqtt_refused_total", reason="client_id_not_pinned") == 1
        )
    finally:
        await device.__aexit__(None, None, None)


async def test_a_second_connection_with_the_backend_id_does_not_deafen_it(
    backend: EmbeddedHeadless,
) -> None:
    """Finding 1, the broker side: even with the backend's own credentials (a second backend
    misconfigured with the same client id), the backend is never left connected but deaf:
    it is disconnected for real, reconnects, and hears registrations again."""
    intruder = backend.client(
        "locker_backend", backend.secrets()["mqtt_password"], backend.client_id
    )
    async with intruder:
        pass  # a clean-session CONNECT under the backend's id, then gone
    async with aiohttp.ClientSession() as session:
        recovery = await backend.wait_serving(session, 30)
    bank = await backend.create_bank()
    reply = await backend.provision(bank["token"], "locker-client-1b1b1b1b", timeout=20)
    log(f"figures: backend serving again {recovery:.2f} s after the intrusion")
    assert reply.status == "success"


# --------------------------------------------------------------------------- finding 2


async def test_every_acknowledged_event_reaches_the_store(backend: EmbeddedHeadless) -> None:
    """Finding 2: devices publish QoS 1 events (QR scans) and disconnect at once (each publish
    got its PUBACK): none may be lost (amqtt 0.12.1 lost 19 of 50)."""
    uuid_a, password_a, device = await _online_device(backend, "locker-client-2c2c2c2c")
    await device.__aexit__(None, None, None)
    rounds, per_round = size("ack_rounds", 5, 50), 10
    wire = _wire()
    sent: list[str] = []
    for _ in range(rounds):
        async with backend.client(uuid_a, password_a, uuid_a) as dev:
            payloads = [wire.qr_event(f"qr-{len(sent) + n}", "front") for n in range(per_round)]
            sent += [json.loads(p)["event_id"] for p in payloads]
            # all in flight at once, as a device flushing its buffer after a reconnect
            await asyncio.gather(
                *(dev.publish(device_topic(uuid_a, "event"), p, qos=1) for p in payloads)
            )
        # leaving the block disconnects right after the last PUBACK

    async def stored() -> int:
        code, out, err = await backend.cli("events", "--json")
        assert code == 0, err
        return sum(1 for line in out.splitlines() if "QrScanned" in line and uuid_a in line)

    count = await until(stored, lambda n: n >= len(sent), "every acked event stored", 30, 0.5)
    log(f"figures: {len(sent)} events PUBACKed, {count} stored, lost {len(sent) - count}")
    assert count == len(sent)


# --------------------------------------------------------------------------- finding 4


async def test_connection_limits(backend: EmbeddedHeadless) -> None:
    """Finding 4: a packet above MQTT_MAX_PACKET_SIZE closes the connection before it is
    read (nothing retained); sockets that send no CONNECT are closed after
    MQTT_CONNECT_TIMEOUT; an MQTT 5 CONNECT gets CONNACK "unsupported protocol version"."""
    # 1. a 1 MiB retained publish: the connection is dropped, nothing is kept
    async with backend.provisioning_client("big-publisher") as c:
        with pytest.raises(aiomqtt.MqttError):
            await c.publish("locker/register/x", b"x" * (1 << 20), qos=1, retain=True)
            await c.publish("locker/register/y", b"after", qos=1)

    # 2. half-open sockets: closed by the broker after the CONNECT timeout (2 s here)
    count = size("half_open", 50, 300)
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", backend.mqtt_port))
        sock.setblocking(False)
        socks.append(sock)
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    try:
        closed = await asyncio.wait_for(asyncio.gather(*(loop.sock_recv(s, 16) for s in socks)), 30)
    finally:
        for sock in socks:
            sock.close()
    log(f"figures: {count} half-open sockets closed after {time.monotonic() - start:.1f} s")
    assert all(data == b"" for data in closed)

    # 3. MQTT 5: an answer, not silence
    reader, writer = await asyncio.open_connection("127.0.0.1", backend.mqtt_port)
    client_id = b"v5-client"
    variable = b"\x00\x04MQTT\x05\x02\x00\x3c\x00"  # level 5, clean start, no properties
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = variable + payload
    writer.write(bytes((0x10, len(body))) + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4), 10)
    writer.close()
    assert answer == b"\x20\x02\x00\x01"  # CONNACK, "unacceptable protocol version"

    refused = {
        reason: await _metric(backend, "locker_mqtt_refused_total", reason=reason)
        for reason in ("packet_too_large", "connect_timeout", "protocol_version")
    }
    assert refused == {"packet_too_large": 1, "connect_timeout": count, "protocol_version": 1}
    async with aiohttp.ClientSession() as session:
        status, _ = await backend.healthz(session)
    assert status == 200


async def test_aiomqtt_v5_client_is_told_why(backend: EmbeddedHeadless) -> None:
    """Finding 4 with a real MQTT 5 client library: it gets a refusal, not a hang."""
    client = backend.provisioning_client(
        f"v5-{uuid.uuid4().hex[:6]}", protocol=aiomqtt.ProtocolVersion.V5
    )
    with pytest.raises(aiomqtt.MqttError) as refused:
        async with asyncio.timeout(10):
            await client.__aenter__()
    assert "protocol" in str(refused.value).lower()


# --------------------------------------------------------------------------- finding 3


# 11 restarts: ~20 s on an idle machine; at load 12-16 one restart took several times that
# and the whole test ran past the default 120 s (each wait has its own bound below).
@pytest.mark.timeout(300)
async def test_restart_at_once_after_sigkill_and_stop(backend: EmbeddedHeadless) -> None:
    """Finding 3: after a SIGKILL with clients connected (their sockets left in TIME-WAIT),
    or after a clean stop, the backend starts again at once: serving = /healthz 200, the
    MQTT port accepting, the backend subscribed (a registration is answered)."""
    kills = size("restart_kills", 10, 10)
    times: list[float] = []
    cpu: list[float] = []  # CPU the new process used until serving: what load cannot change
    async with aiohttp.ClientSession() as session:
        for n in range(kills + 1):
            clients = [backend.provisioning_client(f"held-{n}-{i}") for i in range(3)]
            for client in clients:
                await client.__aenter__()
            start = time.monotonic()
            if n < kills:
                await backend.instance.kill()
            else:
                assert await backend.instance.stop() == 0  # the last one: a clean stop
            for client in clients:
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.__aexit__(None, None, None)
            await backend.instance.start()
            await backend.wait_serving(session, START_TIMEOUT)
            times.append(time.monotonic() - start)
            cpu.append(await asyncio.to_thread(_cpu_seconds, backend.instance.process))
    bank = await backend.create_bank()
    reply = await backend.provision(bank["token"], "locker-client-3d3d3d3d")
    assert reply.status == "success"
    ordered = sorted(times[:kills])
    log(
        f"figures: {kills} SIGKILLs + 1 stop, restarted every time; serving again after "
        f"median {ordered[len(ordered) // 2]:.2f} s, max {ordered[-1]:.2f} s "
        f"(stop: {times[-1]:.2f} s); all: {', '.join(f'{t:.2f}' for t in times)}; CPU "
        f"used by the new process until serving: median {sorted(cpu)[len(cpu) // 2]:.2f} s"
    )


def _cpu_seconds(process: asyncio.subprocess.Process | None) -> float:
    """User + system CPU seconds a running process has used (Linux /proc)."""
    assert process is not None
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- finding 6


async def test_revocation_voids_pending_tokens_in_every_state(backend: EmbeddedHeadless) -> None:
    """Finding 6: a token issued to a bank that is then revoked, and the leaked token of an
    unprovisioned bank revoked before use, no longer provision anything; a reason is
    required and recorded."""
    uuid_a, _password, device = await _online_device(backend, "locker-client-6e6e6e6e")
    await device.__aexit__(None, None, None)
    code, out, err = await backend.cli("bank", "token", uuid_a, "--json")
    assert code == 0, err
    pending = json.loads(out)["token"]
    code, _out, err = await backend.cli("bank", "revoke", uuid_a)
    assert code != 0 and "--reason" in err  # no reason: refused before anything happens
    code, _out, err = await backend.cli("bank", "revoke", uuid_a, "--reason", "cabinet stolen")
    assert code == 0, err
    fresh = await backend.create_bank()
    code, _out, err = await backend.cli("bank", "revoke", fresh["uuid"], "--reason", "leaked")
    assert code == 0, err

    for n, token in enumerate((pending, fresh["token"])):
        reply = await backend.provision(token, f"thief-{n}-{uuid.uuid4().hex[:6]}")
        assert reply.status == "error", reply
    for bank_uuid in (uuid_a, fresh["uuid"]):
        code, out, err = await backend.cli("bank", "show", bank_uuid, "--json")
        assert json.loads(out)["status"] == "revoked"
    code, out, err = await backend.cli("events", "--json")
    reasons = [
        json.loads(line)["payload"]["reason"]
        for line in out.splitlines()
        if '"CredentialsRevoked"' in line
    ]
    assert reasons == ["cabinet stolen", "leaked"]


# --------------------------------------------------------------------------- finding 10


async def test_missing_secret_key_with_an_external_broker_stops_the_start(
    tmp_path: Path,
) -> None:
    """Finding 10: with MQTT_HOST set, a missing SECRET_KEY is an error at start naming the
    variable (every registration would fail later, the device left without a reply)."""
    headless = embedded_headless(
        tmp_path / "x",
        MQTT_HOST="127.0.0.1",
        MOSQ_SECRET="s" * 32,
        MQTT_PASSWORD="p" * 32,
        MQTT_PROVISIONING_PASSWORD="q" * 32,
    )
    await headless.instance.start()
    process = headless.instance.process
    assert process is not None
    try:
        code = await asyncio.wait_for(process.wait(), START_TIMEOUT)
    finally:
        await headless.instance.stop()
    assert code != 0
    assert "SECRET_KEY" in headless.instance.log_tail()


# --------------------------------------------------------------------------- finding 7


def _too_open(root: Path) -> list[str]:
    """Entries under `root` (itself included) readable or writable by group or others."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode & 0o777
        if mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {mode:o}")
    return found


async def test_files_are_private_and_tokens_stay_off_the_command_line(tmp_path: Path) -> None:
    """Finding 7: the data dir, database and its -wal, secrets, broker state, simulator
    state and logs are 0600/0700 (also what an older version left 0644); `simulate` takes
    its token from a file or stdin, so `ps` never shows it."""
    headless = embedded_headless(tmp_path / "h")
    headless.data_dir.mkdir(parents=True, mode=0o755)
    (headless.data_dir / "left-by-an-old-version.json").write_text("{}")
    (headless.data_dir / "left-by-an-old-version.json").chmod(0o644)
    await headless.instance.start()
    sim: asyncio.subprocess.Process | None = None
    try:
        async with aiohttp.ClientSession() as session:
            await headless.wait_serving(session, START_TIMEOUT)
        bank = await headless.create_bank()
        token_file = tmp_path / "token"
        token_file.write_text(bank["token"] + "\n")
        sim = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "console.cli", "simulate", "--token-file", str(token_file),
            "--broker", f"127.0.0.1:{headless.mqtt_port}",
            cwd=headless.instance.workdir, env=headless.instance.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        cmdline = await asyncio.to_thread(Path(f"/proc/{sim.pid}/cmdline").read_bytes)
        assert bank["token"].encode() not in cmdline
        await until(
            lambda: headless.cli("bank", "show", bank["uuid"], "--json"),
            lambda r: json.loads(r[1]).get("status") == "online",
            "simulated bank online",
            30,
        )
        assert (headless.data_dir / "sim").is_dir()
        assert any((headless.data_dir / "locker.db").parent.glob("locker.db-wal"))
        exposed = _too_open(headless.data_dir)
        log(f"figures: {sum(1 for _ in headless.data_dir.rglob('*'))} entries, exposed {exposed}")
        assert exposed == []
    finally:
        if sim is not None and sim.returncode is None:
            sim.kill()
            await sim.wait()
        await headless.instance.stop()


async def test_attach_reads_its_token_from_stdin(backend: EmbeddedHeadless) -> None:
    """`attach --token -`: a bad token read from stdin is refused with one line (the
    token itself never on the command line)."""
    code, _out, err = await backend.cli(
        "attach", "--url", backend.url, "--token", "-", stdin=b"not-a-token\n"
    )
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err


# --------------------------------------------------------------------------- finding 5


async def test_a_registration_flood_costs_bounded_work(backend: EmbeddedHeadless) -> None:
    """Finding 5: guesses with a fresh client id each are bounded per source address (the
    embedded broker drops them: 20 a minute) and globally (60 failures a minute are
    answered, the rest cost no outbox row and no reply); a real token still works."""
    flood = size("registration_flood", 300, 1000)
    password = backend.secrets()["mqtt_provisioning_password"]

    async def guesses(source: str, tag: str) -> None:
        async with backend.client(
            "provisioning_client", password, f"flood-{tag}", bind_address=source
        ) as c:
            for n in range(flood):
                body = json.dumps({"client_id": f"guess-{tag}-{n}"}).encode()
                await c.publish(f"locker/register/wrong-{tag}-{n}", body, qos=1)

    await guesses("127.0.0.2", "a")  # one remote address
    await guesses("127.0.0.1", "b")  # the local machine: only the global limit
    bank = await backend.create_bank()
    reply = await backend.provision(bank["token"], "locker-client-5f5f5f5f", timeout=30)
    assert reply.status == "success"  # processed after every guess (one lane per order)

    async def counts() -> dict[str, float]:
        return {
            "error": await _metric(backend, "locker_mqtt_registrations_total", result="error"),
            "limited": await _metric(
                backend, "locker_mqtt_registrations_total", result="rate_limited"
            ),
            "dropped": await _metric(
                backend, "locker_mqtt_refused_total", reason="registration_rate_per_address"
            ),
            "replies": await _metric(
                backend, "locker_mqtt_published_total", kind="provisioning_reply"
            ),
        }

    seen = await until(
        counts,
        lambda c: c["error"] + c["limited"] + c["dropped"] == 2 * flood,
        "every guess accounted for",
        60,
        0.5,
    )
    log(f"figures: {2 * flood} guesses from 2 addresses -> {seen}")
    assert seen["dropped"] == flood - 20
    assert seen["error"] == 60
    assert seen["replies"] <= 61  # 60 error replies + the real one


# --------------------------------------------------------------------------- finding 8


async def test_event_streams_are_capped_and_failed_logins_limited(tmp_path: Path) -> None:
    """Finding 8: SSE streams are capped per token and overall (503 + Retry-After past
    it, /healthz unaffected); failed bearer logins are limited per source address."""
    headless = embedded_headless(
        tmp_path / "h", SSE_MAX_STREAMS="12", SSE_MAX_STREAMS_PER_TOKEN="5"
    )
    await headless.instance.start()
    try:
        async with aiohttp.ClientSession() as session:
            await headless.wait_serving(session, START_TIMEOUT)
            tokens = []
            for name in ("app-a", "app-b", "app-c"):
                code, out, err = await headless.cli("api-token", "create", name, "--role", "app")
                assert code == 0, err
                tokens.append(out.strip().splitlines()[0])
            url = f"{headless.url}/api/events/stream"
            streams: list[aiohttp.ClientResponse] = []

            async def stream(token: str) -> aiohttp.ClientResponse:
                resp = await session.get(url, headers={"Authorization": f"Bearer {token}"})
                if resp.status == 200:
                    streams.append(resp)
                return resp

            try:
                statuses = [(await stream(tokens[0])).status for _ in range(6)]
                assert statuses == [200] * 5 + [503]
                statuses = [(await stream(tokens[1])).status for _ in range(5)]
                statuses += [(await stream(tokens[2])).status for _ in range(3)]
                assert statuses == [200] * 7 + [503]  # 12 open overall
                refused = await stream(tokens[2])
                assert refused.status == 503 and refused.headers["Retry-After"]
                status, _ = await headless.healthz(session)
                assert status == 200
            finally:
                for resp in streams:
                    resp.close()
            # a stream closed frees its place
            await until(
                lambda: stream(tokens[0]),
                lambda r: r.status == 200,
                "a place free again",
                10,
            )
            for resp in streams:
                resp.close()

            # failed logins: 20 a minute per source address, then 429 for everyone there
            answers = []
            for _ in range(25):
                async with session.get(
                    f"{headless.url}/api/locker-banks", headers={"Authorization": "Bearer guess"}
                ) as resp:
                    answers.append(resp.status)
            assert answers == [401] * 20 + [429] * 5
            async with session.get(
                f"{headless.url}/api/locker-banks",
                headers={"Authorization": f"Bearer {tokens[0]}"},
            ) as resp:
                assert resp.status == 429 and resp.headers["Retry-After"]
    finally:
        await headless.instance.stop()


# --------------------------------------------------------------------------- finding 9


async def test_health_names_a_store_that_cannot_write(backend: EmbeddedHeadless) -> None:
    """Finding 9: while the store cannot take a write (another process holds its lock, as a
    read-only or full disk would refuse it), /healthz answers 503 and names the database;
    it recovers by itself."""
    db_file = backend.data_dir / "locker.db"

    def lock() -> sqlite3.Connection:
        conn = sqlite3.connect(db_file, timeout=5, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")
        return conn

    conn = await asyncio.to_thread(lock)
    async with aiohttp.ClientSession() as session:
        try:
            status, body = await backend.healthz(session)
        finally:
            await asyncio.to_thread(conn.execute, "ROLLBACK")
            await asyncio.to_thread(conn.close)
        log(f"figures: locked store -> /healthz {status} {body}")
        assert status == 503
        assert body["database"]["ok"] is False and "not writable" in body["database"]["detail"]
        assert body["broker"]["ok"] is True  # says which part failed
        await until(lambda: backend.healthz(session), lambda r: r[0] == 200, "healthy", 20)


async def test_cli_store_errors_are_one_line(backend: EmbeddedHeadless) -> None:
    """Finding 9: with the database's -wal file deleted under a running backend, CLI
    commands end with one `error:` line, never a traceback."""
    await backend.create_bank()
    wal = backend.data_dir / "locker.db-wal"
    assert wal.exists()
    await asyncio.to_thread(wal.unlink)
    results = [await backend.cli(*args) for args in (("bank", "list"), ("events",))]
    log(f"figures: CLI after the WAL was deleted: {[(c, e.strip()[:120]) for c, _o, e in results]}")
    for code, _out, err in results:
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("error: database:"), err
