"""The shared-table MQTT 5 property decoder reads what paho's own does (issue 19)."""

from __future__ import annotations

import pytest
from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from backend.mqtt import paho_speedups
from backend.mqtt.paho_speedups import SharedTableProperties


def _blocks() -> list[bytes]:
    """Property blocks as a broker sends them with a PUBLISH: none, and several kinds."""
    full = Properties(PacketTypes.PUBLISH)
    full.MessageExpiryInterval = 30
    full.ContentType = "application/json"
    full.UserProperty = ("a", "1")
    full.UserProperty = ("b", "2")
    full.CorrelationData = b"\x00\x01"
    full.PayloadFormatIndicator = 1
    expiry = Properties(PacketTypes.PUBLISH)
    expiry.MessageExpiryInterval = 5
    return [b"\x00", expiry.pack(), full.pack()]


@pytest.mark.parametrize("block", _blocks())
def test_decodes_like_paho(block: bytes) -> None:
    ours, used = SharedTableProperties(PacketTypes.PUBLISH).unpack(block + b"payload")
    theirs, paho_used = Properties(PacketTypes.PUBLISH).unpack(block + b"payload")
    assert used == paho_used == len(block)
    assert ours.json() == theirs.json()
    assert str(ours) == str(theirs)
    assert ours.isEmpty() == theirs.isEmpty() == (block == b"\x00")


def test_an_object_is_reused_safely_and_refuses_what_paho_refuses() -> None:
    props = SharedTableProperties(PacketTypes.PUBLISH)
    props.unpack(_blocks()[2])
    props.unpack(b"\x00")  # an object holding properties is cleared as paho clears it
    assert props.isEmpty()
    with pytest.raises(Exception, match="does not apply"):
        props.SessionExpiryInterval = 10  # a CONNECT property on a PUBLISH
    other = SharedTableProperties(PacketTypes.CONNECT)
    other.SessionExpiryInterval = 10
    assert other.json() == {"SessionExpiryInterval": 10}
    assert props.json() == {}  # the shared tables carry no values


def test_install_makes_paho_decode_publishes_with_it() -> None:
    paho_speedups.install()
    assert _packet.Properties is SharedTableProperties
    topic = b"locker/x/state"
    body = len(topic).to_bytes(2, "big") + topic + (7).to_bytes(2, "big") + b"\x00" + b"{}"
    packet = _packet.decode_publish(0x32, body, _packet.MQTTProtocolVersion.MQTTv5)
    assert packet.payload == b"{}" and packet.mid == 7
    assert isinstance(packet.properties, SharedTableProperties)
    assert packet.properties.isEmpty()
