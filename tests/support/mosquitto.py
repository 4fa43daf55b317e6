"""Start a private Mosquitto broker on a free loopback port for one test or module."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


_HANDED_OUT: set[int] = set()
_PORTS = random.Random()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Chosen below the kernel's ephemeral range (32768-60999 on Linux), where port 0 would
    pick: a port from there can be taken by any outgoing connection (a test's own client,
    another suite on the machine) in the moment between this check and the server's bind.
    Never the same port twice in one test process."""
    for _ in range(200):
        port = _PORTS.randrange(20_000, 32_000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free TCP port in 20000-32000 on 127.0.0.1")


def mosquitto_available() -> bool:
    return Path(MOSQUITTO).exists()


@dataclass
class MosquittoBroker:
    """A running private mosquitto process."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    config: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def restart(self) -> None:
        """Stop and start again on the same port (sessions in memory are lost)."""
        self.stop()
        self.process = _spawn(self.config, self.port)


def _spawn(config: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"mosquitto exited: {err}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return process
        # Polling a socket for readiness: the broker gives no other signal.
        time.sleep(0.02)
    process.kill()
    raise RuntimeError("mosquitto did not start listening within 10 s")


@contextlib.contextmanager
def run_mosquitto(
    workdir: Path, extra_config: str = "", *, tcp_nodelay: bool = True
) -> Iterator[MosquittoBroker]:
    """Run mosquitto with anonymous access on a free port; extra_config is appended.
    `set_tcp_nodelay true` as in deploy/mosquitto.conf unless `tcp_nodelay` is False."""
    port = free_port()
    config = workdir / f"mosquitto-{port}.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 100000\n"
        "max_inflight_messages 2000\n"  # as deployed: the backend's window (mqtt/acks.py)
        f"set_tcp_nodelay {'true' if tcp_nodelay else 'false'}\n"
        "log_type error\n" + extra_config
    )
    broker = MosquittoBroker("127.0.0.1", port, _spawn(config, port), config)
    try:
        yield broker
    finally:
        broker.stop()
