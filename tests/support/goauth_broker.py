"""A private Mosquitto 2.0 with the real mosquitto-go-auth plugin in front of a given hook.

The broker runs from `deploy/mosquitto.conf` AS SHIPPED: the file is read line by line
and only ports, paths, the hook's address and the secret are substituted (plus `user
root` when the tests run as root, so the persistence folder under the test's tmp_path
needs no chown). A shipped option that the substitution expects but no longer finds
fails loudly (`ShippedConfigChanged`), so the tests can never drift from the file
operators install.

    with run_goauth_mosquitto(tmp_path, hook_port=8081, secret=SECRET) as broker:
        ...  # broker.host, broker.port (plain), broker.tls_port, broker.ca_file

The plugin is `shared/goauth/go-auth.so` next to the repository (CI: `../shared`
relative to the clone), or `GOAUTH_SO` in the environment. `goauth_available()` says
whether both it and the mosquitto binary exist; tests skip only when they do not.

Mosquitto's log (stderr, which carries go-auth's lines too) goes to `broker.log_path`:
`broker.log_text()` / `broker.log_tail()` for assertions and failure messages.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.mosquitto import MOSQUITTO, free_port, mosquitto_available

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SHIPPED_CONFIG = DEPLOY / "mosquitto.conf"
MAKE_CERTS = DEPLOY / "make-certs.sh"
SECRET_PLACEHOLDER = "CHANGE_ME_MOSQ_SECRET"


def goauth_plugin() -> Path:
    """Where go-auth.so is: `GOAUTH_SO`, else `shared/goauth/go-auth.so` beside the repo.

    The worktrees of this project live next to `shared/` (`/work/<tree>` and
    `/work/shared`), CI clones next to it (`../shared`): both are the repo's parent."""
    override = os.environ.get("GOAUTH_SO")
    if override:
        return Path(override)
    return REPO.parent / "shared" / "goauth" / "go-auth.so"


def goauth_available() -> bool:
    """The mosquitto binary and the go-auth plugin are both present."""
    return mosquitto_available() and goauth_plugin().is_file()


class ShippedConfigChanged(AssertionError):
    """deploy/mosquitto.conf no longer has an option the test substitution relies on."""


@functools.cache
def test_certificates() -> Path:
    """A CA and a server certificate for 127.0.0.1/localhost, made once per test run with
    the documented procedure (`deploy/make-certs.sh`)."""
    directory = Path(tempfile.mkdtemp(prefix="locker-test-certs-")) / "certs"
    atexit.register(shutil.rmtree, directory.parent, True)  # gone with the test run
    subprocess.run(
        ["sh", str(MAKE_CERTS), str(directory), "localhost", "127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return directory


def shipped_config_for(
    *,
    port: int,
    tls_port: int,
    hook_host: str,
    hook_port: int,
    secret: str,
    persistence_dir: Path,
    certs_dir: Path,
    plugin: Path,
    as_root: bool,
    config_text: str | None = None,
) -> str:
    """deploy/mosquitto.conf with only ports, paths, addresses and secrets substituted."""
    text = SHIPPED_CONFIG.read_text() if config_text is None else config_text
    if SECRET_PLACEHOLDER not in text:
        raise ShippedConfigChanged(f"{SECRET_PLACEHOLDER} is gone from the shipped config")
    listeners = iter([str(port), str(tls_port)])
    values: dict[str, str] = {
        "persistence_location": f"{persistence_dir}/",
        "auth_plugin": str(plugin),
        "certfile": str(certs_dir / "server.crt"),
        "keyfile": str(certs_dir / "server.key"),
        "auth_opt_http_host": hook_host,
        "auth_opt_http_port": str(hook_port),
    }
    if as_root:
        values["user"] = "root"
    seen: set[str] = set()
    out: list[str] = []
    for line in text.splitlines():
        key = line.partition(" ")[0]
        if key == "listener":
            try:
                # `listener PORT ADDRESS`: our port, loopback only.
                line = f"listener {next(listeners)} 127.0.0.1"
            except StopIteration:
                raise ShippedConfigChanged(
                    "more than two listeners in the shipped config"
                ) from None
            seen.add("listener")
        elif key in values:
            line = f"{key} {values[key]}"
            seen.add(key)
        if not line.startswith("# "):  # prose comments keep naming the placeholder
            line = line.replace(SECRET_PLACEHOLDER, secret)
        out.append(line)
    missing = (set(values) | {"listener"}) - seen
    if missing:
        raise ShippedConfigChanged(f"the shipped config no longer sets {sorted(missing)}")
    if next(listeners, None) is not None:
        raise ShippedConfigChanged("the shipped config has fewer than two listeners (plain, TLS)")
    return "\n".join(out) + "\n"


@dataclass
class GoAuthBroker:
    """A running Mosquitto with go-auth, started from the shipped config."""

    host: str
    port: int
    tls_port: int
    config: Path
    log_path: Path
    certs_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> Path:
        """The CA that signed the TLS listener's certificate (what a device trusts)."""
        return self.certs_dir / "ca.crt"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError("mosquitto is already running")
        self.process = _spawn(self.config, self.port, self.log_path)

    def stop(self) -> None:
        """SIGTERM (Mosquitto writes its persistence file), SIGKILL after 5 s."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def restart(self) -> None:
        """Stop and start on the same ports; persistent sessions survive (persistence on)."""
        self.stop()
        self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_count(self, pattern: str) -> int:
        """How many log lines match the regular expression `pattern`."""
        regex = re.compile(pattern)
        return sum(1 for line in self.log_text().splitlines() if regex.search(line))


def _spawn(config: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [MOSQUITTO, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mosquitto (go-auth) exited at start:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return process
        # Polling a socket for readiness: the broker gives no other signal.
        time.sleep(0.02)
    process.kill()
    process.wait(timeout=5)
    raise RuntimeError("mosquitto (go-auth) did not start listening within 10 s")


@contextlib.contextmanager
def run_goauth_mosquitto(
    workdir: Path,
    *,
    hook_port: int,
    secret: str,
    hook_host: str = "127.0.0.1",
    config_text: str | None = None,
) -> Iterator[GoAuthBroker]:
    """Start Mosquitto + go-auth from deploy/mosquitto.conf asking the hook on
    `hook_host:hook_port` with `secret`; stop it on exit.

    The broker starts without the hook running (go-auth asks only when a client comes).
    `config_text` replaces the shipped file's text (for a test of the file itself, e.g.
    with an option changed the way the file's comments tell an operator to).
    """
    if not goauth_available():
        raise RuntimeError(f"mosquitto or {goauth_plugin()} missing (see goauth_available())")
    workdir = workdir / f"goauth-mosquitto-{free_port()}"
    persistence = workdir / "data"
    persistence.mkdir(parents=True)
    port, tls_port = free_port(), free_port()
    certs = test_certificates()
    config = workdir / "mosquitto.conf"
    config.write_text(
        shipped_config_for(
            port=port,
            tls_port=tls_port,
            hook_host=hook_host,
            hook_port=hook_port,
            secret=secret,
            persistence_dir=persistence,
            certs_dir=certs,
            plugin=goauth_plugin(),
            as_root=os.geteuid() == 0,
            config_text=config_text,
        )
    )
    config.chmod(0o600)  # it holds the secret
    broker = GoAuthBroker(
        host="127.0.0.1",
        port=port,
        tls_port=tls_port,
        config=config,
        log_path=workdir / "mosquitto.log",
        certs_dir=certs,
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
