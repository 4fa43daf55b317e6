"""The REST API, event stream, OpenAPI document, /healthz and /metrics over real HTTP.

The app is served on a loopback socket (``aiohttp.test_utils.TestServer``) over
the ``service`` fixture, so every test runs on SQLite and, with
``TEST_DATABASE_URL`` set, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from backend.domain.contract import CommandResponse
from backend.domain.outcomes import Disposition
from backend.domain.timeutil import FrozenClock
from backend.http.credentials import (
    CredentialSync,
    credential_listener,
    follow_credentials,
    load_directory,
)
from backend.http.errors import json_errors
from backend.http.server import PARTS, HttpServer, HttpServerError, build_app
from backend.service import LockerService
from backend.store.event_store import RecordedEvent, read_after
from tests.support.banks import beat, provisioned
from tests.support.http_api import (
    APP,
    OPERATOR,
    ApiHarness,
    SseMessage,
    provision,
    read_events,
    read_sse,
    serve_api,
)
from tests.support.waiting import until

ROOT = Path(__file__).resolve().parents[2]
UNKNOWN_UUID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
async def api(service: LockerService) -> AsyncIterator[ApiHarness]:
    async with serve_api(service) as harness:
        yield harness


async def everything(service: LockerService) -> dict[str, Any]:
    """All state a request could change, for "nothing changed" comparisons."""
    return {
        "events": [e.to_json() for e in await service.events_after(0, 100_000)],
        "banks": [b.to_json() for b in await service.list_banks()],
        "transactions": [t.to_json() for t in await service.list_transactions(None, 1000)],
        "outbox": await service.devices.outbox_depth(),
    }


# ----- banks -----------------------------------------------------------------------------


async def test_create_list_and_get_bank(api: ApiHarness, service: LockerService) -> None:
    body = {"name": "Hall A", "location": "Berlin", "compartments": 6}
    resp = await api.client.post("/api/locker-banks", json=body, headers=api.auth())
    assert resp.status == 201
    created = await resp.json()
    assert created["name"] == "Hall A" and created["compartments"] == 6
    assert created["heartbeat_interval_seconds"] == 30
    assert created["token"] and created["token_expires_at"].endswith("Z")
    assert resp.headers["Location"] == f"/api/locker-banks/{created['uuid']}"
    assert resp.headers["Cache-Control"] == "no-store"
    assert await service.bank_by_token(created["token"]) == created["uuid"]

    listed = await api.client.get("/api/locker-banks", headers=api.auth("app"))
    assert listed.status == 200
    assert await listed.json() == [b.to_json() for b in await service.list_banks()]

    one = await api.client.get(f"/api/locker-banks/{created['uuid']}", headers=api.auth("app"))
    assert one.status == 200
    assert await one.json() == (await service.get_bank(created["uuid"])).to_json()
    assert len((await one.json())["compartments"]) == 6

    events = await service.events_after(0)
    assert [e.event_type for e in events] == ["LockerBankCreated", "ProvisioningTokenIssued"]
    assert {e.metadata["actor"] for e in events} == {OPERATOR}


async def test_create_bank_with_interval(api: ApiHarness, service: LockerService) -> None:
    body = {"name": "Hall B", "compartments": 2, "heartbeat_interval_seconds": 5}
    resp = await api.client.post("/api/locker-banks", json=body, headers=api.auth())
    assert resp.status == 201
    bank = await service.get_bank((await resp.json())["uuid"])
    assert bank.heartbeat_interval_seconds == 5 and bank.location == ""


async def test_provisioning_token_replaces_the_old_one(
    api: ApiHarness, service: LockerService
) -> None:
    created = await service.create_bank("Hall A", "Berlin", 2, actor="setup")
    resp = await api.client.post(
        f"/api/locker-banks/{created.uuid}/provisioning-token", headers=api.auth()
    )
    assert resp.status == 201
    issued = await resp.json()
    assert issued["uuid"] == created.uuid and issued["token"] != created.token
    assert resp.headers["Cache-Control"] == "no-store"
    assert await service.bank_by_token(issued["token"]) == created.uuid
    assert await service.bank_by_token(created.token) is None


async def test_revoke_takes_effect_in_the_hook_at_once(
    api: ApiHarness, service: LockerService
) -> None:
    bank = await provision(service)
    assert api.parts.directory.is_active_device(bank.uuid)
    resp = await api.client.post(
        f"/api/locker-banks/{bank.uuid}/revoke", json={"reason": "stolen"}, headers=api.auth()
    )
    assert resp.status == 200
    assert (await resp.json())["status"] == "revoked"
    # the in-process listener applied it before the answer was written
    assert not api.parts.directory.is_active_device(bank.uuid)
    last = (await service.events_after(0))[-1]
    assert last.event_type == "CredentialsRevoked"
    assert last.payload["reason"] == "stolen" and last.metadata["actor"] == OPERATOR


async def test_revoke_needs_a_reason(api: ApiHarness, service: LockerService) -> None:
    """Issue 14: a reason is required (an empty body or a blank reason is refused) and
    revocation works in any state, an unprovisioned bank's token included."""
    bank = await provision(service)
    resp = await api.client.post(f"/api/locker-banks/{bank.uuid}/revoke", headers=api.auth())
    assert resp.status == 400
    resp = await api.client.post(
        f"/api/locker-banks/{bank.uuid}/revoke", json={"reason": " "}, headers=api.auth()
    )
    assert resp.status == 400
    assert (await service.get_bank(bank.uuid)).status != "revoked"
    fresh = await service.create_bank("Fresh", "", 2)
    resp = await api.client.post(
        f"/api/locker-banks/{fresh.uuid}/revoke", json={"reason": "leaked"}, headers=api.auth()
    )
    assert resp.status == 200
    assert await service.bank_by_token(fresh.token) is None


# ----- commands ----------------------------------------------------------------------------


async def test_open_by_path_and_by_body(api: ApiHarness, service: LockerService) -> None:
    bank = await provision(service)
    resp = await api.client.post(
        f"/api/locker-banks/{bank.uuid}/compartments/2/open", headers=api.auth("app")
    )
    assert resp.status == 202
    accepted = await resp.json()
    tid = accepted["transaction_id"]
    assert accepted["state"] == "pending"
    assert resp.headers["Location"] == f"/api/transactions/{tid}"
    txn = await service.get_transaction(tid)
    assert accepted["transaction"] == txn.to_json()
    assert txn.compartment_number == 2 and txn.requested_by == APP

    resp = await api.client.post(
        f"/api/compartments/{bank.uuid}/open",
        json={"compartment_number": 3},
        headers=api.auth("app"),
    )
    assert resp.status == 202
    second = await resp.json()
    assert second["state"] == "pending"
    assert (await service.get_transaction(second["transaction_id"])).compartment_number == 3

    got = await api.client.get(f"/api/transactions/{tid}", headers=api.auth("app"))
    assert got.status == 200
    assert await got.json() == (await service.get_transaction(tid)).to_json()
    opened = [e for e in await service.events_after(0) if e.event_type.startswith("Compartment")]
    assert [e.metadata["actor"] for e in opened] == [APP, APP]


async def test_apply_config(api: ApiHarness, service: LockerService) -> None:
    bank = await provision(service)
    resp = await api.client.post(f"/api/locker-banks/{bank.uuid}/apply-config", headers=api.auth())
    assert resp.status == 202
    accepted = await resp.json()
    txn = await service.get_transaction(accepted["transaction_id"])
    assert txn.action == "apply_config" and txn.requested_by == OPERATOR
    assert accepted["transaction"] == txn.to_json()


async def test_list_transactions_by_bank_and_limit(
    api: ApiHarness, service: LockerService, clock: FrozenClock
) -> None:
    a = await provision(service, "Hall A")
    b = await provision(service, "Hall B")
    for number in (1, 2):
        await service.request_open(a.uuid, number, actor="t")
        clock.advance(1)
    await service.request_open(b.uuid, 1, actor="t")

    every = await api.client.get("/api/transactions", headers=api.auth("app"))
    assert await every.json() == [t.to_json() for t in await service.list_transactions()]
    assert len(await every.json()) == 3

    only_a = await api.client.get(
        "/api/transactions", params={"bank": a.uuid, "limit": "1"}, headers=api.auth("app")
    )
    assert only_a.status == 200
    assert await only_a.json() == [t.to_json() for t in await service.list_transactions(a.uuid, 1)]
    assert [t["compartment_number"] for t in await only_a.json()] == [2]


async def test_events_after_and_limit(api: ApiHarness, service: LockerService) -> None:
    await service.create_bank("Hall A", "", 2, actor="setup")
    await service.create_bank("Hall B", "", 2, actor="setup")
    every = await service.events_after(0)
    resp = await api.client.get("/api/events", headers=api.auth("app"))
    assert await resp.json() == [e.to_json() for e in every]
    after = every[0].position
    resp = await api.client.get(
        "/api/events", params={"after": str(after), "limit": "2"}, headers=api.auth("app")
    )
    assert await resp.json() == [e.to_json() for e in every[1:3]]


async def test_events_never_carry_secret_hashes(api: ApiHarness, service: LockerService) -> None:
    await provision(service)
    resp = await api.client.get("/api/events", headers=api.auth("app"))
    text = await resp.text()
    assert "password_sha256" not in text and "token_hmac" not in text


async def test_status_and_whoami(api: ApiHarness) -> None:
    resp = await api.client.get("/api/status", headers=api.auth("app"))
    assert resp.status == 200
    assert await resp.json() == {
        "broker_connected": True,
        "database_ok": True,
        "broker_detail": "connected to 127.0.0.1:1883",
        "mode": "headless",
        "conditions": [],
        "open_ttl_seconds": 30.0,
    }
    api.broker.connected = False
    down = await (await api.client.get("/api/status", headers=api.auth())).json()
    assert down["broker_connected"] is False
    assert down["conditions"] == ["broker_down"]  # a runtime condition of this instance
    who = await api.client.get("/api/whoami", headers=api.auth("app"))
    assert await who.json() == {"name": APP, "role": "app"}


# ----- refusals: right status, JSON error, nothing changed --------------------------------


@pytest.fixture
async def banks(service: LockerService) -> dict[str, str]:
    """A provisioned bank with compartment 1 already opening, and an unprovisioned one."""
    ready = await provision(service, "Ready")
    await service.request_open(ready.uuid, 1, actor="setup")
    fresh = await service.create_bank("Fresh", "", 2, actor="setup")
    return {"ready": ready.uuid, "fresh": fresh.uuid}


Case = tuple[str, str, str | None, Any, int, str]
NO = None
RAW = object()  # marker: the body is sent as raw bytes

REFUSALS: list[tuple[str, Case]] = [
    # 401: no token, a wrong one, another scheme
    ("no-token", ("GET", "/api/locker-banks", NO, None, 401, "Unauthorized")),
    ("wrong-token", ("POST", "/api/locker-banks", "bogus", {"name": "X"}, 401, "Unauthorized")),
    ("basic-auth", ("GET", "/api/events", "basic", None, 401, "Unauthorized")),
    ("no-token-open", ("POST", "/api/locker-banks/{ready}/compartments/2/open", NO, None, 401,
                       "Unauthorized")),
    ("no-token-stream", ("GET", "/api/events/stream", NO, None, 401, "Unauthorized")),
    # 403: the app role may read and open, nothing else
    ("app-create", ("POST", "/api/locker-banks", "app", {"name": "X"}, 403, "Forbidden")),
    ("app-token", ("POST", "/api/locker-banks/{fresh}/provisioning-token", "app", None, 403,
                   "Forbidden")),
    ("app-revoke", ("POST", "/api/locker-banks/{ready}/revoke", "app", None, 403, "Forbidden")),
    ("app-config", ("POST", "/api/locker-banks/{ready}/apply-config", "app", None, 403,
                    "Forbidden")),
    # 404: unknown bank, transaction, compartment, route
    ("unknown-bank", ("GET", f"/api/locker-banks/{UNKNOWN_UUID}", "app", None, 404, "NotFound")),
    ("not-a-uuid", ("GET", "/api/locker-banks/not-a-uuid", "app", None, 404, "NotFound")),
    ("unknown-txn", ("GET", "/api/transactions/nope", "app", None, 404, "NotFound")),
    ("txns-unknown-bank", ("GET", f"/api/transactions?bank={UNKNOWN_UUID}", "app", None, 404,
                           "NotFound")),
    ("open-unknown-bank", ("POST", f"/api/locker-banks/{UNKNOWN_UUID}/compartments/1/open",
                           "app", None, 404, "NotFound")),
    ("open-unknown-compartment", ("POST", "/api/locker-banks/{ready}/compartments/99/open",
                                  "app", None, 404, "NotFound")),
    ("token-unknown-bank", ("POST", f"/api/locker-banks/{UNKNOWN_UUID}/provisioning-token",
                            "operator", None, 404, "NotFound")),
    ("revoke-unknown-bank", ("POST", f"/api/locker-banks/{UNKNOWN_UUID}/revoke", "operator",
                             {"reason": "x"}, 404, "NotFound")),
    ("config-unknown-bank", ("POST", f"/api/locker-banks/{UNKNOWN_UUID}/apply-config",
                             "operator", None, 404, "NotFound")),
    ("no-route", ("GET", "/api/nothing-here", "operator", None, 404, "NotFound")),
    # 400: bad JSON, bad shapes, bad values, bad path and query
    ("bad-json", ("POST", "/api/locker-banks", "operator", (RAW, b"{name"), 400,
                  "InvalidInput")),
    ("not-utf8", ("POST", "/api/locker-banks", "operator", (RAW, b"\xff\xfe"), 400,
                  "InvalidInput")),
    ("array-body", ("POST", "/api/locker-banks", "operator", [1, 2], 400, "InvalidInput")),
    ("empty-body", ("POST", "/api/locker-banks", "operator", (RAW, b""), 400, "InvalidInput")),
    ("missing-name", ("POST", "/api/locker-banks", "operator", {"location": "x"}, 400,
                      "InvalidInput")),
    ("string-count", ("POST", "/api/locker-banks", "operator", {"name": "X", "compartments": "4"},
                      400, "InvalidInput")),
    ("bool-count", ("POST", "/api/locker-banks", "operator", {"name": "X", "compartments": True},
                    400, "InvalidInput")),
    ("fraction-count", ("POST", "/api/locker-banks", "operator",
                        {"name": "X", "compartments": 4.5}, 400, "InvalidInput")),
    ("extra-field", ("POST", "/api/locker-banks", "operator", {"name": "X", "colour": "red"},
                     400, "InvalidInput")),
    ("blank-name", ("POST", "/api/locker-banks", "operator", {"name": "  "}, 400,
                    "InvalidInput")),
    ("zero-compartments", ("POST", "/api/locker-banks", "operator",
                           {"name": "X", "compartments": 0}, 400, "InvalidInput")),
    ("huge-compartments", ("POST", "/api/locker-banks", "operator",
                           {"name": "X", "compartments": 10**9}, 400, "InvalidInput")),
    ("bad-interval", ("POST", "/api/locker-banks", "operator",
                      {"name": "X", "heartbeat_interval_seconds": 0}, 400, "InvalidInput")),
    ("long-name", ("POST", "/api/locker-banks", "operator", {"name": "x" * 101}, 400,
                   "InvalidInput")),
    ("number-not-int", ("POST", "/api/locker-banks/{ready}/compartments/two/open", "app", None,
                        400, "InvalidInput")),
    ("number-unicode", ("POST", "/api/locker-banks/{ready}/compartments/%D9%A5/open", "app",
                        None, 400, "InvalidInput")),
    ("body-no-number", ("POST", "/api/compartments/{ready}/open", "app", {}, 400,
                        "InvalidInput")),
    ("body-number-text", ("POST", "/api/compartments/{ready}/open", "app",
                          {"compartment_number": "2"}, 400, "InvalidInput")),
    ("revoke-bad-reason", ("POST", "/api/locker-banks/{ready}/revoke", "operator",
                           {"reason": 5}, 400, "InvalidInput")),
    ("limit-zero", ("GET", "/api/transactions?limit=0", "app", None, 400, "InvalidInput")),
    ("limit-huge", ("GET", "/api/events?limit=100000", "app", None, 400, "InvalidInput")),
    ("after-negative", ("GET", "/api/events?after=-1", "app", None, 400, "InvalidInput")),
    ("after-text", ("GET", "/api/events?after=abc", "app", None, 400, "InvalidInput")),
    ("stream-bad-after", ("GET", "/api/events/stream?after=x", "app", None, 400,
                          "InvalidInput")),
    # 409: the bank's state forbids it
    ("open-unprovisioned", ("POST", "/api/locker-banks/{fresh}/compartments/1/open", "app", None,
                            409, "RuleViolation")),
    ("open-in-flight", ("POST", "/api/locker-banks/{ready}/compartments/1/open", "app", None,
                        409, "RuleViolation")),
    ("open-body-in-flight", ("POST", "/api/compartments/{ready}/open", "app",
                             {"compartment_number": 1}, 409, "RuleViolation")),
    ("revoke-no-reason", ("POST", "/api/locker-banks/{fresh}/revoke", "operator", None, 400,
                          "InvalidInput")),
    ("config-unprovisioned", ("POST", "/api/locker-banks/{fresh}/apply-config", "operator", None,
                              409, "RuleViolation")),
    # 405
    ("wrong-method", ("DELETE", "/api/locker-banks", "operator", None, 405, "MethodNotAllowed")),
]  # fmt: skip


@pytest.mark.parametrize("case", [c for _, c in REFUSALS], ids=[i for i, _ in REFUSALS])
async def test_refusals_change_nothing(
    api: ApiHarness, service: LockerService, banks: dict[str, str], case: Case
) -> None:
    method, path, who, body, status, kind = case
    headers: dict[str, str] = {}
    if who in ("operator", "app"):
        headers = api.auth(who)
    elif who == "bogus":
        headers = {"Authorization": "Bearer not-a-real-token"}
    elif who == "basic":
        headers = {"Authorization": "Basic b3BzOnB3"}
    kwargs: dict[str, Any] = {"headers": headers}
    if isinstance(body, tuple) and body and body[0] is RAW:
        kwargs["data"] = body[1]
        headers["Content-Type"] = "application/json"
    elif body is not None:
        kwargs["json"] = body
    before = await everything(service)
    resp = await api.client.request(method, path.format(**banks), **kwargs)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    answer = await resp.json()
    assert set(answer) == {"error", "type"}
    assert answer["type"] == kind and answer["error"]
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert await everything(service) == before


async def test_no_middleware_yet_json_errors_everywhere(
    api: ApiHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """The app runs no middleware (aiohttp would run its chain for every hook check), and
    still answers unknown paths, wrong methods and a failing handler in the JSON shape."""
    assert not api.app.middlewares
    resp = await api.client.get("/nothing/here", headers=api.auth("operator"))
    assert resp.status == 404
    assert await resp.json() == {"error": "not found", "type": "NotFound"}
    resp = await api.client.get("/api/mosq/acl")  # a hook route: POST only
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    assert await resp.json() == {"error": "method not allowed", "type": "MethodNotAllowed"}
    resp = await api.client.put("/healthz")
    assert (resp.status, resp.headers["Allow"]) == (405, "GET")

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = web.Application()
    app.router.add_get("/broken", json_errors(broken))
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.ERROR, logger="backend.http.errors"):
            resp = await client.get("/broken")
        assert resp.status == 500
        assert await resp.json() == {"error": "internal error", "type": "InternalError"}
    assert any("GET /broken failed" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_a_revoked_api_token_is_refused(api: ApiHarness, service: LockerService) -> None:
    from sqlalchemy import update
    from sqlmodel import col

    from backend.store.tables import ApiTokenRow

    def revoke() -> None:
        with service.db.write_session() as session:
            session.execute(
                update(ApiTokenRow)
                .where(col(ApiTokenRow.name) == APP)
                .values(revoked_at=service.clock.now())
            )

    await service.db.write(revoke)
    resp = await api.client.get("/api/locker-banks", headers=api.auth("app"))
    assert resp.status == 401


# ----- the event stream --------------------------------------------------------------------


async def test_event_stream_live_and_resumable(api: ApiHarness, service: LockerService) -> None:
    await service.create_bank("Hall A", "", 2, actor="setup")
    existing = await service.events_after(0)
    assert len(existing) == 2

    resp = await api.client.get("/api/events/stream", headers=api.auth("app"))
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    first = await read_sse(resp.content)
    assert first.retry is not None  # the reconnect delay comes first
    got = await read_events(resp.content, 2)
    assert [m.id for m in got] == [str(e.position) for e in existing]
    assert [m.json() for m in got] == [e.to_json() for e in existing]

    await service.create_bank("Hall B", "", 2, actor="setup")
    live = await read_events(resp.content, 2)
    later = await service.events_after(existing[-1].position)
    assert [m.json() for m in live] == [e.to_json() for e in later]
    assert [m.json()["event_type"] for m in live] == [
        "LockerBankCreated",
        "ProvisioningTokenIssued",
    ]
    resp.close()

    # A client reconnecting with Last-Event-ID gets only what came after it.
    resume_from = got[0].id
    assert resume_from is not None
    headers = {**api.auth("app"), "Last-Event-ID": resume_from}
    resp = await api.client.get("/api/events/stream", headers=headers)
    resumed = await read_events(resp.content, 3)
    every = await service.events_after(0)
    assert [m.id for m in resumed] == [str(e.position) for e in every[1:4]]
    resp.close()

    # ?after= without Last-Event-ID
    after = every[2].position
    resp = await api.client.get(
        "/api/events/stream", params={"after": str(after)}, headers=api.auth("app")
    )
    tail = await read_events(resp.content, 1)
    assert tail[0].id == str(every[3].position)
    resp.close()


async def test_event_stream_keepalive(service: LockerService) -> None:
    async with serve_api(service, stream_keepalive=0.05) as api:
        resp = await api.client.get("/api/events/stream", headers=api.auth("app"))
        async with asyncio.timeout(5):
            while True:
                message = await read_sse(resp.content)
                if message.comment == "keepalive":
                    break
        resp.close()


async def test_event_stream_bad_last_event_id(api: ApiHarness) -> None:
    headers = {**api.auth("app"), "Last-Event-ID": "12abc"}
    resp = await api.client.get("/api/events/stream", headers=headers)
    assert resp.status == 400
    assert (await resp.json())["type"] == "InvalidInput"


@pytest.fixture
async def served(service: LockerService) -> AsyncIterator[tuple[HttpServer, web.Application, str]]:
    """The app behind the production HttpServer (not the test server) on a free port."""
    token = await service.create_api_token(OPERATOR, "operator")
    directory = await load_directory(service, service.settings)
    app = build_app(
        service,
        directory,
        service.settings,
        broker_connected=lambda: True,
        stream_poll_interval=0.02,
    )
    server = HttpServer(app, shutdown_timeout=10)
    await server.start("127.0.0.1", 0)
    try:
        yield server, app, token
    finally:
        await server.stop()


async def test_event_stream_ends_when_the_client_leaves(
    served: tuple[HttpServer, web.Application, str], service: LockerService
) -> None:
    server, app, token = served
    await service.create_bank("Hall A", "", 2, actor="setup")
    stream = app[PARTS].stream
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        resp = await session.get(
            server.url + "/api/events/stream", headers={"Authorization": f"Bearer {token}"}
        )
        await read_events(resp.content, 2)
        assert stream.open_streams == 1
        resp.close()
    await until(lambda: stream.open_streams == 0, what="the stream to end", timeout=5)


async def test_event_stream_ends_at_shutdown(
    service: LockerService, served: tuple[HttpServer, web.Application, str]
) -> None:
    server, app, token = served
    stream = app[PARTS].stream
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        resp = await session.get(
            server.url + "/api/events/stream", headers={"Authorization": f"Bearer {token}"}
        )
        await read_sse(resp.content)  # the retry line: the stream is open
        assert stream.open_streams == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        await server.stop()
        assert loop.time() - started < 5  # not the 10 s shutdown timeout
        assert stream.open_streams == 0
        async with asyncio.timeout(5):
            assert await resp.content.read() == b""  # ended cleanly, not hung


# ----- the server ------------------------------------------------------------------------


async def test_port_in_use_names_http_port(
    served: tuple[HttpServer, web.Application, str], service: LockerService
) -> None:
    server, _app, _token = served
    directory = await load_directory(service, service.settings)
    second = HttpServer(build_app(service, directory, service.settings, sync_credentials=False))
    assert server.port is not None
    with pytest.raises(HttpServerError, match="HTTP_PORT") as info:
        await second.start("127.0.0.1", server.port)
    assert str(server.port) in str(info.value)
    await second.stop()  # a no-op: it never started


async def test_secrets_never_reach_the_logs(
    served: tuple[HttpServer, web.Application, str],
    service: LockerService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, _app, token = served
    secret = service.settings.secret("mosq_secret")
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as session:
        hook = await session.post(
            f"{server.url}/api/mosq/auth?mosq_secret={secret}",
            json={"username": "locker_backend", "password": "backend-pw", "clientid": "c1"},
        )
        assert hook.status == 200
        created = await session.post(
            server.url + "/api/locker-banks",
            json={"name": "Hall A"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status == 201
        provisioning_token = (await created.json())["token"]
        refused = await session.get(
            server.url + "/api/locker-banks", headers={"Authorization": "Bearer wrong-token"}
        )
        assert refused.status == 401
    assert "/api/mosq/auth" in caplog.text  # the access log did run
    for value in (secret, token, provisioning_token, "wrong-token", "backend-pw"):
        assert value not in caplog.text


# ----- OpenAPI -----------------------------------------------------------------------------


async def test_openapi_documents_every_route(api: ApiHarness) -> None:
    resp = await api.client.get("/api/openapi.json")
    assert resp.status == 200
    document = json.loads(await resp.text())
    assert document["openapi"] == "3.1.0"
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in api.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert registered == documented
    assert len(registered) >= 19

    schemas = document["components"]["schemas"]
    for name in ("BankView", "TransactionView", "EventView", "CreatedBank", "SystemStatus"):
        assert name in schemas
    refs = re.findall(r'"\$ref":\s*"#/components/schemas/([^"]+)"', json.dumps(document))
    assert refs and all(ref in schemas for ref in refs)
    create = document["paths"]["/api/locker-banks"]["post"]
    assert create["security"] == [{"bearer": []}]
    assert set(create["responses"]) >= {"201", "400", "401", "403"}
    hook = document["paths"]["/api/mosq/acl"]["post"]
    assert hook["security"] == [{"mosq_secret": []}]


# ----- health and metrics -------------------------------------------------------------------


async def test_healthz(api: ApiHarness) -> None:
    resp = await api.client.get("/healthz")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok" and body["database"]["ok"] and body["broker"]["ok"]

    api.broker.connected = False
    api.broker.detail = "reconnecting in 2 s"
    resp = await api.client.get("/healthz")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "unavailable"
    assert body["database"]["ok"] is True
    assert body["broker"] == {"ok": False, "detail": "reconnecting in 2 s"}


async def test_healthz_without_a_broker_reporter(service: LockerService) -> None:
    directory = await load_directory(service, service.settings)
    app = build_app(service, directory, service.settings, sync_credentials=False)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/healthz")
        assert resp.status == 503
        assert (await resp.json())["broker"]["ok"] is False


async def test_healthz_when_the_database_is_gone(
    service: LockerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = await load_directory(service, service.settings)
    app = build_app(
        service, directory, service.settings, broker_connected=lambda: True, sync_credentials=False
    )
    async with TestClient(TestServer(app)) as client:
        monkeypatch.setattr(service.db, "ping", lambda: False)
        resp = await client.get("/healthz")
        assert resp.status == 503
        assert (await resp.json())["database"]["ok"] is False
        metrics = parse_metrics(await (await client.get("/metrics")).text())
        assert metrics["locker_database_up"] == 0
        assert "locker_outbox_depth" not in metrics  # store series are left out, not faked


SAMPLE = re.compile(
    r"^[a-zA-Z_:][a-zA-Z0-9_:]*"
    r'(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})?'
    r" (-?[0-9.e+-]+|\+Inf|-Inf|NaN)$"
)


def parse_metrics(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            assert not line or line.startswith(("# HELP ", "# TYPE ")), line
            continue
        assert SAMPLE.match(line), line
        name, _, value = line.rpartition(" ")
        samples[name] = float(value)
    return samples


async def test_metrics(api: ApiHarness, service: LockerService, clock: FrozenClock) -> None:
    bank = await provision(service)
    txn = await service.request_open(bank.uuid, 1, actor="t")
    clock.advance(1.5)
    response = CommandResponse(
        action="open_compartment",
        result="success",
        transaction_id=txn.transaction_id,
        timestamp=clock.now(),
    )
    outcome = await service.devices.record_response(bank.uuid, response)
    assert outcome.disposition is Disposition.APPLIED
    await service.request_open(bank.uuid, 2, actor="t")
    api.mqtt_counters.update(
        {
            "messages": {"response": 3, "state/heartbeat": 7},
            "duplicates": {"response": 1},
            "rejected": {"invalid_topic": 2},
            "commands": {"success": 1},
            "handler_errors": 0,
        }
    )
    api.parts.hook_metrics.inc("acl", "allow")
    api.parts.hook_metrics.observe("acl", 0.0015)

    resp = await api.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = parse_metrics(await resp.text())
    assert samples["locker_database_up"] == 1
    assert samples["locker_broker_connected"] == 1
    depth = await service.devices.outbox_depth()
    assert depth > 0 and samples["locker_outbox_depth"] == depth
    assert samples['locker_banks{status="provisioned"}'] == 1
    assert samples['locker_command_transactions{action="open_compartment",status="success"}'] == 1
    assert samples['locker_command_transactions{action="open_compartment",status="pending"}'] == 1
    latency = 'locker_command_latency_seconds_{}{{action="open_compartment"{}}}'
    assert samples[latency.format("count", "")] == 1
    assert samples[latency.format("sum", "")] == 1.5
    assert samples[latency.format("bucket", ',le="1.0"')] == 0
    assert samples[latency.format("bucket", ',le="2.5"')] == 1
    assert samples[latency.format("bucket", ',le="+Inf"')] == 1
    assert samples['locker_hook_requests_total{endpoint="acl",result="allow"}'] == 1
    hook_latency = 'locker_hook_latency_seconds_{}{{endpoint="acl"{}}}'
    assert samples[hook_latency.format("count", "")] == 1
    assert samples[hook_latency.format("bucket", ',le="0.001"')] == 0
    assert samples[hook_latency.format("bucket", ',le="0.002"')] == 1
    assert samples[hook_latency.format("bucket", ',le="+Inf"')] == 1
    assert samples['locker_mqtt_messages_total{kind="state/heartbeat"}'] == 7
    assert samples['locker_mqtt_duplicates_total{kind="response"}'] == 1
    assert samples['locker_mqtt_rejected_total{kind="invalid_topic"}'] == 2
    assert samples['locker_mqtt_commands_total{result="success"}'] == 1
    assert samples["locker_mqtt_handler_errors_total"] == 0
    assert samples["locker_http_event_streams"] == 0


async def test_metrics_render_the_mqtt_runtime_counters(service: LockerService) -> None:
    """The runtime's own ``Metrics.snapshot`` plugs in as the provider, as it is."""
    from backend.mqtt.metrics import Metrics

    runtime_metrics = Metrics()
    runtime_metrics.messages["response"] += 4
    runtime_metrics.commands["late"] += 1
    runtime_metrics.batch_items["heartbeat"] += 9
    runtime_metrics.publish_failures = 2
    async with serve_api(service, mqtt_metrics=runtime_metrics.snapshot) as api:
        samples = parse_metrics(await (await api.client.get("/metrics")).text())
    assert samples['locker_mqtt_messages_total{kind="response"}'] == 4
    assert samples['locker_mqtt_commands_total{result="late"}'] == 1
    assert samples['locker_mqtt_batch_items_total{kind="heartbeat"}'] == 9
    assert samples["locker_mqtt_publish_failures_total"] == 2
    assert samples["locker_mqtt_connects_total"] == 0


# ----- credentials for the hook ----------------------------------------------------------


async def hook_auth(api: ApiHarness, username: str, password: str) -> int:
    secret = api.service.settings.secret("mosq_secret")
    resp = await api.client.post(
        f"/api/mosq/auth?mosq_secret={secret}",
        json={"username": username, "password": password, "clientid": username},
    )
    return resp.status


async def test_load_directory(service: LockerService) -> None:
    active = await provision(service, "Active")
    revoked = await provision(service, "Revoked")
    await service.revoke(revoked.uuid, reason="test", actor="t")
    never = await service.create_bank("Never", "", 2, actor="t")
    directory = await load_directory(service, service.settings)
    assert directory.is_active_device(active.uuid)
    assert not directory.is_active_device(revoked.uuid)
    assert not directory.is_active_device(never.uuid)
    # the pinned client id comes from the store (DESIGN section 4)
    assert directory.authenticate(active.uuid, active.password, active.client_id).allowed
    assert not directory.authenticate(active.uuid, active.password, "c").allowed
    assert directory.authenticate("locker_backend", "backend-pw", "c").allowed
    assert directory.authenticate("provisioning_client", "provisioning-pw", "c").allowed


async def test_hook_follows_provisioning_and_revocation_in_process(
    api: ApiHarness, service: LockerService
) -> None:
    bank = await provision(service)  # after the app started: via the listener
    assert await hook_auth(api, bank.uuid, bank.password) == 200
    await service.revoke(bank.uuid, reason="test", actor="t")
    assert await hook_auth(api, bank.uuid, bank.password) == 403


async def test_hook_follows_a_revocation_by_another_process(
    api: ApiHarness, service: LockerService, tmp_path: Path
) -> None:
    """``locker-console bank revoke`` in a separate process reaches the running hook."""
    bank = await provision(service)
    assert await hook_auth(api, bank.uuid, bank.password) == 200
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "DATABASE_", "LOCKER_"))
    }
    env.update(
        DATABASE_URL=service.settings.db_url,
        LOCKER_DATA_DIR=str(tmp_path / "cli-data"),
        SECRET_KEY="test-secret-key",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console.cli", "bank", "revoke", bank.uuid, "--reason", "cli test",
        cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()

    async def denied() -> bool:
        return await hook_auth(api, bank.uuid, bank.password) == 403

    await until(denied, what="the revocation to reach the hook", timeout=5)


async def raw_events(service: LockerService) -> list[RecordedEvent]:
    def read() -> list[RecordedEvent]:
        with service.db.read_session() as session:
            return read_after(session, 0, 10_000)

    return await service.db.read(read)


async def test_an_older_credential_event_never_undoes_a_newer_one(
    service: LockerService,
) -> None:
    bank = await provision(service)
    await service.revoke(bank.uuid, reason="test", actor="t")
    issued = await service.issue_token(bank.uuid, actor="t")
    assert await service.devices.register(issued.token, "dev-again") == "success"
    credential = [
        e
        for e in await raw_events(service)
        if e.event_type in ("LockerBankProvisioned", "CredentialsRevoked")
    ]
    first, revoked, again = credential
    directory = await load_directory(service, service.settings)
    sync = CredentialSync(directory)
    assert sync.apply([revoked]) == 1
    assert not directory.is_active_device(bank.uuid)
    assert sync.apply([first]) == 0  # older than the revocation: ignored
    assert not directory.is_active_device(bank.uuid)
    assert sync.apply([first, revoked, again]) == 1  # the newest of a batch wins
    assert directory.is_active_device(bank.uuid)
    assert sync.apply([revoked]) == 0
    assert directory.is_active_device(bank.uuid)


async def test_listener_and_follower_share_one_sync(service: LockerService) -> None:
    bank = await provision(service)
    directory = await load_directory(service, service.settings)
    service.subscribe(credential_listener(directory))
    await service.revoke(bank.uuid, reason="test", actor="t")
    assert not directory.is_active_device(bank.uuid)  # at once, by the listener
    # A follower replaying everything from position 0 never brings the bank back.
    task = asyncio.create_task(follow_credentials(service, directory, 0.01, after=0))
    try:
        other = await provision(service, "Other")
        await until(lambda: directory.is_active_device(other.uuid), what="the follower", timeout=5)
        assert not directory.is_active_device(bank.uuid)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_follower_picks_up_writes_of_another_service_instance(
    service: LockerService,
) -> None:
    directory = await load_directory(service, service.settings)
    task = asyncio.create_task(follow_credentials(service, directory, 0.01))
    other = LockerService(service.settings, clock=FrozenClock(service.clock.now()))
    try:
        bank = await provision(other)  # recorded by "another process": no listener here
        await until(lambda: directory.is_active_device(bank.uuid), what="provisioning", timeout=5)
        assert directory.authenticate(bank.uuid, bank.password, bank.client_id).allowed
        await other.revoke(bank.uuid, reason="test", actor="cli")
        await until(lambda: not directory.is_active_device(bank.uuid), what="revocation", timeout=5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        other.close()


async def test_alerts_over_rest_and_on_the_event_stream(
    api: ApiHarness, service: LockerService
) -> None:
    """Issue 15: GET /api/alerts, POST /api/alerts/{id}/ack, and `event: alert` messages on
    the stream after the event that opened or resolved an alert."""
    bank = await service.create_bank("Hall A", "", 2, actor="setup")
    assert await service.devices.register(bank.token, "dev-1") == "success"
    assert (
        await service.revoke(bank.uuid, reason="setup", actor="setup") is None
    )  # nothing to alert yet
    assert await (await api.client.get("/api/alerts", headers=api.auth("app"))).json() == []
    other = await service.create_bank("Hall B", "", 2, actor="setup")
    assert await service.devices.register(other.token, "dev-2") == "success"
    txn = await service.request_open(other.uuid, 1, actor="setup")
    for item in await service.devices.outbox_due(100):
        await service.devices.outbox_published(item)
    response = CommandResponse(
        action="open_compartment",
        result="error",
        transaction_id=txn.transaction_id,
        timestamp=service.clock.now(),
        error_code="DOOR_JAMMED",
    )
    await service.devices.record_response(other.uuid, response, response.to_bytes())
    listed = await (await api.client.get("/api/alerts", headers=api.auth("app"))).json()
    assert [(a["kind"], a["bank_name"], a["state"]) for a in listed] == [
        ("command_failed", "Hall B", "open")
    ]
    alert_id = listed[0]["id"]
    refused = await api.client.post(
        f"/api/alerts/{alert_id}/ack", json={"note": "x"}, headers=api.auth("app")
    )
    assert refused.status == 403  # an app token reads alerts, only operators acknowledge
    acked = await api.client.post(
        f"/api/alerts/{alert_id}/ack", json={"note": "door freed"}, headers=api.auth()
    )
    assert acked.status == 200
    body = await acked.json()
    assert (body["state"], body["ack_note"], body["acknowledged_by"]) == (
        "resolved",
        "door freed",
        OPERATOR,
    )
    again = await api.client.post(f"/api/alerts/{alert_id}/ack", headers=api.auth())
    assert again.status == 409
    assert await (await api.client.get("/api/alerts", headers=api.auth("app"))).json() == []
    every = await (await api.client.get("/api/alerts?all=1", headers=api.auth("app"))).json()
    assert [a["id"] for a in every] == [alert_id]

    stream = await api.client.get("/api/events/stream", headers=api.auth("app"))
    named: list[SseMessage] = []
    async with asyncio.timeout(5):
        while len(named) < 2:
            message = await read_sse(stream.content)
            if message.event == "alert":
                named.append(message)
    stream.close()
    assert [(m.json()["change"], m.json()["alert"]["id"]) for m in named] == [
        ("opened", alert_id),
        ("resolved", alert_id),
    ]
    assert named[0].id == str(alert_id)  # after the event that opened it, same position


async def test_an_offline_alert_resolved_by_time_reaches_the_event_stream(
    api: ApiHarness, service: LockerService, clock: FrozenClock
) -> None:
    """A bank-offline alert resolves after a minute online, with no event to follow: the
    stream still says so, as an `event: alert` message without an id."""
    bank = await provisioned(service)
    await service.devices.record_heartbeats([beat(bank, clock.now())])
    assert await service.devices.record_last_will(bank)  # opens a bank-offline alert
    clock.advance(10)
    await service.devices.record_heartbeats([beat(bank, clock.now())])  # back online
    (alert,) = await service.list_alerts()
    stream = await api.client.get("/api/events/stream", headers=api.auth("app"))
    try:
        async with asyncio.timeout(10):
            message = await read_sse(stream.content)
            while message.event != "alert":  # the stream is running once this arrives
                message = await read_sse(stream.content)
            assert (message.json()["change"], message.json()["alert"]["id"]) == (
                "opened",
                alert.id,
            )
            clock.advance(61)  # a minute online: resolved by time alone
            message = await read_sse(stream.content)
            while message.event != "alert":
                message = await read_sse(stream.content)
    finally:
        stream.close()
    assert (message.json()["change"], message.json()["alert"]["id"]) == ("resolved", alert.id)
    assert message.json()["alert"]["state"] == "resolved"
    assert message.id is None  # no position to resume from
