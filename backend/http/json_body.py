"""Decoding a request body that must be one JSON object."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def json_object(raw: bytes, error: Callable[[str], Exception]) -> dict[str, Any]:
    """`raw` (UTF-8 JSON) as a dict; `error(reason)` is raised when it is not one."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise error("body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise error("body must be a JSON object")
    return data
