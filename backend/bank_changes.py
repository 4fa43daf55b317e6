"""What an edit of a bank may change: the keyword arguments of every `update_bank`
(service, ConsoleGateway and its implementations), named once."""

from __future__ import annotations

from typing import TypedDict

from backend.domain.events import CompartmentSpec


class BankChanges(TypedDict, total=False):
    """A field left out, or None, stays unchanged."""

    name: str | None
    location: str | None
    heartbeat_interval_seconds: int | None
    dialect: str | None
    compartments: list[CompartmentSpec] | None
