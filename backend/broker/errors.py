"""Errors raised by the embedded MQTT broker."""

from __future__ import annotations


class BrokerStartError(RuntimeError):
    """The embedded broker could not start; the message says why and what to do."""


def port_in_use_message(host: str, port: int) -> str:
    """The one message shown when the MQTT port is taken (DESIGN section 12)."""
    return (
        f"MQTT port {port} on {host} is already in use; set MQTT_HOST to use an external "
        "broker or MQTT_PORT to pick another port"
    )
