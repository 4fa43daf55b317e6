"""The backend's self-probe (DESIGN section 4): proof that its session still receives.

A broker can drop our session and subscriptions while the TCP connection stays up (amqtt
0.12.1 did exactly that when another client connected with our client id): the
connection then looks fine, keep-alives are answered, and nothing arrives. So every
`MQTT_PROBE_INTERVAL` seconds the backend publishes a probe (QoS 1) on its own,
non-shared topic `server/probe/{MQTT_INSTANCE_ID}` and expects it back within
`MQTT_PROBE_TIMEOUT` seconds. When it does not come back, `watch()` returns the reason:
the connection drops it, says so (state, /healthz, console) and connects again.

A probe waits in the broker's queue behind whatever is ahead of it, and the broker sends
no more than its in-flight window of messages we have not acknowledged yet (acks.py): so
while messages are being handled (`busy`), held unacknowledged (`held`) or finished
(`progress`), the session is evidently served and the probe keeps waiting.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from backend.domain.topics import probe_topic

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]


class SelfProbe:
    """Publishes probes and matches what comes back."""

    def __init__(self, instance_id: str, interval: float, timeout: float) -> None:
        self.topic = probe_topic(instance_id)
        self.interval = interval
        self.timeout = timeout
        self.sent = 0
        self.returned = 0
        self.failures = 0
        self._expected: bytes | None = None
        self._back = asyncio.Event()
        self._busy = 0
        self.held: Callable[[], int] = lambda: 0
        """Messages of the current connection received and not yet acknowledged."""
        self._last_activity = 0.0
        self._waiting_since: float | None = None
        self._sent_at: float | None = None
        self._round_trip = 0.0

    def is_probe(self, topic: str) -> bool:
        return topic == self.topic

    def received(self, payload: bytes) -> None:
        """A message on our probe topic arrived (an old probe is ignored)."""
        if self._expected is not None and payload == self._expected:
            self.returned += 1
            self._waiting_since = None
            if self._sent_at is not None:
                self._round_trip = time.monotonic() - self._sent_at
                self._sent_at = None
            self._back.set()

    def activity(self, busy: bool) -> None:
        """A message is being handled (`busy`) or was handled: the session receives, even
        if the probe waits behind a long queue."""
        self._busy += 1 if busy else -1
        self._last_activity = time.monotonic()

    def progress(self) -> None:
        """A received message was finished (acknowledged)."""
        self._last_activity = time.monotonic()

    @property
    def _serving(self) -> bool:
        return bool(self._busy or self.held())

    async def watch(self, publish: Publish) -> str:
        """Probe until one does not come back in time; returns why (never returns while
        the session receives). A publish that fails is left to the connection."""
        while True:
            nonce = secrets.token_hex(8).encode()
            self._expected = nonce
            self._back = asyncio.Event()
            self.sent += 1
            window_start = self._sent_at = time.monotonic()
            if self._waiting_since is None:
                self._waiting_since = window_start
            if not await self._acknowledged(publish(self.topic, nonce), window_start):
                return self._failed("was not even acknowledged")
            while not self._back.is_set():
                try:
                    async with asyncio.timeout(self.timeout):
                        await self._back.wait()
                except TimeoutError:
                    if self._serving or self._last_activity > window_start:
                        window_start = time.monotonic()  # other traffic flows: keep waiting
                        continue
                    return self._failed("did not come back")
            await asyncio.sleep(self.interval)

    async def _acknowledged(self, publishing: Awaitable[None], since: float) -> bool:
        """Wait for the probe's PUBACK; False if none came within `timeout` while nothing
        else was received either. A broker (or, embedded, the process it shares with us)
        slow under load still serves the session: reconnecting then makes it worse."""
        task = asyncio.ensure_future(publishing)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.timeout)
                if done:
                    task.result()  # a failed publish is left to the connection
                    return True
                if not (self._serving or self._last_activity > since):
                    return False
                since = time.monotonic()  # other traffic flows: keep waiting
        finally:
            task.cancel()

    def backlog(self) -> float:
        """How far behind the broker this session's receiving is, in seconds: the last
        probe's round trip, or the time the outstanding one has been under way if longer.
        A probe waits behind every message queued for us, so a device's heartbeat sent that
        long ago may not have reached us yet (the sweeper does not call it silent)."""
        waiting = time.monotonic() - self._sent_at if self._sent_at is not None else 0.0
        return max(self._round_trip, waiting)

    def problem(self) -> str | None:
        """For /healthz and the console: why the broker path is not proven to work now
        (a probe overdue and nothing else received meanwhile), else None."""
        since = self._waiting_since
        if since is None or self._serving or self._last_activity > since:
            return None
        age = time.monotonic() - since
        if age < self.timeout:
            return None
        return f"connected, but the self-probe has not come back for {age:.0f} s"

    def reset(self) -> None:
        """A new connection: nothing outstanding."""
        self._waiting_since = None
        self._expected = None
        self._sent_at = None
        self._round_trip = 0.0

    def _failed(self, what: str) -> str:
        self.failures += 1
        log.error(
            "self-probe on %s %s within %.1f s: the broker no longer serves this session; "
            "reconnecting",
            self.topic,
            what,
            self.timeout,
        )
        return f"self-probe {what} within {self.timeout:g} s (session lost)"
