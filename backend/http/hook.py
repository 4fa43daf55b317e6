"""The broker auth hook: mosquitto-go-auth's HTTP backend protocol (DESIGN section 5).

Endpoints (all ``POST``, all with ``?mosq_secret=...``):

* ``/api/mosq/auth``      ``{"username", "password", "clientid"}``
* ``/api/mosq/superuser`` ``{"username"}``
* ``/api/mosq/acl``       ``{"username", "clientid", "topic", "acc"}``

``client_id`` is accepted for ``clientid`` (amqtt's spelling) and, on the ACL
endpoint, ``"action": "publish" | "subscribe"`` for ``acc`` (EMQX). Bodies may
be JSON (go-auth's default ``json`` params mode, amqtt's JSON mode) or form
encoded (go-auth's and amqtt's ``form`` mode, where every value is a string
and amqtt spells a missing username ``"None"``). JSON ``null`` for username,
password or client id (amqtt's anonymous session) is treated as empty, which
is always denied.

Answers work with go-auth's/amqtt's ``status`` and ``json`` response modes
(not ``text``): allow is 200 ``{"ok": true, "result": "allow"}``, deny 403
``{"ok": false, "result": "deny", "error": reason}``; a denied login is never
2xx. Missing or wrong secret: 401 (checked before the body is read).
Malformed body: 400. Our own failure: 500.

Nothing here is logged with a password, the secret, or a provisioning token
(``locker/register/{token}`` topics are redacted). The secret travels in the
query string, so aiohttp's default access log would record it: serve the app
with ``access_log_class=RedactingAccessLogger``. As a second line of defence
``add_hook_routes`` also puts the redacting filter (``backend.redaction``) on the
``aiohttp.access`` logger.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger

from backend.domain.acl import Access, Decision
from backend.domain.digests import secret_digest
from backend.http.endpoints import Handler
from backend.http.hook_decisions import HookDecisions, Lookup
from backend.http.json_body import json_object
from backend.http.users import UserDirectory
from backend.log_throttle import LogThrottle
from backend.redaction import redact, redact_loggers

__all__ = [
    "ACL_PATH",
    "AUTH_PATH",
    "ENDPOINTS",
    "RESULTS",
    "SUPERUSER_PATH",
    "HookMetrics",
    "OnError",
    "RedactingAccessLogger",
    "add_hook_routes",
    "log_field",
]

log = logging.getLogger(__name__)

AUTH_PATH: Final = "/api/mosq/auth"
SUPERUSER_PATH: Final = "/api/mosq/superuser"
ACL_PATH: Final = "/api/mosq/acl"
SECRET_PARAM: Final = "mosq_secret"

ENDPOINTS: Final = ("auth", "superuser", "acl")
RESULTS: Final = ("allow", "deny", "error", "unauthorized", "bad_request")

MAX_BODY_BYTES: Final = 64 * 1024
_FORM_TYPES: Final = ("application/x-www-form-urlencoded", "multipart/form-data")
_ACTIONS: Final[Mapping[str, int]] = {"publish": Access.WRITE, "subscribe": Access.SUBSCRIBE}
_LOG_FIELD_MAX: Final = 200
_JSON_TYPE: Final = "application/json"
_KNOWN_QUERIES_MAX: Final = 8


# --------------------------------------------------------------------------- metrics


LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class HookMetrics:
    """Plain counters of hook answers by endpoint and result, and a latency histogram
    per endpoint (request in to answer out, seconds: what go-auth waits for).

    Every ``(endpoint, result)`` pair of ``ENDPOINTS`` x ``RESULTS`` starts at 0,
    so a Prometheus rendering shows all series from the first scrape.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {(e, r): 0 for e in ENDPOINTS for r in RESULTS}
        self._buckets: dict[str, list[int]] = {e: [0] * len(LATENCY_BUCKETS) for e in ENDPOINTS}
        self._sum: dict[str, float] = dict.fromkeys(ENDPOINTS, 0.0)
        self._n: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
        self.store_lookups = 0

    def inc(self, endpoint: str, result: str) -> None:
        """Count one answer."""
        key = (endpoint, result)
        self._counts[key] = self._counts.get(key, 0) + 1

    def observe(self, endpoint: str, seconds: float) -> None:
        """Record how long one answer took."""
        counts = self._buckets.get(endpoint)
        if counts is None:
            return
        i = bisect_left(LATENCY_BUCKETS, seconds)  # the first bound >= seconds
        if i < len(counts):
            counts[i] += 1
        self._sum[endpoint] += seconds
        self._n[endpoint] += 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        """A copy of the counters: ``{(endpoint, result): count}``."""
        return dict(self._counts)

    def exposition(self) -> list[str]:
        """The hook's series in Prometheus text format 0.0.4 (HELP/TYPE included):
        ``locker_hook_requests_total{endpoint,result}``,
        ``locker_hook_latency_seconds{endpoint}`` (histogram) and
        ``locker_hook_store_lookups_total`` (directory misses asked of the store)."""
        lines = [
            "# HELP locker_hook_requests_total Auth hook answers by endpoint and result.",
            "# TYPE locker_hook_requests_total counter",
        ]
        for (endpoint, result), n in sorted(self._counts.items()):
            labels = f'endpoint="{endpoint}",result="{result}"'
            lines.append(f"locker_hook_requests_total{{{labels}}} {n}")
        name = "locker_hook_latency_seconds"
        lines += [
            f"# HELP {name} Auth hook answer time by endpoint (what the broker waits for).",
            f"# TYPE {name} histogram",
        ]
        for endpoint in ENDPOINTS:
            cumulative = 0
            for bound, n in zip(LATENCY_BUCKETS, self._buckets[endpoint], strict=True):
                cumulative += n
                lines.append(f'{name}_bucket{{endpoint="{endpoint}",le="{bound}"}} {cumulative}')
            total = self._n[endpoint]
            lines.append(f'{name}_bucket{{endpoint="{endpoint}",le="+Inf"}} {total}')
            lines.append(f'{name}_sum{{endpoint="{endpoint}"}} {self._sum[endpoint]!r}')
            lines.append(f'{name}_count{{endpoint="{endpoint}"}} {total}')
        lines += [
            "# HELP locker_hook_store_lookups_total Directory misses answered from the store.",
            "# TYPE locker_hook_store_lookups_total counter",
            f"locker_hook_store_lookups_total {self.store_lookups}",
        ]
        return lines


# --------------------------------------------------------------------------- logging helpers


def log_field(value: str) -> str:
    """``value`` as a log field: redacted (secrets, provisioning tokens), then shortened."""
    return _short(redact(value))


def _short(value: str) -> str:
    return value if len(value) <= _LOG_FIELD_MAX else value[:_LOG_FIELD_MAX] + "..."


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp access logger that never writes the ``mosq_secret`` query value."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %.3fms',
            request.remote,
            request.method,
            redact(str(request.rel_url)),
            request.version.major,
            request.version.minor,
            response.status,
            time * 1000.0,
        )

    @property
    def enabled(self) -> bool:
        """Skip formatting when INFO is off for the access logger."""
        return self.logger.isEnabledFor(logging.INFO)


def _install_access_log_filter() -> None:
    redact_loggers(("aiohttp.access",))


# --------------------------------------------------------------------------- request parsing


class _BadRequest(Exception):
    """The request body is not what the protocol says; answered with 400."""


@dataclass(frozen=True, slots=True)
class _Body:
    """A request body as a flat mapping; ``form`` if every value came as text."""

    fields: Mapping[str, Any]
    form: bool


async def _read_body(request: web.Request) -> _Body:
    """The body from JSON or a form (url-encoded or multipart)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _BadRequest("body too large")
    try:
        if request.content_type in _FORM_TYPES:
            form = await request.post()
            fields: dict[str, Any] = {}
            for key in form:
                values = form.getall(key)
                if len(values) != 1:
                    raise _BadRequest(f"field {key[:40]!r} given more than once")
                if not isinstance(values[0], str):
                    raise _BadRequest(f"field {key[:40]!r} must be text")
                fields[key] = values[0]
            return _Body(fields, form=True)
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise _BadRequest("body too large") from exc
    except ValueError as exc:  # a malformed multipart body or charset
        raise _BadRequest("malformed form body") from exc
    if len(raw) > MAX_BODY_BYTES:
        raise _BadRequest("body too large")
    return _Body(json_object(raw, _BadRequest), form=False)


def _text(fields: Mapping[str, Any], name: str, *, nullable: bool) -> str:
    if name not in fields:
        raise _BadRequest(f"missing field {name!r}")
    value = fields[name]
    if value is None and nullable:
        return ""
    if not isinstance(value, str):
        raise _BadRequest(f"field {name!r} must be a string")
    return value


def _client_id(fields: Mapping[str, Any]) -> str:
    present = [name for name in ("clientid", "client_id") if name in fields]
    if not present:
        raise _BadRequest("missing field 'clientid'")
    values = {_text(fields, name, nullable=True) for name in present}
    if len(values) != 1:
        raise _BadRequest("'clientid' and 'client_id' disagree")
    return values.pop()


def _acc(body: _Body) -> int:
    fields = body.fields
    acc: int | None = None
    if "acc" in fields:
        raw = fields["acc"]
        if isinstance(raw, bool):
            raise _BadRequest("field 'acc' must be an integer")
        if isinstance(raw, int):
            acc = raw
        elif isinstance(raw, float) and raw.is_integer():
            acc = int(raw) if abs(raw) < 1e9 else -1  # 2.0 is an integer in JSON Schema
        elif body.form and isinstance(raw, str) and raw.isascii() and raw.isdigit():
            # form bodies carry every value as text; JSON ones must use a number
            acc = int(raw) if len(raw) <= 9 else -1  # -1: an unknown access type, denied
        else:
            raise _BadRequest("field 'acc' must be an integer")
    if "action" in fields:
        action = fields["action"]
        if not isinstance(action, str):
            raise _BadRequest("field 'action' must be a string")
        from_action = _ACTIONS.get(action.lower(), 0)
        if acc is not None and acc != from_action:
            raise _BadRequest("'acc' and 'action' disagree")
        acc = from_action
    if acc is None:
        raise _BadRequest("missing field 'acc'")
    return acc


# --------------------------------------------------------------------------- handlers


OnError = Callable[[web.Request, Exception], web.StreamResponse]
"""Answers an exception a handler raised (or raises it again), as an error middleware."""


@dataclass(frozen=True, slots=True)
class _Query:
    """What one hook call asks: the shared decision (`HookDecisions`) to await."""

    decide: Callable[[], Awaitable[Decision]]


_UNAUTHORIZED_BODY: Final = json.dumps({"ok": False, "error": "unauthorized"}).encode()
_ALLOW_BODY: Final = json.dumps({"ok": True, "result": "allow"}).encode()
_ERROR_BODY: Final = json.dumps({"ok": False, "error": "internal error"}).encode()


def _json(body: bytes, status: int) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def _decided(decision: Decision) -> web.Response:
    """go-auth's answer to a decided check: 200 allows, 403 denies (with the reason)."""
    if decision.allowed:
        return _json(_ALLOW_BODY, 200)
    return web.json_response({"ok": False, "result": "deny", "error": decision.reason}, status=403)


_perf_counter = time.perf_counter
_orjson_loads = orjson.loads


class _Hook:
    """The three handlers: the secret and body checks of HTTP around the shared decisions."""

    def __init__(
        self,
        decisions: HookDecisions,
        secret: str,
        metrics: HookMetrics | None,
        previous_secret: str | None = None,
        on_error: OnError | None = None,
    ) -> None:
        self._decisions = decisions
        self._on_error = on_error
        self._secrets = [secret_digest(secret)]
        if previous_secret:
            self._secrets.append(secret_digest(previous_secret))
        self._metrics = metrics
        # Raw query strings (as sent) that `_authorized` accepted, a few at most: the broker
        # sends the same URL every time, so `acl` looks the string up instead of parsing
        # the query and hashing the secret; a string not found says nothing, `_authorized`
        # decides then. The look-up's time tells nothing of the secret: strings are
        # compared only once their hashes (SipHash, keyed per process) are equal.
        self._known_queries: set[str] = set()
        # A flood of wrong-secret or malformed calls must not flood the log.
        self._unauthorized_log = LogThrottle("hook calls with a wrong secret", logger=log)
        self._bad_request_log = LogThrottle("malformed hook calls", logger=log)

    def _count(self, endpoint: str, result: str) -> None:
        if self._metrics is not None:
            self._metrics.inc(endpoint, result)

    def _authorized(self, request: web.Request) -> bool:
        offered = request.query.getall(SECRET_PARAM, [])
        if len(offered) != 1:
            return False
        digest = secret_digest(offered[0])
        # Every accepted secret is compared (no early exit): the time says nothing.
        matches = [hmac.compare_digest(digest, accepted) for accepted in self._secrets]
        if any(matches) and len(self._known_queries) < _KNOWN_QUERIES_MAX:
            self._known_queries.add(request.rel_url.raw_query_string)
        return any(matches)

    async def _handle(
        self,
        request: web.Request,
        endpoint: str,
        parse: Callable[[_Body], _Query],
    ) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await self._answer(request, endpoint, parse)
        except Exception as exc:
            if self._on_error is None:
                raise
            return self._on_error(request, exc)
        finally:
            if self._metrics is not None:
                self._metrics.observe(endpoint, time.perf_counter() - started)

    async def _answer(
        self,
        request: web.Request,
        endpoint: str,
        parse: Callable[[_Body], _Query],
    ) -> web.Response:
        if not self._authorized(request):
            self._count(endpoint, "unauthorized")
            if self._unauthorized_log.allow():
                log.warning("mosq %s: missing or wrong secret from %s", endpoint, request.remote)
            return _json(_UNAUTHORIZED_BODY, 401)
        try:
            query = parse(await _read_body(request))
        except _BadRequest as exc:
            self._count(endpoint, "bad_request")
            if self._bad_request_log.allow():
                log.info("mosq %s: bad request: %s", endpoint, exc)
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        try:
            decision = await query.decide()
        except Exception:  # counted and logged by the decisions
            return _json(_ERROR_BODY, 500)
        return _decided(decision)

    # -- parsers: body fields -> a deferred decision

    def _parse_auth(self, body: _Body) -> _Query:
        fields = body.fields
        username = _text(fields, "username", nullable=True)
        password = _text(fields, "password", nullable=True)
        client_id = _client_id(fields)
        return _Query(lambda: self._decisions.login(username, password, client_id))

    def _parse_superuser(self, body: _Body) -> _Query:
        username = _text(body.fields, "username", nullable=True)
        decision = self._decisions.superuser

        async def decide() -> Decision:
            return decision(username)

        return _Query(decide)

    def _parse_acl(self, body: _Body) -> _Query:
        fields = body.fields
        username = _text(fields, "username", nullable=True)
        client_id = _client_id(fields)
        topic = _text(fields, "topic", nullable=False)
        acc = _acc(body)
        return _Query(lambda: self._decisions.acl(username, client_id, topic, acc))

    # -- aiohttp handlers

    async def auth(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/mosq/auth``."""
        return await self._handle(request, "auth", self._parse_auth)

    async def superuser(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/mosq/superuser``."""
        return await self._handle(request, "superuser", self._parse_superuser)

    async def acl(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/mosq/acl``.

        The broker's one hot call (one per delivered message when go-auth's cache is
        off). The shape it always sends (a known query string, a JSON body of strings
        ``username``/``clientid``/``topic`` and an integer ``acc``) is decided here in one
        pass: the body decoded with orjson, no per-call objects but the answer. Anything
        else (a new or wrong secret, a form, null or missing fields, ``client_id``,
        ``action``, what orjson refuses) takes ``_answer``, the reference path, which
        gives every such call the answer it has always had (orjson decodes the plain
        shape exactly as ``json`` does; where they differ, e.g. NaN, lone surrogates,
        integers past 64 bits, orjson fails or yields no ``int``, and ``_answer`` reads
        the body again with ``json``).
        """
        started = _perf_counter()
        try:
            if (
                request.headers.get(hdrs.CONTENT_TYPE) == _JSON_TYPE
                and (length := request.content_length) is not None
                and length <= MAX_BODY_BYTES
                and request.rel_url.raw_query_string
                in self._known_queries  # a query string `_authorized` accepted before
            ):
                try:
                    fields = _orjson_loads(await request.read())
                except ValueError:  # orjson.JSONDecodeError: _answer reads it with json
                    fields = None
                if type(fields) is dict and "client_id" not in fields and "action" not in fields:
                    username = fields.get("username")
                    client_id = fields.get("clientid")
                    topic = fields.get("topic")
                    acc = fields.get("acc")
                    if (
                        type(username) is str
                        and type(client_id) is str
                        and type(topic) is str
                        and type(acc) is int
                    ):
                        try:
                            known = self._decisions.acl_known(username, client_id, topic, acc)
                            # (a Decision is falsy when it denies: compared with None)
                            decision = (
                                known
                                if known is not None
                                else await self._decisions.acl(username, client_id, topic, acc)
                            )
                        except Exception:  # counted and logged by the decisions
                            return _json(_ERROR_BODY, 500)
                        return _decided(decision)
            return await self._answer(request, "acl", self._parse_acl)
        except Exception as exc:
            if self._on_error is None:
                raise
            return self._on_error(request, exc)
        finally:
            if self._metrics is not None:
                self._metrics.observe("acl", _perf_counter() - started)


def add_hook_routes(
    app: web.Application,
    directory: UserDirectory,
    secret: str,
    *,
    legacy_status: Callable[[], bool] | bool = True,
    metrics: HookMetrics | None = None,
    lookup: Lookup | None = None,
    previous_secret: str | None = None,
    on_error: OnError | None = None,
) -> HookDecisions:
    """Register the three hook endpoints on ``app``; returns their decisions
    (``backend.http.hook_decisions``), which the embedded broker asks in process.

    ``legacy_status`` (a bool or a callable read at every check) says whether
    devices may still publish the deprecated ``locker/{u}/status``.
    ``lookup`` (``backend.http.credentials.StoreLookup``) is awaited when a login or
    topic check names a bank UUID the directory does not know (or, for a login, knows
    as revoked), before deciding; without it a miss is a deny.
    ``previous_secret`` (MOSQ_SECRET_PREVIOUS) is accepted too, while a rotation of the
    secret is under way (the broker may still send the old one).
    ``on_error`` (``backend.http.errors.error_answer``) answers what a handler raises
    unforeseen, as an app's error middleware would, in an app that runs none (without
    it, the exception goes to aiohttp).
    Raises ``ValueError`` if ``secret`` is empty: the hook refuses to run open.
    """
    if not secret:
        raise ValueError("MOSQ_SECRET is required to serve the MQTT auth hook")
    legacy: Callable[[], bool]
    if callable(legacy_status):
        legacy = legacy_status
    else:
        flag = bool(legacy_status)

        def legacy() -> bool:
            return flag

    _install_access_log_filter()
    decisions = HookDecisions(directory, legacy_status=legacy, metrics=metrics, lookup=lookup)
    hook = _Hook(decisions, secret, metrics, previous_secret, on_error)
    handlers: tuple[tuple[str, str, Handler], ...] = (
        (AUTH_PATH, "mosq_auth", hook.auth),
        (SUPERUSER_PATH, "mosq_superuser", hook.superuser),
        (ACL_PATH, "mosq_acl", hook.acl),
    )
    for path, name, handler in handlers:
        app.router.add_post(path, handler, name=name)
    return decisions
