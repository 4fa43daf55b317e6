"""A backend process of the deployment tests (`--headless`, `hook`): started in its own
working directory with an explicit environment, logging to its own file, polled until it
answers, read through /metrics, stopped with SIGTERM or killed.

`tests/support/headless_instances.py` and `tests/support/hook_process.py` say how each
kind starts and when it counts as up; `log_tail()` is what a failing test prints.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

# Variables of the parent environment a process must not inherit (settings are explicit).
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
class ServiceProcess:
    """One process serving HTTP on 127.0.0.1:`port`."""

    LOG_NAME: ClassVar[str] = "service.log"
    STOP_TIMEOUT: ClassVar[float] = 10.0
    TAIL_LINES: ClassVar[int] = 30

    name: str
    workdir: Path
    env: dict[str, str]
    port: int
    process: asyncio.subprocess.Process | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / self.LOG_NAME

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def spawn(self, *command: str, **options: Any) -> None:
        """Start `command` in the working directory, its output in the log file."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *command,
                cwd=self.workdir,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                **options,
            )

    async def poll_health(
        self,
        session: aiohttp.ClientSession,
        timeout: float,
        is_up: Callable[[aiohttp.ClientResponse], Any],
        *,
        what: str,
        interval: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Until `await is_up(response)` of GET /healthz is true; fails with the log tail
        after `timeout` seconds or when the process exits."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    assert self.running, f"{self.name} exited early:\n{self.log_tail()}"
                    try:
                        async with session.get(f"{self.url}/healthz", headers=headers) as resp:
                            if await is_up(resp):
                                return
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(interval)  # polling a condition with a deadline
        except TimeoutError:
            raise AssertionError(
                f"{self.name} not {what} within {timeout} s:\n{self.log_tail()}"
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

    async def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM and wait (SIGKILL after `timeout`); the exit code."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout or self.STOP_TIMEOUT)
            except TimeoutError:
                await self.kill()
        return self.process.returncode

    def log_tail(self, lines: int | None = None) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-(lines or self.TAIL_LINES) :])
