"""``GET /api/openapi.json``: an OpenAPI 3.1 document built from the route table.

Schemas come from the pydantic models themselves (``models_json_schema``), so
the document describes exactly what the handlers read and write. The auth
hook's routes are registered by ``backend.http.hook``; ``hook_endpoints()``
describes them here for completeness (they take ``?mosq_secret=`` instead of a
bearer token).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from backend.domain.contract import CompartmentNumber
from backend.http.endpoints import Endpoint
from backend.http.hook import ACL_PATH, AUTH_PATH, SUPERUSER_PATH
from backend.http.schemas import (
    ApiErrorBody,
    HookAclBody,
    HookAnswer,
    HookAuthBody,
    HookSuperuserBody,
)

__all__ = ["OPENAPI_VERSION", "build_openapi", "hook_endpoints"]

OPENAPI_VERSION: Final = "3.1.0"
REF_TEMPLATE: Final = "#/components/schemas/{model}"
_PATH_PARAM: Final = re.compile(r"\{([^}/:]+)(?::[^}]*)?\}")
_PATH_PARAMS: Final[dict[str, tuple[dict[str, Any], str]]] = {
    "uuid": ({"type": "string", "format": "uuid"}, "The locker bank's UUID."),
    "number": (
        TypeAdapter(CompartmentNumber).json_schema(),
        "The compartment's number in its bank (the device contract's range).",
    ),
    "transaction_id": ({"type": "string"}, "The command's transaction id."),
    "alert_id": (
        {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
        "The alert's id (the position of the event that opened it).",
    ),
}
_STATUS_TEXT: Final[dict[int, str]] = {
    200: "OK",
    201: "Created",
    202: "Accepted: the command is queued for the device",
    400: "Malformed request (body, path or query); nothing changed",
    401: "Missing or wrong credentials; nothing changed",
    403: "Not allowed; nothing changed",
    404: "No such bank, compartment or transaction; nothing changed",
    409: "Refused by a rule of the bank's current state; nothing changed",
    429: "Too many failed logins from this address; see Retry-After",
    500: "Internal error",
    503: "Unavailable",
}
_SECURITY_SCHEMES: Final = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (`locker-console api-token create NAME --role app|operator`).",
    },
    "mosq_secret": {
        "type": "apiKey",
        "in": "query",
        "name": "mosq_secret",
        "description": "MOSQ_SECRET, shared with the broker's auth plugin.",
    },
}


def hook_endpoints() -> list[Endpoint]:
    """Documentation of the mosquitto-go-auth hook routes (``backend.http.hook``)."""
    common: dict[str, Any] = {
        "handler": None,
        "security": "mosq_secret",
        "response": HookAnswer,
        "errors": (400, 401, 500),
        "extra_responses": {403: 'Denied (`{"ok": false, "result": "deny"}`)'},
    }
    return [
        Endpoint("POST", AUTH_PATH, "mosq_auth", "Broker login check", body=HookAuthBody, **common),
        Endpoint(
            "POST",
            SUPERUSER_PATH,
            "mosq_superuser",
            "Broker superuser check",
            body=HookSuperuserBody,
            **common,
        ),
        Endpoint(
            "POST", ACL_PATH, "mosq_acl", "Broker topic access check", body=HookAclBody, **common
        ),
    ]


def _models(endpoints: Iterable[Endpoint]) -> list[type[BaseModel]]:
    seen: dict[type[BaseModel], None] = {ApiErrorBody: None}
    for endpoint in endpoints:
        for model in (endpoint.body, endpoint.response):
            if model is not None:
                seen.setdefault(model, None)
    return list(seen)


def _content(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _operation(endpoint: Endpoint, refs: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": endpoint.name, "summary": endpoint.summary}
    if endpoint.description:
        operation["description"] = endpoint.description
    parameters: list[dict[str, Any]] = []
    for name in _PATH_PARAM.findall(endpoint.path):
        schema, description = _PATH_PARAMS.get(name, ({"type": "string"}, ""))
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": schema,
                "description": description,
            }
        )
    for param in endpoint.query:
        parameters.append(
            {
                "name": param.name,
                "in": "query",
                "required": param.required,
                "schema": param.schema,
                "description": param.description,
            }
        )
    if endpoint.media_type == "text/event-stream":
        parameters.append(
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "Resume after this position (overrides `after`).",
            }
        )
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": endpoint.body_required,
            "content": _content("application/json", refs[endpoint.body]),
        }
    if endpoint.response is not None:
        schema = refs[endpoint.response]
        if endpoint.response_list:
            schema = {"type": "array", "items": schema}
        ok: dict[str, Any] = {"content": _content(endpoint.media_type, schema)}
    elif endpoint.media_type != "application/json":
        ok = {"content": _content(endpoint.media_type, {"type": "string"})}
    else:
        ok = {}
    responses: dict[str, Any] = {
        str(endpoint.status): {"description": _STATUS_TEXT.get(endpoint.status, "OK"), **ok}
    }
    errors = set(endpoint.errors)
    if endpoint.security == "bearer":
        errors |= {401, 403, 429}
    error_schema = refs[ApiErrorBody]
    for status in sorted(errors):
        if endpoint.security == "mosq_secret":
            body = _content("application/json", refs[endpoint.response or HookAnswer])
        else:
            body = _content("application/json", error_schema)
        responses[str(status)] = {"description": _STATUS_TEXT.get(status, "Error"), "content": body}
    for status, description in endpoint.extra_responses.items():
        responses[str(status)] = {"description": description, **ok}
    operation["responses"] = responses
    if endpoint.security != "none":
        operation["security"] = [{endpoint.security: []}]
    return operation


def build_openapi(
    endpoints: Sequence[Endpoint], *, title: str = "locker-console", version: str = "0.1.0"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing ``endpoints``."""
    models = _models(endpoints)
    mode: JsonSchemaMode = "validation"
    key_map, defs = models_json_schema([(m, mode) for m in models], ref_template=REF_TEMPLATE)
    refs = {model: key_map[(model, mode)] for model in models}
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, refs)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": (
                "Operations API of locker-console: locker banks, compartments, command "
                'transactions and the event log. Errors are `{"error", "type"}` JSON; a '
                "refused request changes nothing."
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }
