"""Headless backends (`python -m console.cli --headless`) as real processes for the
deployment tests: start them, wait for /healthz, read /metrics, kill them (the process
handling is `tests/support/service_process.py`'s).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import aiohttp

from tests.support.mosquitto import free_port
from tests.support.service_process import ServiceProcess, clean_env


@dataclass
class HeadlessInstance(ServiceProcess):
    """One `--headless` process."""

    LOG_NAME: ClassVar[str] = "headless.log"
    STOP_TIMEOUT: ClassVar[float] = 20.0
    TAIL_LINES: ClassVar[int] = 40

    @property
    def http_port(self) -> int:
        return self.port

    async def start(self) -> None:
        await self.spawn(sys.executable, "-m", "console.cli", "--headless")

    async def wait_healthy(self, session: aiohttp.ClientSession, timeout: float) -> None:
        """Until /healthz answers 200 (database and broker connected)."""

        async def healthy(resp: aiohttp.ClientResponse) -> bool:
            return resp.status == 200

        await self.poll_health(session, timeout, healthy, what="healthy", interval=0.1)


def headless_instance(
    name: str, workdir: Path, settings: Mapping[str, str], **extra: str
) -> HeadlessInstance:
    """An instance on a free HTTP port with its own data directory and MQTT client id."""
    http_port = free_port()
    env = clean_env(
        LOCKER_DATA_DIR=str(workdir / "data"),
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(http_port),
        MQTT_CLIENT_ID=f"locker-backend-{name}",
        **dict(settings),
        **extra,
    )
    return HeadlessInstance(name, workdir, env, http_port)
