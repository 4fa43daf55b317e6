"""Bearer tokens for the REST API (``api_tokens``; ``locker-console api-token create``).

A token has a name and a role. ``app`` (the mobile app) may read and open
compartments; ``operator`` may do everything. The token's name is the
``actor`` recorded on every command it causes. Tokens are looked up by their
SHA-256, and are never logged: the ``Authorization`` header is read here and
nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from aiohttp import hdrs, web

from backend.attribution import ORIGIN_HEADER, current_origin, http_origin
from backend.domain.ratelimit import FailureLimiter
from backend.http.endpoints import Endpoint, Handler, Role
from backend.http.errors import Forbidden, TooManyRequests, Unauthorized
from backend.service import LockerService

__all__ = ["PRINCIPAL", "Principal", "authenticate", "guard_for", "permits", "principal"]

MAX_TOKEN_LENGTH: Final = 512
FAILED_LOGINS_PER_MINUTE: Final = 20
"""Failed bearer authentications per source address and minute; then 429 for the rest
of the minute, valid token or not (a guesser learns nothing more)."""
_RANK: Final[dict[str, int]] = {"app": 1, "operator": 2}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name (the actor) and its role."""

    name: str
    role: str


PRINCIPAL: Final = web.RequestKey("principal", Principal)


def permits(role: str, required: Role) -> bool:
    """True if a token of ``role`` may call an endpoint that requires ``required``."""
    return _RANK.get(role, 0) >= _RANK[required]


async def authenticate(request: web.Request, service: LockerService) -> Principal:
    """The caller's principal from ``Authorization: Bearer <token>``; 401 if none is valid."""
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("invalid or revoked API token")
    found = await service.api_token_role(token)
    if found is None:
        raise Unauthorized("invalid or revoked API token")
    return Principal(name=found[0], role=found[1])


def guard_for(service: LockerService) -> _Guard:
    """The wrapper ``backend.http.endpoints.register`` puts around protected handlers."""
    return _Guard(service)


class _Guard:
    def __init__(self, service: LockerService) -> None:
        self._service = service
        self.failures = FailureLimiter(FAILED_LOGINS_PER_MINUTE, timedelta(minutes=1))
        self.refused = 0

    def __call__(self, endpoint: Endpoint, handler: Handler) -> Handler:
        required = endpoint.role
        assert required is not None
        service = self._service
        failures = self.failures

        async def guarded(request: web.Request) -> web.StreamResponse:
            source = request.remote or "?"
            now = datetime.now(UTC)  # a wall-clock window, not the domain clock
            if failures.blocked(source, now):
                self.refused += 1
                raise TooManyRequests(
                    "too many failed logins from this address; try again later", retry_after=60
                )
            try:
                who = await authenticate(request, service)
            except Unauthorized:
                failures.failed(source, now)
                raise
            if not permits(who.role, required):
                raise Forbidden(f"API token {who.name!r} (role {who.role}) may not do this")
            request[PRINCIPAL] = who
            current_origin.set(http_origin(request.remote, request.headers.get(ORIGIN_HEADER)))
            return await handler(request)

        guarded.__name__ = getattr(handler, "__name__", endpoint.name)
        guarded.__doc__ = handler.__doc__
        return guarded


def principal(request: web.Request) -> Principal:
    """The principal the guard stored on this request."""
    return request[PRINCIPAL]
