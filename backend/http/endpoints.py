"""The route table: one ``Endpoint`` per route, read by the router and the OpenAPI builder.

Declaring a route once (method, path, role, body, answer) keeps the running
app and its OpenAPI document from drifting apart: ``register`` adds the
handler behind the bearer-token check its ``role`` names, and
``backend.http.openapi`` describes the very same list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

__all__ = ["Endpoint", "Handler", "QueryParam", "Role", "Security", "register"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Role = Literal["app", "operator"]
Security = Literal["none", "bearer", "mosq_secret"]


@dataclass(frozen=True, slots=True)
class QueryParam:
    """A query-string parameter as documented."""

    name: str
    schema: dict[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route: what it takes, what it answers, and who may call it.

    ``role`` ``None`` means no bearer token (health, metrics, the OpenAPI
    document, the hook, which has its own secret). ``response`` with
    ``response_list`` answers a JSON array of that model. ``media_type`` other
    than JSON (metrics, the event stream) is documented as a string.
    """

    method: str
    path: str
    name: str
    summary: str
    handler: Handler | None
    role: Role | None = None
    security: Security = "none"
    body: type[BaseModel] | None = None
    body_required: bool = True
    response: type[BaseModel] | None = None
    response_list: bool = False
    status: int = 200
    media_type: str = "application/json"
    query: tuple[QueryParam, ...] = ()
    errors: tuple[int, ...] = ()
    description: str = ""
    extra_responses: dict[int, str] = field(default_factory=dict)


def register(
    app: web.Application,
    endpoints: Iterable[Endpoint],
    guard: Callable[[Endpoint, Handler], Handler],
    wrap: Callable[[Handler], Handler] | None = None,
) -> None:
    """Add each endpoint's handler to ``app``, wrapped by ``guard`` (the role check) and
    then by ``wrap`` (``backend.http.errors.json_errors``: the JSON error answers)."""
    for endpoint in endpoints:
        if endpoint.handler is None:
            continue
        handler = guard(endpoint, endpoint.handler) if endpoint.role else endpoint.handler
        if wrap is not None:
            handler = wrap(handler)
        app.router.add_route(endpoint.method, endpoint.path, handler, name=endpoint.name)
