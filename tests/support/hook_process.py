"""`locker-console hook` as a real process for the deployment tests.

    hook = hook_process("hook", tmp_path / "hook", settings)            # its own port
    hook = hook_process(..., listen=ListeningSocket.open())             # socket activation
    await hook.start(); await hook.wait_ready(session, 10)
    ...; await hook.stop()  # SIGTERM, as systemctl restart does

With `listen`, the test plays systemd's part in socket activation: it holds the listening
socket for as long as it likes and hands it to every process it starts (LISTEN_FDS=1,
LISTEN_PID = the process's own pid, the socket as fd 3), so connections made between one
process and the next wait in the socket's backlog.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import aiohttp

from tests.support.mosquitto import free_port
from tests.support.service_process import ServiceProcess, clean_env

SD_LISTEN_FDS_START = 3


@dataclass
class ListeningSocket:
    """A listening TCP socket on 127.0.0.1 that outlives the processes serving it."""

    sock: socket.socket

    @classmethod
    def open(cls, port: int | None = None) -> ListeningSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port or free_port()))
        sock.listen(1024)
        sock.set_inheritable(True)
        return cls(sock)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()


@dataclass
class HookProcess(ServiceProcess):
    """One `locker-console hook` process (started again by `start()` after a stop)."""

    LOG_NAME: ClassVar[str] = "hook.log"

    listen: ListeningSocket | None = None
    started_at: float = 0.0

    async def start(self) -> None:
        command = [sys.executable, "-m", "console.cli", "hook"]
        pass_fds: tuple[int, ...] = ()
        if self.listen is not None:
            # systemd's protocol: the socket is fd 3 and LISTEN_PID the server's own pid,
            # which only the child knows: a small launcher sets both and execs (same pid).
            fd = self.listen.sock.fileno()
            launcher = (
                "import os, sys; "
                f"os.dup2({fd}, {SD_LISTEN_FDS_START}); os.close({fd}); "
                "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
                "os.execv(sys.argv[1], sys.argv[1:])"
            )
            command = [sys.executable, "-c", launcher, *command]
            pass_fds = (fd,)
        self.started_at = time.monotonic()
        await self.spawn(*command, pass_fds=pass_fds)

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float) -> float:
        """Until this process's /healthz answers 200 (another hook process on the same port
        does not count); returns the seconds since `start()`."""

        async def answered_by_this_process(resp: aiohttp.ClientResponse) -> bool:
            body = await resp.json() if resp.status == 200 else {}
            assert self.process is not None
            return bool(body.get("pid") == self.process.pid)

        # A new connection each time: SO_REUSEPORT spreads connections.
        await self.poll_health(
            session,
            timeout,
            answered_by_this_process,
            what="ready",
            interval=0.02,
            headers={"Connection": "close"},
        )
        return time.monotonic() - self.started_at


def hook_process(
    name: str,
    workdir: Path,
    settings: Mapping[str, str],
    *,
    port: int | None = None,
    listen: ListeningSocket | None = None,
) -> HookProcess:
    """A hook process with `settings` (DATABASE_URL, secrets...) on `port` (default: the
    inherited socket's, else a free one)."""
    chosen = listen.port if listen is not None else (port or free_port())
    env = clean_env(
        LOCKER_DATA_DIR=str(workdir / "data"),
        HOOK_HOST="127.0.0.1",
        HOOK_PORT=str(chosen),
        **dict(settings),
    )
    env.pop("LISTEN_FDS", None)
    env.pop("LISTEN_PID", None)
    return HookProcess(name, workdir, env, chosen, listen=listen)
