"""The application service: the one API that the CLI, the HTTP API, the MQTT runtime and the
TUI call. Every write goes through one unit of work on the writer thread; every read runs on a
reader thread, so the event loop never blocks on the database.
"""

from __future__ import annotations

import asyncio
import contextvars
import getpass
import hashlib
import hmac
import logging
import secrets
import uuid as uuid_mod
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar, Unpack

from backend import search
from backend.accounts import AccountDirectory, account_directory_for
from backend.attribution import current_origin
from backend.bank_changes import BankChanges
from backend.config import Settings
from backend.device_service import DeviceService
from backend.domain.bank import LockerBank, default_compartments
from backend.domain.command_status import TERMINAL_STATUSES
from backend.domain.digests import secret_digest
from backend.domain.errors import ConcurrencyConflict, InvalidInput, NotFound, RuleViolation
from backend.domain.events import CompartmentSpec, DomainEvent, EventMetadata
from backend.domain.messages import OutboundMessage, command_message
from backend.domain.timeutil import Clock, SystemClock, truncate_ms
from backend.domain.topics import is_bank_uuid
from backend.heartbeat_history import HeartbeatHistory
from backend.store import alert_queries, api_tokens, outbox, queries
from backend.store.database import Database
from backend.store.errors import AppendConflict, StoreUnavailable
from backend.store.event_store import RecordedEvent
from backend.store.migrate import UpgradeReport, pending_revisions, upgrade
from backend.store.projections import rebuild
from backend.store.unit_of_work import AggregateCache, CommittedEvents, UnitOfWork
from backend.views import (
    AlertView,
    BankView,
    CreatedBank,
    EventView,
    HeartbeatSample,
    IssuedToken,
    TransactionView,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_CONFLICT_RETRIES = 5
API_ROLES = ("operator", "app")

EventListener = Callable[[list[RecordedEvent]], Awaitable[None] | None]
Fold = Callable[[UnitOfWork], Callable[[], None] | None]
"""Work carried by the next write transaction (see `LockerService.fold_into_writes`)."""


def default_actor() -> str:
    """The OS user running this process (who asked, for commands from a terminal)."""
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def token_hmac(secret_key: str, token: str) -> str:
    """How provisioning tokens are stored: HMAC-SHA256 with the server key."""
    return hmac.new(secret_key.encode(), token.encode(), hashlib.sha256).hexdigest()


class LockerService:
    """Commands and queries over the fleet; owns the database handle and the aggregate cache."""

    def __init__(
        self,
        settings: Settings,
        db: Database | None = None,
        *,
        clock: Clock | None = None,
        new_id: Callable[[], str] | None = None,
        new_secret: Callable[[], str] | None = None,
        accounts: AccountDirectory | None = None,
    ) -> None:
        self.settings = settings
        self.accounts = accounts or account_directory_for(settings)
        """Broker-side accounts kept in step with the store (a no-op in hook mode)."""
        self.db = db or Database(settings.db_url)
        self.clock = clock or SystemClock()
        self.new_id = new_id or (lambda: str(uuid_mod.uuid4()))
        self.new_secret = new_secret or (lambda: secrets.token_urlsafe(32))
        self._cache = AggregateCache()
        self._listeners: list[EventListener] = []
        self._folds: list[Fold] = []
        self._devices: DeviceService | None = None
        self.write_error: str | None = None
        """Set while writes to the store fail (a runtime condition, per instance)."""
        self.heartbeats = HeartbeatHistory()
        """The last heartbeats of each bank this process received (not stored)."""

    # ----- lifecycle ---------------------------------------------------------------------

    async def migrate(self, on_step: Callable[[str], None] | None = None) -> UpgradeReport:
        """Create or upgrade the schema (Alembic); what it did. `on_step(revision)` after
        each migration (progress)."""
        return await self.db.write(upgrade, self.db.write_engine, "head", on_step)

    async def pending_migrations(self) -> int:
        """How many migrations `migrate` would apply."""
        return await self.db.write(pending_revisions, self.db.write_engine)

    def close(self) -> None:
        self.db.close()

    def subscribe(self, listener: EventListener) -> None:
        """Call `listener` with the events this process records, after each commit."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: EventListener) -> None:
        """Stop calling `listener` (no error if it was not subscribed)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def fold_into_writes(self, fold: Fold) -> None:
        """Call `fold(uow)` at the start of every write transaction, in the writer thread,
        before the transaction's own work: it may write what is waiting to be written
        (the relay's `sent` marks) and returns what to call once that transaction has
        committed (None: nothing was folded). A transaction that fails or is retried
        calls it again or not at all: what it folded is rolled back with it."""
        self._folds.append(fold)

    @property
    def secret_key(self) -> str:
        return self.settings.secret("secret_key")

    def token_digest(self, token: str) -> str:
        return token_hmac(self.secret_key, token)

    @property
    def devices(self) -> DeviceService:
        """The device-side operations (registrations, responses, liveness, relay)."""
        if self._devices is None:
            self._devices = DeviceService(self)
        return self._devices

    # ----- the write path ----------------------------------------------------------------

    async def transact(self, work: Callable[[UnitOfWork], T]) -> T:
        """Run `work` in one write transaction, retrying on a version conflict (bounded)."""
        try:
            # The caller's context (its `current_origin`) goes along into the writer thread.
            context = contextvars.copy_context()
            result, recorded = await self.db.write(context.run, self._transact_sync, work)
        except StoreUnavailable as exc:  # the database refused or is away, not a rule
            self.write_error = exc.kind
            raise
        self.write_error = None
        if recorded:
            await self._dispatch(recorded)
        return result

    def _transact_sync(self, work: Callable[[UnitOfWork], T]) -> tuple[T, CommittedEvents]:
        for attempt in range(1, MAX_CONFLICT_RETRIES + 1):
            uow: UnitOfWork | None = None
            try:
                with self.db.write_session() as session:
                    uow = UnitOfWork(session, self._cache, truncate_ms(self.clock.now()))
                    folded = [done for fold in self._folds if (done := fold(uow)) is not None]
                    result = work(uow)
                    uow.flush()
                    queued = outbox.relay_items(uow.queued)  # ids are set by the flush
                uow.committed()
                for done in folded:
                    done()
                return result, CommittedEvents(
                    uow.recorded, queued, outbox_dropped=uow.outbox_dropped
                )
            except AppendConflict as exc:
                if uow is not None:
                    uow.failed()
                if attempt == MAX_CONFLICT_RETRIES:
                    raise ConcurrencyConflict(str(exc)) from None
                log.info("version conflict, retrying (attempt %d)", attempt)
            except Exception:
                if uow is not None:
                    uow.failed()
                raise
        raise AssertionError("unreachable")

    async def _dispatch(self, recorded: list[RecordedEvent]) -> None:
        for listener in list(self._listeners):
            try:
                outcome = listener(recorded)
                if asyncio.iscoroutine(outcome):
                    await outcome
            except Exception:
                log.exception("event listener failed")

    def _meta(self, actor: str | None, correlation_id: str | None = None) -> EventMetadata:
        return EventMetadata(
            actor=actor or default_actor(),
            correlation_id=correlation_id,
            origin=current_origin.get(),
        )

    @staticmethod
    def _require_uuid(uuid: str) -> str:
        uuid = uuid.strip().lower()
        if not is_bank_uuid(uuid):
            raise NotFound(f"no locker bank {uuid!r} (not a bank uuid)")
        return uuid

    # ----- operator commands -------------------------------------------------------------

    async def create_bank(
        self,
        name: str,
        location: str = "",
        compartments: int | list[CompartmentSpec] = 12,
        *,
        heartbeat_interval_seconds: int = 30,
        actor: str | None = None,
        dialect: str = "auto",
    ) -> CreatedBank:
        """Create a bank and issue its first provisioning token (shown once). `dialect`:
        `auto` (decided by the registration), `seed` or `openlocker` (DESIGN 3.1)."""
        specs = (
            default_compartments(compartments) if isinstance(compartments, int) else compartments
        )
        bank_uuid = self.new_id()
        token = self.new_secret()
        ttl = timedelta(seconds=self.settings.provisioning_token_ttl)
        digest = token_hmac(self.secret_key, token)

        def work(uow: UnitOfWork) -> datetime:
            def decide(_existing: LockerBank) -> list[DomainEvent]:
                created = LockerBank.create(
                    bank_uuid,
                    name=name,
                    location=location,
                    compartments=specs,
                    heartbeat_interval_seconds=heartbeat_interval_seconds,
                    now=uow.now,
                    dialect=dialect,
                )
                fresh = LockerBank(bank_uuid)
                fresh.apply(created[0])  # the token rule needs the bank to exist
                return created + fresh.issue_token(digest, now=uow.now, ttl=ttl)

            uow.execute(bank_uuid, decide, self._meta(actor))
            return uow.now + ttl

        expires = await self.transact(work)
        return CreatedBank(
            uuid=bank_uuid,
            name=name.strip(),
            location=location.strip(),
            token=token,
            token_expires_at=expires,
            compartments=len(specs),
            heartbeat_interval_seconds=heartbeat_interval_seconds,
            dialect=dialect,
        )

    async def issue_token(self, uuid: str, *, actor: str | None = None) -> IssuedToken:
        """Issue a new provisioning token; the previous one stops working."""
        uuid = self._require_uuid(uuid)
        token = self.new_secret()
        ttl = timedelta(seconds=self.settings.provisioning_token_ttl)
        digest = token_hmac(self.secret_key, token)

        def work(uow: UnitOfWork) -> datetime:
            uow.execute(
                uuid, lambda b: b.issue_token(digest, now=uow.now, ttl=ttl), self._meta(actor)
            )
            return uow.now + ttl

        expires = await self.transact(work)
        return IssuedToken(uuid=uuid, token=token, token_expires_at=expires)

    async def revoke(self, uuid: str, *, reason: str, actor: str | None = None) -> None:
        """Revoke a bank in any state: its MQTT credentials (the broker refuses it at the
        next check) and any pending provisioning token are void; `reason` is required and
        recorded with the event."""
        uuid = self._require_uuid(uuid)
        await self.transact(
            lambda uow: uow.execute(
                uuid, lambda b: b.revoke(now=uow.now, reason=reason), self._meta(actor)
            )
        )
        try:
            await self.accounts.revoked(uuid)  # dynsec: disable (disconnects the device)
        except Exception as exc:
            log.warning(
                "bank %s is revoked in the store but its broker account is not disabled yet "
                "(%s); the next start of the backend disables it",
                uuid,
                exc,
            )

    async def request_open(
        self, uuid: str, number: int, *, actor: str | None = None
    ) -> TransactionView:
        """Ask a bank to open one compartment; the command goes out through the outbox."""
        uuid = self._require_uuid(uuid)
        transaction_id = self.new_id()
        ttl = timedelta(seconds=self.settings.open_ttl_seconds)
        who = actor or default_actor()

        def work(uow: UnitOfWork) -> TransactionView:
            uow.execute(
                uuid,
                lambda b: b.request_open(
                    number, transaction_id=transaction_id, requested_by=who, now=uow.now, ttl=ttl
                ),
                self._meta(who, correlation_id=transaction_id),
                react=_commands_for(uuid),
            )
            uow.flush()
            return queries.written_transaction(uow.session, uuid, transaction_id)

        # The view as committed, built in the write transaction (no read after it).
        return await self.transact(work)

    async def request_config_push(self, uuid: str, *, actor: str | None = None) -> TransactionView:
        """Send the bank its compartment mapping (`apply_config`)."""
        uuid = self._require_uuid(uuid)
        transaction_id = self.new_id()
        ttl = timedelta(seconds=self.settings.config_ttl_seconds)
        who = actor or default_actor()

        def work(uow: UnitOfWork) -> TransactionView:
            self._request_config(uow, uuid, transaction_id, who, ttl)
            uow.flush()
            return queries.written_transaction(uow.session, uuid, transaction_id)

        return await self.transact(work)

    def _request_config(
        self, uow: UnitOfWork, uuid: str, transaction_id: str, who: str, ttl: timedelta
    ) -> None:
        """Record `ConfigApplyRequested` and queue its `apply_config` command."""
        uow.execute(
            uuid,
            lambda b: b.request_config(
                transaction_id=transaction_id, requested_by=who, now=uow.now, ttl=ttl
            ),
            self._meta(who, correlation_id=transaction_id),
            react=_commands_for(uuid),
        )

    async def acknowledge_alert(
        self, alert_id: int, note: str = "", *, actor: str | None = None
    ) -> AlertView:
        """Record that an operator has seen an alert (`AlertAcknowledged`, with actor)."""
        if isinstance(alert_id, bool) or not isinstance(alert_id, int) or alert_id < 1:
            raise InvalidInput("an alert id is a positive number")
        who = actor or default_actor()

        def work(uow: UnitOfWork) -> None:
            with uow.locked():  # another instance may acknowledge it a moment earlier
                row = alert_queries.alert_row(uow.session, alert_id)
                if row is None:
                    raise NotFound(f"no alert {alert_id}")
                if row.acknowledged_at is not None:
                    raise RuleViolation(
                        f"alert {alert_id} was already acknowledged by {row.acknowledged_by}"
                    )
                uow.execute(
                    row.bank_uuid,
                    lambda b: b.acknowledge_alert(alert_id, note, now=uow.now),
                    self._meta(who),
                )

        await self.transact(work)
        return await self.get_alert(alert_id)

    async def update_bank(
        self, uuid: str, *, actor: str | None = None, **changes: Unpack[BankChanges]
    ) -> BankView:
        """Edit a bank (None = unchanged). A changed mapping, interval or dialect of a
        provisioned bank is pushed at once as a new `apply_config` transaction."""
        uuid = self._require_uuid(uuid)
        who = actor or default_actor()
        ttl = timedelta(seconds=self.settings.config_ttl_seconds)

        def work(uow: UnitOfWork) -> None:
            before = uow.bank(uuid)
            old_hash = before.desired_config_hash if before.exists else ""
            old_interval = before.heartbeat_interval_seconds
            recorded = uow.execute(
                uuid,
                lambda b: b.update(now=uow.now, **changes),
                self._meta(who),
            )
            bank = uow.bank(uuid)
            changed = bank.desired_config_hash != old_hash or (
                bank.heartbeat_interval_seconds != old_interval
            )
            if recorded and changed and bank.status in ("provisioned", "online", "offline"):
                self._request_config(uow, uuid, self.new_id(), who, ttl)

        await self.transact(work)
        return await self.get_bank(uuid)

    async def rebuild_projections(
        self, on_progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Replay every event into empty read models; returns the number of events.
        `on_progress(done, total)` after each batch (called from the database thread)."""

        def work() -> int:
            with self.db.write_session() as session:
                count = rebuild(session, on_progress=on_progress)
            self._cache.clear()
            return count

        return await self.db.write(work)

    async def create_api_token(self, name: str, role: str) -> str:
        """Create a bearer token for the REST API; returns it once (stored as SHA-256)."""
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidInput("token name must be 1 to 100 characters")
        if role not in API_ROLES:
            raise InvalidInput(f"role must be one of {', '.join(API_ROLES)}")
        token = self.new_secret()

        def work() -> None:
            with self.db.write_session() as session:
                if api_tokens.token_name_taken(session, name):
                    raise InvalidInput(f"an API token named {name!r} already exists")
                api_tokens.add_token(session, name, role, secret_digest(token), self.clock.now())

        await self.db.write(work)
        return token

    async def api_token_role(self, token: str) -> tuple[str, str] | None:
        """(name, role) of a valid bearer token, or None."""
        digest = secret_digest(token)

        def work() -> tuple[str, str] | None:
            with self.db.read_session() as session:
                return api_tokens.token_owner(session, digest)

        return await self.db.read(work)

    # ----- queries -----------------------------------------------------------------------

    async def list_banks(self) -> list[BankView]:
        return await self._read(queries.list_banks)

    async def get_bank(self, uuid: str) -> BankView:
        uuid = self._require_uuid(uuid)
        bank = await self._read(queries.get_bank, uuid)
        if bank is None:
            raise NotFound(f"no locker bank {uuid}")
        return bank

    async def list_transactions(
        self, bank_uuid: str | None = None, limit: int = 200
    ) -> list[TransactionView]:
        if bank_uuid is not None:
            bank_uuid = (await self.get_bank(bank_uuid)).uuid
        return await self._read(queries.list_transactions, bank_uuid, limit)

    async def get_transaction(self, transaction_id: str) -> TransactionView:
        txn = await self._read(queries.get_transaction, transaction_id)
        if txn is None:
            raise NotFound(f"no transaction {transaction_id}")
        return txn

    async def list_alerts(
        self, include_resolved: bool = False, bank_uuid: str | None = None, limit: int = 200
    ) -> list[AlertView]:
        """Open alerts, newest first; with `include_resolved` every alert."""
        if bank_uuid is not None:
            bank_uuid = (await self.get_bank(bank_uuid)).uuid
        now = self.clock.now()
        return await self._read(alert_queries.list_alerts, now, include_resolved, bank_uuid, limit)

    async def get_alert(self, alert_id: int) -> AlertView:
        alert = await self._read(alert_queries.get_alert, alert_id, self.clock.now())
        if alert is None:
            raise NotFound(f"no alert {alert_id}")
        return alert

    async def open_alert_counts(self) -> dict[str, int]:
        """Open alerts per kind (for /metrics)."""
        return await self._read(alert_queries.open_counts, self.clock.now())

    async def events_after(self, position: int = 0, limit: int = 500) -> list[EventView]:
        return await self._read(queries.events_after, position, limit)

    async def bank_events(self, uuid: str, limit: int = 200) -> list[EventView]:
        """The newest `limit` events of one bank, oldest first."""
        return await self._read(queries.events_of, self._require_uuid(uuid), limit)

    async def heartbeat_history(self, uuid: str) -> list[HeartbeatSample]:
        """The bank's recent heartbeats as this process received them, oldest first
        (bounded; in memory: empty after a restart). NotFound for an unknown bank."""
        uuid = self._require_uuid(uuid)
        await self.get_bank(uuid)
        return self.heartbeats.samples(uuid)

    async def search_events(
        self, query: str, limit: int = 500, before: int | None = None, scan: int = 100_000
    ) -> list[EventView]:
        """The newest `limit` stored events before position `before` (None: the end) that
        match `query` (the filter syntax of `backend.search`: words, field:value, -negation,
        quotes), oldest first; at most `scan` events are read back."""
        terms = search.parse(query, search.EVENT_FIELDS)
        names = {bank.uuid: bank.name for bank in await self.list_banks()} if terms else {}
        return await self._read(queries.search_events, terms, names, limit, before, scan)

    async def wait_for_transaction(
        self, transaction_id: str, timeout: float, poll: float = 0.1
    ) -> TransactionView:
        """Poll the read model until the transaction is terminal or `timeout` passes."""
        async with asyncio.timeout(timeout):
            while True:
                txn = await self.get_transaction(transaction_id)
                if txn.status in TERMINAL_STATUSES:
                    return txn
                await asyncio.sleep(poll)

    async def bank_by_token(self, token: str) -> str | None:
        """The bank uuid whose outstanding token this is (HMAC lookup), or None."""
        digest = token_hmac(self.secret_key, token)

        def work() -> str | None:
            with self.db.read_session() as session:
                return queries.bank_with_token(session, digest)

        return await self.db.read(work)

    async def read(self, fn: Callable[..., T], *args: object) -> T:
        """Run a read-side query `fn(session, *args)` on a reader thread."""
        return await self._read(fn, *args)

    async def _read(self, fn: Callable[..., T], *args: object) -> T:
        def work() -> T:
            with self.db.read_session() as session:
                return fn(session, *args)

        return await self.db.read(work)


def _commands_for(uuid: str) -> Callable[[LockerBank, list[DomainEvent]], list[OutboundMessage]]:
    def react(bank: LockerBank, events: list[DomainEvent]) -> list[OutboundMessage]:
        return [m for e in events if (m := command_message(uuid, e, bank.dialect)) is not None]

    return react
