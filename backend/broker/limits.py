"""Connection limits of the embedded broker (DESIGN section 12), below amqtt's parser.

amqtt 0.12.1 has none of them: it reads a packet of any announced size into memory (one
retained 100 MiB publish took the backend from 160 to 451 MB), waits forever for the first
packet of a connection (300 half-open sockets stayed open), and misreads an MQTT 5
CONNECT (its properties) so that the client never gets an answer. Here each connection's
bytes go through `LimitedReader`, which frames MQTT packets itself before amqtt sees them:

* `read_connect()`: the first packet must arrive within `MQTT_CONNECT_TIMEOUT` seconds
  and be a CONNECT of MQTT 3.1.1 (protocol level 4). Any other protocol level (MQTT 5,
  MQTT 3.1) is answered with CONNACK return code 1, "unacceptable protocol version",
  and the connection is closed, as MQTT 5 section 3.1.2.2 asks of a server that does not
  speak the client's version.
* every packet larger than `MQTT_MAX_PACKET_SIZE` bytes (fixed header included) closes
  the connection before its body is read, as Mosquitto's `max_packet_size` does.

`AddressGate` counts open connections per source address
(`MQTT_MAX_CONNECTIONS_PER_ADDRESS`, 0 = no limit); loopback addresses are never
limited, so `--demo` and `simulate` keep working.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from amqtt.adapters import ReaderAdapter

__all__ = [
    "CONNACK_UNACCEPTABLE_PROTOCOL",
    "AddressGate",
    "ConnectRefused",
    "LimitedReader",
    "Limits",
]

log = logging.getLogger(__name__)

CONNACK_UNACCEPTABLE_PROTOCOL = bytes((0x20, 0x02, 0x00, 0x01))
"""An MQTT 3.1.1 CONNACK, no session present, return code 1."""
_CONNECT_TYPE = 1
_MQTT_311 = 4
_LENGTH_BYTES_MAX = 4


@dataclass(frozen=True)
class Limits:
    """The settings, as the broker applies them."""

    max_packet_size: int = 131072
    connect_timeout: float = 10.0
    max_connections_per_address: int = 0
    registrations_per_address: int = 20


class ConnectRefused(Exception):
    """The first packet was not acceptable; `reply` (if any) is written before closing."""

    def __init__(self, reason: str, reply: bytes = b"") -> None:
        super().__init__(reason)
        self.reply = reply


class PacketTooLarge(ConnectRefused):
    """A packet announced more bytes than `MQTT_MAX_PACKET_SIZE`."""


class LimitedReader(ReaderAdapter):
    """amqtt's `ReaderAdapter` over a StreamReader, whole packets at a time, size-checked."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        max_packet_size: int,
        on_refused: Callable[[ConnectRefused], None] = lambda exc: None,
    ) -> None:
        self._reader = reader
        self._max = max_packet_size
        self._buffer = bytearray()
        self._on_refused = on_refused

    async def _next_packet(self) -> None:
        """Read one whole packet into the buffer (IncompleteReadError on EOF)."""
        first = await self._reader.readexactly(1)
        length_bytes = bytearray()
        remaining, multiplier = 0, 1
        while True:
            byte = (await self._reader.readexactly(1))[0]
            length_bytes.append(byte)
            remaining += (byte & 0x7F) * multiplier
            if not byte & 0x80:
                break
            multiplier *= 128
            if len(length_bytes) >= _LENGTH_BYTES_MAX:
                raise ConnectRefused("malformed remaining length")
        size = 1 + len(length_bytes) + remaining
        if size > self._max:
            raise PacketTooLarge(f"packet of {size} bytes exceeds MQTT_MAX_PACKET_SIZE {self._max}")
        body = await self._reader.readexactly(remaining) if remaining else b""
        self._buffer += first
        self._buffer += length_bytes
        self._buffer += body

    async def read_connect(self, timeout: float) -> None:
        """Buffer the first packet; ConnectRefused unless it is an MQTT 3.1.1 CONNECT that
        arrived within `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._next_packet()
        except TimeoutError:
            raise ConnectRefused(f"no CONNECT within {timeout:g} s") from None
        except asyncio.IncompleteReadError:
            raise ConnectRefused("connection closed before its CONNECT") from None
        if self._buffer[0] >> 4 != _CONNECT_TYPE:
            raise ConnectRefused("first packet is not a CONNECT")
        level = _protocol_level(bytes(self._buffer))
        if level is None:
            raise ConnectRefused("malformed CONNECT")
        if level != _MQTT_311:
            raise ConnectRefused(
                f"unsupported protocol level {level} (MQTT 3.1.1 only)",
                reply=CONNACK_UNACCEPTABLE_PROTOCOL,
            )

    async def read(self, n: int = -1) -> bytes:
        try:
            if n < 0:
                if not self._buffer:
                    await self._next_packet()
                data = bytes(self._buffer)
                self._buffer.clear()
                return data
            while len(self._buffer) < n:
                await self._next_packet()
        except ConnectRefused as exc:
            self._on_refused(exc)  # counted and logged by the broker; amqtt sees an EOF
            raise asyncio.IncompleteReadError(bytes(self._buffer), n) from None
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def feed_eof(self) -> None:
        self._reader.feed_eof()


def _protocol_level(packet: bytes) -> int | None:
    """The protocol level byte of a whole CONNECT packet, None if it is cut short."""
    pos = 1
    while pos < len(packet) and packet[pos] & 0x80:
        pos += 1
    pos += 1  # past the last remaining-length byte
    if pos + 2 > len(packet):
        return None
    name_length = int.from_bytes(packet[pos : pos + 2], "big")
    level_at = pos + 2 + name_length
    return packet[level_at] if level_at < len(packet) else None


LOCAL_HOSTS = frozenset({"127.0.0.1", "::1"})
"""This machine's own simulators and demo (the exact local addresses, not all of loopback)."""


@dataclass
class RegistrationGate:
    """Registrations (`locker/register/+` publishes) per source address and minute.

    The backend never learns a registration's source address; the embedded broker does,
    and drops a registration past the limit before it reaches the backend (no outbox row,
    no reply). 127.0.0.1 and ::1 are exempt: `--demo` and `simulate` register many banks
    from there at once.
    """

    limit: int = 20
    window: float = 60.0
    max_addresses: int = 100_000
    dropped: int = 0
    _seen: dict[str, deque[float]] = field(default_factory=dict)

    def allow(self, address: str, now: float) -> bool:
        if self.limit <= 0 or address in LOCAL_HOSTS:
            return True
        times = self._seen.pop(address, None) or deque()
        while times and now - times[0] >= self.window:
            times.popleft()
        allowed = len(times) < self.limit
        if allowed:
            times.append(now)
        else:
            self.dropped += 1
        self._seen[address] = times  # most recent last: the oldest go first below
        if len(self._seen) > self.max_addresses:
            self._seen.pop(next(iter(self._seen)))
        return allowed


@dataclass
class AddressGate:
    """Open connections per source address, refused past the limit (loopback exempt)."""

    limit: int = 0
    refused: int = 0
    _open: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def exempt(address: str) -> bool:
        try:
            return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
        except ValueError:
            return False

    def enter(self, address: str) -> bool:
        """Count a new connection from `address`; False (not counted) past the limit."""
        if self.limit <= 0 or self.exempt(address):
            return True
        current = self._open.get(address, 0)
        if current >= self.limit:
            self.refused += 1
            return False
        self._open[address] = current + 1
        return True

    def leave(self, address: str) -> None:
        if self.limit <= 0 or self.exempt(address):
            return
        current = self._open.get(address, 0) - 1
        if current > 0:
            self._open[address] = current
        else:
            self._open.pop(address, None)
