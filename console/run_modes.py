"""Run modes (`RunMode`): standalone console, headless backend, demo, attach; and the
`simulate` and `hook` processes.

Only the TUI modes import Textual (lazily); `--headless` and `simulate` never do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.config import Settings, SettingsError, load_settings
from backend.domain.errors import DomainError
from backend.run_mode import RunMode
from console.logging_setup import configure
from console.progress import progress

if TYPE_CHECKING:
    from simulator.fleet import Fleet


def _port_env_set() -> bool:
    return bool(os.environ.get("MQTT_PORT"))


def run(args: argparse.Namespace) -> int:
    """Start the requested long-running run mode; returns the exit code."""
    if args.command == "hook":
        return _run_hook()
    embedded = getattr(args, "embedded_broker", None)
    settings = load_settings(locker_broker=embedded) if embedded else load_settings()
    if args.command == "simulate":
        configure(settings, to_file=False)
        return _run(_simulate(settings, args))
    if args.command == "attach":
        return _run(_attach(settings, args))
    if args.headless:
        if args.demo or args.readonly:
            raise SettingsError("--headless runs no console: drop --demo/--readonly")
        configure(settings, to_file=False)
        from backend.runner import run_headless

        return _run(run_headless(settings))
    if args.demo:
        settings = _demo_settings(settings)
    log_path = configure(settings, to_file=True)
    return _run(_standalone(settings, args, log_path))


def _run_hook() -> int:
    """`locker-console hook`: settings read as they are (no secret is ever generated)."""
    from pydantic import ValidationError

    from backend.config import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first.get("loc") else "setting"
        raise SettingsError(f"{name}: {first.get('msg', 'invalid value')}") from None
    configure(settings, to_file=False)
    from backend.hook_process import run_hook

    # Not `_run`: it imports backend.runner, i.e. the whole backend (3 of the hook's 5 s of
    # start on a busy machine); the hook's start time is what its restart costs the fleet.
    return _run(run_hook(settings), startup_errors=())


def _run(main: Awaitable[Any], startup_errors: tuple[type[Exception], ...] | None = None) -> int:
    """Run until done or SIGINT/SIGTERM; startup problems are one line, exit 1."""
    if startup_errors is None:
        from backend.runner import StartupError

        startup_errors = (StartupError,)

    async def runner() -> None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    caught: tuple[type[Exception], ...] = (*startup_errors, SettingsError, DomainError, ValueError)
    try:
        asyncio.run(runner())
    except caught as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _demo_settings(settings: Settings) -> Settings:
    """`--demo` with no MQTT_PORT takes a free port when 1883 is busy (its devices are
    in-process); likewise for HTTP_PORT when 8080 is taken."""
    from backend.runner import free_port, port_free

    update: dict[str, Any] = {}
    mqtt_busy = not port_free("127.0.0.1", settings.mqtt_port)
    if settings.embedded_broker and not _port_env_set() and mqtt_busy:
        update["mqtt_port"] = free_port()
    if not os.environ.get("HTTP_PORT") and not port_free(settings.http_host, settings.http_port):
        update["http_port"] = free_port(settings.http_host)
    return settings.model_copy(update=update) if update else settings


async def _standalone(settings: Settings, args: argparse.Namespace, log_path: Any) -> None:
    from backend.attribution import current_origin, local_origin
    from backend.gateway import InProcessGateway
    from backend.runner import BackendServices
    from backend.service import default_actor
    from console.app import LockerConsoleApp

    current_origin.set(local_origin())  # the operator's actions: who, and from where
    services = BackendServices(
        settings, run_mode=RunMode.DEMO if args.demo else RunMode.STANDALONE, tune_gc=True
    )
    await services.start()
    fleet_task: asyncio.Task[None] | None = None
    try:
        if args.demo:
            from console.demo import run_demo_fleet

            fleet_task = asyncio.create_task(run_demo_fleet(services, args.banks))
        state = services.runtime.state
        probe = services.runtime.connection.probe
        gateway = InProcessGateway(
            services.service,
            actor=default_actor(),
            # the console says so when our session stops receiving (DESIGN section 4)
            broker_connected=lambda: state.connected and probe.problem() is None,
            broker_detail=lambda: probe.problem() or state.last_error or "",
        )
        app = LockerConsoleApp(gateway, readonly=args.readonly)
        await app.run_async()
    finally:
        if fleet_task is not None:
            fleet_task.cancel()
            with contextlib.suppress(BaseException):
                await fleet_task
        await services.stop()


def read_tokens(given: list[str], files: list[str]) -> list[str]:
    """Tokens from `--token` values (`-` = one a line from stdin) and `--token-file` paths
    (one a line), so none need be on a command line where `ps` shows it (issue 14)."""
    tokens: list[str] = []
    for value in given:
        if value == "-":
            tokens += [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
        else:
            tokens.append(value)
    for path in files:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise SettingsError(f"--token-file {path}: {why}") from None
        found = [line.strip() for line in text.splitlines() if line.strip()]
        if not found:
            raise SettingsError(f"--token-file {path}: no token in the file")
        tokens += found
    return tokens


async def _attach(settings: Settings, args: argparse.Namespace) -> None:
    from backend.gc_tuning import tune_gc
    from backend.http.client_gateway import HttpGateway
    from console.app import LockerConsoleApp

    url = args.url or f"http://{settings.http_host}:{settings.http_port}"
    tokens = read_tokens(
        [args.token] if args.token else [], [args.token_file] if args.token_file else []
    )
    env_file = os.environ.get("LOCKER_API_TOKEN_FILE")
    if not tokens and env_file:
        tokens = read_tokens([], [env_file])
    token = tokens[0] if tokens else os.environ.get("LOCKER_API_TOKEN")
    if not token:
        raise SettingsError(
            "attach needs --token-file PATH, --token - (stdin), LOCKER_API_TOKEN_FILE or "
            "LOCKER_API_TOKEN: see `api-token create`"
        )
    configure(settings, to_file=True)
    gateway = HttpGateway(url, token)
    tune_gc()
    try:
        await gateway.whoami()  # fail fast with one line if unreachable or the token is bad
        app = LockerConsoleApp(
            gateway,
            readonly=args.attach_readonly,
            run_mode=RunMode.ATTACH,
            role=gateway.role or "operator",
        )
        await app.run_async()
    finally:
        await gateway.close()


def _ramp_up_progress(fleet: Fleet) -> None:
    """Show the devices coming online (in the background; the simulator runs on)."""

    async def watch() -> None:
        total = len(fleet)
        with progress("simulated devices online", total) as report:
            while (online := fleet.stats().online) < total:
                report.update(online)
                await asyncio.sleep(0.5)
            report.update(total)

    task = asyncio.get_running_loop().create_task(watch())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[asyncio.Task[None]] = set()


async def _simulate(settings: Settings, args: argparse.Namespace) -> None:
    from backend.service import LockerService
    from simulator.cli import run_simulator
    from simulator.device import DeviceOptions
    from simulator.faults import Faults

    host, port = settings.mqtt_host or "127.0.0.1", settings.mqtt_port
    if args.broker:
        host, _, port_text = args.broker.rpartition(":")
        if not host or not port_text.isdigit():
            raise SettingsError("--broker must be HOST:PORT")
        port = int(port_text)
    tokens: list[str] | None = read_tokens(args.token or [], args.token_file or []) or None
    if args.banks:
        service = LockerService(settings)
        try:
            if service.db.dialect == "sqlite":
                await service.migrate()
            created = []
            with progress("creating simulated banks", args.banks) as report:
                for i in range(args.banks):
                    created.append(await service.create_bank(f"Sim {i + 1:03d}", "simulator", 12))
                    report.update(i + 1)
        finally:
            service.close()
        tokens = (tokens or []) + [c.token for c in created]
    faults = Faults(
        duplicate_rate=args.duplicate_rate,
        drop_rate=args.drop_rate,
        jam_rate=args.jam_rate,
        latency_seconds=args.latency,
    )
    await run_simulator(
        host,
        port,
        on_started=_ramp_up_progress,
        tokens=tokens,
        state_dir=Path(args.state_dir) if args.state_dir else settings.locker_data_dir / "sim",
        provisioning_user=settings.mqtt_provisioning_user,
        provisioning_password=settings.secret("mqtt_provisioning_password"),
        faults=faults,
        upstream=args.dialect == "openlocker",
        # dynsec admits a bank only with the client id it registered with
        options=DeviceOptions(pinned_client_id=settings.dynsec),
    )
