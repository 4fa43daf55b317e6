"""The embedded MQTT broker (amqtt) wired to the HTTP auth hook."""

from backend.broker.embedded import EmbeddedBroker
from backend.broker.errors import BrokerStartError

__all__ = ["BrokerStartError", "EmbeddedBroker"]
