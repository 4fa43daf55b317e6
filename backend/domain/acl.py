"""Broker access policy: who may publish, subscribe to and receive which topics.

Pure functions, no I/O. This module is the single source of truth for DESIGN
section 4; the HTTP hook (``backend.http.hook``) and the embedded broker ask it.

Vocabulary (mosquitto-go-auth's ``acc`` values):

* ``READ`` (1): a message on a concrete *topic* is about to be delivered to the client.
* ``WRITE`` (2): the client publishes to a concrete *topic*.
* ``READWRITE`` (3): both of the above.
* ``SUBSCRIBE`` (4): the client subscribes; the topic is a *filter* that may hold
  ``+``/``#``. It is allowed only if every topic it can match may be read.

A shared subscription (``$share/{group}/{filter}``, or EMQX's ``$queue/{filter}``)
is judged by its inner filter: a member of a share group receives a subset of
what the plain filter would deliver. Mosquitto 2 passes the full ``$share/...``
string to the plugin, so the backend's shared subscriptions need this.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from backend.domain import topics
from backend.domain.topics import (
    SERVER_STATUS,
    command_topic,
    device_publish_topics,
    reply_topic,
)

__all__ = [
    "MAX_IDENTITY_LENGTH",
    "MAX_TOPIC_BYTES",
    "Access",
    "Decision",
    "Permissions",
    "UserKind",
    "check_acl",
    "filter_covered",
    "permissions",
    "strip_shared_subscription",
    "topic_matches",
    "valid_identity",
    "valid_topic_filter",
    "valid_topic_name",
]

MAX_IDENTITY_LENGTH = 256
"""Longest username or client id (in characters) we accept."""

MAX_TOPIC_BYTES = 65535
"""MQTT's limit on a topic name or filter, in UTF-8 bytes."""


class Access(IntEnum):
    """The ``acc`` value of an ACL check (mosquitto-go-auth numbering)."""

    READ = 1
    WRITE = 2
    READWRITE = 3
    SUBSCRIBE = 4


class UserKind(StrEnum):
    """What an MQTT username stands for."""

    BACKEND = "backend"
    DEVICE = "device"
    PROVISIONING = "provisioning"
    SUPERUSER = "superuser"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Decision:
    """An allow/deny answer with a short human-readable reason (never a secret)."""

    allowed: bool
    reason: str

    @classmethod
    def allow(cls, reason: str) -> Decision:
        """An allowing decision."""
        return cls(True, reason)

    @classmethod
    def deny(cls, reason: str) -> Decision:
        """A denying decision."""
        return cls(False, reason)

    def __bool__(self) -> bool:
        # A dataclass instance is otherwise always truthy; ``if decision:`` must
        # never grant access by accident.
        return self.allowed


# --------------------------------------------------------------------------- identities

_REFUSED_IN_IDENTITY = re.compile("[/+#\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""``/ + #``, the control characters (general category Cc: U+0000-001F and U+007F-009F)
and the surrogates (Cs: U+D800-DFFF). Unicode's stability policy fixes the code points of
both categories for good, so this is ``unicodedata.category(ch) in ("Cc", "Cs")`` for
every character; one regex search instead of a Python loop over the characters (the
hook checks identities several times per request)."""


def valid_identity(value: str) -> bool:
    """True if ``value`` may be a username or client id: the one identity rule, used by
    the auth hook, the user directory and the listener (registrations) alike.

    Refused: non-strings, empty, longer than ``MAX_IDENTITY_LENGTH`` characters,
    anything containing ``/``, ``+``, ``#``, a control character (NUL and the C1
    controls such as U+0085 included) or a lone surrogate (not encodable as UTF-8),
    and anything with leading or trailing whitespace (as ``str.strip`` sees it: `` dev``,
    ``dev\u00a0``), which no log or console shows faithfully. Such a value could not
    stand for one literal, recognisable topic level in ``%u``/``%c``.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_IDENTITY_LENGTH:
        return False
    if value != value.strip():  # leading or trailing whitespace
        return False
    return _REFUSED_IN_IDENTITY.search(value) is None


# --------------------------------------------------------------------------- topics


def _utf8_len_ok(value: str) -> bool:
    try:
        return len(value.encode("utf-8")) <= MAX_TOPIC_BYTES
    except UnicodeEncodeError:
        return False


def valid_topic_name(topic: str) -> bool:
    """True if ``topic`` is a concrete MQTT topic name (no wildcards, no NUL)."""
    if not isinstance(topic, str) or not topic:
        return False
    if "+" in topic or "#" in topic or "\x00" in topic:
        return False
    return _utf8_len_ok(topic)


def valid_topic_filter(filter_: str) -> bool:
    """True if ``filter_`` is a syntactically valid MQTT topic filter.

    ``+`` must occupy a whole level; ``#`` must occupy the whole last level.
    """
    if not isinstance(filter_, str) or not filter_ or "\x00" in filter_:
        return False
    levels = filter_.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if level == "#":
            if i != last:
                return False
        elif level != "+" and ("+" in level or "#" in level):
            return False
    return _utf8_len_ok(filter_)


def strip_shared_subscription(filter_: str) -> str | None:
    """Return the inner filter of ``$share/{group}/{filter}`` or ``$queue/{filter}``.

    A filter that is not a shared subscription is returned unchanged. A
    malformed shared subscription (empty or wildcard group, no inner filter)
    gives ``None``.
    """
    if filter_.startswith("$share/"):
        parts = filter_.split("/", 2)
        if len(parts) != 3:
            return None
        group, inner = parts[1], parts[2]
        if not group or "+" in group or "#" in group or not inner:
            return None
        return inner
    if filter_.startswith("$queue/"):
        inner = filter_[len("$queue/") :]
        return inner or None
    return filter_


def _match_levels(pattern: Sequence[str], topic: Sequence[str]) -> bool:
    """Match split levels; both assumed valid (pattern a filter, topic a name)."""
    if pattern[0] in ("+", "#") and topic[0].startswith("$"):
        return False
    n_topic = len(topic)
    for i, level in enumerate(pattern):
        if level == "#":
            return True  # matches the parent level too ("a/#" matches "a")
        if i >= n_topic:
            return False
        if level != "+" and level != topic[i]:
            return False
    return len(pattern) == n_topic


def topic_matches(filter_: str, topic: str) -> bool:
    """True if the topic filter ``filter_`` matches the concrete topic ``topic``.

    MQTT rules: ``+`` matches exactly one level (possibly empty), ``#`` matches
    the parent level and any number of levels below it, and a filter starting
    with a wildcard does not match a topic whose first level starts with ``$``.
    An invalid filter or a topic holding wildcards matches nothing.
    """
    if not valid_topic_filter(filter_) or not valid_topic_name(topic):
        return False
    return _match_levels(filter_.split("/"), topic.split("/"))


# A level value that no valid filter can contain (NUL is refused everywhere):
# stands for "any level value other than the literals in play".
_FRESH = "\x00fresh"
_FRESH_DOLLAR = "$\x00fresh"


def _step(pattern: Sequence[str], state: int, symbol: str, first: bool) -> int | None:
    """Advance one level through a filter seen as an automaton; None if it dies."""
    if state >= len(pattern):
        return None
    level = pattern[state]
    if level in ("+", "#"):
        if first and symbol.startswith("$"):
            return None
        return state if level == "#" else state + 1
    return state + 1 if level == symbol else None


def _accepts(pattern: Sequence[str], state: int) -> bool:
    return state == len(pattern) or pattern[state] == "#"


def filter_covered(requested_filter: str, allowed_filters: Sequence[str]) -> bool:
    """True only if every topic ``requested_filter`` can match is matched by an allowed filter.

    Exact, also for unions: ``a/#`` is covered by ``["a", "a/+/#"]`` together.
    A wildcard in the request can only be covered by a wildcard, since a level
    can take infinitely many values. The check explores the product of the
    requested filter and the allowed filters as automata over "level symbols"
    (the literals in play plus one fresh value, and a fresh ``$`` value on the
    first level) and looks for a topic the request matches but nothing allows.
    Invalid allowed filters are ignored; an invalid request is never covered.
    """
    if not valid_topic_filter(requested_filter):
        return False
    patterns = [tuple(a.split("/")) for a in allowed_filters if valid_topic_filter(a)]
    if not patterns:
        return False
    req = tuple(requested_filter.split("/"))
    if "+" not in req and "#" not in req:
        # A filter without wildcards matches exactly one topic: itself.
        return any(_match_levels(p, req) for p in patterns)

    start: tuple[int, frozenset[tuple[int, int]], bool] = (
        0,
        frozenset((k, 0) for k in range(len(patterns))),
        True,
    )
    seen = {start}
    stack = [start]
    while stack:
        r_state, a_states, first = stack.pop()
        for symbol in _symbols(req, r_state, patterns, a_states, first):
            r_next = _step(req, r_state, symbol, first)
            if r_next is None:
                continue
            a_next = frozenset(
                (k, s)
                for k, i in a_states
                if (s := _step(patterns[k], i, symbol, first)) is not None
            )
            empty_topic = first and symbol == ""  # "" (one empty level) is no topic name
            if (
                _accepts(req, r_next)
                and not empty_topic
                and not any(_accepts(patterns[k], i) for k, i in a_next)
            ):
                return False  # a topic the request matches and nothing allows
            node = (r_next, a_next, False)
            if node not in seen:
                seen.add(node)
                stack.append(node)
    return True


def _symbols(
    req: Sequence[str],
    r_state: int,
    patterns: Sequence[Sequence[str]],
    a_states: Iterable[tuple[int, int]],
    first: bool,
) -> set[str]:
    """The level values worth trying next: one per equivalence class."""
    if r_state >= len(req):
        return set()  # the request is exhausted: no longer topic matches it
    level = req[r_state]
    if level not in ("+", "#"):
        return {level}
    symbols = {_FRESH}
    if first:
        symbols.add(_FRESH_DOLLAR)
    for k, i in a_states:
        pattern = patterns[k]
        if i < len(pattern) and pattern[i] not in ("+", "#"):
            symbols.add(pattern[i])
    return symbols


# --------------------------------------------------------------------------- the policy


@dataclass(frozen=True, slots=True)
class Permissions:
    """Topic patterns a user may publish to, and may read (subscribe/receive)."""

    publish: tuple[str, ...]
    read: tuple[str, ...]


_NOTHING = Permissions((), ())
_PROVISIONING_PUBLISH = (topics.ANY_REGISTRATION,)
_BACKEND = Permissions(
    publish=(
        topics.ANY_COMMAND,
        topics.ANY_PROVISIONING_REPLY,
        topics.SERVER_STATUS,
        topics.ANY_INSTANCE_STATUS,
        topics.ANY_PROBE,
    ),
    read=(
        topics.ALL_LOCKER_TOPICS,
        topics.SERVER_STATUS,
        topics.ANY_INSTANCE_STATUS,
        topics.ANY_PROBE,
    ),
)
_ACCESS_VALUES = frozenset(int(a) for a in Access)


def permissions(
    kind: UserKind, username: str, client_id: str, *, legacy_status: bool = True
) -> Permissions:
    """The DESIGN section 4 table for one user, with ``%u``/``%c`` substituted.

    Superusers are not expressible as patterns (``#`` would miss ``$`` topics);
    ``check_acl`` handles them. Unknown users, and identities that are not
    valid single levels, get nothing.
    """
    if not valid_identity(username) or not valid_identity(client_id):
        return _NOTHING
    return _permissions(kind, username, client_id, legacy_status)


def _permissions(kind: UserKind, username: str, client_id: str, legacy_status: bool) -> Permissions:
    """``permissions`` for identities already checked with ``valid_identity``."""
    if kind is UserKind.BACKEND:
        return _BACKEND
    if kind is UserKind.DEVICE:
        return Permissions(
            publish=device_publish_topics(username, legacy_status),
            read=(command_topic(username), SERVER_STATUS),
        )
    if kind is UserKind.PROVISIONING:
        return Permissions(
            publish=_PROVISIONING_PUBLISH,
            read=(reply_topic(client_id),),
        )
    return _NOTHING


def check_acl(
    kind: UserKind,
    username: str,
    client_id: str,
    topic: str,
    acc: int,
    *,
    legacy_status: bool = True,
) -> Decision:
    """Decide one broker ACL check (DESIGN section 4).

    ``acc`` 1/2/3 need a concrete topic; ``acc`` 4 takes a filter, allowed only
    if it is covered by the user's read patterns. ``acc`` 3 needs both read and
    write. Invalid identities deny everything, for every kind of user.
    """
    if isinstance(acc, bool) or not isinstance(acc, int) or acc not in _ACCESS_VALUES:
        return Decision.deny("unknown access type")
    access = Access(acc)
    if kind is UserKind.UNKNOWN:
        return Decision.deny("unknown user")
    if not valid_identity(username):
        return Decision.deny("invalid username")
    if not valid_identity(client_id):
        return Decision.deny("invalid client id")

    if access is Access.SUBSCRIBE:
        inner = strip_shared_subscription(topic) if isinstance(topic, str) else None
        if inner is None:
            return Decision.deny("malformed shared subscription")
        if not valid_topic_filter(inner):
            return Decision.deny("invalid topic filter")
        if kind is UserKind.SUPERUSER:
            return Decision.allow("superuser")
        perms = _permissions(kind, username, client_id, legacy_status)
        if filter_covered(inner, perms.read):
            return Decision.allow(f"{kind} may subscribe")
        return Decision.deny(f"{kind} may not subscribe to this filter")

    if not valid_topic_name(topic):
        if isinstance(topic, str) and ("+" in topic or "#" in topic):
            return Decision.deny("wildcards are not allowed here")
        return Decision.deny("invalid topic")
    if kind is UserKind.SUPERUSER:
        return Decision.allow("superuser")
    perms = _permissions(kind, username, client_id, legacy_status)
    levels = topic.split("/")
    if access & Access.READ and not any(_match_levels(p.split("/"), levels) for p in perms.read):
        return Decision.deny(f"{kind} may not receive this topic")
    if access & Access.WRITE and not any(
        _match_levels(p.split("/"), levels) for p in perms.publish
    ):
        return Decision.deny(f"{kind} may not publish to this topic")
    if access is Access.READWRITE:
        return Decision.allow(f"{kind} may read and write")
    return Decision.allow(f"{kind} may receive" if access is Access.READ else f"{kind} may publish")
