"""Event payloads and metadata as JSON text (issue 19): `event_store.dumps_model` takes
orjson only where its text is the very text `json.dumps(sort_keys, compact)` gives, which
the stored events have always held; everything else keeps `json`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from backend.domain.events import (
    EVENT_TYPES,
    CommandFailed,
    CompartmentOpened,
    ConfigApplied,
    DeviceEventRecorded,
    DomainEvent,
    EventMetadata,
    LockerBankCreated,
)
from backend.store.event_store import _dumps, dumps_model, flat_model, payload_json


def reference(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Flat(BaseModel):
    text: str | None
    number: int
    flag: bool
    kind: Literal["a", "b"]
    at: datetime


class Nested(BaseModel):
    data: dict[str, Any]
    ratio: float


FLAT_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # past 64 bits: orjson refuses
    st.text(),  # every code point: non-ASCII, DEL and control characters included
)


@given(st.dictionaries(st.text(), FLAT_VALUES, max_size=6))
def test_a_flat_model_dumps_to_the_json_text(value: dict[str, Any]) -> None:
    assert dumps_model(value, Flat) == reference(value) == _dumps(value)


@given(
    st.dictionaries(
        st.text(max_size=5),
        st.recursive(
            st.one_of(FLAT_VALUES, st.floats(allow_nan=True)),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
            max_leaves=8,
        ),
        max_size=4,
    )
)
def test_a_model_with_floats_or_nesting_keeps_json(value: dict[str, Any]) -> None:
    assert dumps_model(value, Nested) == reference(value)


def test_the_texts_where_orjson_and_json_differ_are_json_s() -> None:
    for value in (
        {"message": "Tür offen"},  # json escapes non-ASCII
        {"message": "a\x7fb"},  # and DEL
        {"message": "\x00\x1f\n"},
        {"number": 2**64},  # orjson refuses integers past 64 bits
    ):
        assert dumps_model(value, Flat) == reference(value), value
    assert reference({"r": 1e16}) == '{"r":1e+16}'  # orjson writes 1e16: floats keep json
    assert dumps_model({"r": 1e16}, Nested) == '{"r":1e+16}'


def test_answers_and_metadata_take_the_fast_way_with_the_same_text() -> None:
    event = CompartmentOpened(
        occurred_at=datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=UTC),
        transaction_id="t-1",
        compartment_number=3,
        late=False,
        after_expiry=False,
        message=None,
    )
    meta = EventMetadata(actor="device", correlation_id="t-1").model_dump(exclude_none=True)
    assert dumps_model(event.payload(), CompartmentOpened) == reference(event.payload())
    assert dumps_model(meta, EventMetadata) == '{"actor":"device","correlation_id":"t-1"}'


def test_which_models_take_orjson() -> None:
    for model in (CompartmentOpened, ConfigApplied, CommandFailed, EventMetadata, Flat):
        assert flat_model(model), model.__name__
    for model in (LockerBankCreated, DeviceEventRecorded, Nested):  # lists, dicts, floats
        assert not flat_model(model), model.__name__


FLAT_EVENTS = sorted(
    (cls for cls in EVENT_TYPES.values() if flat_model(cls)), key=lambda cls: cls.__name__
)


@st.composite
def flat_events(draw: st.DrawFn) -> DomainEvent:
    """Any flat event class with any values its fields take (every code point in texts,
    integers past 64 bits, naive and aware datetimes)."""
    cls = draw(st.sampled_from(FLAT_EVENTS))
    values = draw(
        st.fixed_dictionaries(
            {name: st.from_type(field.annotation) for name, field in cls.model_fields.items()}
        )
    )
    return cls(**values)


@given(flat_events())
def test_a_flat_event_s_payload_text_is_json_s(event: DomainEvent) -> None:
    assert payload_json(event) == reference(event.payload())


def test_a_nested_event_s_payload_keeps_json() -> None:
    event = DeviceEventRecorded(
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC), event="tamper", data={"g": 1e16}
    )
    assert payload_json(event) == reference(event.payload())
    assert '"g":1e+16' in payload_json(event)
