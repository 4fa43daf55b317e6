"""The simulator's entry function for the command line (`locker-console simulate`).

Argument parsing belongs to the console's CLI; this module offers the
argparse-free coroutine it calls. Creating the banks and their provisioning
tokens is the CLI's job too (a device has no access to the backend).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path

from simulator.device import DEFAULT_PROVISIONING_USER, DeviceOptions
from simulator.faults import Faults
from simulator.fleet import Fleet

log = logging.getLogger("simulator")

DEFAULT_STATE_DIR = Path("data") / "sim"


async def run_simulator(
    broker_host: str,
    broker_port: int,
    *,
    tokens: Sequence[str] | None,
    state_dir: Path | str = DEFAULT_STATE_DIR,
    provisioning_user: str = DEFAULT_PROVISIONING_USER,
    provisioning_password: str | None = None,
    faults: Faults | None = None,
    upstream: bool = False,
    options: DeviceOptions | None = None,
    seed: int = 0,
    connect_concurrency: int = 64,
    report_every: float | None = 30.0,
    on_started: Callable[[Fleet], Awaitable[None] | None] | None = None,
) -> None:
    """Run simulated devices until cancelled, then stop them cleanly.

    tokens: one device per provisioning token (a device that already holds
        credentials in its state directory reuses them). None: resume every
        device found under `state_dir`, as provisioned by an earlier run.
    state_dir: one subdirectory per device (default `data/sim/`).
    upstream: the `openlocker` dialect (as the real upstream locker-client speaks it);
        `locker-console simulate --dialect openlocker` (`--upstream` is its alias).
    report_every: log a one-line fleet summary this often (None: never).
    on_started: called with the fleet once every device was started.
    """
    opts = options or DeviceOptions()
    if upstream:
        opts = replace(opts, upstream=True)
    fleet = Fleet(
        broker_host,
        broker_port,
        state_dir=state_dir,
        provisioning_user=provisioning_user,
        provisioning_password=provisioning_password,
        options=opts,
        faults=faults,
        seed=seed,
        connect_concurrency=connect_concurrency,
    )
    try:
        if tokens is None:
            devices = await fleet.resume()
            if not devices:
                raise ValueError(f"no provisioned devices under {state_dir} and no tokens given")
        else:
            await fleet.start(tokens)
        log.info("simulator: %d devices, broker %s:%d", len(fleet), broker_host, broker_port)
        if on_started is not None:
            result = on_started(fleet)
            if result is not None:
                await result
        while True:
            await asyncio.sleep(report_every if report_every else 3600)
            if report_every:
                s = fleet.stats()
                log.info(
                    "simulator: %d/%d online, %d heartbeats, %d commands, %d responses, "
                    "%d events, %d crashes",
                    s.online,
                    s.devices,
                    s.heartbeats_sent,
                    s.commands_received,
                    s.responses_sent,
                    s.events_sent,
                    s.crashes,
                )
    finally:
        await fleet.stop()
