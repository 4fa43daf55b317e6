"""A private Mosquitto as the embedded broker (`LOCKER_BROKER=mosquitto`,
`--embedded-broker mosquitto`), in dynsec mode.

Everything lives under `LOCKER_DATA_DIR/mosquitto/` (folder 0700, files 0600):
`mosquitto.conf` (written at every start), `dynamic-security.json` (the plugin's accounts;
created with only our admin account, whose password is re-set at every start),
`provisioning.acl` (the `%c` pattern of the provisioning reply), `mosquitto.db`
(persistence), `mosquitto.log` and `mosquitto.pid`. The broker listens on 127.0.0.1 only,
runs as the current user, dies with us (`PR_SET_PDEATHSIG`), and a broker left by a
killed run (its pid in `mosquitto.pid`, its command line naming our config) is stopped
before a new one starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import getpass
import glob
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from backend.broker.errors import BrokerStartError, port_in_use_message
from backend.dynsec.policy import PROVISIONING_ACL_FILE, initial_config, with_admin
from backend.lifecycle import StartStop

log = logging.getLogger(__name__)

PLUGIN_NAME = "mosquitto_dynamic_security.so"
PLUGIN_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib",
    "/usr/local/lib",
)
CONFIG_NAME = "mosquitto.conf"
DYNSEC_NAME = "dynamic-security.json"
ACL_NAME = "provisioning.acl"
PID_NAME = "mosquitto.pid"
LOG_NAME = "mosquitto.log"
START_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )


def find_plugin() -> str | None:
    for folder in PLUGIN_DIRS:
        candidate = Path(folder) / PLUGIN_NAME
        if candidate.exists():
            return str(candidate)
    found = sorted(glob.glob(f"/usr/lib/*/{PLUGIN_NAME}"))
    return found[0] if found else None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


class MosquittoChild(StartStop):
    """A Mosquitto child process with the dynamic-security plugin on 127.0.0.1:`port`."""

    def __init__(
        self,
        *,
        data_dir: Path,
        port: int,
        admin_user: str,
        admin_password: str,
        max_packet_size: int = 131072,
    ) -> None:
        self.dir = (data_dir / "mosquitto").resolve()
        self.port = port
        self.host = "127.0.0.1"
        self._admin_user = admin_user
        self._admin_password = admin_password
        self._max_packet_size = max_packet_size
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.dir / CONFIG_NAME

    @property
    def dynsec_path(self) -> Path:
        return self.dir / DYNSEC_NAME

    # ----- files ---------------------------------------------------------------------

    def prepare(self) -> list[str]:
        """Write config, ACL file and plugin file; returns the command line."""
        mosquitto = find_mosquitto()
        plugin = find_plugin()
        if mosquitto is None:
            raise BrokerStartError(
                "LOCKER_BROKER=mosquitto needs the mosquitto binary (apt-get install mosquitto)"
            )
        if plugin is None:
            raise BrokerStartError(f"LOCKER_BROKER=mosquitto needs {PLUGIN_NAME} (Mosquitto 2.x)")
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        _write_private(self.dir / ACL_NAME, PROVISIONING_ACL_FILE)
        if self.dynsec_path.exists():
            try:
                current = json.loads(self.dynsec_path.read_text())
            except ValueError:
                raise BrokerStartError(
                    f"{self.dynsec_path} is not valid JSON; remove it (banks then need new "
                    "tokens) or restore it from a backup"
                ) from None
            config = with_admin(current, self._admin_user, self._admin_password)
        else:
            config = initial_config(self._admin_user, self._admin_password)
        _write_private(self.dynsec_path, json.dumps(config, indent=2))
        _write_private(
            self.config_path,
            "\n".join(
                [
                    "# written by locker-console at every start of its embedded Mosquitto",
                    "per_listener_settings false",
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous false",
                    f"plugin {plugin}",
                    f"plugin_opt_config_file {self.dynsec_path}",
                    f"acl_file {self.dir / ACL_NAME}",
                    "persistence true",
                    f"persistence_location {self.dir}/",
                    "autosave_interval 60",
                    f"user {getpass.getuser()}",
                    f"log_dest file {self.dir / LOG_NAME}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "connection_messages false",
                    "set_tcp_nodelay true",
                    # the backend's session queues the fleet while it restarts, and
                    # holds unacknowledged only what it is storing (mqtt/acks.py)
                    "max_queued_messages 100000",
                    "max_inflight_messages 2000",
                    f"max_packet_size {self._max_packet_size}",
                    "",
                ]
            ),
        )
        return [mosquitto, "-c", str(self.config_path)]

    # ----- process -------------------------------------------------------------------

    def stop_stale(self) -> bool:
        """Stop a broker a killed run left behind (pid file + our config on its command
        line); True if there was one."""
        pid_file = self.dir / PID_NAME
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            pid_file.unlink(missing_ok=True)
            return False
        if str(self.config_path).encode() not in cmdline:
            pid_file.unlink(missing_ok=True)
            return False  # the pid was reused by another program
        log.warning("stopping the embedded Mosquitto (pid %d) left by an earlier run", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.02)  # waiting for another process to exit: no other signal
        if Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
        return True

    async def start(self) -> None:
        await asyncio.to_thread(self.stop_stale)
        command = self.prepare()
        if not _port_free(self.port):
            raise BrokerStartError(port_in_use_message(self.host, self.port))
        self.process = await asyncio.to_thread(_spawn, command)
        _write_private(self.dir / PID_NAME, f"{self.process.pid}\n")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr
                err = stderr.read().decode(errors="replace") if stderr else ""
                self.process = None
                raise BrokerStartError(
                    f"the embedded Mosquitto exited at start: {err.strip()[-300:]} "
                    f"(see {self.dir / LOG_NAME})"
                )
            if await asyncio.to_thread(_accepting, self.port):
                log.info("embedded Mosquitto (dynsec) on 127.0.0.1:%d", self.port)
                return
            await asyncio.sleep(0.02)  # readiness: the broker gives no other signal
        await self.stop()
        raise BrokerStartError("the embedded Mosquitto did not accept connections within 10 s")

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, 5)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 5)
        if process.stderr is not None:
            process.stderr.close()
        (self.dir / PID_NAME).unlink(missing_ok=True)


def _spawn(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent,  # only a prctl between fork and exec
    )


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _accepting(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False
