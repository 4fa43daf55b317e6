"""The mosquitto-go-auth HTTP hook over real HTTP on loopback (DESIGN section 5).

Requests are replayed exactly as go-auth's HTTP backend sends them (JSON params
mode: ``{"username","password","clientid"}``, ``{"username"}``,
``{"username","clientid","topic","acc"}``; form mode via ``PostForm``), as
amqtt 0.12.1's own ``amqtt.contrib.http`` plugins send them, and in EMQX's
``action`` form. Every answer is read the way go-auth reads it in both of its
response modes: ``status`` (any 2xx grants) and ``json`` (2xx and ``ok``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from amqtt.contexts import Action
from amqtt.contrib.http import (
    ParamsMode,
    RequestMethod,
    ResponseMode,
    TopicAuthHttpPlugin,
    UserAuthHttpPlugin,
)
from amqtt.session import Session

from backend.domain.acl import Decision
from backend.domain.digests import secret_digest
from backend.http.hook import (
    ACL_PATH,
    AUTH_PATH,
    ENDPOINTS,
    RESULTS,
    SUPERUSER_PATH,
    HookMetrics,
    RedactingAccessLogger,
    add_hook_routes,
    log_field,
)
from backend.http.users import UserDirectory
from backend.log_throttle import LOG_BURST

SECRET = "hook-secret-7Qp2xW9vLk3s"
BACKEND_USER, BACKEND_PW = "locker_backend", "backend-pw-Hc81tQ0aZ"
PROV_USER, PROV_PW = "provisioning_client", "prov-pw-Yb55eRr2M"
SUPERUSER = "ops_root"
A = "6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab"
B = "0a0b0c0d-1111-4222-8333-444455556666"
REVOKED = "9d9d9d9d-0000-4000-8000-000000000009"
NEVER = "12121212-3434-4545-8686-979797979797"  # never provisioned
A_PW = "dev-A-pw-tzq3Vt0dK9UQhA7rBWf1nXo4cL2eJ8sM"
B_PW = "dev-B-pw-Pm4kR7wQ2zN9xV5bT1yH6gF3dS8aJ0cE"
REVOKED_PW = "dev-R-pw-Lq8mN3vB6xC1zK4jH7gF2dS5aP9oI0uY"
TOKEN = "tok-Qm9yZXR1cm5lZC10b2tlbi1uZXZlci1sb2dnZWQ"
PROV_CID = "prov-5e8f"
ALL_SECRETS = (SECRET, BACKEND_PW, PROV_PW, A_PW, B_PW, REVOKED_PW, TOKEN)


# --------------------------------------------------------------------------- fixtures


def make_directory() -> UserDirectory:
    """Backend, provisioning client, one superuser name, two live banks and a revoked one."""
    directory = UserDirectory(BACKEND_USER, BACKEND_PW, PROV_USER, PROV_PW, {SUPERUSER})
    # each bank registered with its own client id (its pinned id, DESIGN section 4)
    directory.device_provisioned(A, secret_digest(A_PW), "dev-a")
    directory.device_provisioned(B, secret_digest(B_PW), "dev-b")
    directory.device_provisioned(REVOKED, secret_digest(REVOKED_PW), "dev-r")
    directory.device_revoked(REVOKED)
    return directory


@dataclass
class Hook:
    """A running hook server and the knobs a test turns."""

    client: TestClient[web.Request, web.Application]
    directory: UserDirectory
    metrics: HookMetrics
    legacy: list[bool] = field(default_factory=lambda: [True])


def make_app(
    directory: UserDirectory, metrics: HookMetrics, legacy: Callable[[], bool] | bool
) -> web.Application:
    app = web.Application()
    add_hook_routes(app, directory, SECRET, legacy_status=legacy, metrics=metrics)
    return app


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    directory, metrics, legacy = make_directory(), HookMetrics(), [True]
    app = make_app(directory, metrics, lambda: legacy[0])
    server = TestServer(app, access_log_class=RedactingAccessLogger)
    async with TestClient(server) as client:
        yield Hook(client, directory, metrics, legacy)


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def status_mode(self) -> bool:
        """go-auth ``http_response_mode status``: any 2xx grants."""
        return 200 <= self.status < 300

    @property
    def json_mode(self) -> bool:
        """go-auth ``http_response_mode json``: 2xx, then ``{"ok": true}`` grants."""
        return self.status_mode and self.body.get("ok") is True


async def post(
    hook: Hook,
    path: str,
    body: Any = None,
    *,
    secret: str | None = SECRET,
    form: bool = False,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> Answer:
    params = {"mosq_secret": secret} if secret is not None else None
    kwargs: dict[str, Any]
    if raw is not None:
        kwargs = {"data": raw, "headers": {"Content-Type": content_type}}
    elif form:
        kwargs = {"data": body}
    else:
        kwargs = {"json": body}
    async with hook.client.post(path, params=params, **kwargs) as resp:
        return Answer(resp.status, await resp.json())


def assert_granted(answer: Answer, expected: bool) -> None:
    """The decision reads the same in both go-auth response modes, with our exact codes."""
    assert answer.status_mode is expected, answer
    assert answer.json_mode is expected, answer
    if expected:
        assert answer.status == 200
        assert answer.body == {"ok": True, "result": "allow"}
    else:
        assert answer.status == 403
        assert answer.body["ok"] is False
        assert answer.body["result"] == "deny"
        assert isinstance(answer.body["error"], str) and answer.body["error"]


async def go_auth_login(hook: Hook, username: str, password: str, clientid: str) -> Answer:
    body = {"username": username, "password": password, "clientid": clientid}
    return await post(hook, AUTH_PATH, body)


async def go_auth_acl(hook: Hook, username: str, clientid: str, topic: str, acc: int) -> Answer:
    body = {"username": username, "clientid": clientid, "topic": topic, "acc": acc}
    return await post(hook, ACL_PATH, body)


# --------------------------------------------------------------------------- go-auth contract

LOGINS: list[tuple[str, str, str, bool]] = [
    (BACKEND_USER, BACKEND_PW, "backend-1", True),
    (BACKEND_USER, "wrong", "backend-1", False),
    (BACKEND_USER, PROV_PW, "backend-1", False),
    (BACKEND_USER, "", "backend-1", False),
    (PROV_USER, PROV_PW, PROV_CID, True),
    (PROV_USER, BACKEND_PW, PROV_CID, False),
    (A, A_PW, "dev-a", True),
    (A, B_PW, "dev-a", False),
    (A, A_PW.upper(), "dev-a", False),
    (B, B_PW, "dev-b", True),
    (REVOKED, REVOKED_PW, "dev-r", False),
    (NEVER, A_PW, "dev-n", False),
    ("stranger", BACKEND_PW, "s-1", False),
    (SUPERUSER, BACKEND_PW, "root-1", False),  # superusers authenticate elsewhere
    (BACKEND_USER, BACKEND_PW, "a/b", False),  # client id that is not one level
]


@pytest.mark.parametrize(("username", "password", "clientid", "granted"), LOGINS)
async def test_go_auth_login(
    hook: Hook, username: str, password: str, clientid: str, granted: bool
) -> None:
    assert_granted(await go_auth_login(hook, username, password, clientid), granted)


@pytest.mark.parametrize(
    ("username", "granted"),
    [(SUPERUSER, True), (BACKEND_USER, False), (PROV_USER, False), (A, False), ("x", False)],
)
async def test_go_auth_superuser(hook: Hook, username: str, granted: bool) -> None:
    assert_granted(await post(hook, SUPERUSER_PATH, {"username": username}), granted)


# (username, clientid, topic, acc, granted): every row of DESIGN section 4.
ACL_ROWS: list[tuple[str, str, str, int, bool]] = [
    # backend: publish
    (BACKEND_USER, "backend-1", f"locker/{A}/command", 2, True),
    (BACKEND_USER, "backend-1", "locker/provisioning/reply/dev-x", 2, True),
    (BACKEND_USER, "backend-1", "server/status", 2, True),
    (BACKEND_USER, "backend-1", f"locker/{A}/response", 2, False),
    (BACKEND_USER, "backend-1", f"locker/register/{TOKEN}", 2, False),
    # backend: subscribe / receive
    (BACKEND_USER, "backend-1", "locker/#", 4, True),
    (BACKEND_USER, "backend-1", "locker/+/response", 4, True),
    (BACKEND_USER, "backend-1", "$share/backends/locker/+/event", 4, True),
    (BACKEND_USER, "backend-1", "server/status", 4, True),
    (BACKEND_USER, "backend-1", "#", 4, False),
    (BACKEND_USER, "backend-1", "$SYS/#", 4, False),
    (BACKEND_USER, "backend-1", f"locker/{A}/state", 1, True),
    (BACKEND_USER, "backend-1", f"locker/register/{TOKEN}", 1, True),
    (BACKEND_USER, "backend-1", "server/status", 1, True),
    (BACKEND_USER, "backend-1", "elsewhere/topic", 1, False),
    (BACKEND_USER, "backend-1", "server/status", 3, True),
    # device A: publish
    (A, "dev-a", f"locker/{A}/state", 2, True),
    (A, "dev-a", f"locker/{A}/state/heartbeat", 2, True),
    (A, "dev-a", f"locker/{A}/response", 2, True),
    (A, "dev-a", f"locker/{A}/event", 2, True),
    (A, "dev-a", f"locker/{A}/status", 2, True),
    (A, "dev-a", f"locker/{A}/command", 2, False),
    (A, "dev-a", f"locker/{B}/state", 2, False),
    (A, "dev-a", f"locker/{B}/response", 2, False),
    (A, "dev-a", "server/status", 2, False),
    (A, "dev-a", f"locker/{A}/+", 2, False),
    # device A: subscribe / receive
    (A, "dev-a", f"locker/{A}/command", 4, True),
    (A, "dev-a", "server/status", 4, True),
    (A, "dev-a", "locker/#", 4, False),
    (A, "dev-a", "locker/+/command", 4, False),
    (A, "dev-a", f"locker/{A}/#", 4, False),
    (A, "dev-a", f"locker/{B}/command", 4, False),
    (A, "dev-a", f"locker/{A}/command", 1, True),
    (A, "dev-a", "server/status", 1, True),
    (A, "dev-a", f"locker/{B}/command", 1, False),
    (A, "dev-a", f"locker/{B}/state", 1, False),
    (A, "dev-a", f"locker/{A}/command", 3, False),
    # provisioning client
    (PROV_USER, PROV_CID, f"locker/register/{TOKEN}", 2, True),
    (PROV_USER, PROV_CID, f"locker/{A}/state", 2, False),
    (PROV_USER, PROV_CID, f"locker/provisioning/reply/{PROV_CID}", 4, True),
    (PROV_USER, PROV_CID, f"locker/provisioning/reply/{PROV_CID}", 1, True),
    (PROV_USER, PROV_CID, "locker/provisioning/reply/someone-else", 4, False),
    (PROV_USER, PROV_CID, "locker/provisioning/reply/someone-else", 1, False),
    (PROV_USER, PROV_CID, "locker/provisioning/reply/+", 4, False),
    (PROV_USER, PROV_CID, "locker/register/+", 4, False),
    # superuser name: everything
    (SUPERUSER, "root-1", "#", 4, True),
    (SUPERUSER, "root-1", f"locker/{A}/command", 2, True),
    # anyone else: nothing
    ("stranger", "s-1", "server/status", 1, False),
    ("stranger", "s-1", "server/status", 4, False),
    ("stranger", "s-1", f"locker/register/{TOKEN}", 2, False),
    (REVOKED, "dev-r", f"locker/{REVOKED}/command", 4, False),
    (REVOKED, "dev-r", f"locker/{REVOKED}/state", 2, False),
    (NEVER, "dev-n", f"locker/{NEVER}/command", 4, False),
    # unknown acc values
    (SUPERUSER, "root-1", "server/status", 0, False),
    (BACKEND_USER, "backend-1", "server/status", 7, False),
]


@pytest.mark.parametrize(("username", "clientid", "topic", "acc", "granted"), ACL_ROWS)
async def test_go_auth_acl(
    hook: Hook, username: str, clientid: str, topic: str, acc: int, granted: bool
) -> None:
    assert_granted(await go_auth_acl(hook, username, clientid, topic, acc), granted)


async def test_go_auth_form_params_mode(hook: Hook) -> None:
    """go-auth ``http_params_mode form``: ``PostForm`` with every value as text."""
    login = {"username": A, "password": A_PW, "clientid": "dev-a"}
    assert_granted(await post(hook, AUTH_PATH, login, form=True), True)
    assert_granted(await post(hook, AUTH_PATH, {**login, "password": B_PW}, form=True), False)
    acl = {"username": A, "clientid": "dev-a", "topic": f"locker/{A}/command", "acc": "4"}
    assert_granted(await post(hook, ACL_PATH, acl, form=True), True)
    other = {**acl, "topic": f"locker/{B}/command"}
    assert_granted(await post(hook, ACL_PATH, other, form=True), False)
    assert_granted(await post(hook, SUPERUSER_PATH, {"username": SUPERUSER}, form=True), True)


@pytest.mark.parametrize("username", ["#", "+", "a/b", "a\x00b", "", "x" * 300])
async def test_hostile_usernames_refused(hook: Hook, username: str) -> None:
    assert_granted(await go_auth_login(hook, username, BACKEND_PW, "c-1"), False)
    assert_granted(await post(hook, SUPERUSER_PATH, {"username": username}), False)
    for topic, acc in (("server/status", 1), ("server/status", 4), ("#", 4), ("a/b", 2)):
        assert_granted(await go_auth_acl(hook, username, "c-1", topic, acc), False)


@pytest.mark.parametrize("clientid", ["#", "+", "a/b", "a\x00b", ""])
async def test_hostile_client_ids_refused(hook: Hook, clientid: str) -> None:
    assert_granted(await go_auth_login(hook, A, A_PW, clientid), False)
    assert_granted(await go_auth_acl(hook, A, clientid, f"locker/{A}/command", 4), False)
    topic = f"locker/provisioning/reply/{clientid}"
    assert_granted(await go_auth_acl(hook, PROV_USER, clientid, topic, 4), False)


# --------------------------------------------------------------------------- revocation, legacy


async def test_revoked_device_refused_at_next_auth_and_acl(hook: Hook) -> None:
    topic = f"locker/{A}/command"
    assert_granted(await go_auth_login(hook, A, A_PW, "dev-a"), True)
    assert_granted(await go_auth_acl(hook, A, "dev-a", topic, 4), True)
    hook.directory.device_revoked(A)
    assert_granted(await go_auth_login(hook, A, A_PW, "dev-a"), False)
    assert_granted(await go_auth_acl(hook, A, "dev-a", topic, 1), False)
    assert_granted(await go_auth_acl(hook, A, "dev-a", topic, 4), False)
    assert_granted(await go_auth_acl(hook, A, "dev-a", f"locker/{A}/response", 2), False)
    # B is untouched
    assert_granted(await go_auth_login(hook, B, B_PW, "dev-b"), True)
    # reprovisioning replaces the password
    new_password = "dev-A-second-life-pw-0Kx8Jd4Hs2Lq"
    hook.directory.device_provisioned(A, secret_digest(new_password), "dev-a")
    assert_granted(await go_auth_login(hook, A, A_PW, "dev-a"), False)
    assert_granted(await go_auth_login(hook, A, new_password, "dev-a"), True)
    assert_granted(await go_auth_acl(hook, A, "dev-a", topic, 4), True)


async def test_legacy_status_follows_the_callable(hook: Hook) -> None:
    topic = f"locker/{A}/status"
    assert_granted(await go_auth_acl(hook, A, "dev-a", topic, 2), True)
    hook.legacy[0] = False
    assert_granted(await go_auth_acl(hook, A, "dev-a", topic, 2), False)
    assert_granted(await go_auth_acl(hook, A, "dev-a", f"locker/{A}/response", 2), True)


@pytest.mark.parametrize("legacy", [True, False])
async def test_legacy_status_as_a_plain_bool(legacy: bool) -> None:
    app = make_app(make_directory(), HookMetrics(), legacy)
    async with TestClient(TestServer(app)) as client:
        hook = Hook(client, make_directory(), HookMetrics())
        assert_granted(await go_auth_acl(hook, A, "dev-a", f"locker/{A}/status", 2), legacy)


# --------------------------------------------------------------------------- secret


@pytest.mark.parametrize("path", [AUTH_PATH, SUPERUSER_PATH, ACL_PATH])
@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET.upper(), SECRET + "x", SECRET[:-1]])
async def test_missing_or_wrong_secret_is_401(hook: Hook, path: str, secret: str | None) -> None:
    body = {"username": BACKEND_USER, "password": BACKEND_PW, "clientid": "b", "topic": "t"}
    answer = await post(hook, path, {**body, "acc": 1}, secret=secret)
    assert answer.status == 401
    assert answer.body == {"ok": False, "error": "unauthorized"}
    assert not answer.status_mode and not answer.json_mode


async def test_secret_checked_before_the_body(hook: Hook) -> None:
    answer = await post(hook, AUTH_PATH, raw=b"{not json", secret="wrong")
    assert answer.status == 401
    assert hook.metrics.snapshot()[("auth", "unauthorized")] == 1
    assert hook.metrics.snapshot()[("auth", "bad_request")] == 0


async def test_a_flood_of_bad_calls_logs_a_bounded_number_of_lines(
    hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    """Every call is answered and counted, but the log gets at most a burst per window."""
    caplog.set_level(logging.INFO, logger="backend.http.hook")
    flood = 10 * LOG_BURST
    for _ in range(flood):
        assert (await post(hook, AUTH_PATH, {"username": "x"}, secret="wrong")).status == 401
        assert (await post(hook, AUTH_PATH, raw=b"{not json")).status == 400
    snapshot = hook.metrics.snapshot()
    assert snapshot[("auth", "unauthorized")] == snapshot[("auth", "bad_request")] == flood
    lines = [r.getMessage() for r in caplog.records if r.name == "backend.http.hook"]
    assert sum("wrong secret" in line for line in lines) == LOG_BURST
    assert sum("bad request" in line for line in lines) == LOG_BURST


async def test_repeated_secret_parameter_is_401(hook: Hook) -> None:
    body = {"username": BACKEND_USER, "password": BACKEND_PW, "clientid": "b"}
    url = f"{AUTH_PATH}?mosq_secret=wrong&mosq_secret={SECRET}"
    async with hook.client.post(url, json=body) as resp:
        assert resp.status == 401


def test_empty_secret_refuses_to_start() -> None:
    app = web.Application()
    with pytest.raises(ValueError, match="MOSQ_SECRET is required"):
        add_hook_routes(app, make_directory(), "")
    assert len(app.router.routes()) == 0


# --------------------------------------------------------------------------- malformed bodies

_LOGIN = {"username": A, "password": A_PW, "clientid": "dev-a"}
_ACL = {"username": A, "clientid": "dev-a", "topic": f"locker/{A}/command", "acc": 4}

MALFORMED: list[tuple[str, bytes, str]] = [
    (AUTH_PATH, b"not json", "application/json"),
    (AUTH_PATH, b"", "application/json"),
    (AUTH_PATH, b"[1, 2]", "application/json"),
    (AUTH_PATH, b'"username"', "application/json"),
    (AUTH_PATH, b"null", "application/json"),
    (AUTH_PATH, b"\xff\xfe{}", "application/json"),
    (AUTH_PATH, b"[" * 100_000, "text/plain"),
    (AUTH_PATH, json.dumps({"username": A, "password": A_PW}).encode(), "application/json"),
    (AUTH_PATH, json.dumps({**_LOGIN, "username": 42}).encode(), "application/json"),
    (AUTH_PATH, json.dumps({**_LOGIN, "password": ["x"]}).encode(), "application/json"),
    (AUTH_PATH, json.dumps({**_LOGIN, "client_id": "other"}).encode(), "application/json"),
    (
        AUTH_PATH,
        b"username=a&username=b&password=x&clientid=c",
        "application/x-www-form-urlencoded",
    ),
    (SUPERUSER_PATH, b"{}", "application/json"),
    (SUPERUSER_PATH, json.dumps({"username": {"a": 1}}).encode(), "application/json"),
    (ACL_PATH, json.dumps({**_ACL, "acc": "4"}).encode(), "application/json"),
    (ACL_PATH, json.dumps({**_ACL, "acc": True}).encode(), "application/json"),
    (ACL_PATH, json.dumps({**_ACL, "acc": None}).encode(), "application/json"),
    (ACL_PATH, json.dumps({**_ACL, "topic": None}).encode(), "application/json"),
    (ACL_PATH, json.dumps({k: v for k, v in _ACL.items() if k != "topic"}).encode(), "text/json"),
    (ACL_PATH, json.dumps({k: v for k, v in _ACL.items() if k != "acc"}).encode(), "text/json"),
    (ACL_PATH, json.dumps({k: v for k, v in _ACL.items() if k != "clientid"}).encode(), "x/y"),
    (ACL_PATH, json.dumps({**_ACL, "action": "publish"}).encode(), "application/json"),
    (ACL_PATH, json.dumps({**_ACL, "action": 2}).encode(), "application/json"),
    (ACL_PATH, b"username=a&clientid=c&topic=t&acc=two", "application/x-www-form-urlencoded"),
    (ACL_PATH, b"username=a&clientid=c&topic=t&acc=-1", "application/x-www-form-urlencoded"),
    (ACL_PATH, json.dumps({**_ACL, "pad": "x" * 70_000}).encode(), "application/json"),
]


async def test_acc_as_an_integral_json_number_is_that_integer(hook: Hook) -> None:
    # 4.0 is the integer 4 in JSON Schema (the OpenAPI document); 4.5 and "4" are not.
    as_int = await post(hook, ACL_PATH, raw=json.dumps(_ACL).encode())
    as_float = await post(hook, ACL_PATH, raw=json.dumps({**_ACL, "acc": 4.0}).encode())
    assert (as_float.status, as_float.body) == (as_int.status, as_int.body)
    fraction = await post(hook, ACL_PATH, raw=json.dumps({**_ACL, "acc": 4.5}).encode())
    assert fraction.status == 400


@pytest.mark.parametrize(("path", "raw", "content_type"), MALFORMED)
async def test_malformed_bodies_are_400(
    hook: Hook, path: str, raw: bytes, content_type: str
) -> None:
    answer = await post(hook, path, raw=raw, content_type=content_type)
    assert answer.status == 400
    assert answer.body["ok"] is False
    assert isinstance(answer.body["error"], str) and answer.body["error"]
    assert A_PW not in answer.body["error"]
    endpoint = path.rsplit("/", 1)[-1]
    assert hook.metrics.snapshot()[(endpoint, "bad_request")] == 1


async def test_get_is_not_an_endpoint(hook: Hook) -> None:
    async with hook.client.get(AUTH_PATH, params={"mosq_secret": SECRET}) as resp:
        assert resp.status == 405


# --------------------------------------------------------------------------- other spellings


async def test_amqtt_spelling_client_id(hook: Hook) -> None:
    login = {"username": A, "password": A_PW, "client_id": "dev-a"}
    assert_granted(await post(hook, AUTH_PATH, login), True)
    acl = {"username": A, "client_id": "dev-a", "topic": f"locker/{A}/command", "acc": 4}
    assert_granted(await post(hook, ACL_PATH, acl), True)
    assert_granted(await post(hook, ACL_PATH, {**acl, "topic": f"locker/{B}/command"}), False)
    both = {"username": A, "clientid": "dev-a", "client_id": "dev-a", "password": A_PW}
    assert_granted(await post(hook, AUTH_PATH, both), True)


async def test_amqtt_anonymous_session_is_denied(hook: Hook) -> None:
    anonymous = {"username": None, "password": None, "client_id": "anon-1"}
    assert_granted(await post(hook, AUTH_PATH, anonymous), False)
    acl = {"username": None, "client_id": "anon-1", "topic": "server/status", "acc": 1}
    assert_granted(await post(hook, ACL_PATH, acl), False)
    # amqtt's form mode turns None into the text "None"
    form = {"username": "None", "password": "None", "client_id": "anon-1"}
    assert_granted(await post(hook, AUTH_PATH, form, form=True), False)


@pytest.mark.parametrize(
    ("username", "clientid", "topic", "action", "granted"),
    [
        (A, "dev-a", f"locker/{A}/command", "subscribe", True),
        (A, "dev-a", f"locker/{A}/response", "publish", True),
        (A, "dev-a", f"locker/{B}/command", "subscribe", False),
        (A, "dev-a", f"locker/{A}/command", "publish", False),
        (BACKEND_USER, "backend-1", "locker/+/response", "subscribe", True),
        (BACKEND_USER, "backend-1", f"locker/{A}/command", "publish", True),
        (BACKEND_USER, "backend-1", f"locker/{A}/command", "all", False),
    ],
)
async def test_emqx_action_form(
    hook: Hook, username: str, clientid: str, topic: str, action: str, granted: bool
) -> None:
    body = {"username": username, "clientid": clientid, "topic": topic, "action": action}
    assert_granted(await post(hook, ACL_PATH, body), granted)


async def test_emqx_action_agreeing_with_acc(hook: Hook) -> None:
    body = {**_ACL, "action": "subscribe"}
    assert_granted(await post(hook, ACL_PATH, body), True)


class _Ctx:
    """The two attributes amqtt's HTTP plugins read from a broker context."""

    def __init__(self, config: object) -> None:
        self.config = config
        self.logger = logging.getLogger("tests.amqtt_plugin")


def _session(username: str | None, password: str | None, client_id: str) -> Session:
    session = Session()
    session.username = username
    session.password = password
    session.client_id = client_id
    return session


@pytest.mark.parametrize("params_mode", [ParamsMode.JSON, ParamsMode.FORM])
@pytest.mark.parametrize("response_mode", [ResponseMode.STATUS, ResponseMode.JSON])
async def test_amqtt_http_plugins_against_the_hook(
    hook: Hook, params_mode: ParamsMode, response_mode: ResponseMode
) -> None:
    """amqtt 0.12.1's own UserAuthHttpPlugin/TopicAuthHttpPlugin, pointed at the hook."""
    common: dict[str, Any] = {
        "host": hook.client.host,
        "port": hook.client.port,
        "request_method": RequestMethod.POST,
        "params_mode": params_mode,
        "response_mode": response_mode,
    }
    user_config = UserAuthHttpPlugin.Config(**common, user_uri=f"{AUTH_PATH}?mosq_secret={SECRET}")
    topic_config = TopicAuthHttpPlugin.Config(
        **common, topic_uri=f"{ACL_PATH}?mosq_secret={SECRET}"
    )
    users = UserAuthHttpPlugin(_Ctx(user_config))
    topics = TopicAuthHttpPlugin(_Ctx(topic_config))
    try:
        device = _session(A, A_PW, "dev-a")
        assert await users.authenticate(session=device) is True
        assert await users.authenticate(session=_session(A, B_PW, "dev-a")) is False
        assert await users.authenticate(session=_session(None, None, "anon")) is False
        assert await users.authenticate(session=_session(REVOKED, REVOKED_PW, "r")) is False

        async def allowed(session: Session, topic: str, action: Action) -> bool | None:
            return await topics.topic_filtering(session=session, topic=topic, action=action)

        assert await allowed(device, f"locker/{A}/command", Action.SUBSCRIBE) is True
        assert await allowed(device, f"locker/{A}/command", Action.RECEIVE) is True
        assert await allowed(device, f"locker/{A}/state", Action.PUBLISH) is True
        assert await allowed(device, "locker/+/command", Action.SUBSCRIBE) is False
        assert await allowed(device, f"locker/{B}/state", Action.RECEIVE) is False
        assert await allowed(device, f"locker/{B}/state", Action.PUBLISH) is False
        prov = _session(PROV_USER, PROV_PW, PROV_CID)
        assert await users.authenticate(session=prov) is True
        assert await allowed(prov, f"locker/register/{TOKEN}", Action.PUBLISH) is True
        mine = f"locker/provisioning/reply/{PROV_CID}"
        assert await allowed(prov, mine, Action.SUBSCRIBE) is True
        assert await allowed(prov, "locker/provisioning/reply/x", Action.RECEIVE) is False
    finally:
        await users.on_broker_pre_shutdown()
        await topics.on_broker_pre_shutdown()
    snapshot = hook.metrics.snapshot()
    assert snapshot[("auth", "allow")] == 2
    assert snapshot[("auth", "deny")] == 3
    assert snapshot[("acl", "bad_request")] == 0


# --------------------------------------------------------------------------- errors, metrics


class _BrokenDirectory(UserDirectory):
    def authenticate(self, username: str, password: str, client_id: str) -> Decision:
        raise RuntimeError("directory exploded")

    def acl(
        self, username: str, client_id: str, topic: str, acc: int, legacy_status: bool = True
    ) -> Decision:
        raise RuntimeError("directory exploded")


async def test_our_failure_is_500_and_never_2xx(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    metrics = HookMetrics()
    broken = _BrokenDirectory(BACKEND_USER, BACKEND_PW, PROV_USER, PROV_PW)
    app = make_app(broken, metrics, True)
    async with TestClient(TestServer(app)) as client:
        hook = Hook(client, broken, metrics)
        login = await go_auth_login(hook, A, A_PW, "dev-a")
        acl = await go_auth_acl(hook, A, "dev-a", f"locker/{A}/command", 4)
        superuser = await post(hook, SUPERUSER_PATH, {"username": SUPERUSER})
    for answer in (login, acl):
        assert answer.status == 500
        assert answer.body == {"ok": False, "error": "internal error"}
        assert not answer.status_mode and not answer.json_mode
    assert superuser.status == 403  # the working endpoint is unaffected
    assert metrics.snapshot()[("auth", "error")] == 1
    assert metrics.snapshot()[("acl", "error")] == 1
    assert "directory exploded" in caplog.text
    assert A_PW not in caplog.text and SECRET not in caplog.text


async def test_metrics_count_every_answer(hook: Hook) -> None:
    await go_auth_login(hook, A, A_PW, "dev-a")
    await go_auth_login(hook, A, "nope", "dev-a")
    await go_auth_acl(hook, A, "dev-a", f"locker/{A}/command", 4)
    await post(hook, ACL_PATH, {"username": A}, secret="bad")
    await post(hook, SUPERUSER_PATH, raw=b"]")
    snapshot = hook.metrics.snapshot()
    assert set(snapshot) == {(e, r) for e in ENDPOINTS for r in RESULTS}
    expected = {
        ("auth", "allow"): 1,
        ("auth", "deny"): 1,
        ("acl", "allow"): 1,
        ("acl", "unauthorized"): 1,
        ("superuser", "bad_request"): 1,
    }
    assert {k: v for k, v in snapshot.items() if v} == expected
    snapshot[("auth", "allow")] = 99  # a copy, not the live counters
    assert hook.metrics.snapshot()[("auth", "allow")] == 1


# --------------------------------------------------------------------------- logs


async def test_logs_never_hold_passwords_secret_or_tokens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    directory, metrics = make_directory(), HookMetrics()
    app = make_app(directory, metrics, True)
    server = TestServer(app, access_log_class=RedactingAccessLogger)
    async with TestClient(server) as client:
        hook = Hook(client, directory, metrics)
        await go_auth_login(hook, A, A_PW, "dev-a")
        await go_auth_login(hook, A, B_PW, "dev-a")
        await go_auth_login(hook, BACKEND_USER, BACKEND_PW, "backend-1")
        await go_auth_login(hook, PROV_USER, PROV_PW, PROV_CID)
        await go_auth_login(hook, REVOKED, REVOKED_PW, "dev-r")
        await go_auth_acl(hook, PROV_USER, PROV_CID, f"locker/register/{TOKEN}", 2)
        await go_auth_acl(hook, BACKEND_USER, "backend-1", f"locker/register/{TOKEN}", 1)
        await post(hook, AUTH_PATH, {"username": A, "password": A_PW}, secret="wrong")
        await post(hook, AUTH_PATH, {"username": A, "password": A_PW})  # 400: no clientid
        await post(hook, AUTH_PATH, {"username": A, "password": A_PW, "clientid": "c"}, form=True)
    # leaving the client closed the server, so every access-log line is written
    text = caplog.text
    assert "mosq auth" in text and "-> allow" in text and "-> deny" in text
    assert "locker/register/<redacted>" in text
    assert "mosq_secret=<redacted>" in text  # the access log was captured, redacted
    for secret in ALL_SECRETS:
        assert secret not in text
        assert all(secret not in str(record.args) for record in caplog.records)


async def test_default_access_log_is_filtered_too(caplog: pytest.LogCaptureFixture) -> None:
    """Served without RedactingAccessLogger, the access-log filter still hides the secret."""
    caplog.set_level(logging.DEBUG)
    directory, metrics = make_directory(), HookMetrics()
    async with TestClient(TestServer(make_app(directory, metrics, True))) as client:
        hook = Hook(client, directory, metrics)
        assert_granted(await go_auth_login(hook, A, A_PW, "dev-a"), True)
        await post(hook, AUTH_PATH, {"username": A}, secret=SECRET + "-typo")
    access = [r for r in caplog.records if r.name == "aiohttp.access"]
    assert len(access) == 2
    assert all("mosq_secret=<redacted>" in r.getMessage() for r in access)
    assert SECRET not in caplog.text and A_PW not in caplog.text


def test_log_field_redacts_and_shortens() -> None:
    assert log_field(f"locker/register/{TOKEN}") == "locker/register/<redacted>"
    assert log_field("locker/register/+") == "locker/register/<redacted>"
    assert log_field(f"locker/{A}/state") == f"locker/{A}/state"
    assert len(log_field("x" * 5000)) < 300


# --------------------------------------------------------------------------- the ACL fast path

_TOPIC_A = f"locker/{A}/state"
J = "application/json"
FORM = "application/x-www-form-urlencoded"
_PLAIN = f'"username": "{A}", "clientid": "dev-a", "topic": "{_TOPIC_A}"'


def _j(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def _raw(rest: str) -> bytes:
    """A JSON object of A's plain fields and ``rest`` (as written: NaN, duplicates...)."""
    return f"{{{_PLAIN}{rest}}}".encode()


ACL_SHAPES: list[tuple[bytes, str]] = [
    # go-auth's usual shape: allowed, denied, unknown, revoked, never provisioned, odd acc
    (_j(username=A, clientid="dev-a", topic=_TOPIC_A, acc=2), J),
    (_j(username=A, clientid="dev-a", topic=f"locker/{B}/state", acc=2), J),
    (_j(username="x", clientid="c", topic="t", acc=1), J),
    (_j(username=REVOKED, clientid="dev-r", topic="t", acc=1), J),
    (_j(username=NEVER, clientid="n", topic="t", acc=1), J),
    (_j(username=A, clientid="dev-a", topic="a/+", acc=4), J),
    (_j(username=A, clientid="dev-a", topic=_TOPIC_A, acc=9), J),
    (_j(username=A, clientid="dev-a", topic=_TOPIC_A, acc=2, x=1), J),
    # what orjson and json read differently, or the fast path leaves to the reference path
    (_raw(', "acc": true'), J),
    (_raw(', "acc": 2.0'), J),
    (_raw(', "acc": NaN'), J),
    (_raw(', "acc": 1e400'), J),
    (_raw(f', "acc": {10**30}'), J),
    (_raw(f', "acc": {2**64}'), J),
    (_raw(', "acc": 2, "z": NaN'), J),
    (_raw(', "acc": 2, "clientid": "x"'), J),
    (_raw(', "acc": 2, "topic": "t\\ud800"'), J),
    (_j(username=None, clientid="dev-a", topic=_TOPIC_A, acc=2), J),
    (_j(username=A, clientid=None, topic=_TOPIC_A, acc=2), J),
    (_j(username=A, clientid="dev-a", topic=None, acc=2), J),
    (_j(username=A, clientid="dev-a", acc=2), J),
    (_j(username=A, clientid="dev-a", topic=_TOPIC_A), J),
    (_j(username=A, client_id="dev-a", topic=_TOPIC_A, acc=2), J),
    (_j(username=A, clientid="dev-a", client_id="o", topic="t", acc=2), J),
    (_j(username=A, clientid="dev-a", topic=_TOPIC_A, action="publish"), J),
    (_j(username=A, clientid="dev-a", topic=_TOPIC_A, acc="2"), J),
    (json.dumps([A, "dev-a", _TOPIC_A, 2]).encode(), J),
    (b'{"username": ', J),
    (b"\xff\xfe{}", J),
    (b'\xef\xbb\xbf{"username": "x"}', J),
    (_raw(', "acc": 2'), "application/json; charset=utf-8"),
    (f"username={A}&clientid=dev-a&topic={_TOPIC_A}&acc=2".encode(), FORM),
]  # fmt: skip


async def _acl_answers(
    raw: bytes, content_type: str, *, warm: bool
) -> tuple[Answer, dict[Any, int]]:
    """The answer to one raw ACL call by a new hook; ``warm``: after one plain allowed call
    (its query string is then known, so the call may take the fast path)."""
    directory, metrics = make_directory(), HookMetrics()
    async with TestClient(TestServer(make_app(directory, metrics, True))) as client:
        hook = Hook(client, directory, metrics)
        if warm:
            assert_granted(await go_auth_acl(hook, A, "dev-a", _TOPIC_A, 2), True)
        answer = await post(hook, ACL_PATH, raw=raw, content_type=content_type)
    counts = metrics.snapshot()
    if warm:
        counts[("acl", "allow")] -= 1
    return answer, counts


@pytest.mark.parametrize(("raw", "content_type"), ACL_SHAPES)
async def test_acl_fast_path_answers_as_the_reference_path(raw: bytes, content_type: str) -> None:
    """A hook that knows the query string (fast path where the shape allows) answers every
    body exactly as a new one (the reference path, `_answer`), and counts it the same."""
    reference, reference_counts = await _acl_answers(raw, content_type, warm=False)
    fast, fast_counts = await _acl_answers(raw, content_type, warm=True)
    assert fast == reference
    assert fast_counts == reference_counts


async def test_acl_decisions_follow_revocation_and_reprovisioning_at_once(hook: Hook) -> None:
    """The directory remembers decisions by the user's kind: a revoked bank is denied at the
    next check, a provisioned one allowed, however often the same check came before."""
    for _ in range(3):
        assert_granted(await go_auth_acl(hook, A, "dev-a", _TOPIC_A, 2), True)
    hook.directory.device_revoked(A)
    assert_granted(await go_auth_acl(hook, A, "dev-a", _TOPIC_A, 2), False)
    hook.directory.device_provisioned(A, secret_digest(A_PW), "dev-a")
    assert_granted(await go_auth_acl(hook, A, "dev-a", _TOPIC_A, 2), True)
