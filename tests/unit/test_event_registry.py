"""Every event type is folded and projected, or deliberately not (issue 20, point 1).

Event classes register themselves (`backend.domain.events.EVENT_TYPES`); a new one without
a fold handler (`LockerBank._on_<type>` or `bank.NOT_FOLDED`) or a projector (`@projector`
or `projections.NOT_PROJECTED`) fails `test_every_event_type_is_covered`; the throwaway
test below shows that it does. Stored `event_version`s are upcast on load.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import ClassVar

import pytest

from backend.domain.bank import NOT_FOLDED, LockerBank
from backend.domain.events import (
    EVENT_TYPES,
    UPCASTERS,
    DomainEvent,
    EventMetadata,
    LockerBankCreated,
    Payload,
    event_from_payload,
    upcaster,
)
from backend.store.event_store import RecordedEvent
from backend.store.projections import NOT_PROJECTED, project, projected_event_types

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def uncovered() -> dict[str, list[str]]:
    """Event type -> what it lacks ("fold handler", "projector")."""
    folded = {name.removeprefix("_on_") for name in vars(LockerBank) if name.startswith("_on_")}
    projected = projected_event_types()
    missing: dict[str, list[str]] = {}
    for name in EVENT_TYPES:
        if name not in folded and name not in NOT_FOLDED:
            missing.setdefault(name, []).append("fold handler")
        if name not in projected and name not in NOT_PROJECTED:
            missing.setdefault(name, []).append("projector")
    return missing


@pytest.fixture
def registry() -> Iterator[None]:
    """Leave the registries as they were (a test's throwaway classes register themselves)."""
    types, steps = dict(EVENT_TYPES), dict(UPCASTERS)
    yield
    EVENT_TYPES.clear()
    EVENT_TYPES.update(types)
    UPCASTERS.clear()
    UPCASTERS.update(steps)


def test_every_event_type_is_covered() -> None:
    assert uncovered() == {}


def test_the_ignore_lists_name_only_real_and_unhandled_types() -> None:
    folded = {name.removeprefix("_on_") for name in vars(LockerBank) if name.startswith("_on_")}
    assert set(EVENT_TYPES) >= NOT_FOLDED and not NOT_FOLDED & folded
    assert set(EVENT_TYPES) >= NOT_PROJECTED and not NOT_PROJECTED & projected_event_types()


def test_event_classes_register_themselves() -> None:
    assert EVENT_TYPES["LockerBankCreated"] is LockerBankCreated
    assert all(cls.event_type == name for name, cls in EVENT_TYPES.items())
    defined = {c for c in DomainEvent.__subclasses__() if c.__module__ == DomainEvent.__module__}
    assert set(EVENT_TYPES.values()) == defined


@pytest.mark.usefixtures("registry")
def test_a_throwaway_event_without_handlers_fails_the_coverage_check() -> None:
    class ThrowawayHappened(DomainEvent):
        event_type: ClassVar[str] = "ThrowawayHappened"
        detail: str

    assert EVENT_TYPES["ThrowawayHappened"] is ThrowawayHappened
    assert uncovered() == {"ThrowawayHappened": ["fold handler", "projector"]}
    # and the dispatchers refuse it loudly instead of skipping it
    event = ThrowawayHappened(occurred_at=NOW, detail="x")
    bank = LockerBank(uuid="b")
    with pytest.raises(TypeError, match="cannot fold ThrowawayHappened"):
        bank.apply(event)
    assert bank.version == 0
    recorded = RecordedEvent(1, "b", 1, event, EventMetadata(actor="t"), NOW)
    with pytest.raises(TypeError, match="no projector for ThrowawayHappened"):
        project(None, recorded)  # type: ignore[arg-type]  # refused before any session use


@pytest.mark.usefixtures("registry")
def test_an_event_type_name_is_taken_once() -> None:
    with pytest.raises(TypeError, match="taken"):

        class Impostor(DomainEvent):
            event_type: ClassVar[str] = "LockerBankCreated"

    assert EVENT_TYPES["LockerBankCreated"] is LockerBankCreated


@pytest.mark.usefixtures("registry")
def test_stored_old_versions_are_upcast_on_load() -> None:
    class NoteTaken(DomainEvent):
        """v1 stored `text`; v2 split it into `title` and `body`; v3 added `tags`."""

        event_type: ClassVar[str] = "NoteTaken"
        event_version: ClassVar[int] = 3
        title: str
        body: str
        tags: list[str]

    @upcaster("NoteTaken", 1)
    def split_text(payload: Payload) -> Payload:
        title, _, body = payload.pop("text").partition("\n")
        return {**payload, "title": title, "body": body}

    @upcaster("NoteTaken", 2)
    def add_tags(payload: Payload) -> Payload:
        return {**payload, "tags": []}

    stored_v1 = {"occurred_at": "2026-01-01T00:00:00Z", "text": "hello\nworld"}
    event = event_from_payload("NoteTaken", stored_v1, version=1)
    assert isinstance(event, NoteTaken)
    assert (event.title, event.body, event.tags) == ("hello", "world", [])
    stored_v2 = {"occurred_at": "2026-01-01T00:00:00Z", "title": "t", "body": "b"}
    assert event_from_payload("NoteTaken", stored_v2, version=2).tags == []  # type: ignore[attr-defined]  # the throwaway version 2 class
    current = event.payload()
    assert event_from_payload("NoteTaken", current, version=3) == event

    with pytest.raises(ValueError, match="newer than this code"):
        event_from_payload("NoteTaken", current, version=4)
    with pytest.raises(TypeError, match="already has an upcaster"):
        upcaster("NoteTaken", 1)(split_text)


@pytest.mark.usefixtures("registry")
def test_a_missing_upcaster_is_a_clear_error() -> None:
    class Renamed(DomainEvent):
        event_type: ClassVar[str] = "Renamed"
        event_version: ClassVar[int] = 2
        name: str

    with pytest.raises(ValueError, match="no upcaster for Renamed v1 -> v2"):
        event_from_payload("Renamed", {"occurred_at": "2026-01-01T00:00:00Z", "name": "x"})


def test_every_stored_version_of_the_real_events_loads() -> None:
    """Each real event type's current version loads; older ones need their upcasters."""
    for name, cls in EVENT_TYPES.items():
        for version in range(1, cls.event_version):
            assert (name, version) in UPCASTERS, f"{name} v{version} has no upcaster"


def test_the_events_the_hook_process_reads_raw_are_still_version_1() -> None:
    """`backend/hook_store.py` reads these payloads with plain drivers, without the event
    models (its start time matters): a new version needs its reader changed there too."""
    for name in ("LockerBankProvisioned", "CredentialsRevoked"):
        assert EVENT_TYPES[name].event_version == 1, f"update backend/hook_store.py for {name}"
