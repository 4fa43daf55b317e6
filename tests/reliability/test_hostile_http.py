"""Issue 8, item 5: hostile input on every HTTP endpoint.

A real `BackendServices` (embedded broker, SQLite) serves the REST API and the go-auth
hook on loopback. Hypothesis generates bodies (random bytes, arbitrary JSON, objects with
the expected keys holding hostile values), content types and path parameters for every
POST endpoint of the API and for the three hook endpoints, with and without valid
credentials. Every answer must be a 4xx with a JSON error body, the backend must stay
healthy, and nothing may change in the store (no new event, identical read models).
Schema-driven fuzzing of every operation (GET ones too) is `test_schemathesis.py`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.runner import BackendServices
from tests.support.mosquitto import free_port
from tests.support.mqtt_runtime_process import fast_options
from tests.support.reliability_tools import size
from tests.support.scenario import dump_read_models
from tests.support.settings import make_settings

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

EXAMPLES = size("http_examples", 300, 3_000)
MOSQ_SECRET = "test-mosq-secret"

HOSTILE_TEXT = st.one_of(
    st.text(max_size=64),
    st.sampled_from(
        [
            "",
            "#",
            "+",
            "a/b",
            "\x00",
            "../../etc/passwd",
            "' OR 1=1 --",
            "%00",
            "\u202e",
            "x" * 70_000,
            "locker/#",
            "${jndi:ldap://127.0.0.1/a}",
        ]
    ),
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | HOSTILE_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
KEYS = [
    "name",
    "location",
    "compartments",
    "heartbeat_interval_seconds",
    "reason",
    "username",
    "password",
    "clientid",
    "client_id",
    "topic",
    "acc",
    "action",
]
BODIES = st.one_of(
    st.binary(max_size=256),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=6).map(
        lambda v: json.dumps(v).encode()
    ),
    st.sampled_from([b"{", b"[]", b"null", b'{"a":' * 500, b"\xff\xfe", b"{}" * 1000]),
)
CONTENT_TYPES = st.sampled_from(
    ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
)
PATH_PARAMS = st.one_of(
    st.just("REAL"),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
    st.sampled_from(["0", "-1", "99999999999999999999", "%2F", "..", "nan"]),
)
API_POSTS = [
    "/api/locker-banks",
    "/api/locker-banks/{uuid}/apply-config",
    "/api/locker-banks/{uuid}/compartments/{number}/open",
    "/api/compartments/{uuid}/open",
    "/api/locker-banks/{uuid}/provisioning-token",
    "/api/locker-banks/{uuid}/revoke",
]
HOOK = ["/api/mosq/auth", "/api/mosq/superuser", "/api/mosq/acl"]


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[BackendServices]:
    services = BackendServices(
        make_settings(
            tmp_path,
            database_url=f"sqlite:///{tmp_path / 'locker.db'}",
            http_port=free_port(),
            mqtt_port=free_port(),
            mqtt_client_id=f"backend-{uuid.uuid4().hex[:8]}",
        ),
        runtime_options=fast_options(),
    )
    await services.start()
    try:
        await services.runtime.wait_connected(30)
        yield services
    finally:
        await services.stop()


async def test_hypothesis_bodies_on_every_post_endpoint_get_4xx_and_change_nothing(
    backend: BackendServices,
) -> None:
    service = backend.service
    bank = await service.create_bank("Target", "Lab", 2)  # never provisioned: opens refused
    app_token = await service.create_api_token("hostile-app", "app")
    operator_token = await service.create_api_token("hostile-operator", "operator")
    base = backend.http.url if backend.http else ""
    events_before = await service.events_after(0, 10_000)
    models_before = await dump_read_models(service)
    loop = asyncio.get_running_loop()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    seen: dict[int, int] = {}

    async def attempt(
        path: str, body: bytes, content_type: str, auth: str | None, secret: str | None
    ) -> tuple[int, Any]:
        headers = {"Authorization": auth} if auth else {}
        if content_type:
            headers["Content-Type"] = content_type
        params = {"mosq_secret": secret} if secret is not None else None
        async with session.post(base + path, data=body, headers=headers, params=params) as resp:
            raw = await resp.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw
            return resp.status, parsed

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        template=st.sampled_from(API_POSTS + HOOK),
        body=BODIES,
        content_type=CONTENT_TYPES,
        uuid_param=PATH_PARAMS,
        number=PATH_PARAMS,
        auth=st.sampled_from(["app", "operator", "operator", "none", "garbage"]),
        secret=st.sampled_from([MOSQ_SECRET, None, "wrong", ""]),
    )
    def check(
        template: str,
        body: bytes,
        content_type: str,
        uuid_param: str,
        number: str,
        auth: str,
        secret: str | None,
    ) -> None:
        if auth == "operator" and template.endswith(("provisioning-token", "revoke")):
            # A valid operator request here is a legitimate change, not hostile input.
            uuid_param = "not-" + uuid_param
        path = template.replace("{uuid}", bank.uuid if uuid_param == "REAL" else uuid_param)
        path = path.replace("{number}", "1" if number == "REAL" else number)
        header = {
            "app": f"Bearer {app_token}",
            "operator": f"Bearer {operator_token}",
            "none": None,
            "garbage": "Bearer ..%27;--",
        }[auth]
        status, parsed = asyncio.run_coroutine_threadsafe(
            attempt(path, body, content_type, header, secret), loop
        ).result(60)
        seen[status] = seen.get(status, 0) + 1
        assert 400 <= status < 500, (path, body[:200], status, parsed)
        assert isinstance(parsed, dict), (path, status, parsed)
        assert parsed.get("error") or parsed.get("ok") is False, (path, status, parsed)

    try:
        await asyncio.to_thread(check)
        async with session.get(f"{base}/healthz") as resp:
            assert resp.status == 200
    finally:
        await session.close()
        print("figures:", json.dumps({"requests": sum(seen.values()), "statuses": seen}))
    assert await service.events_after(0, 10_000) == events_before
    assert await dump_read_models(service) == models_before
