"""`locker-console --demo` in a real terminal (tmux), as an operator would run it.

On a fresh directory the demo fleet (12 banks, embedded broker, SQLite under ./data)
shows every bank `online` within 15 s; `q` quits and nothing is left running (the
process, its broker and HTTP ports, the tmux session). A second `--demo` in the same
directory resumes the same 12 banks instead of creating new ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from backend.runner import port_free
from tests.support.mosquitto import free_port
from tests.support.service_process import clean_env

TMUX = shutil.which("tmux")
pytestmark = [
    pytest.mark.skipif(TMUX is None, reason="tmux not installed"),
    pytest.mark.timeout(180),
]
T = TypeVar("T")
DEMO_BANKS = 12
ONLINE_WITHIN = 15.0
SUMMARY = re.compile(r"(\d+) banks: (\d+) online")


def wait_for(probe: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float) -> T:
    """Poll `probe` until `done(value)`; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s; last:\n{value}")
        time.sleep(0.1)  # polling a condition with a deadline


def locker_console() -> list[str]:
    """The installed console script, as an operator types it."""
    script = Path(sys.executable).with_name("locker-console")
    return [str(script)] if script.exists() else [sys.executable, "-m", "console.cli"]


@dataclass
class Terminal:
    """A private tmux server (its own socket) running one session."""

    socket: Path
    session: str = "demo"

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert TMUX is not None
        return subprocess.run(
            [TMUX, "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=10,
        )

    def start(self, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        assert TMUX is not None
        subprocess.run(
            [
                TMUX,
                "-S",
                str(self.socket),
                "new-session",
                "-d",
                "-s",
                self.session,
                "-x",
                "120",
                "-y",
                "40",
                "-c",
                str(cwd),
                # exec: the pane's process is the console itself, not a shell around it
                "exec " + " ".join(f"'{part}'" for part in command),
            ],
            env=env,
            cwd=cwd,
            check=True,
            timeout=10,
        )

    def screen(self) -> str:
        result = self.tmux("capture-pane", "-p", "-t", self.session, check=False)
        return result.stdout if result.returncode == 0 else ""

    def pane_pid(self) -> int:
        return int(self.tmux("display-message", "-p", "-t", self.session, "#{pane_pid}").stdout)

    def alive(self) -> bool:
        return self.tmux("has-session", "-t", self.session, check=False).returncode == 0

    def kill(self) -> None:
        self.tmux("kill-server", check=False)


def process_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (exited, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(tmp_path / "tmux.sock")
    try:
        yield term
    finally:
        term.kill()


def online_summary(screen: str) -> tuple[int, int] | None:
    match = SUMMARY.search(screen)
    return (int(match.group(1)), int(match.group(2))) if match else None


def run_demo_once(
    terminal: Terminal,
    workdir: Path,
    env: dict[str, str],
    ports: tuple[int, int],
    before_quit: Callable[[], None] = lambda: None,
    extra_args: tuple[str, ...] = (),
    released: Callable[[str, int], bool] = port_free,
) -> float:
    """Start the demo, wait for every bank online on screen, run `before_quit`, quit with
    `q`; the seconds it took to show them online."""
    started = time.monotonic()
    terminal.start([*locker_console(), "--demo", *extra_args], workdir, env)
    pid = terminal.pane_pid()
    wait_for(
        terminal.screen,
        lambda s: (
            online_summary(s) == (DEMO_BANKS, DEMO_BANKS)
            and len(re.findall(r"\bDemo \d+\b.*\bonline\b", s)) == DEMO_BANKS
        ),
        f"{DEMO_BANKS} banks online on screen",
        ONLINE_WITHIN,
    )
    seconds = time.monotonic() - started
    before_quit()
    terminal.tmux("send-keys", "-t", terminal.session, "q")
    # Standalone, q asks before stopping the services the fleet depends on: confirm.
    wait_for(terminal.screen, lambda s: "Quit and stop the services?" in s, "quit prompt", 30)
    terminal.tmux("send-keys", "-t", terminal.session, "y")
    wait_for(terminal.alive, lambda alive: not alive, "the tmux session to end after q", 30)
    wait_for(lambda: process_running(pid), lambda running: not running, "the console to exit", 30)
    assert terminal.tmux("list-sessions", check=False).returncode != 0  # tmux server gone too
    assert all(released("127.0.0.1", port) for port in ports), "a port is still bound"
    return seconds


def nothing_listens(host: str, port: int) -> bool:
    """No process listens on the port (TIME_WAIT sockets of closed connections aside)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _beat_since(bank: dict[str, object], moment: datetime) -> bool:
    beat = bank.get("last_heartbeat_at")
    return isinstance(beat, str) and datetime.fromisoformat(beat) >= moment


def bank_list(workdir: Path, env: dict[str, str]) -> list[dict[str, object]]:
    result = subprocess.run(
        [*locker_console(), "bank", "list", "--json"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    banks: list[dict[str, object]] = json.loads(result.stdout)
    return banks


def test_demo_in_tmux_shows_online_banks_quits_cleanly_and_resumes(
    tmp_path: Path, terminal: Terminal
) -> None:
    workdir = tmp_path / "ops"
    workdir.mkdir()
    mqtt_port, http_port = free_port(), free_port()
    env = clean_env(MQTT_PORT=str(mqtt_port), HTTP_PORT=str(http_port), TERM="xterm-256color")

    first = run_demo_once(terminal, workdir, env, (mqtt_port, http_port))
    banks = bank_list(workdir, env)
    assert len(banks) == DEMO_BANKS
    uuids = {bank["uuid"] for bank in banks}
    assert (workdir / "data" / "locker.db").exists()  # everything under ./data

    # Online on screen could be the first run's state; the resumed devices must beat anew.
    restarted = datetime.now(UTC)

    def all_beat_again() -> None:
        wait_for(
            lambda: bank_list(workdir, env),
            lambda banks: (
                len(banks) == DEMO_BANKS and all(_beat_since(bank, restarted) for bank in banks)
            ),
            "every demo bank heartbeating again after the restart",
            ONLINE_WITHIN,
        )

    second = run_demo_once(terminal, workdir, env, (mqtt_port, http_port), all_beat_again)
    again = bank_list(workdir, env)
    assert len(again) == DEMO_BANKS
    assert {bank["uuid"] for bank in again} == uuids  # the same banks, resumed
    assert len(list((workdir / "data" / "sim" / "demo").iterdir())) == DEMO_BANKS
    print(f"online on screen: first start {first:.1f} s, second {second:.1f} s")


@pytest.mark.mosquitto
@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto")
def test_demo_with_the_embedded_mosquitto_shows_twelve_banks_online(
    tmp_path: Path, terminal: Terminal
) -> None:
    """`--demo --embedded-broker mosquitto`: a private Mosquitto with its dynamic-security
    plugin (AUTH_MODE=dynsec), one account per demo bank; quitting stops it."""
    workdir = tmp_path / "ops"
    workdir.mkdir()
    mqtt_port, http_port = free_port(), free_port()
    env = clean_env(MQTT_PORT=str(mqtt_port), HTTP_PORT=str(http_port), TERM="xterm-256color")
    seconds = run_demo_once(
        terminal,
        workdir,
        env,
        (mqtt_port, http_port),
        extra_args=("--embedded-broker", "mosquitto"),
        released=nothing_listens,  # Mosquitto closes its clients' sockets: TIME_WAIT stays
    )
    folder = workdir / "data" / "mosquitto"
    accounts = json.loads((folder / "dynamic-security.json").read_text())
    banks = {b["uuid"] for b in bank_list(workdir, env)}
    assert len(banks) == DEMO_BANKS
    assert banks <= {c["username"] for c in accounts["clients"]}
    assert not (folder / "mosquitto.pid").exists()  # stopped with us
    print(f"online on screen with the embedded Mosquitto: {seconds:.1f} s")
