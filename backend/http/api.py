"""The REST API (JSON, bearer tokens): what the mobile app and attached consoles call.

Every handler is a thin translation: read the path, query and body; call the
one application service (``LockerService``) with the token's name as actor;
answer the read-model view as JSON. Rules live in the service and the domain,
errors become JSON through ``backend.http.errors`` (nothing is changed by a
refused request). ``app`` tokens may read and open compartments; ``operator``
tokens may do everything.

Routes (all under ``/api``; see ``GET /api/openapi.json`` for the full schema):

* ``GET  /locker-banks``, ``POST /locker-banks`` (201, the provisioning token shown once)
* ``GET  /locker-banks/{uuid}``
* ``POST /locker-banks/{uuid}/provisioning-token`` (201), ``.../revoke``, ``.../apply-config`` (202)
* ``POST /locker-banks/{uuid}/compartments/{number}/open`` (202)
* ``POST /compartments/{uuid}/open`` with ``{"compartment_number": N}`` (202; the seed's form,
  ``uuid`` being the bank's)
* ``GET  /transactions?bank=&limit=``, ``GET /transactions/{transaction_id}``
* ``GET  /events?after=&limit=`` (``&q=&before=``: the newest matches of a filter),
  ``GET /events/stream`` (server-sent events)
* ``GET  /locker-banks/{uuid}/events?limit=``, ``GET /locker-banks/{uuid}/heartbeats``
* ``GET  /alerts?all=&bank=&limit=``, ``POST /alerts/{id}/ack`` with ``{"note": "..."}``
* ``GET  /status``, ``GET /whoami``
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from aiohttp import web

from backend.domain.errors import InvalidInput
from backend.domain.events import CompartmentSpec
from backend.gateway import SystemStatus
from backend.http.auth import principal
from backend.http.endpoints import Endpoint, QueryParam
from backend.http.event_stream import MAX_POSITION, EventStream
from backend.http.health import HealthMonitor
from backend.http.requests import int_path, int_query, read_body, str_query
from backend.http.schemas import (
    AcknowledgeAlertRequest,
    CommandAccepted,
    CreateBankRequest,
    MappingEntry,
    OpenCompartmentRequest,
    RevokeRequest,
    UpdateBankRequest,
    WhoAmI,
)
from backend.service import LockerService
from backend.views import (
    AlertView,
    BankView,
    CreatedBank,
    EventView,
    HeartbeatSample,
    IssuedToken,
    TransactionView,
    View,
)

__all__ = ["MAX_LIMIT", "RestApi"]

MAX_LIMIT: Final = 1000
MAX_QUERY: Final = 500
_NO_STORE: Final = {"Cache-Control": "no-store"}
_NOT_FOUND = (404,)
_BANK_ERRORS = (400, 404)


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(value, status=status, headers=headers)


def _specs(entries: Sequence[MappingEntry]) -> list[CompartmentSpec]:
    return [
        CompartmentSpec(number=e.number, slave_id=e.slave_id, address=e.address) for e in entries
    ]


def _views(items: Sequence[View]) -> list[dict[str, Any]]:
    return [item.to_json() for item in items]


def _accepted(txn: TransactionView) -> web.Response:
    body = CommandAccepted(transaction_id=txn.transaction_id, state=txn.status, transaction=txn)
    return _json(
        body.model_dump(mode="json"),
        status=202,
        headers={"Location": f"/api/transactions/{txn.transaction_id}"},
    )


class RestApi:
    """The handlers, bound to one service, health monitor and event stream."""

    def __init__(self, service: LockerService, monitor: HealthMonitor, stream: EventStream) -> None:
        self.service = service
        self.monitor = monitor
        self.stream = stream

    # ----- banks -------------------------------------------------------------------------

    async def list_banks(self, request: web.Request) -> web.Response:
        return _json(_views(await self.service.list_banks()))

    async def get_bank(self, request: web.Request) -> web.Response:
        return _json((await self.service.get_bank(request.match_info["uuid"])).to_json())

    async def create_bank(self, request: web.Request) -> web.Response:
        body = await read_body(request, CreateBankRequest)
        created = await self.service.create_bank(
            body.name,
            body.location,
            _specs(body.mapping) if body.mapping is not None else body.compartments,
            heartbeat_interval_seconds=body.heartbeat_interval_seconds,
            actor=principal(request).name,
            dialect=body.dialect,
        )
        headers = {**_NO_STORE, "Location": f"/api/locker-banks/{created.uuid}"}
        return _json(created.to_json(), status=201, headers=headers)

    async def update_bank(self, request: web.Request) -> web.Response:
        body = await read_body(request, UpdateBankRequest)
        bank = await self.service.update_bank(
            request.match_info["uuid"],
            name=body.name,
            location=body.location,
            heartbeat_interval_seconds=body.heartbeat_interval_seconds,
            dialect=body.dialect,
            compartments=_specs(body.compartments) if body.compartments is not None else None,
            actor=principal(request).name,
        )
        return _json(bank.to_json())

    async def issue_token(self, request: web.Request) -> web.Response:
        issued = await self.service.issue_token(
            request.match_info["uuid"], actor=principal(request).name
        )
        return _json(issued.to_json(), status=201, headers=_NO_STORE)

    async def revoke(self, request: web.Request) -> web.Response:
        body = await read_body(request, RevokeRequest)
        uuid = request.match_info["uuid"]
        await self.service.revoke(uuid, reason=body.reason, actor=principal(request).name)
        return _json((await self.service.get_bank(uuid)).to_json())

    async def apply_config(self, request: web.Request) -> web.Response:
        txn = await self.service.request_config_push(
            request.match_info["uuid"], actor=principal(request).name
        )
        return _accepted(txn)

    # ----- opening -----------------------------------------------------------------------

    async def open_by_path(self, request: web.Request) -> web.Response:
        number = int_path(request, "number")
        txn = await self.service.request_open(
            request.match_info["uuid"], number, actor=principal(request).name
        )
        return _accepted(txn)

    async def open_by_body(self, request: web.Request) -> web.Response:
        body = await read_body(request, OpenCompartmentRequest)
        txn = await self.service.request_open(
            request.match_info["uuid"], body.compartment_number, actor=principal(request).name
        )
        return _accepted(txn)

    # ----- transactions and events -------------------------------------------------------

    async def list_transactions(self, request: web.Request) -> web.Response:
        bank = str_query(request, "bank")
        limit = int_query(request, "limit", 200, minimum=1, maximum=MAX_LIMIT)
        return _json(_views(await self.service.list_transactions(bank, limit)))

    async def get_transaction(self, request: web.Request) -> web.Response:
        txn = await self.service.get_transaction(request.match_info["transaction_id"])
        return _json(txn.to_json())

    async def events(self, request: web.Request) -> web.Response:
        after = int_query(request, "after", 0, minimum=0, maximum=MAX_POSITION)
        limit = int_query(request, "limit", 500, minimum=1, maximum=MAX_LIMIT)
        query = request.query.get("q")  # present but empty: the newest `limit` events
        if query is None:
            return _json(_views(await self.service.events_after(after, limit)))
        if len(query) > MAX_QUERY:
            raise InvalidInput(f"q is longer than {MAX_QUERY} characters")
        before = int_query(request, "before", MAX_POSITION, minimum=1, maximum=MAX_POSITION)
        found = await self.service.search_events(query, limit, before)
        return _json(_views([e for e in found if e.position > after]))

    async def bank_events(self, request: web.Request) -> web.Response:
        limit = int_query(request, "limit", 200, minimum=1, maximum=MAX_LIMIT)
        return _json(_views(await self.service.bank_events(request.match_info["uuid"], limit)))

    async def heartbeats(self, request: web.Request) -> web.Response:
        samples = await self.service.heartbeat_history(request.match_info["uuid"])
        return _json(_views(samples))

    async def event_stream(self, request: web.Request) -> web.StreamResponse:
        return await self.stream.handle(request)

    # ----- alerts ------------------------------------------------------------------------

    async def list_alerts(self, request: web.Request) -> web.Response:
        include_resolved = int_query(request, "all", 0, minimum=0, maximum=1) == 1
        bank = str_query(request, "bank")
        limit = int_query(request, "limit", 200, minimum=1, maximum=MAX_LIMIT)
        alerts = await self.service.list_alerts(include_resolved, bank, limit)
        return _json(_views(alerts))

    async def acknowledge_alert(self, request: web.Request) -> web.Response:
        alert_id = int_path(request, "alert_id")
        body = await read_body(request, AcknowledgeAlertRequest, required=False)
        alert = await self.service.acknowledge_alert(
            alert_id, body.note, actor=principal(request).name
        )
        return _json(alert.to_json())

    # ----- who and how -------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        return await self.monitor.api_status(request)

    async def whoami(self, request: web.Request) -> web.Response:
        who = principal(request)
        return _json({"name": who.name, "role": who.role})

    # ----- the route table ---------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        """Every REST route, for the router and the OpenAPI document."""
        limit = QueryParam(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            "At most this many items.",
        )
        after = QueryParam(
            "after",
            {"type": "integer", "minimum": 0, "maximum": MAX_POSITION, "default": 0},
            "Only events with a position greater than this.",
        )
        return [
            Endpoint(
                "GET", "/api/locker-banks", "list_banks", "List every locker bank",
                self.list_banks, role="app", security="bearer",
                response=BankView, response_list=True,
            ),
            Endpoint(
                "POST", "/api/locker-banks", "create_bank",
                "Create a locker bank and its first provisioning token (shown once)",
                self.create_bank, role="operator", security="bearer",
                body=CreateBankRequest, response=CreatedBank, status=201, errors=(400, 409),
            ),
            Endpoint(
                "GET", "/api/locker-banks/{uuid}", "get_bank", "One locker bank",
                self.get_bank, role="app", security="bearer", response=BankView,
                errors=_NOT_FOUND,
            ),
            Endpoint(
                "PATCH", "/api/locker-banks/{uuid}", "update_bank",
                "Edit a bank (a changed mapping, interval or dialect is pushed as apply_config)",
                self.update_bank, role="operator", security="bearer",
                body=UpdateBankRequest, response=BankView, errors=(400, 404, 409),
            ),
            Endpoint(
                "POST", "/api/locker-banks/{uuid}/provisioning-token", "issue_token",
                "Issue a new provisioning token (the previous one stops working)",
                self.issue_token, role="operator", security="bearer",
                response=IssuedToken, status=201, errors=(404, 409),
            ),
            Endpoint(
                "POST", "/api/locker-banks/{uuid}/revoke", "revoke_bank",
                "Revoke the bank's MQTT credentials (the broker refuses it at the next check)",
                self.revoke, role="operator", security="bearer",
                body=RevokeRequest, body_required=False, response=BankView,
                errors=(400, 404, 409),
            ),
            Endpoint(
                "POST", "/api/locker-banks/{uuid}/apply-config", "apply_config",
                "Send the bank its compartment mapping (apply_config)",
                self.apply_config, role="operator", security="bearer",
                response=CommandAccepted, status=202, errors=(404, 409),
            ),
            Endpoint(
                "POST", "/api/locker-banks/{uuid}/compartments/{number}/open",
                "open_compartment", "Open one compartment",
                self.open_by_path, role="app", security="bearer",
                response=CommandAccepted, status=202, errors=(400, 404, 409),
            ),
            Endpoint(
                "POST", "/api/compartments/{uuid}/open", "open_compartment_by_body",
                "Open one compartment (the bank's uuid in the path, the number in the body)",
                self.open_by_body, role="app", security="bearer",
                body=OpenCompartmentRequest, response=CommandAccepted, status=202,
                errors=(400, 404, 409),
            ),
            Endpoint(
                "GET", "/api/transactions", "list_transactions",
                "Command transactions, newest first",
                self.list_transactions, role="app", security="bearer",
                response=TransactionView, response_list=True, errors=_BANK_ERRORS,
                query=(
                    QueryParam("bank", {"type": "string"}, "Only this bank's (its uuid)."),
                    limit,
                ),
            ),
            Endpoint(
                "GET", "/api/transactions/{transaction_id}", "get_transaction",
                "One command transaction", self.get_transaction, role="app",
                security="bearer", response=TransactionView, errors=_NOT_FOUND,
            ),
            Endpoint(
                "GET", "/api/events", "list_events", "Stored events after a position, oldest first",
                self.events, role="app", security="bearer",
                response=EventView, response_list=True, errors=(400,),
                query=(
                    after,
                    limit,
                    QueryParam(
                        "q", {"type": "string", "maxLength": MAX_QUERY},
                        "Only events matching this filter (the newest `limit` before `before`): "
                        "words match any field, field:value a named one (event: bank: actor: "
                        "action: status: details:), a leading - negates, quotes hold spaces. "
                        "Full values are matched, the whole payload included.",
                    ),
                    QueryParam(
                        "before", {"type": "integer", "minimum": 1, "maximum": MAX_POSITION},
                        "With q: only events with a position lower than this.",
                    ),
                ),
            ),
            Endpoint(
                "GET", "/api/locker-banks/{uuid}/events", "bank_events",
                "The newest events of one bank, oldest first",
                self.bank_events, role="app", security="bearer",
                response=EventView, response_list=True, errors=_BANK_ERRORS, query=(limit,),
            ),
            Endpoint(
                "GET", "/api/locker-banks/{uuid}/heartbeats", "bank_heartbeats",
                "The bank's recent heartbeats as this backend received them (in memory, "
                "bounded, oldest first): arrival time and lag behind the device's timestamp",
                self.heartbeats, role="app", security="bearer",
                response=HeartbeatSample, response_list=True, errors=_BANK_ERRORS,
            ),
            Endpoint(
                "GET", "/api/events/stream", "event_stream",
                "Stored events as server-sent events, live (resumable with Last-Event-ID)",
                self.event_stream, role="app", security="bearer",
                media_type="text/event-stream", errors=(400, 503), query=(after,),
                description=(
                    "Each message has `id:` = the event's position and `data:` = the event "
                    "as in GET /api/events. Reconnecting with `Last-Event-ID` resumes after it. "
                    "A `: keepalive` comment is sent after 15 s of quiet. Past SSE_MAX_STREAMS "
                    "open streams (or SSE_MAX_STREAMS_PER_TOKEN for one token): 503 with "
                    "Retry-After."
                ),
            ),
            Endpoint(
                "GET", "/api/alerts", "list_alerts",
                "Open alerts, newest first (all=1: resolved ones too)",
                self.list_alerts, role="app", security="bearer",
                response=AlertView, response_list=True, errors=_BANK_ERRORS,
                query=(
                    QueryParam(
                        "all", {"type": "integer", "minimum": 0, "maximum": 1, "default": 0},
                        "1: resolved alerts too.",
                    ),
                    QueryParam("bank", {"type": "string"}, "Only this bank's (its uuid)."),
                    limit,
                ),
            ),
            Endpoint(
                "POST", "/api/alerts/{alert_id}/ack", "acknowledge_alert",
                "Acknowledge an alert (recorded as AlertAcknowledged with the token's name)",
                self.acknowledge_alert, role="operator", security="bearer",
                body=AcknowledgeAlertRequest, body_required=False, response=AlertView,
                errors=(400, 404, 409),
            ),
            Endpoint(
                "GET", "/api/status", "status", "Database and broker connectivity",
                self.status, role="app", security="bearer", response=SystemStatus,
            ),
            Endpoint(
                "GET", "/api/whoami", "whoami", "The calling token's name and role",
                self.whoami, role="app", security="bearer", response=WhoAmI,
            ),
        ]  # fmt: skip
