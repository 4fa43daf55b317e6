"""MQTT connection helpers for devices: client construction and the abrupt drop.

Every device client sets `SOCKET_OPTIONS` (TCP_NODELAY): paho sets no socket options,
and with Nagle's algorithm a response waits for the ACK of the previous packet (up to
the peer's delayed-ACK timeout, ~40 ms on Linux).

aiomqtt has no way to lose a connection on purpose: leaving its context
manager always sends DISCONNECT, which makes the broker discard the last
will. `abort_connection` drops the TCP connection the way a power cut or a
pulled cable does (an RST, no DISCONNECT packet), so the broker publishes the
will. It reaches into the paho client under aiomqtt (verified with aiomqtt
2.5 / paho-mqtt 2.2; the simulator tests cover it).
"""

from __future__ import annotations

import contextlib
import socket
import struct

import aiomqtt
from paho.mqtt.client import MQTTErrorCode

SOCKET_OPTIONS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def abort_connection(client: aiomqtt.Client) -> bool:
    """Kill the client's TCP connection without DISCONNECT; True if one was open.

    Afterwards the client counts as disconnected (its message iterator raises
    `MqttError`, leaving its context manager sends nothing) and can connect again.
    """
    paho = client._client  # private: aiomqtt has no public API for an unclean drop
    sock = paho.socket()
    if sock is None:
        return False
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            # linger 0: close() sends RST at once instead of a graceful FIN handshake
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    # paho's own handling of a lost connection: unregisters the socket from the
    # event loop, closes it and fires on_disconnect (which aiomqtt turns into
    # its "disconnected" state).
    paho._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
    disconnected = client._disconnected
    if disconnected.done() and not disconnected.cancelled():
        disconnected.exception()  # mark retrieved: no "exception never retrieved" noise
    return True
