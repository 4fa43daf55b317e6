"""`locker-console`: the one entry point (TUI, headless backend, attach, simulator, admin).

This module imports neither Textual nor the TUI: run modes load what they need
lazily, so `--headless` and the admin subcommands never import textual.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Sequence

from backend.config import SettingsError
from backend.domain.errors import DomainError
from backend.file_modes import restrict_new_files

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DEVICE_ERROR = 3
EXIT_EXPIRED = 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="locker-console",
        description="Backend and terminal operations console for fleets of smart lockers.",
    )
    mode = parser.add_argument_group("run modes (no subcommand: the console with its services)")
    mode.add_argument("--headless", action="store_true", help="run only the backend services")
    mode.add_argument("--demo", action="store_true", help="console plus a simulated fleet")
    mode.add_argument("--banks", type=int, default=12, help="banks for --demo (default 12)")
    mode.add_argument("--readonly", action="store_true", help="console without any action")
    mode.add_argument(
        "--embedded-broker",
        choices=["amqtt", "mosquitto"],
        default=None,
        help="embedded broker when MQTT_HOST is unset (LOCKER_BROKER; default amqtt); "
        "mosquitto runs a private Mosquitto with its dynamic-security plugin",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    attach = sub.add_parser("attach", help="run the TUI against a running headless backend")
    attach.add_argument("--url", default=None, help="backend URL (default from HTTP_HOST/PORT)")
    attach.add_argument(
        "--token", default=None, help="API token (operator or app role); `-` reads it from stdin"
    )
    attach.add_argument(
        "--token-file", default=None, help="read the API token from this file (e.g. ForceCommand)"
    )
    attach.add_argument("--readonly", action="store_true", dest="attach_readonly")

    sub.add_parser(
        "hook",
        help="serve only the broker's auth hook on HOOK_HOST:HOOK_PORT (its own process)",
    )

    sim = sub.add_parser("simulate", help="run simulated locker banks against a broker")
    sim.add_argument("--banks", type=int, default=None, help="create and provision N banks")
    sim.add_argument(
        "--token", action="append", default=None, help="provision with token T (`-`: stdin)"
    )
    sim.add_argument(
        "--token-file", action="append", default=None, help="tokens from a file, one a line"
    )
    sim.add_argument("--broker", default=None, help="HOST:PORT (default from MQTT_HOST/PORT)")
    sim.add_argument("--state-dir", default=None, help="device state (default data/sim)")
    sim.add_argument("--duplicate-rate", type=float, default=0.0)
    sim.add_argument("--drop-rate", type=float, default=0.0)
    sim.add_argument("--jam-rate", type=float, default=0.0)
    sim.add_argument("--latency", type=float, default=0.0, help="response latency in seconds")
    sim.add_argument(
        "--dialect",
        choices=["seed", "openlocker"],
        default="seed",
        help="contract the devices speak (openlocker: as the upstream locker-client)",
    )
    sim.add_argument(
        "--upstream",
        dest="dialect",
        action="store_const",
        const="openlocker",
        help="alias of --dialect openlocker",
    )

    bank = sub.add_parser("bank", help="create, update, list, show, reissue tokens, revoke")
    bank_sub = bank.add_subparsers(dest="bank_command", metavar="ACTION", required=True)
    create = bank_sub.add_parser("create", help="create a bank and print its one-time token")
    create.add_argument("--name", required=True)
    create.add_argument("--location", default="")
    create.add_argument("--compartments", type=int, default=12)
    create.add_argument("--heartbeat-interval", type=int, default=30, help="seconds")
    create.add_argument(
        "--dialect",
        choices=["auto", "seed", "openlocker"],
        default="auto",
        help="contract dialect (default auto: decided by the registration)",
    )
    create.add_argument("--mapping", default=None, help="N:SLAVE:ADDR,... (else 1..N on slave 1)")
    create.add_argument("--json", action="store_true")
    upd = bank_sub.add_parser("update", help="edit a bank (a changed mapping is pushed)")
    upd.add_argument("uuid")
    upd.add_argument("--name", default=None)
    upd.add_argument("--location", default=None)
    upd.add_argument("--heartbeat-interval", type=int, default=None, help="seconds")
    upd.add_argument("--dialect", choices=["auto", "seed", "openlocker"], default=None)
    mapping = upd.add_mutually_exclusive_group()
    mapping.add_argument("--mapping", default=None, help="N:SLAVE:ADDR,... (all compartments)")
    mapping.add_argument("--mapping-file", default=None, help="file with N:SLAVE:ADDR entries")
    upd.add_argument("--json", action="store_true")
    listing = bank_sub.add_parser("list", help="list banks")
    listing.add_argument("--json", action="store_true")
    show = bank_sub.add_parser("show", help="show one bank")
    show.add_argument("uuid")
    show.add_argument("--json", action="store_true")
    token = bank_sub.add_parser("token", help="issue a new provisioning token (voids the old)")
    token.add_argument("uuid")
    token.add_argument("--json", action="store_true")
    revoke = bank_sub.add_parser(
        "revoke", help="revoke the bank's MQTT credentials and pending tokens (any state)"
    )
    revoke.add_argument("uuid")
    revoke.add_argument("--reason", required=True, help="why (recorded with the event)")

    opener = sub.add_parser("open", help="open a compartment")
    opener.add_argument("uuid")
    opener.add_argument("number", type=int)
    opener.add_argument(
        "--wait",
        action="store_true",
        help="wait until the outcome is final: exit 0 opened, 3 device error, 4 expired/unknown",
    )
    opener.add_argument("--timeout", type=float, default=None, help="seconds to wait")
    opener.add_argument("--json", action="store_true")

    config = sub.add_parser("config", help="push configuration")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    push = config_sub.add_parser("push", help="send apply_config with the bank's mapping")
    push.add_argument("uuid")
    push.add_argument("--json", action="store_true")

    txns = sub.add_parser("transactions", help="list command transactions")
    txns.add_argument("--bank", default=None)
    txns.add_argument("--limit", type=int, default=50)
    txns.add_argument("--json", action="store_true")

    events = sub.add_parser("events", help="print stored events")
    events.add_argument("--after", type=int, default=0, help="start after this position")
    events.add_argument("--follow", action="store_true", help="keep printing new events")
    events.add_argument("--json", action="store_true")

    alerts = sub.add_parser("alerts", help="open alerts; `alerts ack ID` acknowledges one")
    alerts.add_argument("--json", action="store_true")
    alerts.add_argument("--all", action="store_true", help="resolved alerts too")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", metavar="ACTION")
    ack = alerts_sub.add_parser("ack", help="acknowledge an alert")
    ack.add_argument("alert_id", type=int)
    ack.add_argument("--note", default="", help="what was found or done")
    ack.add_argument("--json", action="store_true", dest="ack_json")

    projections = sub.add_parser("projections", help="read models")
    proj_sub = projections.add_subparsers(dest="projections_command", required=True)
    proj_sub.add_parser("rebuild", help="rebuild read models from the events")

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply migrations")

    api = sub.add_parser("api-token", help="REST API tokens")
    api_sub = api.add_subparsers(dest="api_command", required=True)
    api_create = api_sub.add_parser("create", help="create a bearer token (printed once)")
    api_create.add_argument("name")
    api_create.add_argument("--role", choices=["operator", "app"], required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    restrict_new_files()  # data, secrets, logs: owner only (0600 files, 0700 folders)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in (None, "attach", "simulate", "hook"):
            from console import run_modes

            return run_modes.run(args)
        from console.admin import run_admin

        return asyncio.run(run_admin(args))
    except (DomainError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        if not _database_error(exc):
            raise
        # a broken store (WAL file deleted, disk full, unreachable server): one line, no
        # traceback, no SQL (issue 14, finding 9)
        from backend.store.database import first_line

        print(f"error: database: {first_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # Output piped into `head` or similar: stop quietly.
        sys.stderr.close()
        return EXIT_OK


def _database_error(exc: BaseException) -> bool:
    """A store failure: the store's own error (`backend.store.errors`, raised at its
    boundary), or one raised before it (opening, migrating). Neither the store nor
    SQLAlchemy is imported here: `locker-console hook` never loads them, and its start
    time is what a hook restart costs the fleet (issue 16); an error can only be theirs
    if they were loaded."""
    if isinstance(exc, sqlite3.Error):
        return True
    store_errors = sys.modules.get("backend.store.errors")
    if store_errors is not None and isinstance(exc, store_errors.StoreError):
        return True
    sa_exc = sys.modules.get("sqlalchemy.exc")
    return sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError)


if __name__ == "__main__":
    sys.exit(main())
