"""Run an MqttRuntime in a process of its own until it is killed (crash tests).

    python -m tests.support.mqtt_runtime_process '{"database_url": ..., ...}'

The argument is a JSON object of settings overrides. The process prints `connected`
once the runtime is connected to the broker, then runs until SIGKILL (or SIGTERM).
"""

from __future__ import annotations

import asyncio
import json
import sys

from backend.config import load_settings
from backend.mqtt.listener import ListenerOptions
from backend.mqtt.relay import RelayOptions
from backend.mqtt.runtime import MqttRuntime, RuntimeOptions
from backend.mqtt.sweeper import SweeperOptions
from backend.service import LockerService


def fast_options() -> RuntimeOptions:
    """Short intervals so tests stay quick."""
    return RuntimeOptions(
        listener=ListenerOptions(heartbeat_linger=0.02),
        relay=RelayOptions(poll_interval=0.2, retry_initial=0.05, retry_max=0.5, lock_retry=0.2),
        sweeper=SweeperOptions(sweep_interval=0.2),
        reconnect_initial=0.05,
        reconnect_max=0.5,
        stop_timeout=5.0,
    )


async def _main(overrides: dict[str, object]) -> None:
    service = LockerService(load_settings(_env_file=None, **overrides))
    runtime = MqttRuntime(service, fast_options())
    await runtime.start()
    await runtime.wait_connected(10)
    print("connected", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main(json.loads(sys.argv[1])))
