"""Admin subcommands: they work directly on the store, with or without a running backend."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from backend.attribution import current_origin, local_origin
from backend.config import Settings, load_settings
from backend.domain.command_status import CommandStatus
from backend.domain.errors import DomainError, InvalidInput
from backend.domain.mapping_text import parse_mapping
from backend.domain.timeutil import iso
from backend.service import LockerService
from backend.store.errors import StatementRefused, StoreUnavailable
from backend.views import AlertView, BankView, EventView, TransactionView
from console.progress import progress


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _when(value: datetime | None) -> str:
    return iso(value) if value is not None else "-"


def _print_bank(bank: BankView) -> None:
    print(f"{bank.name}  ({bank.uuid})")
    print(f"  location   {bank.location or '-'}")
    print(f"  status     {bank.status}")
    last = _when(bank.last_heartbeat_at)
    print(f"  heartbeat  every {bank.heartbeat_interval_seconds}s, last {last}")
    if bank.clock_offset_seconds is not None:
        flag = "  OFF BY MORE THAN 5 s: expiry by the device's clock is wrong" * bank.clock_skewed
        print(f"  clock      device {bank.clock_offset_seconds:+.1f} s{flag}")
    print(f"  config     {bank.config_state}")
    dialect = bank.dialect + (" (auto)" if bank.dialect_setting == "auto" else "")
    print(f"  dialect    {dialect}")
    print(f"  pending    {bank.pending_commands} command(s)")
    _table(
        ["#", "door", "slave", "addr", "last opened"],
        [
            (c.number, c.door_state, c.slave_id, c.address, _when(c.last_opened_at))
            for c in bank.compartments
        ],
    )


def _print_transactions(txns: Sequence[TransactionView]) -> None:
    _table(
        ["transaction", "bank", "action", "#", "status", "dups", "requested", "by"],
        [
            (
                t.transaction_id,
                t.bank_uuid[:8],
                t.action,
                t.compartment_number or "",
                t.status + (" (late)" if t.late else ""),
                t.duplicate_count,
                _when(t.requested_at),
                t.requested_by + (f" ({t.requested_from})" if t.requested_from else ""),
            )
            for t in txns
        ],
    )


def _print_event(event: EventView, as_json: bool) -> None:
    if as_json:
        print(json.dumps(event.to_json(), separators=(",", ":")), flush=True)
        return
    detail = ", ".join(f"{k}={v}" for k, v in event.payload.items() if k != "occurred_at")
    print(
        f"{event.position:>6}  {_when(event.created_at)}  {event.aggregate_uuid[:8]}  "
        f"{event.event_type:<28} {detail}",
        flush=True,
    )


async def _open_service(settings: Settings) -> LockerService:
    service = LockerService(settings)
    if service.db.dialect == "sqlite":
        await service.migrate()
    return service


async def run_admin(args: argparse.Namespace) -> int:
    settings = load_settings()
    current_origin.set(local_origin())  # recorded with every action: `ssh from ...`
    if args.command == "db":
        service = LockerService(settings)
        try:
            steps = await service.pending_migrations()
            if steps:
                with progress("upgrading the database schema", steps) as bar:
                    done: list[str] = []

                    def step(revision: str) -> None:
                        done.append(revision)
                        bar.update(len(done))

                    report = await service.migrate(step)
            else:
                report = await service.migrate()
            print(report.describe(service.db.display_url))
        finally:
            service.close()
        return 0
    service = await _open_service(settings)
    try:
        return await _dispatch(service, args)
    except (StoreUnavailable, StatementRefused) as exc:
        raise DomainError(
            f"database error ({exc.kind}); is the schema up to date? "
            "run `locker-console db upgrade`"
        ) from None
    finally:
        service.close()


async def _dispatch(service: LockerService, args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "bank":
        return await _bank(service, args)
    if cmd == "open":
        return await _open(service, args)
    if cmd == "config":
        txn = await service.request_config_push(args.uuid)
        _print_json(txn.to_json()) if args.json else print(
            f"apply_config requested: transaction {txn.transaction_id} ({txn.status})"
        )
        return 0
    if cmd == "transactions":
        txns = await service.list_transactions(args.bank, args.limit)
        _print_json([t.to_json() for t in txns]) if args.json else _print_transactions(txns)
        return 0
    if cmd == "events":
        return await _events(service, args)
    if cmd == "alerts":
        return await _alerts(service, args)
    if cmd == "projections":
        with progress("rebuilding read models (events)") as report:
            count = await service.rebuild_projections(report.update)
        print(f"read models rebuilt from {count} events")
        return 0
    if cmd == "api-token":
        token = await service.create_api_token(args.name, args.role)
        print(token)
        print(f"(API token {args.name!r}, role {args.role}: shown once)", file=sys.stderr)
        return 0
    raise DomainError(f"unknown command {cmd}")


async def _bank(service: LockerService, args: argparse.Namespace) -> int:
    action = args.bank_command
    if action == "create":
        created = await service.create_bank(
            args.name,
            args.location,
            parse_mapping(args.mapping) if args.mapping else args.compartments,
            heartbeat_interval_seconds=args.heartbeat_interval,
            dialect=args.dialect,
        )
        if args.json:
            _print_json(created.to_json())
        else:
            print(f"created bank {created.name!r}: {created.uuid}")
            print(f"provisioning token (shown once): {created.token}")
            print(f"token expires at {iso(created.token_expires_at)}")
        return 0
    if action == "update":
        return await _update(service, args)
    if action == "list":
        banks = await service.list_banks()
        if args.json:
            _print_json([b.to_json() for b in banks])
        else:
            _table(
                ["uuid", "name", "location", "status", "open", "last heartbeat", "config"],
                [
                    (
                        b.uuid,
                        b.name,
                        b.location,
                        b.status,
                        f"{b.open_compartments}/{len(b.compartments)}",
                        _when(b.last_heartbeat_at),
                        b.config_state,
                    )
                    for b in banks
                ],
            )
        return 0
    if action == "show":
        bank = await service.get_bank(args.uuid)
        _print_json(bank.to_json()) if args.json else _print_bank(bank)
        return 0
    if action == "token":
        issued = await service.issue_token(args.uuid)
        if args.json:
            _print_json(issued.to_json())
        else:
            print(f"provisioning token (shown once): {issued.token}")
            print(f"token expires at {iso(issued.token_expires_at)}; the previous token is void")
        return 0
    if action == "revoke":
        await service.revoke(args.uuid, reason=args.reason)
        print(f"credentials of {args.uuid} revoked")
        return 0
    raise DomainError(f"unknown bank action {action}")


OUTCOME_EXIT = {CommandStatus.SUCCESS: 0, CommandStatus.ERROR: 3}
EXIT_EXPIRED = 4
WAIT_GRACE = 15.0
"""Seconds `open --wait` waits past `expires_at` for the backend to record the outcome."""


def open_warning(bank: BankView, ttl: float) -> str | None:
    """What an operator must know before opening on a bank that is not online."""
    if bank.status == "online":
        return None
    return (
        f"bank {bank.name!r} is {bank.status}: the open waits up to {ttl:g} s for it, "
        "then expires and never executes"
    )


def outcome_line(txn: TransactionView) -> str:
    if txn.status is CommandStatus.SUCCESS:
        return f"transaction {txn.transaction_id}: success"
    if txn.status is CommandStatus.ERROR:
        return f"transaction {txn.transaction_id}: error {txn.error_code}: {txn.message}"
    if txn.status is CommandStatus.LATE:
        return (
            f"transaction {txn.transaction_id}: late - the device acted after expiry "
            "(alerted); check the door"
        )
    if txn.status is CommandStatus.UNKNOWN:
        return f"transaction {txn.transaction_id}: unknown - outcome unknown, check the door"
    if txn.status in (CommandStatus.EXPIRED, CommandStatus.TIMEOUT):
        return f"transaction {txn.transaction_id}: {txn.status} - not executed, never will be"
    return (
        f"transaction {txn.transaction_id}: {txn.status} - no outcome recorded by its expiry "
        f"({iso(txn.expires_at)}); it never executes after that (is the backend running?)"
    )


async def _update(service: LockerService, args: argparse.Namespace) -> int:
    mapping = None
    if args.mapping_file:
        try:
            text = await asyncio.to_thread(Path(args.mapping_file).read_text, "utf-8")
            mapping = parse_mapping(text[: 64 * 1024])
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read mapping file: {exc}") from None
    elif args.mapping:
        mapping = parse_mapping(args.mapping)
    bank = await service.update_bank(
        args.uuid,
        name=args.name,
        location=args.location,
        heartbeat_interval_seconds=args.heartbeat_interval,
        dialect=args.dialect,
        compartments=mapping,
    )
    _print_json(bank.to_json()) if args.json else _print_bank(bank)
    return 0


async def _open(service: LockerService, args: argparse.Namespace) -> int:
    bank = await service.get_bank(args.uuid)
    ttl = service.settings.open_ttl_seconds
    txn = await service.request_open(args.uuid, args.number)
    warning = open_warning(bank, ttl)
    if warning and not args.json:
        print(f"warning: {warning}", file=sys.stderr)
    if not args.wait:
        if args.json:
            _print_json({**txn.to_json(), **({"warning": warning} if warning else {})})
        else:
            print(f"open requested: transaction {txn.transaction_id} ({txn.status})")
        return 0
    timeout = args.timeout or ttl + WAIT_GRACE
    try:
        txn = await service.wait_for_transaction(txn.transaction_id, timeout)
    except TimeoutError:
        txn = await service.get_transaction(txn.transaction_id)
    if args.json:
        _print_json({**txn.to_json(), **({"warning": warning} if warning else {})})
    else:
        print(outcome_line(txn))
        if txn.status in (CommandStatus.UNKNOWN, CommandStatus.LATE):
            # the latest door snapshot beside it (DESIGN section 9)
            now = await service.get_bank(args.uuid)
            door = next((c for c in now.compartments if c.number == args.number), None)
            if door is not None:
                print(f"door {door.number} is now reported {door.door_state}")
    return OUTCOME_EXIT.get(txn.status, EXIT_EXPIRED)


async def _alerts(service: LockerService, args: argparse.Namespace) -> int:
    if args.alerts_command == "ack":
        alert = await service.acknowledge_alert(args.alert_id, args.note)
        if args.ack_json or args.json:
            _print_json(alert.to_json())
        else:
            print(f"alert {alert.id} acknowledged ({alert.label}, {alert.bank_name})")
        return 0
    alerts = await service.list_alerts(include_resolved=args.all)
    if args.json:
        _print_json([a.to_json() for a in alerts])
        return 0
    if not alerts:
        print("no open alerts" if not args.all else "no alerts")
        return 0
    _print_alerts(alerts)
    return 0


def _print_alerts(alerts: Sequence[AlertView]) -> None:
    _table(
        ["id", "kind", "bank", "count", "state", "since", "acknowledged", "detail"],
        [
            (
                a.id,
                a.label,
                a.bank_name or a.bank_uuid[:8],
                a.count,
                a.state,
                _when(a.opened_at),
                f"{a.acknowledged_by}" if a.acknowledged_at else "-",
                a.detail,
            )
            for a in alerts
        ],
    )


async def _events(service: LockerService, args: argparse.Namespace) -> int:
    position = args.after
    while True:
        batch = await service.events_after(position, 500)
        for event in batch:
            _print_event(event, args.json)
            position = event.position
        if not args.follow:
            if len(batch) < 500:
                return 0
            continue
        if len(batch) < 500:
            await asyncio.sleep(0.5)
