"""``GET /api/events/stream``: the stored events as server-sent events, live.

Each event is one SSE message::

    id: 42
    data: {"position": 42, "event_type": "LockerBankCreated", ...}

``id`` is the event's global position, so a client that reconnects with
``Last-Event-ID`` (browsers' ``EventSource`` do it by themselves) receives
exactly the events after the last one it saw; without the header it starts
after ``?after=N`` (default 0: everything). ``data`` is the same JSON object as
``GET /api/events`` returns, hashes of secrets left out. No ``event:`` field
is sent, so ``EventSource.onmessage`` sees every event; its kind is
``event_type`` in the data.

After a stored event that opened or resolved an alert (DESIGN section 7) comes one named
message per change, with the same ``id``::

    id: 42
    event: alert
    data: {"change": "opened", "alert": {...as in GET /api/alerts}}

(``EventSource.addEventListener("alert", ...)``; ``onmessage`` does not see them.) A
bank-offline alert that resolves by time alone (a minute online) has no event to follow:
the stream checks for those about once a second and sends them as ``event: alert``
messages *without* an ``id`` (there is no position to resume from; ``GET /api/alerts``
is the state after a reconnect).

The store is the source (events recorded by any process, the CLI included):
the stream polls it every ``poll_interval`` seconds (0.25 by default), sends
what is new in position order, and writes a ``: keepalive`` comment when it
has been quiet for ``keepalive`` seconds (15 by default) so proxies and
clients keep the connection. It ends cleanly when the client goes away and
when the app shuts down (``close()``, wired to ``on_shutdown``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime
from typing import Final

from aiohttp import hdrs, web

from backend.domain.timeutil import parse_iso
from backend.http.auth import PRINCIPAL
from backend.http.errors import BadRequest, Unavailable
from backend.http.requests import int_query
from backend.service import LockerService
from backend.store import alert_queries
from backend.store.alert_projection import ALERT_EVENTS
from backend.views import EventView

__all__ = ["EventStream", "sse_frame"]

log = logging.getLogger(__name__)

MAX_POSITION: Final = 2**63 - 1
RETRY_MS: Final = 2000
RESOLUTION_CHECK_S: Final = 1.0
_KEEPALIVE: Final = b": keepalive\n\n"


def sse_frame(event: EventView) -> bytes:
    """One SSE message: ``id`` = position, ``data`` = the event as compact JSON."""
    data = json.dumps(event.to_json(), separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.position}\ndata: {data}\n\n".encode()


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


class EventStream:
    """The stream handler and the count of streams open (a gauge on /metrics)."""

    def __init__(
        self,
        service: LockerService,
        *,
        poll_interval: float = 0.25,
        keepalive: float = 15.0,
        batch: int = 500,
        max_streams: int = 200,
        max_per_token: int = 10,
    ) -> None:
        self.service = service
        self.poll_interval = poll_interval
        self.keepalive = keepalive
        self.batch = batch
        self._closing = asyncio.Event()
        self.open_streams = 0
        self.max_streams = max_streams
        self.max_per_token = max_per_token
        self.refused = 0
        self._per_token: dict[str, int] = {}

    async def close(self, _app: web.Application | None = None) -> None:
        """End every open stream (at app shutdown); new ones end at once."""
        self._closing.set()

    def _start_position(self, request: web.Request) -> int:
        last_id = request.headers.get("Last-Event-ID")
        if last_id is not None and last_id.strip():
            text = last_id.strip()
            if not text.isascii() or not text.isdigit() or len(text) > 18:
                raise BadRequest("Last-Event-ID must be an event position (an integer)")
            return int(text)
        return int_query(request, "after", 0, minimum=0, maximum=MAX_POSITION)

    def _release(self, who: str) -> None:
        self.open_streams -= 1
        left = self._per_token.get(who, 0) - 1
        if left > 0:
            self._per_token[who] = left
        else:
            self._per_token.pop(who, None)

    async def _pause(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        except TimeoutError:
            pass

    async def _alert_frames(self, events: list[EventView]) -> dict[int, bytes]:
        """`event: alert` messages for the alert changes these events made, by position."""
        marks = [
            (e.position, e.aggregate_uuid, parse_iso(str(e.payload["occurred_at"])))
            for e in events
            if e.event_type in ALERT_EVENTS and "occurred_at" in e.payload
        ]
        if not marks:
            return {}
        try:
            changes = await self.service.read(
                alert_queries.changes_at, marks, self.service.clock.now()
            )
        except Exception as exc:
            log.warning("event stream: reading alerts failed: %s", exc)
            return {}
        frames: dict[int, bytes] = {}
        for position, change, alert in changes:
            data = json.dumps(
                {"change": change, "alert": alert.to_json()},
                separators=(",", ":"),
                ensure_ascii=False,
            )
            frames[position] = (
                frames.get(position, b"")
                + f"id: {position}\nevent: alert\ndata: {data}\n\n".encode()
            )
        return frames

    async def _resolved_by_time(self, after: datetime, until: datetime) -> bytes:
        """`event: alert` messages (no id) for bank-offline alerts resolved in (after, until]."""
        try:
            resolved = await self.service.read(alert_queries.resolved_between, after, until)
        except Exception as exc:
            log.warning("event stream: reading alert resolutions failed: %s", exc)
            return b""
        frames = []
        for alert in resolved:
            data = json.dumps(
                {"change": "resolved", "alert": alert.to_json()},
                separators=(",", ":"),
                ensure_ascii=False,
            )
            frames.append(f"event: alert\ndata: {data}\n\n".encode())
        return b"".join(frames)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/events/stream``; 503 with Retry-After past `SSE_MAX_STREAMS` open
        streams, or `SSE_MAX_STREAMS_PER_TOKEN` for the caller's token."""
        position = self._start_position(request)
        who = request[PRINCIPAL].name if PRINCIPAL in request else ""
        if self.open_streams >= self.max_streams:
            self.refused += 1
            raise Unavailable("too many event streams open; try again later", retry_after=5)
        if self._per_token.get(who, 0) >= self.max_per_token:
            self.refused += 1
            raise Unavailable(
                f"this API token has {self.max_per_token} event streams open already",
                retry_after=5,
            )
        response = web.StreamResponse(
            status=200,
            headers={
                hdrs.CONTENT_TYPE: "text/event-stream; charset=utf-8",
                hdrs.CACHE_CONTROL: "no-cache",
                "X-Accel-Buffering": "no",
            },
        )
        self.open_streams += 1  # counted before the first await: the caps are exact
        self._per_token[who] = self._per_token.get(who, 0) + 1
        try:
            await response.prepare(request)
        except BaseException:
            self._release(who)
            raise
        loop = asyncio.get_running_loop()
        try:
            await response.write(f"retry: {RETRY_MS}\n\n".encode())
            quiet_since = loop.time()
            failing = False
            resolutions_checked = self.service.clock.now()
            next_resolution_check = loop.time() + RESOLUTION_CHECK_S
            while not self._closing.is_set() and not _client_gone(request):
                try:
                    events = await self.service.events_after(position, self.batch)
                except Exception as exc:  # the store is briefly down: keep the client
                    if not failing:
                        log.warning("event stream: reading events failed: %s", exc)
                    failing = True
                    events = []
                else:
                    failing = False
                if events:
                    alerts = await self._alert_frames(events)
                    await response.write(
                        b"".join(sse_frame(e) + alerts.get(e.position, b"") for e in events)
                    )
                    position = events[-1].position
                    quiet_since = loop.time()
                    if len(events) >= self.batch:
                        continue  # more are waiting: no pause
                elif loop.time() - quiet_since >= self.keepalive:
                    await response.write(_KEEPALIVE)
                    quiet_since = loop.time()
                if loop.time() >= next_resolution_check:
                    now = self.service.clock.now()
                    resolved = await self._resolved_by_time(resolutions_checked, now)
                    resolutions_checked = now
                    next_resolution_check = loop.time() + RESOLUTION_CHECK_S
                    if resolved:
                        await response.write(resolved)
                        quiet_since = loop.time()
                await self._pause(self.poll_interval * (4 if failing else 1))
        except ConnectionResetError:
            log.debug("event stream: client went away at position %d", position)
            return response
        finally:
            self._release(who)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response
