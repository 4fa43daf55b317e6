"""The `--demo` fleet: banks created through the service, devices provisioned through the
real flow, with occasional jams, door closings and one flaky bank."""

from __future__ import annotations

import asyncio
import logging

from backend.runner import BackendServices
from simulator.device import DeviceOptions
from simulator.faults import Faults
from simulator.fleet import Fleet

log = logging.getLogger(__name__)

DEMO_LOCATIONS = (
    "Berlin Hbf",
    "Hamburg Altona",
    "Munich Marienplatz",
    "Cologne Dom",
    "Leipzig Hbf",
    "Dresden Neustadt",
)
DEMO_HEARTBEAT = 5


async def run_demo_fleet(services: BackendServices, banks: int) -> None:
    """Create the demo banks once (kept in LOCKER_DATA_DIR) and run their devices."""
    settings = services.settings
    service = services.service
    state_dir = settings.locker_data_dir / "sim" / "demo"
    port = services.broker.port if services.broker else settings.mqtt_port
    fleet = Fleet(
        settings.mqtt_host or "127.0.0.1",
        port,
        state_dir=state_dir,
        provisioning_user=settings.mqtt_provisioning_user,
        provisioning_password=settings.secret("mqtt_provisioning_password"),
        options=DeviceOptions(pinned_client_id=settings.dynsec),
        faults=Faults(jam_rate=0.1, latency_seconds=0.3, latency_jitter_seconds=0.2),
        seed=7,
    )
    try:
        resumed = await fleet.resume()
        missing = max(0, banks - len(resumed))
        tokens = []
        for i in range(missing):
            number = len(resumed) + i + 1
            created = await service.create_bank(
                f"Demo {number:02d}",
                DEMO_LOCATIONS[(number - 1) % len(DEMO_LOCATIONS)],
                8 if number % 3 else 16,
                heartbeat_interval_seconds=DEMO_HEARTBEAT,
                actor="demo",
            )
            tokens.append(created.token)
        if tokens:
            flaky = Faults(jam_rate=0.3, connection_drop_mean_seconds=45.0, latency_seconds=0.5)
            await fleet.add(tokens[0], faults=flaky).start()
            await fleet.start(tokens[1:])
        log.info("demo fleet: %d devices", len(fleet))
        await asyncio.Event().wait()
    finally:
        await fleet.stop()
