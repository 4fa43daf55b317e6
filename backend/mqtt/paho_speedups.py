"""A cheaper MQTT 5 property decoder for paho's packet reader (issue 19).

paho-mqtt 2.x decodes every received MQTT 5 PUBLISH with a new `Properties` object, and
its constructor rebuilds three lookup tables (27 names, 27 property types) each time;
`unpack` then clears all 27 names before reading. Profiled in the backend's receive
loop (`bench/profiles.py receive --py-spy`), that was about a quarter of the event-loop
thread's CPU per heartbeat: more than the rest of paho's packet handling together. A
3.1.1 client pays none of it.

`SharedTableProperties` is paho's `Properties` with the three tables built once and
shared (no method of paho's writes to them), and an empty property block (what the
broker sends with nearly every PUBLISH) read without the clearing loop. Anything else
goes through paho's own code. `install()` puts it where paho's packet decoder looks it
up (`paho.mqtt._packet.Properties`); the properties the backend builds itself (CONNECT,
PUBLISH with a Message Expiry Interval) still use paho's class. The equivalence is
tested (tests/unit/test_paho_speedups.py).
"""

from __future__ import annotations

from typing import Any

from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_TEMPLATE = Properties(PacketTypes.PUBLISH)
_TABLES = {
    "types": _TEMPLATE.types,
    "names": _TEMPLATE.names,
    "properties": _TEMPLATE.properties,
}


class SharedTableProperties(Properties):
    """paho's `Properties`, with its static tables built once."""

    def __init__(self, packetType: int) -> None:
        state = self.__dict__
        state.update(_TABLES)
        state["packetType"] = packetType

    def unpack(self, buffer: bytes | bytearray) -> tuple[Any, int]:
        if buffer[:1] == b"\x00" and len(self.__dict__) == len(_TABLES) + 1:
            return self, 1  # no properties, and none set before: nothing to clear
        return super().unpack(buffer)


def install() -> None:
    """Make paho's packet decoder build `SharedTableProperties` (idempotent)."""
    _packet.Properties = SharedTableProperties  # type: ignore[misc]  # paho's decoder looks it up there
