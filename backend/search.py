"""The filter syntax every table and the events API understand (pure, no I/O).

    offline                 a word: any field contains it (case-insensitive substring)
    status:offline          a named field contains it (`status:`, `bank:`, `event:`, ...)
    -revoked  -status:ok    a leading `-` negates the term
    "main hall"  bank:"a b" quotes hold spaces

All terms must hold. A `name:` prefix that is not a field of the rows being searched is
a plain word (so `12:00` still finds a time). Matching is against full values (the
whole event type, the whole payload), never against text cut to fit the screen.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

SYNTAX_HELP = (
    "words match any field · field:value a named field (status: bank: event: action:) · "
    '-word negates · "quotes hold spaces"'
)


_DIGITS = re.compile(r"(\d+)")


@lru_cache(maxsize=65_536)
def natural_key(value: str) -> tuple[tuple[int, int, str], ...]:
    """`Demo 9` < `Demo 10` < `Demo 100`: digit runs compare as numbers, text ignoring case."""
    parts = _DIGITS.split(value.casefold())
    return tuple(
        (1, int(part), "") if index % 2 else (0, 0, part) for index, part in enumerate(parts)
    )


@dataclass(frozen=True, slots=True)
class Term:
    """One term of a query: `text` in `field` (None: any field), negated or not."""

    text: str
    field: str | None = None
    negate: bool = False


def _tokens(query: str) -> list[tuple[str, int | None]]:
    """Split on whitespace outside quotes: (token, where its first quote was, or None). An
    unclosed quote runs to the end (typing `"main ha` already filters)."""
    out: list[tuple[str, int | None]] = []
    current: list[str] = []
    quote_at: int | None = None
    in_quote = False
    for char in query:
        if char == '"':
            in_quote = not in_quote
            if quote_at is None:
                quote_at = len(current)
            continue
        if char.isspace() and not in_quote:
            if current or quote_at is not None:
                out.append(("".join(current), quote_at))
            current, quote_at = [], None
            continue
        current.append(char)
    if current or quote_at is not None:
        out.append(("".join(current), quote_at))
    return out


def parse(query: str, fields: Iterable[str] = ()) -> list[Term]:
    """The terms of `query`; `field:` prefixes (before any quote) are recognised for the
    names in `fields` (any name when `fields` is empty)."""
    known = {f.lower() for f in fields}
    terms: list[Term] = []
    for token, quote_at in _tokens(query):
        negate = token.startswith("-") and len(token) > 1 and quote_at != 0
        body = token[1:] if negate else token
        field: str | None = None
        name, colon, rest = body.partition(":")
        before_quote = quote_at is None or len(name) + int(negate) < quote_at
        if colon and name and before_quote and (not known or name.lower() in known):
            field, body = name.lower(), rest
        if not body and field is None:
            continue
        terms.append(Term(body.lower(), field, negate))
    return terms


def matches(values: Mapping[str, str], terms: Sequence[Term]) -> bool:
    """Whether a record with these field values (lower-cased by the caller or not)
    satisfies every term."""
    if not terms:
        return True
    lowered: dict[str, str] | None = None
    for term in terms:
        if term.field is None:
            if lowered is None:
                lowered = {k: v.lower() for k, v in values.items()}
            hit = any(term.text in v for v in lowered.values())
        else:
            value = values.get(term.field)
            hit = value is not None and term.text in value.lower()
        if hit == term.negate:
            return False
    return True


def event_values(
    event_type: str,
    aggregate_uuid: str,
    bank_name: str,
    payload: Mapping[str, Any],
    metadata: Mapping[str, Any],
    position: int | None = None,
) -> dict[str, str]:
    """The searchable fields of one stored event: its whole type, bank (name and uuid),
    actor, action, and the whole payload as JSON."""
    action = str(payload.get("action") or "")
    if not action and event_type == "CompartmentOpeningRequested":
        action = "open_compartment"
    return {
        "pos": "" if position is None else str(position),
        "event": event_type,
        "type": event_type,
        "bank": f"{bank_name} {aggregate_uuid}",
        "actor": str(metadata.get("actor") or ""),
        "by": str(metadata.get("actor") or ""),
        "action": action,
        "status": str(payload.get("reason") or payload.get("state") or ""),
        "details": json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False),
    }


EVENT_FIELDS = ("pos", "event", "type", "bank", "actor", "by", "action", "status", "details")
