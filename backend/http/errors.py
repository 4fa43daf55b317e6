"""JSON errors for the REST API: one shape, one status per kind of failure.

Every error answer is ``{"error": "<one sentence>", "type": "<kind>"}``. The
``type`` lets a client (``backend.http.client_gateway``) raise the same domain
error the service raised, whatever the status code:

==========================  ======  ====================
raised                      status  ``type``
==========================  ======  ====================
missing / wrong token       401     ``Unauthorized``
token lacks the role        403     ``Forbidden``
``NotFound``                404     ``NotFound``
``InvalidInput``, bad body  400     ``InvalidInput``
``RuleViolation``           409     ``RuleViolation``
``ConcurrencyConflict``     409     ``ConcurrencyConflict``
other ``DomainError``       409     ``DomainError``
anything else               500     ``InternalError``
==========================  ======  ====================

Every one of them is raised before anything is changed (the service refuses
whole commands), so an error answer always means "nothing happened".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from aiohttp import web

from backend.domain.errors import (
    ConcurrencyConflict,
    DomainError,
    InvalidInput,
    NotFound,
    RuleViolation,
)

__all__ = [
    "ApiError",
    "BadRequest",
    "Forbidden",
    "Unauthorized",
    "error_answer",
    "error_middleware",
    "error_response",
    "json_errors",
]

log = logging.getLogger(__name__)

_DOMAIN_STATUS: Final[tuple[tuple[type[DomainError], int], ...]] = (
    (NotFound, 404),
    (InvalidInput, 400),
    (RuleViolation, 409),
    (ConcurrencyConflict, 409),
    (DomainError, 409),
)

_HTTP_TYPES: Final[Mapping[int, str]] = {
    400: "InvalidInput",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "RuleViolation",
    413: "InvalidInput",
}


class ApiError(Exception):
    """An error answer raised by a handler: status, message and kind."""

    status: int = 400
    kind: str = "InvalidInput"

    def __init__(self, message: str, *, status: int | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if kind is not None:
            self.kind = kind

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def headers(self) -> Mapping[str, str]:
        return {}


class BadRequest(ApiError):
    """The request's body, path or query is malformed (400)."""

    status = 400
    kind = "InvalidInput"


class Unauthorized(ApiError):
    """No bearer token, or one that is unknown or revoked (401)."""

    status = 401
    kind = "Unauthorized"

    def headers(self) -> Mapping[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="locker-console"'}


class Forbidden(ApiError):
    """The token is valid but its role may not do this (403)."""

    status = 403
    kind = "Forbidden"


class TooManyRequests(ApiError):
    """Too many failed logins from this address (429, with Retry-After)."""

    status = 429
    kind = "TooManyRequests"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> Mapping[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Unavailable(ApiError):
    """A capacity limit is reached for now (503, with Retry-After)."""

    status = 503
    kind = "Unavailable"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> Mapping[str, str]:
        return {"Retry-After": str(self.retry_after)}


def error_response(
    status: int, message: str, kind: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The one error shape: ``{"error": message, "type": kind}``."""
    return web.json_response(
        {"error": message, "type": kind}, status=status, headers=dict(headers or {})
    )


def domain_status(exc: DomainError) -> int:
    """The HTTP status of a domain error."""
    for cls, status in _DOMAIN_STATUS:
        if isinstance(exc, cls):
            return status
    return 409


def _domain_kind(exc: DomainError) -> str:
    for cls in (NotFound, InvalidInput, RuleViolation, ConcurrencyConflict):
        if isinstance(exc, cls):
            return cls.__name__
    return "DomainError"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_answer(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The JSON error answer to ``exc``, raised by the handler of ``request``.

    Re-raises what has no error answer: an HTTP exception below 400 (a redirect, which
    aiohttp answers) and ``ConnectionResetError`` (the client went away; there is no one
    to answer). Anything unforeseen is logged with its traceback and answered 500."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.message, exc.kind, exc.headers())
    if isinstance(exc, DomainError):
        return error_response(domain_status(exc), str(exc), _domain_kind(exc))
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        kind = _HTTP_TYPES.get(exc.status, "HTTPError")
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, exc.reason.lower(), kind, headers)
    if isinstance(exc, ConnectionResetError):
        raise exc
    log.error("%s %s failed", request.method, request.path, exc_info=exc)
    return error_response(500, "internal error", "InternalError")


def json_errors(handler: Handler) -> Handler:
    """``handler`` with every failure turned into the JSON error shape (``error_answer``).

    The app wraps each route's handler with it instead of running a middleware: aiohttp
    then runs no middleware chain for any request (the auth hook's checks, the hot path,
    answer for themselves inside their own wrapper)."""

    async def answered(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:
            return error_answer(request, exc)

    return answered


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``json_errors`` as a middleware, for an app whose routes are not wrapped."""
    try:
        return await handler(request)
    except Exception as exc:
        return error_answer(request, exc)
