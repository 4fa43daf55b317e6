"""Reading many MQTT packets per socket wake-up (issue 19).

paho-mqtt reads a packet with three or four `recv` calls (the command byte, each
remaining-length byte, the rest), and its `loop_read` reads one packet per call; aiomqtt
calls it once each time the event loop finds the socket readable. Profiled at 10,000
banks (2,000 heartbeats/s, `bench/fleet.py` with `FLEET_CPROFILE`), that was four
`recv` system calls and three event-loop iterations (each an `epoll` call) per
heartbeat: about a quarter of the event-loop thread.

`attach()` gives one paho client a read buffer: a `recv` that finds it empty reads up to
64 KiB from the socket at once, and the others are served from it; its `loop_read` then
handles packets until that buffer is consumed (a packet cut at its end reads on). It
never returns with bytes left in the buffer (except on an error, which ends the
connection), so no packet waits for a wake-up the socket will not give: whatever the
socket still holds makes it readable again. How much one call reads is bounded by what
the broker may send unacknowledged (Receive Maximum, its in-flight window). Everything
else, TLS included, goes through paho's own `_sock_recv` and `_packet_read`; a new
socket (reconnect) starts with an empty buffer.
"""

from __future__ import annotations

from typing import Any

from paho.mqtt.client import Client, MQTTErrorCode

CHUNK = 65_536


class BufferedReads:
    """The read buffer of one paho client (see the module docstring)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._recv = client._sock_recv  # paho's own: TLS and error handling stay its own
        self._sock: Any = None
        self._data = b""
        self._pos = 0

    @property
    def buffered(self) -> int:
        """Bytes read from the socket and not yet handed to paho."""
        return len(self._data) - self._pos

    def recv(self, bufsize: int) -> bytes:
        """What paho's `_sock_recv` returns: up to `bufsize` bytes (b"" once closed)."""
        sock = self._client._sock
        if sock is not self._sock:  # a new connection: nothing of the old one is kept
            self._sock, self._data, self._pos = sock, b"", 0
        if self._pos >= len(self._data):
            data = self._recv(CHUNK)  # BlockingIOError / ConnectionError as paho raises them
            if not data:
                return data
            self._data, self._pos = data, 0
        start = self._pos
        self._pos = end = min(start + bufsize, len(self._data))
        return self._data[start:end]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's `loop_read`, but for every packet the buffer holds, not one."""
        client = self._client
        while True:
            if client._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = client._packet_read()
            if rc > 0:
                return client._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN or not self.buffered:
                return MQTTErrorCode.MQTT_ERR_SUCCESS


def attach(client: Client) -> BufferedReads:
    """Give `client` (aiomqtt's inner paho client) its read buffer."""
    reads = BufferedReads(client)
    client._sock_recv = reads.recv  # type: ignore[method-assign]  # per instance, on purpose
    client.loop_read = reads.loop_read  # type: ignore[method-assign]  # per instance, on purpose
    return reads
