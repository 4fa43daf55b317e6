"""A bound of our own on what the backend has received and not yet taken (RELIABILITY F10).

A backend that is behind was meant to leave its backlog in the broker: it acknowledges a
message only once it is handled and asks for at most `RECEIVE_MAXIMUM` unacknowledged at
a time. Mosquitto 2.0.11 keeps to that window only while nothing is acknowledged; once
PUBACKs flow in batches (a writer committing) it sends far past it
(`bench/receive_window.py`: 13,405 against 2,000), and at 20,000 banks coming online the
backend held 136,692 received messages in aiomqtt's incoming queue. Over MQTT 3.1.1
(amqtt) there is no window at all.

`ReceiveBound` stops reading the socket while aiomqtt's incoming queue holds `high`
messages, and reads on once the receive loop has taken it down to `low`. The rest waits
in the kernel's socket buffer and the broker's queue for our session, as intended. It
takes aiomqtt's place as paho's `on_socket_open` (aiomqtt 2.5's reader, unchanged, plus
the pause): the reader can only be paused by removing it from the event loop, and put
back only by whoever holds it. A pause is short while the loop takes messages (a few
thousand at a few thousand a second). Should the receive side stall (a locked database),
reading goes on for one read every `MAX_PAUSE_S`, so the PINGRESP is read and the
connection is kept, at the cost of at most one read's worth of messages each time.

The bound holds only once it is armed (`arm()`), when the receive loop starts taking
messages. Before that, while the session is set up, reading never stops: the SUBACKs and
the PUBACK that setup awaits come after a resumed session's backlog on the same socket,
and with reading paused in front of them nothing could take the queue down either. The
setup then waited for the `MAX_PAUSE_S` reads, 64 KiB each, while the backlog sat
untaken (`bench/ingest.py`: 10,000 responses waiting at start took 13 s instead of 2.8).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
from paho.mqtt.client import Client as PahoClient

HIGH = 2_000
"""Received messages waiting in aiomqtt's queue at which reading stops (one window)."""
LOW = 1_000
"""...and at or below which it goes on."""
MAX_PAUSE_S = 5.0
"""Longest pause: then one read (at most `buffered_reads.CHUNK` bytes), so that a PINGRESP
is read and the keepalive holds while the receive side is stalled (a locked database)."""


class ReceiveBound:
    """Reading of one aiomqtt client's socket, paused while its incoming queue is full."""

    def __init__(
        self,
        client: aiomqtt.Client,
        *,
        high: int = HIGH,
        low: int = LOW,
        max_pause: float = MAX_PAUSE_S,
    ) -> None:
        if not 0 <= low < high:
            raise ValueError(f"need 0 <= low < high, got low={low}, high={high}")
        self._client = client
        self._paho: PahoClient = client._client
        self._queue: asyncio.Queue[aiomqtt.Message] = client._queue
        self.high = high
        self.low = low
        self.max_pause = max_pause
        self.paused = False
        self.pauses = 0
        self.armed = False
        self._fd: int | None = None
        self._wake: asyncio.TimerHandle | None = None
        self._paho.on_socket_open = self._on_socket_open

    @property
    def waiting(self) -> int:
        """Received messages in aiomqtt's queue, not yet taken by the receive loop."""
        return self._queue.qsize()

    def arm(self) -> None:
        """The receive loop is taking messages: from now on hold the bound (at once, if the
        setup left the queue full)."""
        self.armed = True
        self._pause_if_full()

    def taken(self) -> None:
        """The receive loop took a message: read on once the queue is down to `low`."""
        if self.paused and self._queue.qsize() <= self.low:
            self._resume()

    def _resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        sock = self._paho._sock
        if sock is not None and self._fd is not None and sock.fileno() == self._fd:
            self._client._loop.add_reader(self._fd, self._read)  # not after a close

    def _on_socket_open(self, _paho: PahoClient, _userdata: Any, sock: Any) -> None:
        # paho calls this from the executor thread aiomqtt connects on (as aiomqtt's own)
        loop = self._client._loop
        self._fd = sock.fileno()
        self.paused = False

        def misc_task() -> None:
            self._client._misc_task = loop.create_task(self._client._misc_loop())

        loop.call_soon_threadsafe(loop.add_reader, self._fd, self._read)
        loop.call_soon_threadsafe(misc_task)

    def _read(self) -> None:
        """aiomqtt's reader: read what the socket holds (all of a TLS record), and a failed
        read ends the connection; then pause if the queue is full."""
        paho = self._paho
        try:
            while True:
                paho.loop_read()
                sock = paho._sock
                if sock is not None and hasattr(sock, "pending") and sock.pending() > 0:
                    continue
                break
        except Exception as exc:  # a broken pipe and the like: the connection is lost
            disconnected = self._client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)
            return
        self._pause_if_full()

    def _pause_if_full(self) -> None:
        if (
            self.armed
            and not self.paused
            and self._fd is not None
            and self._queue.qsize() >= self.high
        ):
            self.paused = True
            self.pauses += 1
            loop = self._client._loop
            loop.remove_reader(self._fd)
            self._wake = loop.call_later(self.max_pause, self._resume)
