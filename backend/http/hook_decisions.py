"""The auth hook's decisions, without HTTP: the one place a login or topic check is decided.

Two callers share it, so the rules exist once:

* the HTTP hook (``backend.http.hook``), which Mosquitto + go-auth ask, parses a request,
  awaits a decision here and answers 200 / 403 / 500;
* the embedded amqtt broker (``backend.broker``), in the backend's own process, awaits the
  same decision directly for every CONNECT and every publish, subscribe and delivery check
  instead of an HTTP round trip to itself.

A decision reads the in-memory ``UserDirectory`` at the moment it is asked (no cache of
answers: a revocation applies to the very next check). A bank UUID the directory has not
heard of (or, for a login, knows as revoked) is first looked up in the store (``lookup``,
a bank provisioned by another instance). Answers are counted in the hook metrics by
endpoint and result (allow, deny, error).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from backend.domain.acl import Decision
from backend.http.users import UserDirectory
from backend.log_throttle import LogThrottle
from backend.redaction import redact

__all__ = ["HookCounts", "HookDecisions", "Lookup"]

log = logging.getLogger("backend.http.hook")

Lookup = Callable[[str], Awaitable[None]]
"""Fills the directory's entry of one username from the store."""

_LOG_FIELD_MAX: Final = 200


class HookCounts(Protocol):
    """What the decisions count (``backend.http.hook.HookMetrics``)."""

    store_lookups: int

    def inc(self, endpoint: str, result: str) -> None: ...


def _short(value: str) -> str:
    return value if len(value) <= _LOG_FIELD_MAX else value[:_LOG_FIELD_MAX] + "..."


class HookDecisions:
    """Login, superuser and topic decisions over ``directory``.

    ``legacy_status()`` is read at every topic check (may devices still publish the
    deprecated ``locker/{u}/status``). A decision that fails inside (a bug) is counted as
    ``error``, logged, and raised: the HTTP hook answers 500, the embedded broker denies.
    """

    def __init__(
        self,
        directory: UserDirectory,
        *,
        legacy_status: Callable[[], bool],
        metrics: HookCounts | None = None,
        lookup: Lookup | None = None,
    ) -> None:
        self.directory = directory
        self._legacy_status = legacy_status
        self._metrics = metrics
        self._lookup = lookup
        self._lookup_failed_log = LogThrottle("failed store look-ups", logger=log)

    async def login(self, username: str, password: str, client_id: str) -> Decision:
        """A CONNECT's credentials and client id (``/api/mosq/auth``)."""
        if self._lookup is not None and self.directory.needs_lookup(username, revoked_too=True):
            await self._look_up(username)
        return self._decided(
            "auth",
            lambda: self.directory.authenticate(username, password, client_id),
            lambda: f"username={_short(username)!r} clientid={_short(client_id)!r}",
        )

    def superuser(self, username: str) -> Decision:
        """go-auth's superuser check (``/api/mosq/superuser``)."""
        return self._decided(
            "superuser",
            lambda: self.directory.is_superuser(username),
            lambda: f"username={_short(username)!r}",
        )

    async def acl(self, username: str, client_id: str, topic: str, acc: int) -> Decision:
        """One topic check of a connected client (``/api/mosq/acl``; ``acc`` as go-auth's)."""
        if self._lookup is not None and self.directory.needs_lookup(username):
            await self._look_up(username)
        return self.acl_now(username, client_id, topic, acc)

    def acl_known(self, username: str, client_id: str, topic: str, acc: int) -> Decision | None:
        """``acl`` without a coroutine when the directory can answer at once; ``None``
        when the user must first be looked up in the store (then await ``acl``)."""
        if self._lookup is not None and self.directory.needs_lookup(username):
            return None
        return self.acl_now(username, client_id, topic, acc)

    def acl_now(self, username: str, client_id: str, topic: str, acc: int) -> Decision:
        """The decision from the directory as it is (any look-up already done)."""
        try:
            decision = self.directory.acl(
                username, client_id, topic, acc, legacy_status=bool(self._legacy_status())
            )
        except Exception:
            self._failed("acl", lambda: _acl_fields(username, client_id, topic, acc))
            raise
        metrics = self._metrics
        if decision.allowed and metrics is not None and not log.isEnabledFor(logging.DEBUG):
            metrics.inc("acl", "allow")  # the usual answer, counted as `_answered` would
            return decision
        self._answered("acl", decision, lambda: _acl_fields(username, client_id, topic, acc))
        return decision

    # -- helpers

    async def _look_up(self, username: str) -> None:
        """A directory miss: ask the store (a bank provisioned by another instance)."""
        assert self._lookup is not None
        if self._metrics is not None:
            self._metrics.store_lookups += 1
        try:
            await self._lookup(username)
        except Exception as exc:  # the store is down: decide from memory (a miss is a deny)
            if self._lookup_failed_log.allow():
                log.warning("mosq: store look-up failed, answering from memory: %s", exc)

    def _decided(
        self, endpoint: str, decide: Callable[[], Decision], fields: Callable[[], str]
    ) -> Decision:
        try:
            decision = decide()
        except Exception:
            self._failed(endpoint, fields)
            raise
        self._answered(endpoint, decision, fields)
        return decision

    def _failed(self, endpoint: str, fields: Callable[[], str]) -> None:
        if self._metrics is not None:
            self._metrics.inc(endpoint, "error")
        log.exception("mosq %s: failed (%s)", endpoint, fields())

    def _answered(self, endpoint: str, decision: Decision, fields: Callable[[], str]) -> None:
        result = "allow" if decision.allowed else "deny"
        if self._metrics is not None:
            self._metrics.inc(endpoint, result)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("mosq %s %s -> %s (%s)", endpoint, fields(), result, decision.reason)


def _acl_fields(username: str, client_id: str, topic: str, acc: int) -> str:
    return (
        f"username={_short(username)!r} clientid={_short(client_id)!r} "
        f"topic={_short(redact(topic))!r} acc={acc}"
    )
