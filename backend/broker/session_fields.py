"""The CONNECT's fields a session keeps (will and keep-alive), copied from one holder to
another: from a CONNECT to the resumed session (`secure_broker`), and to the stored row
(`persistence`)."""

from __future__ import annotations

from typing import Any

CONNECT_FIELDS = (
    "will_flag",
    "will_message",
    "will_topic",
    "will_qos",
    "will_retain",
    "keep_alive",
)


def copy_connect_fields(source: Any, target: Any) -> None:
    """Set every field of `CONNECT_FIELDS` on `target` to `source`'s value."""
    for name in CONNECT_FIELDS:
        setattr(target, name, getattr(source, name))
