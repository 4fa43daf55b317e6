"""``HttpGateway``: the ConsoleGateway over a running backend's REST API (attach mode).

Every method is one HTTP request with the bearer token; answers are rebuilt
into the same views the in-process gateway returns (``BankView.model_validate``
...), and error answers are raised again as the domain error the server's
service raised (from the ``type`` of the JSON error, the status as a
fallback), with the server's message. So a console behaves the same attached
or standalone; the contract tests hold both to it.

``actor`` is the token's name, which the server records on every command;
``await gateway.whoami()`` fills it in (and checks the token). Failures to
reach the backend raise ``BackendUnreachable`` (a ``DomainError``) naming the
URL. The token never appears in messages or logs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final, TypeVar, Unpack
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ValidationError
from yarl import URL

from backend.attribution import ORIGIN_HEADER, local_origin
from backend.bank_changes import BankChanges
from backend.domain.errors import (
    ConcurrencyConflict,
    DomainError,
    InvalidInput,
    NotFound,
    RuleViolation,
)
from backend.gateway import SystemStatus
from backend.http.api import MAX_LIMIT
from backend.views import (
    AlertView,
    BankView,
    CreatedBank,
    EventView,
    HeartbeatSample,
    IssuedToken,
    TransactionView,
)

__all__ = ["AccessDenied", "BackendUnreachable", "HttpGateway"]

DEFAULT_TIMEOUT: Final = 10.0
M = TypeVar("M", bound=BaseModel)


class BackendUnreachable(DomainError):
    """The backend did not answer (connection refused, reset, timed out)."""


class AccessDenied(DomainError):
    """The backend refused the API token (401) or its role (403)."""


_ERRORS_BY_TYPE: Final[Mapping[str, type[DomainError]]] = {
    "NotFound": NotFound,
    "InvalidInput": InvalidInput,
    "RuleViolation": RuleViolation,
    "ConcurrencyConflict": ConcurrencyConflict,
    "DomainError": DomainError,
    "Unauthorized": AccessDenied,
    "Forbidden": AccessDenied,
}
_ERRORS_BY_STATUS: Final[Mapping[int, type[DomainError]]] = {
    400: InvalidInput,
    401: AccessDenied,
    403: AccessDenied,
    404: NotFound,
    409: RuleViolation,
}


def _segment(value: str | int) -> str:
    """One path segment, percent-encoded (a ``/`` in a uuid stays inside its segment)."""
    return quote(str(value), safe="")


class HttpGateway:
    """The ConsoleGateway over ``base_url`` (e.g. ``http://127.0.0.1:8080``) with a token."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        actor: str = "",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.actor = actor
        self.role: str | None = None
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._timeout_seconds = timeout
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"HttpGateway({self.base_url!r}, actor={self.actor!r})"

    # ----- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> HttpGateway:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (the gateway opens a new one if used again)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={
                    "Authorization": f"Bearer {self._token}",
                    "Accept": "application/json",
                    ORIGIN_HEADER: local_origin(),
                },
            )
        return self._session

    # ----- the one request path ----------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str | int] | None = None,
    ) -> Any:
        url = URL(self.base_url + path, encoded=True)
        if query:
            url = url.with_query({k: str(v) for k, v in query.items()})
        try:
            async with self._client().request(method, url, json=body) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            raise BackendUnreachable(
                f"backend at {self.base_url} did not answer within {self._timeout_seconds:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            reason = str(exc) or type(exc).__name__
            raise BackendUnreachable(f"backend unreachable at {self.base_url}: {reason}") from None
        data = self._decode(raw)
        if status >= 400:
            raise self._error(status, data)
        if data is None:
            raise DomainError(f"backend at {self.base_url} answered {status} without JSON")
        return data

    @staticmethod
    def _decode(raw: bytes) -> Any:
        try:
            return json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError):
            return None

    def _error(self, status: int, data: Any) -> DomainError:
        message = ""
        kind = ""
        if isinstance(data, dict):
            message = str(data.get("error") or "")
            kind = str(data.get("type") or "")
        cls = _ERRORS_BY_TYPE.get(kind) or _ERRORS_BY_STATUS.get(status, DomainError)
        if not message:
            message = f"backend at {self.base_url} answered {status}"
        elif status >= 500:
            message = f"backend error ({status}): {message}"
        return cls(message)

    @staticmethod
    def _build(model: type[M], data: Any) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise DomainError(f"backend answered an unexpected {model.__name__}: {exc}") from None

    # ----- identity ----------------------------------------------------------------------

    async def whoami(self) -> tuple[str, str]:
        """The token's (name, role); sets ``actor`` to the name the server records."""
        data = await self._call("GET", "/api/whoami")
        name, role = str(data["name"]), str(data["role"])
        self.actor, self.role = name, role
        return name, role

    # ----- reads -------------------------------------------------------------------------

    async def list_banks(self) -> list[BankView]:
        data = await self._call("GET", "/api/locker-banks")
        return [self._build(BankView, item) for item in data]

    async def get_bank(self, uuid: str) -> BankView:
        data = await self._call("GET", f"/api/locker-banks/{_segment(uuid)}")
        return self._build(BankView, data)

    async def list_transactions(
        self, bank_uuid: str | None = None, limit: int = 200
    ) -> list[TransactionView]:
        """Newest first; at most the API's ``MAX_LIMIT`` (1000) per call."""
        query: dict[str, str | int] = {"limit": min(max(limit, 1), MAX_LIMIT)}
        if bank_uuid is not None:
            query["bank"] = bank_uuid
        data = await self._call("GET", "/api/transactions", query=query)
        return [self._build(TransactionView, item) for item in data][: max(limit, 0)]

    async def get_transaction(self, transaction_id: str) -> TransactionView:
        data = await self._call("GET", f"/api/transactions/{_segment(transaction_id)}")
        return self._build(TransactionView, data)

    async def events_after(self, position: int = 0, limit: int = 500) -> list[EventView]:
        """Events after ``position``, oldest first; pages of ``MAX_LIMIT`` for larger limits."""
        events: list[EventView] = []
        while len(events) < limit:
            page = min(limit - len(events), MAX_LIMIT)
            query = {"after": max(position, 0), "limit": page}
            data = await self._call("GET", "/api/events", query=query)
            events.extend(self._build(EventView, item) for item in data)
            if len(data) < page:
                break
            position = events[-1].position
        return events

    async def list_alerts(self, include_resolved: bool = False) -> list[AlertView]:
        """Open alerts, newest first (with ``include_resolved`` every alert)."""
        query: dict[str, str | int] = {"all": 1} if include_resolved else {}
        data = await self._call("GET", "/api/alerts", query=query)
        return [self._build(AlertView, item) for item in data]

    async def acknowledge_alert(self, alert_id: int, note: str = "") -> AlertView:
        path = f"/api/alerts/{_segment(alert_id)}/ack"
        return self._build(AlertView, await self._call("POST", path, body={"note": note}))

    async def search_events(
        self, query: str, limit: int = 500, before: int | None = None
    ) -> list[EventView]:
        """The newest ``limit`` events (before ``before``) matching ``query``, filtered by
        the server; oldest first."""
        params: dict[str, str | int] = {"q": query, "limit": min(max(limit, 1), MAX_LIMIT)}
        if before is not None:
            params["before"] = max(before, 1)
        data = await self._call("GET", "/api/events", query=params)
        return [self._build(EventView, item) for item in data]

    async def bank_events(self, uuid: str, limit: int = 200) -> list[EventView]:
        query = {"limit": min(max(limit, 1), MAX_LIMIT)}
        data = await self._call("GET", f"/api/locker-banks/{_segment(uuid)}/events", query=query)
        return [self._build(EventView, item) for item in data]

    async def heartbeat_history(self, uuid: str) -> list[HeartbeatSample]:
        data = await self._call("GET", f"/api/locker-banks/{_segment(uuid)}/heartbeats")
        return [self._build(HeartbeatSample, item) for item in data]

    async def status(self) -> SystemStatus:
        """The backend's status as seen from here (``mode`` is ``attach``)."""
        data = await self._call("GET", "/api/status")
        return self._build(SystemStatus, data).model_copy(update={"mode": "attach"})

    # ----- commands ----------------------------------------------------------------------

    async def create_bank(
        self,
        name: str,
        location: str,
        compartments: int,
        heartbeat_interval_seconds: int = 30,
    ) -> CreatedBank:
        data = await self._call(
            "POST",
            "/api/locker-banks",
            body={
                "name": name,
                "location": location,
                "compartments": compartments,
                "heartbeat_interval_seconds": heartbeat_interval_seconds,
            },
        )
        return self._build(CreatedBank, data)

    async def update_bank(self, uuid: str, **changes: Unpack[BankChanges]) -> BankView:
        compartments = changes.pop("compartments", None)
        body: dict[str, Any] = {key: value for key, value in changes.items() if value is not None}
        if compartments is not None:
            body["compartments"] = [
                {"number": c.number, "slave_id": c.slave_id, "address": c.address}
                for c in compartments
            ]
        data = await self._call("PATCH", f"/api/locker-banks/{_segment(uuid)}", body=body)
        return self._build(BankView, data)

    async def issue_token(self, uuid: str) -> IssuedToken:
        data = await self._call("POST", f"/api/locker-banks/{_segment(uuid)}/provisioning-token")
        return self._build(IssuedToken, data)

    async def revoke(self, uuid: str, reason: str) -> None:
        await self._call(
            "POST", f"/api/locker-banks/{_segment(uuid)}/revoke", body={"reason": reason}
        )

    async def request_open(self, uuid: str, number: int) -> TransactionView:
        path = f"/api/locker-banks/{_segment(uuid)}/compartments/{_segment(number)}/open"
        return self._transaction(await self._call("POST", path))

    async def request_config_push(self, uuid: str) -> TransactionView:
        data = await self._call("POST", f"/api/locker-banks/{_segment(uuid)}/apply-config")
        return self._transaction(data)

    def _transaction(self, data: Any) -> TransactionView:
        if not isinstance(data, dict) or "transaction" not in data:
            raise DomainError(f"backend at {self.base_url} answered without a transaction")
        return self._build(TransactionView, data["transaction"])
