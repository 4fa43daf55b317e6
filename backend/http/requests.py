"""Reading a request's JSON body, path and query into typed values (400 when malformed)."""

from __future__ import annotations

import re
from typing import Final, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from backend.http.errors import BadRequest
from backend.http.json_body import json_object

__all__ = ["MAX_BODY_BYTES", "int_path", "int_query", "read_body", "str_query"]

M = TypeVar("M", bound=BaseModel)
MAX_BODY_BYTES: Final = 64 * 1024
# Up to 19 digits: every int64 (event positions go to 2**63 - 1); ranges are checked after.
_INT: Final = re.compile(r"-?[0-9]{1,19}")


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


async def read_body(request: web.Request, model: type[M], *, required: bool = True) -> M:
    """The body as ``model``; an empty body is ``{}`` when not ``required``."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadRequest(f"body is larger than {MAX_BODY_BYTES} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadRequest(f"body is larger than {MAX_BODY_BYTES} bytes") from None
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"body is larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        if required:
            raise BadRequest("a JSON object body is required")
        data: dict[str, object] = {}
    else:
        data = json_object(raw, BadRequest)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(_describe(exc)) from None


def _parse_int(text: str, what: str) -> int:
    if not text.isascii() or not _INT.fullmatch(text):
        raise BadRequest(f"{what} must be an integer")
    return int(text)


def int_path(request: web.Request, name: str) -> int:
    """An integer path segment (ASCII digits, optional minus)."""
    return _parse_int(request.match_info[name], name)


def int_query(request: web.Request, name: str, default: int, *, minimum: int, maximum: int) -> int:
    """An integer query parameter within ``minimum..maximum``, or ``default`` when absent."""
    values = request.query.getall(name, [])
    if not values:
        return default
    if len(values) > 1:
        raise BadRequest(f"{name} given more than once")
    value = _parse_int(values[0].strip(), name)
    if not minimum <= value <= maximum:
        raise BadRequest(f"{name} must be between {minimum} and {maximum}")
    return value


def str_query(request: web.Request, name: str) -> str | None:
    """A text query parameter, or ``None`` when absent or empty."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise BadRequest(f"{name} given more than once")
    return (values[0].strip() or None) if values else None
