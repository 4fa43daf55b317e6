"""The MQTT runtime: connection, listener and handlers, outbox relay, sweeper.

`MqttRuntime` (runtime.py) is the entry point; `ConnectionState` and `Metrics` are
what the console, /healthz and /metrics read.
"""

from backend.mqtt.metrics import Metrics
from backend.mqtt.runtime import MqttRuntime, RuntimeOptions
from backend.mqtt.state import ConnectionState

__all__ = ["ConnectionState", "Metrics", "MqttRuntime", "RuntimeOptions"]
