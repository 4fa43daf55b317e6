"""Simulator capacity: N simulated devices heartbeating in one process.

Starts a private Mosquitto on a free loopback port, gives N devices
credentials (written to their state files: the anonymous broker accepts any,
and provisioning is not what this measures), starts them as one `Fleet`,
waits until all are online, then measures the process over a steady window:
CPU % (user + system over wall time; 100 = one core) and RSS. Prints one JSON
line.

    .venv/bin/python bench/sim_capacity.py --devices 1000 --interval 5 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.domain.contract import Credentials
from simulator.device import DeviceOptions
from simulator.fleet import Fleet
from simulator.state import DeviceState, StateStore

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_mosquitto(workdir: Path) -> Iterator[int]:
    """A throwaway anonymous Mosquitto on a free port (as tests/support/mosquitto.py does)."""
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 100000\n"
        "max_inflight_messages 2000\n"
        "set_tcp_nodelay true\n"
        "log_type error\n"
    )
    process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise RuntimeError("mosquitto exited at start")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not start listening")
            time.sleep(0.02)  # polling for readiness: the broker gives no other signal
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


def raise_fd_limit() -> None:
    """Each device holds a socket (and so does the broker's side): lift the soft fd limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(
    port: int, state_dir: Path, devices: int, interval: float, duration: float
) -> dict[str, object]:
    for i in range(devices):
        store = StateStore(state_dir / f"bench-{i:05d}", durable=False)
        state = DeviceState(credentials=Credentials(mqtt_user=str(uuid.uuid4()), mqtt_password="x"))
        store.save(state)
    fleet = Fleet(
        "127.0.0.1",
        port,
        state_dir=state_dir,
        options=DeviceOptions(heartbeat_interval=interval, durable=False, keepalive=60),
    )
    rss_before = rss_mb()
    started = time.perf_counter()
    await fleet.resume()
    await fleet.wait_until_online(timeout=max(60.0, devices / 10))
    startup = time.perf_counter() - started

    beats_before = fleet.stats().heartbeats_sent
    cpu_before, wall_before = cpu_seconds(), time.perf_counter()
    await asyncio.sleep(duration)
    cpu_used, wall = cpu_seconds() - cpu_before, time.perf_counter() - wall_before
    stats = fleet.stats()
    rss = rss_mb()
    await fleet.stop()
    expected = devices * wall / interval
    return {
        "bench": "sim_capacity",
        "devices": devices,
        "online": stats.online,
        "heartbeat_interval_s": interval,
        "window_s": round(wall, 1),
        "startup_s": round(startup, 2),
        "cpu_percent": round(100 * cpu_used / wall, 1),
        "rss_mb": round(rss, 1),
        "rss_mb_per_device": round((rss - rss_before) / devices, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "heartbeats_in_window": stats.heartbeats_sent - beats_before,
        "heartbeat_ratio": round((stats.heartbeats_sent - beats_before) / expected, 3),
        "connection_losses": stats.connection_losses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args()
    raise_fd_limit()
    with (
        tempfile.TemporaryDirectory(prefix="sim-capacity-") as tmp,
        private_mosquitto(Path(tmp)) as port,
    ):
        result = asyncio.run(
            measure(port, Path(tmp) / "sim", args.devices, args.interval, args.duration)
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
