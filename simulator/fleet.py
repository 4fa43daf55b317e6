"""Many simulated devices in one event loop, started, observed and stopped together.

One aiomqtt client per device and no thread per device: a fleet of 1,000 is
a few thousand sleeping asyncio tasks. Connection attempts go through a
shared semaphore so a fleet start (or a reconnect storm after a broker
restart) does not open every socket in the same instant, and each device's
heartbeats are phase-shifted so they do not beat in step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from backend.domain.timeutil import Clock
from simulator.device import (
    DEFAULT_PROVISIONING_USER,
    DeviceConfig,
    DeviceOptions,
    DeviceStatus,
    SimulatedDevice,
    device_name_for_token,
)
from simulator.faults import Faults
from simulator.state import STATE_FILE


@dataclass(frozen=True)
class FleetStats:
    """Aggregate counters over a fleet."""

    devices: int
    provisioned: int
    online: int
    crashed: int
    rejected: int
    heartbeats_sent: int
    responses_sent: int
    events_sent: int
    commands_received: int
    transactions_executed: int
    max_executions_per_transaction: int
    connection_losses: int
    crashes: int


class Fleet:
    """A set of `SimulatedDevice`s against one broker, each with its own state directory."""

    def __init__(
        self,
        broker_host: str,
        broker_port: int,
        *,
        state_dir: Path | str,
        provisioning_user: str = DEFAULT_PROVISIONING_USER,
        provisioning_password: str | None = None,
        options: DeviceOptions | None = None,
        faults: Faults | None = None,
        per_device_faults: Mapping[str, Faults] | None = None,
        seed: int = 0,
        connect_concurrency: int = 64,
        clock: Clock | None = None,
    ) -> None:
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.state_dir = Path(state_dir)
        self.provisioning_user = provisioning_user
        self.provisioning_password = provisioning_password
        self.options = options or DeviceOptions()
        self.faults = faults or Faults()
        self.per_device_faults = dict(per_device_faults or {})
        self.seed = seed
        self.clock = clock
        self._gate = asyncio.Semaphore(connect_concurrency)
        self._devices: dict[str, SimulatedDevice] = {}

    # --- membership ---------------------------------------------------------------------

    def add(
        self,
        token: str | None = None,
        *,
        name: str | None = None,
        faults: Faults | None = None,
        options: DeviceOptions | None = None,
    ) -> SimulatedDevice:
        """Create (not start) a device; its name defaults to one derived from the token.

        faults and options override the fleet's for this device (e.g. one upstream device).
        """
        if name is None:
            if token is None:
                raise ValueError("a device needs a token or a name")
            name = device_name_for_token(token)
        if name in self._devices:
            raise ValueError(f"device {name!r} already in the fleet")
        config = DeviceConfig(
            name=name,
            broker_host=self.broker_host,
            broker_port=self.broker_port,
            state_dir=self.state_dir / name,
            token=token,
            provisioning_user=self.provisioning_user,
            provisioning_password=self.provisioning_password,
            seed=self.seed,
            options=options or self.options,
        )
        device = SimulatedDevice(
            config,
            faults=faults or self.per_device_faults.get(name, self.faults),
            clock=self.clock,
            connect_gate=self._gate,
        )
        self._devices[name] = device
        return device

    def add_existing(self) -> list[SimulatedDevice]:
        """Add a device for every state directory under `state_dir` not yet in the fleet."""
        added = []
        if self.state_dir.is_dir():
            for path in sorted(self.state_dir.iterdir()):
                if (path / STATE_FILE).is_file() and path.name not in self._devices:
                    added.append(self.add(name=path.name))
        return added

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[SimulatedDevice]:
        return iter(list(self._devices.values()))

    def __getitem__(self, name: str) -> SimulatedDevice:
        return self._devices[name]

    @property
    def devices(self) -> list[SimulatedDevice]:
        return list(self._devices.values())

    def by_bank(self, bank_uuid: str) -> SimulatedDevice | None:
        return next((d for d in self._devices.values() if d.bank_uuid == bank_uuid), None)

    def set_faults(self, faults: Faults) -> None:
        """Change the faults of every device (and of devices added later)."""
        self.faults = faults
        for device in self._devices.values():
            device.faults = faults

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, tokens: Iterable[str]) -> list[SimulatedDevice]:
        """Add one device per token and start them all (returns before they are online)."""
        devices = [self.add(token) for token in tokens]
        for device in devices:
            await device.start()
        return devices

    async def resume(self) -> list[SimulatedDevice]:
        """Start a device for every state directory found (devices provisioned earlier)."""
        devices = self.add_existing()
        for device in devices:
            await device.start()
        return devices

    async def start_all(self) -> None:
        for device in self._devices.values():
            await device.start()

    async def stop(self) -> None:
        """Stop every device cleanly (DISCONNECT, no last wills) and end their users' timers."""
        await asyncio.gather(*(d.stop() for d in self._devices.values()))
        for device in self._devices.values():
            device.shutdown_hardware()

    async def wait_until_online(
        self, timeout: float, devices: Iterable[SimulatedDevice] | None = None
    ) -> None:
        """Wait until every (given) device is online; TimeoutError names how many are not."""
        await self._wait_all(lambda d: d.online.is_set(), "online", timeout, devices)

    async def wait_until_provisioned(
        self, timeout: float, devices: Iterable[SimulatedDevice] | None = None
    ) -> None:
        await self._wait_all(lambda d: d.provisioned.is_set(), "provisioned", timeout, devices)

    async def _wait_all(
        self,
        predicate: Callable[[SimulatedDevice], bool],
        what: str,
        timeout: float,
        devices: Iterable[SimulatedDevice] | None,
    ) -> None:
        targets = list(devices) if devices is not None else self.devices
        try:
            async with asyncio.timeout(timeout):
                for device in targets:
                    while not predicate(device):
                        await device.next_change()
        except TimeoutError:
            missing = sum(1 for d in targets if not predicate(d))
            raise TimeoutError(
                f"{missing} of {len(targets)} devices not {what} within {timeout} s"
            ) from None

    # --- observation --------------------------------------------------------------------

    def stats(self) -> FleetStats:
        devices = self.devices
        executed = [n for d in devices for n in d.executed.values()]
        return FleetStats(
            devices=len(devices),
            provisioned=sum(d.provisioned.is_set() for d in devices),
            online=sum(d.online.is_set() for d in devices),
            crashed=sum(d.status == DeviceStatus.CRASHED for d in devices),
            rejected=sum(d.status == DeviceStatus.REJECTED for d in devices),
            heartbeats_sent=sum(d.stats.heartbeats_sent for d in devices),
            responses_sent=sum(d.stats.responses_sent for d in devices),
            events_sent=sum(d.stats.events_sent for d in devices),
            commands_received=sum(d.stats.commands_received for d in devices),
            transactions_executed=len(executed),
            max_executions_per_transaction=max(executed, default=0),
            connection_losses=sum(d.stats.connection_losses for d in devices),
            crashes=sum(d.stats.crashes for d in devices),
        )
