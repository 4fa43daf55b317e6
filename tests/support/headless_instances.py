"""Headless backends (`python -m console.cli --headless`) as real processes for the
deployment tests: start them, wait for /healthz, read /metrics, kill them.

Each instance logs to its own file under its data directory; `log_tail()` is what a
failing test prints.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.support.mosquitto import free_port

# Variables of the parent environment an instance must not inherit (settings are explicit).
_SCRUBBED = (
    "MQTT_",
    "DATABASE_",
    "HTTP_",
    "HOOK_",
    "LOCKER_",
    "COMMAND_",
    "MOSQ_",
    "SECRET_",
    "LOG_",
    "LISTEN_",
)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def clean_env(**settings: str) -> dict[str, str]:
    """The parent's environment without locker settings, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    env.update(settings)
    return env


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text exposition -> {(name, labels): value}."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        pairs = frozenset(_LABEL.findall(labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


@dataclass
class Metrics:
    """One /metrics scrape."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class HeadlessInstance:
    """One `--headless` process."""

    name: str
    workdir: Path
    env: dict[str, str]
    http_port: int
    process: asyncio.subprocess.Process | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "headless.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "console.cli",
                "--headless",
                cwd=self.workdir,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    async def wait_healthy(self, session: aiohttp.ClientSession, timeout: float) -> None:
        """Until /healthz answers 200 (database and broker connected)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    assert self.running, f"{self.name} exited early:\n{self.log_tail()}"
                    try:
                        async with session.get(f"{self.url}/healthz") as resp:
                            if resp.status == 200:
                                return
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)  # polling a condition with a deadline
        except TimeoutError:
            raise AssertionError(
                f"{self.name} not healthy within {timeout} s:\n{self.log_tail()}"
            ) from None

    async def metrics(self, session: aiohttp.ClientSession) -> Metrics:
        async with session.get(f"{self.url}/metrics") as resp:
            assert resp.status == 200, f"{self.name}: /metrics answered {resp.status}"
            return Metrics(parse_metrics(await resp.text()))

    async def kill(self) -> None:
        """SIGKILL: no goodbye, no flush, like a machine losing power."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait (SIGKILL after `timeout`); the exit code."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                await self.kill()
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


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
