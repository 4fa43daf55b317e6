"""Issue 8, item 4: attacks on authentication, through a real backend.

`BackendServices` in process with its embedded broker (MQTT_HOST unset: every CONNECT,
SUBSCRIBE and delivery is decided by the HTTP hook), SQLite in tmp.

Covered elsewhere, not repeated here (see RELIABILITY.md): wrong/missing `mosq_secret`,
usernames `#`, `+`, `a/b`, empty passwords, ACL filters -> tests/integration/test_hook_http.py.

New here:
- the hook's password checks (backend, provisioning client, device) and the secret check
  take the same time whether a wrong value differs at its first or at its last
  character (statistical, generous bound);
- so does the provisioning-token lookup (`service.bank_by_token`);
- guessing provisioning tokens over MQTT from one client id is rate limited;
- revoked credentials are refused at the next CONNECT;
- a provisioning client cannot read another client id's reply topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from backend.runner import BackendServices
from tests.support.mosquitto import free_port
from tests.support.mqtt_runtime_process import fast_options
from tests.support.reliability_tools import size
from tests.support.settings import make_settings
from tests.support.waiting import until

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]

SAMPLES = size("timing_samples", 400, 3_000)
GUESSES = size("token_guesses", 20, 200)
PROV_USER, PROV_PW = "provisioning_client", "provisioning-pw"
MOSQ_SECRET = "test-mosq-secret"


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[BackendServices]:
    settings = make_settings(
        tmp_path,
        database_url=f"sqlite:///{tmp_path / 'locker.db'}",
        http_port=free_port(),
        mqtt_port=free_port(),
        mqtt_client_id=f"backend-{uuid.uuid4().hex[:8]}",
    )
    services = BackendServices(settings, runtime_options=fast_options())
    await services.start()
    try:
        await services.runtime.wait_connected(30)
        yield services
    finally:
        await services.stop()


def mqtt(services: BackendServices, username: str, password: str, cid: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        services.settings.mqtt_port,
        username=username,
        password=password,
        identifier=cid,
        timeout=15,
    )


async def collect(client: aiomqtt.Client, into: list[tuple[str, bytes]]) -> None:
    with contextlib.suppress(aiomqtt.MqttError):
        async for message in client.messages:
            payload = message.payload
            into.append((str(message.topic), payload if isinstance(payload, bytes) else b""))


@contextlib.asynccontextmanager
async def provisioning_client(
    services: BackendServices, cid: str, *filters: str
) -> AsyncIterator[tuple[aiomqtt.Client, list[tuple[str, bytes]]]]:
    """A provisioning client subscribed to its own reply topic (and `filters`)."""
    received: list[tuple[str, bytes]] = []
    async with mqtt(services, PROV_USER, PROV_PW, cid) as client:
        task = asyncio.create_task(collect(client, received))
        await client.subscribe(f"locker/provisioning/reply/{cid}", qos=1)
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=1)
        try:
            yield client, received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def register(client: aiomqtt.Client, token: str, cid: str) -> None:
    payload = json.dumps({"client_id": cid}).encode()
    await client.publish(f"locker/register/{token}", payload, qos=1)


def _flip(text: str, index: int) -> str:
    """`text` with the character at `index` changed (same length)."""
    ch = "A" if text[index] != "A" else "B"
    return text[:index] + ch + text[index + 1 :]


async def paired_medians(
    first: Callable[[], Awaitable[Any]], last: Callable[[], Awaitable[Any]], samples: int
) -> tuple[float, float]:
    """Median seconds of `first()` and `last()`, interleaved so that load hits both alike."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(20):  # warm up connections and caches
        await first()
        await last()
    for i in range(samples):
        order = (first, last) if i % 2 else (last, first)
        for call in order:
            started = time.perf_counter()
            await call()
            (a if call is first else b).append(time.perf_counter() - started)
    return statistics.median(a), statistics.median(b)


def assert_close(first: float, last: float, what: str) -> None:
    """Medians differ by less than 20 % or 200 microseconds, whichever is larger."""
    bound = max(0.2 * min(first, last), 200e-6)
    assert abs(first - last) < bound, (
        f"{what}: median {first * 1e6:.0f} us (differs at the first character) vs "
        f"{last * 1e6:.0f} us (at the last); bound {bound * 1e6:.0f} us"
    )
    print(f"{what}: first {first * 1e6:.0f} us, last {last * 1e6:.0f} us")


async def test_hook_checks_take_the_same_time_wherever_a_secret_differs(
    backend: BackendServices,
) -> None:
    created = await backend.service.create_bank("Timing", "Lab", 2)
    backend_pw = backend.settings.secret("mqtt_password")
    # The device's password as a device gets it: the provisioning reply. (The outbox blanks
    # the reply's payload once the relay has sent it, so reading it there is a race.)
    async with provisioning_client(backend, "timing-cid") as (client, received):
        await register(client, created.token, "timing-cid")
        await until(lambda: asyncio.sleep(0, len(received)), bool, "credentials reply", 30)
    device_pw = json.loads(received[0][1])["data"]["mqtt_password"]
    url = backend.http.url if backend.http else ""
    auth = f"{url}/api/mosq/auth"
    async with aiohttp.ClientSession() as session:

        async def call(body: dict[str, str], secret: str, expect: int) -> None:
            async with session.post(auth, json=body, params={"mosq_secret": secret}) as resp:
                await resp.read()
                assert resp.status == expect

        def login(user: str, password: str) -> Callable[[], Awaitable[None]]:
            body = {"username": user, "password": password, "clientid": "t"}
            return lambda: call(body, MOSQ_SECRET, 403)

        def secret(value: str) -> Callable[[], Awaitable[None]]:
            body = {"username": "x", "password": "y", "clientid": "t"}
            return lambda: call(body, value, 401)

        first, last = await paired_medians(
            login("locker_backend", _flip(backend_pw, 0)),
            login("locker_backend", _flip(backend_pw, -1)),
            SAMPLES,
        )
        assert_close(first, last, "backend password")
        first, last = await paired_medians(
            login(PROV_USER, _flip(PROV_PW, 0)), login(PROV_USER, _flip(PROV_PW, -1)), SAMPLES
        )
        assert_close(first, last, "provisioning password")
        first, last = await paired_medians(
            login(created.uuid, _flip(device_pw, 0)),
            login(created.uuid, _flip(device_pw, -1)),
            SAMPLES,
        )
        assert_close(first, last, "device password")
        first, last = await paired_medians(
            secret(_flip(MOSQ_SECRET, 0)), secret(_flip(MOSQ_SECRET, -1)), SAMPLES
        )
        assert_close(first, last, "mosq_secret")

    # The token lookup: an HMAC of the token, then an index lookup of the digest.
    other = await backend.service.create_bank("Timing 2", "Lab", 2)
    token = other.token
    assert await backend.service.bank_by_token(token) == other.uuid

    async def lookup(candidate: str) -> None:
        assert await backend.service.bank_by_token(candidate) is None

    first, last = await paired_medians(
        lambda: lookup(_flip(token, 0)), lambda: lookup(_flip(token, -1)), SAMPLES
    )
    assert_close(first, last, "provisioning token lookup")


async def test_token_guessing_from_one_client_id_is_rate_limited(
    backend: BackendServices,
) -> None:
    registrations = backend.runtime.metrics.registrations
    limit = backend.service.devices.limiter.limit
    created = await backend.service.create_bank("Guessed", "Lab", 2)
    cid = "guesser-1"
    async with provisioning_client(backend, cid) as (client, received):
        for n in range(GUESSES):
            await register(client, f"guess-{n:04d}-{uuid.uuid4().hex}", cid)
        # Even the right token is refused once the client id has used up its failures.
        await register(client, created.token, cid)
        await until(
            lambda: asyncio.sleep(0, registrations["error"] + registrations["rate_limited"]),
            lambda n: n == GUESSES + 1,
            "every registration handled",
            60,
        )
        await until(
            lambda: asyncio.sleep(0, len(received)), lambda n: n >= limit, "error replies", 30
        )
        # A marker: a fresh client id is answered; its reply comes after any reply to the
        # guesser that the backend published before it.
        async with provisioning_client(backend, "honest-1") as (other, other_received):
            await register(other, f"wrong-{uuid.uuid4().hex}", "honest-1")
            await until(lambda: asyncio.sleep(0, len(other_received)), bool, "marker reply", 30)
    assert registrations["rate_limited"] == GUESSES + 1 - limit
    assert len(received) == limit
    assert all(json.loads(p)["status"] == "error" for _, p in received)
    assert (await backend.service.get_bank(created.uuid)).status == "unprovisioned"
    print(
        f"figures: guesses {GUESSES + 1}, answered {len(received)}, "
        f"rate limited {registrations['rate_limited']}"
    )


async def test_revoked_credentials_are_refused_at_the_next_connect_and_replies_stay_private(
    backend: BackendServices,
) -> None:
    created = await backend.service.create_bank("Revoked", "Lab", 2)
    # The attacker subscribes to the victim's reply topic and to wildcards over all of them.
    victim, attacker = "victim-cid", "attacker-cid"
    async with (
        provisioning_client(
            backend,
            attacker,
            f"locker/provisioning/reply/{victim}",
            "locker/provisioning/reply/+",
            "locker/provisioning/#",
            "#",
        ) as (spy, spied),
        provisioning_client(backend, victim) as (client, received),
    ):
        await register(client, created.token, victim)
        await until(lambda: asyncio.sleep(0, len(received)), bool, "credentials reply", 30)
        # Marker: the attacker's own reply is published after the victim's.
        await register(spy, f"wrong-{uuid.uuid4().hex}", attacker)
        await until(lambda: asyncio.sleep(0, len(spied)), bool, "attacker's own reply", 30)
    assert [t for t, _ in spied] == [f"locker/provisioning/reply/{attacker}"], spied
    reply = json.loads(received[0][1])
    assert reply["status"] == "success"
    user, password = reply["data"]["mqtt_user"], reply["data"]["mqtt_password"]
    assert user == created.uuid

    async with mqtt(backend, user, password, victim) as device:  # its pinned id
        granted = await device.subscribe(f"locker/{user}/command", qos=1)
        assert list(granted) == [1], granted
        await backend.service.revoke(created.uuid, reason="attack test", actor="reliability")

        async def subscribe_refused() -> bool:
            granted = await device.subscribe(f"locker/{user}/command", qos=1)
            return list(granted) == [0x80]

        # The session that was open when the bank was revoked: its next SUBSCRIBE fails.
        await until(subscribe_refused, bool, "revoked session's SUBSCRIBE refused", 15)

    async def refused() -> bool:
        try:
            async with mqtt(backend, user, password, victim):
                return False
        except aiomqtt.MqttError:
            return True

    # The directory is invalidated by the event; the next CONNECT is refused.
    await until(refused, bool, "revoked device refused at CONNECT", 15)
