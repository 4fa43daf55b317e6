"""The real upstream `locker-client` (Node), unmodified, and its relay board, for tests.

    client_build = build_client()            # once per session (cached on disk)
    with relay_board(tmp_path) as board:     # ../shared/peer/modbus_board.py on a pty
        client = RealClient(client_build, tmp_path / "site", board.port_path, ...)
        client.start(token=...)
        client.wait_log("Provisioning completed successfully", 30)
        ...
        client.kill()                        # SIGKILL: the broker publishes its last will
        board.flashes()                      # relay flashes counted from the board's log

The build copies `../shared/peer/locker-client` (resolved beside the repository, read only)
into a cache directory, runs `npm ci && npx tsc` there and keeps the result under a key of
the sources' content, so a session builds at most once. The shared copy lacks its
`src/config/` (the client's `.gitignore` rule `config/` dropped it); then, and only then,
our stand-in for those five configuration modules (`tests/support/peer_client_config`, see
its README) is copied in, and the client's own tests of them are run once as a check.

Where `node`/`npm` cannot be had the caller skips (`node_missing()` says why); under
`CI=true` a missing node is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
SHARED_PEER = REPO.parent / "shared" / "peer"
CLIENT_SOURCE = SHARED_PEER / "locker-client"
BOARD_SCRIPT = SHARED_PEER / "modbus_board.py"
STAND_IN = Path(__file__).resolve().parent / "peer_client_config"
CACHE_ROOT = Path(os.environ.get("LOCKER_CLIENT_CACHE", str(REPO / ".cache" / "locker-client")))
OWN_CONFIG_TESTS = (
    "runtimeConfig.test.js",
    "applyConfigService.test.js",
    "mqttConfig.test.js",
    "modbusConfigSemantics.test.js",
)
_FLASH = re.compile(r"FLASH ON slave=(\d+) relay=(\d+)")


def node_missing() -> str | None:
    """Why the real client cannot run here (None: it can)."""
    for tool in ("node", "npm", "npx"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (.ci/run installs nodejs and npm)"
    if not (CLIENT_SOURCE / "package.json").is_file():
        return f"the upstream client is not at {CLIENT_SOURCE}"
    if not BOARD_SCRIPT.is_file():
        return f"the relay board stand-in is not at {BOARD_SCRIPT}"
    return None


def require_node() -> None:
    """Skip the calling test where node cannot be had; fail instead under CI=true."""
    import pytest

    reason = node_missing()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"real-client interop cannot run in CI: {reason}")
    pytest.skip(f"real-client interop: {reason}")


@dataclass(frozen=True)
class ClientBuild:
    """A built client: `dist/app.js` under `root`."""

    root: Path
    stand_in_config: bool  # our src/config stand-in was needed (the shared copy lacks it)

    @property
    def app(self) -> Path:
        return self.root / "dist" / "app.js"


def _source_key() -> str:
    digest = hashlib.sha256()
    for base in (CLIENT_SOURCE, STAND_IN):
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            if "node_modules" in path.parts or "dist" in path.parts:
                continue
            digest.update(str(path.relative_to(base)).encode())
            digest.update(path.read_bytes())
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    digest.update(node.stdout.encode())
    return digest.hexdigest()[:16]


def build_client(timeout: float = 600.0) -> ClientBuild:
    """Copy, `npm ci`, `npx tsc` (once per source key; a file lock keeps parallel sessions
    from building the same thing twice). tsc's two known type errors in modbusService.ts
    do not stop the emit; a missing `dist/app.js` does fail."""
    key = _source_key()
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    root = CACHE_ROOT / key
    stand_in = not (CLIENT_SOURCE / "src" / "config").is_dir()
    with (CACHE_ROOT / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / ".built"
        if done.is_file():
            return ClientBuild(root, stand_in)
        if root.exists():
            shutil.rmtree(root)
        shutil.copytree(CLIENT_SOURCE, root, ignore=shutil.ignore_patterns("node_modules", "dist"))
        for path in [root, *root.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)  # the shared copy is read-only
        if stand_in:
            shutil.copytree(
                STAND_IN, root / "src" / "config", ignore=shutil.ignore_patterns("*.md")
            )
        log = root / "build.log"
        with log.open("w") as out:
            npm = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"],
                cwd=root,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
            if npm.returncode != 0:
                raise RuntimeError(f"npm ci failed ({npm.returncode}); see {log}")
            subprocess.run(
                ["npx", "tsc"], cwd=root, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            )
        if not (root / "dist" / "app.js").is_file():
            raise RuntimeError(f"tsc emitted no dist/app.js; see {log}")
        if stand_in:
            tests = [str(root / "dist" / "tests" / name) for name in OWN_CONFIG_TESTS]
            own = subprocess.run(
                ["node", "--test", *tests],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if own.returncode != 0:
                raise RuntimeError(
                    "the client's own tests of its config modules fail against our stand-in:\n"
                    + own.stdout[-3000:]
                )
        done.write_text(key)
        return ClientBuild(root, stand_in)


# --- the relay board -------------------------------------------------------------------------


@dataclass
class RelayBoard:
    """`modbus_board.py` on a pty: 8 relays (coils) and 8 door inputs per slave."""

    port_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def flashes(self) -> list[tuple[int, int]]:
        """Every relay flash the board executed, as (slave, relay), in order."""
        return [(int(s), int(r)) for s, r in _FLASH.findall(self.log_text())]

    def force_doors(self, doors: dict[int, dict[int, bool]]) -> None:
        """Set door sensors (slave -> relay address -> open) through the board's doors file."""
        target = self.port_path.parent / "doors.json"
        target.write_text(
            json.dumps({str(s): {str(a): v for a, v in m.items()} for s, m in doors.items()})
        )


@contextlib.contextmanager
def relay_board(
    directory: Path, *, slaves: str = "1", door_open_s: float = 3.0
) -> Iterator[RelayBoard]:
    directory.mkdir(parents=True, exist_ok=True)
    port_path = directory / "ttyLOCKER"
    log_path = directory / "board.log"
    env = {
        **os.environ,
        "SLAVES": slaves,
        "DOOR_OPEN_S": str(door_open_s),
        "DOORS_FILE": str(directory / "doors.json"),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(BOARD_SCRIPT), str(port_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    board = RelayBoard(port_path, log_path, process)
    try:
        _until(lambda: port_path.exists() or process.poll() is not None, 10, "board pty")
        if process.poll() is not None:
            raise RuntimeError(f"relay board exited: {board.log_text()}")
        yield board
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the client --------------------------------------------------------------------------------


def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.05)  # polling a condition with a deadline


@dataclass
class RealClient:
    """One locker-client process with its site directory (`.env`, config, data, log)."""

    build: ClientBuild
    site: Path
    board_port: Path
    broker_url: str
    provisioning_user: str
    provisioning_password: str
    heartbeat_interval: int = 15
    flash_ms: int = 200
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: IO[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        (self.site / "config").mkdir(parents=True, exist_ok=True)
        (self.site / "data").mkdir(parents=True, exist_ok=True)
        (self.site / "config" / "locker-config.yml").write_text(
            "modbus:\n"
            f"  port: {self.board_port}\n"
            "  baudRate: 9600\n"
            "  timeout: 1000\n"
            f"  flashDurationMs: {self.flash_ms}\n"
            "mqtt:\n"
            f"  heartbeatInterval: {self.heartbeat_interval}\n"
        )

    @property
    def log_path(self) -> Path:
        return self.site / "client.log"

    @property
    def data(self) -> Path:
        return self.site / "data"

    def write_env(self, token: str | None) -> None:
        lines = [
            f"MQTT_BROKER_URL={self.broker_url}",
            f"MQTT_DEFAULT_USERNAME={self.provisioning_user}",
            f"MQTT_DEFAULT_PASSWORD={self.provisioning_password}",
            f"DATA_DIR={self.data}",
            f"CONFIG_DIR={self.site / 'config'}",
            "LOG_LEVEL=debug",
            # reconnect fast after a broker restart (the client's own default is 5 s)
            "MQTT_RECONNECT_PERIOD_MS=500",
        ]
        if token:
            lines.insert(0, f"PROVISIONING_TOKEN={token}")
        (self.site / ".env").write_text("\n".join(lines) + "\n")

    def start(self, token: str | None = None) -> None:
        """Start `node dist/app.js` in the site directory (it reads `.env` from there)."""
        assert not self.running, "already running"
        self.write_env(token)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MQTT_", "PROVISIONING_", "DATA_DIR", "CONFIG_DIR", "LOG_"))
        }
        self._log = self.log_path.open("ab")
        self._log.write(f"\n===== start {self.starts + 1} =====\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            ["node", str(self.build.app)],
            cwd=self.site,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        """Signal the process (SIGKILL: power loss, no goodbye) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.exit_code

    def stop(self) -> int | None:
        """SIGTERM: the client's graceful shutdown."""
        return self.kill(signal.SIGTERM)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_since_start(self) -> str:
        text = self.log_text()
        marker = f"===== start {self.starts} ====="
        return text[text.rfind(marker) :] if marker in text else text

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_log(self, needle: str, timeout: float, *, since_start: bool = True) -> None:
        """Until the client's log (of its current run) contains `needle`."""
        read = self.log_since_start if since_start else self.log_text
        try:
            _until(
                lambda: needle in read() or (self.process is not None and not self.running),
                timeout,
                f"client log line {needle!r}",
            )
        except TimeoutError:
            raise AssertionError(
                f"client never logged {needle!r} within {timeout} s:\n{self.log_tail()}"
            ) from None
        assert needle in read(), f"client exited ({self.exit_code}):\n{self.log_tail()}"

    def credentials(self) -> dict[str, str] | None:
        path = self.data / ".mqtt-credentials.json"
        return json.loads(path.read_text()) if path.exists() else None
