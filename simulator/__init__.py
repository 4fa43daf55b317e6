"""The locker-side IoT client (seed section 7.5): one or thousands of simulated devices.

Knows only MQTT (aiomqtt) and the contract in `backend.domain`; never the
backend's store or services.
"""

from simulator.commands import Outcome, SimulatedCrash
from simulator.device import (
    DeviceConfig,
    DeviceOptions,
    DeviceStats,
    DeviceStatus,
    SimulatedDevice,
    device_name_for_token,
)
from simulator.faults import CrashPoint, FaultDice, Faults
from simulator.hardware import DoorState, Hardware
from simulator.state import DeviceState, StateError, StateStore

__all__ = [
    "CrashPoint",
    "DeviceConfig",
    "DeviceOptions",
    "DeviceState",
    "DeviceStats",
    "DeviceStatus",
    "DoorState",
    "FaultDice",
    "Faults",
    "Hardware",
    "Outcome",
    "SimulatedCrash",
    "SimulatedDevice",
    "StateError",
    "StateStore",
    "device_name_for_token",
]
