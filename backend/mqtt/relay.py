"""The outbox relay: publishes what the store committed, in order, at least once.

Rows (commands, provisioning replies) are written in the transaction of the event
that causes them. The relay publishes due rows QoS 1 in id order and marks a row
sent only after the broker's PUBACK (aiomqtt's `publish(qos=1)` returns then); a
crash between PUBACK and that mark republishes the row, which devices deduplicate by
`transaction_id`. While the broker is away rows stay pending: the failure is
recorded with a `retry_at` and the relay waits for it and for the connection before
trying again, oldest row first, so order is kept. A command found past `expires_at`
is never published (`outbox_expired` -> `CommandExpired`); under MQTT 5 the Message
Expiry Interval is set from `expires_at` as well.

The relay wakes at once when this process commits outbox rows (`on_events`, subscribed
to the service: a commit hands over the rows it added) and polls every `poll_interval` for
rows written by other processes (the CLI). On SQLite it publishes the handed-over rows
without reading them back when that provably keeps the order (`Handover`): the read was
most of the time from a committed command to its PUBLISH. Commits that add no rows (its
own bookkeeping: `CommandSent`, `CommandExpired`, a failure's retry time; and responses,
door events, heartbeats) do not wake it: each cost one more outbox query, run while the
next device's response was arriving. The `sent` marks of a published batch ride on the next
write transaction of this process, which is usually the one storing the command's
response (`outbox_published_soon`, `RelayOptions.sent_mark_window`): one transaction per
command fewer, and none in the writer's queue ahead of that response.
Only one relay drains at a time (`backend.store.drain_lock`): on PostgreSQL the
draining instance holds a session-level advisory lock on a dedicated connection; the
others retry every `lock_retry` seconds and take over when it dies. On SQLite a
single backend instance is assumed (it is a single-host database) and no lock is
taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from backend.device_service import RelayItem
from backend.mqtt.backoff import Backoff
from backend.mqtt.connection import MqttConnection, PublishError
from backend.mqtt.handover import Handover
from backend.mqtt.metrics import Metrics
from backend.service import LockerService
from backend.store import outbox
from backend.store.drain_lock import DrainLock, drain_lock_for
from backend.store.event_store import RecordedEvent
from backend.store.unit_of_work import CommittedEvents

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelayOptions:
    """Tuning of the relay."""

    poll_interval: float = 0.5
    batch_size: int = 100
    publish_timeout: float = 10.0
    retry_initial: float = 0.2
    retry_max: float = 10.0
    lock_retry: float = 2.0
    sent_mark_window: float = 0.0
    """Seconds a batch's `sent` marks wait for another write transaction of this process
    to carry them (the command's response, usually) before they get one of their own.
    0: no waiting; a transaction already queued ahead of the marks (a response that came
    before them) still carries them. Waiting saves a transaction per command but puts the
    marks into the response's transaction, on the round trip's path: measured slower
    (bench/BENCHMARKS.md, issue 19, round trip). Not with `MQTT_SHARED_GROUP` (several
    instances): the marks are written at once."""


BROKER_CLOCK_GRANULARITY = 1.0
"""Mosquitto keeps message expiry in whole seconds of its own clock: a message with
interval N published at t may still go out until about t + N + 1. So the interval is
rounded down and one second shorter than what is left; a command with less than two
seconds left is not published at all (`MIN_SECONDS_LEFT`)."""
MIN_SECONDS_LEFT = 2.0


def expiry_interval(expires_at: datetime, now: datetime) -> int:
    """Whole seconds for the Message Expiry Interval: never past `expires_at`."""
    left = (expires_at - now).total_seconds()
    return max(1, math.floor(left - BROKER_CLOCK_GRANULARITY))


def expiry_properties(expires_at: datetime | None, now: datetime) -> Properties | None:
    """MQTT 5 PUBLISH properties carrying the Message Expiry Interval (whole seconds, >= 1)."""
    if expires_at is None:
        return None
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = expiry_interval(expires_at, now)
    return props


class OutboxRelay:
    """Drains the outbox through the connection."""

    def __init__(
        self,
        service: LockerService,
        connection: MqttConnection,
        metrics: Metrics,
        options: RelayOptions | None = None,
        lock: DrainLock | None = None,
    ) -> None:
        self.service = service
        self.devices = service.devices
        self.connection = connection
        self.metrics = metrics
        self.options = options or RelayOptions()
        self.lock = lock or drain_lock_for(service.db)
        self._wake = asyncio.Event()
        self._backoff = Backoff(self.options.retry_initial, self.options.retry_max)
        self._active = True
        self._draining: asyncio.Task[object] | None = None
        # several instances on PostgreSQL: rows of others interleave; always read
        self.handover = Handover(enabled=not service.db.is_postgres)

    def wake(self) -> None:
        """Look at the outbox now (something was just committed)."""
        if self._active:
            self._wake.set()

    @property
    def woken(self) -> bool:
        """A wake-up is pending: the next wait returns at once and the outbox is read."""
        return self._wake.is_set()

    def on_events(self, events: list[RecordedEvent]) -> None:
        """Service listener: rows are committed with the events that cause them.

        The service calls its listeners in the task that committed. Commits made by the
        draining task itself are the relay's bookkeeping (marks, `CommandSent`,
        `CommandExpired`), which add no rows: they are not a reason to look again. Nor is
        a commit that says it added no outbox rows (a door event, a response, heartbeats):
        each of those cost an outbox query while the next command's response was due."""
        if isinstance(events, CommittedEvents):
            if events.outbox_dropped:
                self.handover.forget()
            if events.outbox_rows == 0:
                return
        if events and (self._draining is None or asyncio.current_task() is not self._draining):
            if isinstance(events, CommittedEvents) and self._active:
                self.handover.hand(events.outbox_items)
            self.wake()

    def deactivate(self) -> None:
        self._active = False

    async def run(self) -> None:
        try:
            while True:
                await self.connection.state.wait_for(True)
                try:
                    if not await self.lock.acquire():
                        self.handover.forget()
                        # Another instance drains: wake-ups (our own commits) are not a
                        # reason to ask for the lock again, so wait the full retry interval
                        # (with the wake flag left set, `_idle` would return at once: a spin).
                        self._wake.clear()
                        await asyncio.sleep(self.options.lock_retry)
                        continue
                    more = await self.drain_once()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("outbox relay pass failed")
                    await self._idle(self._backoff.next())
                    continue
                if not more:
                    await self._idle(self.options.poll_interval)
        finally:
            with contextlib.suppress(Exception):
                await self.lock.release()

    async def _idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def drain_once(self) -> bool:
        """Publish one batch of due rows; True if more may be waiting.

        The batch is published pipelined (all PUBLISH packets go out in id order, then the
        PUBACKs are awaited) and the rows acknowledged are marked in one transaction: one
        round trip and one commit per batch instead of per row. If a publish fails, only
        the rows before it are marked; the rest stay pending and go out again in order
        (a device deduplicates a repeat by `transaction_id`)."""
        self._wake.clear()
        self._draining = asyncio.current_task()
        try:
            items = self.handover.take(self.options.batch_size)
            read: outbox.DueRows | None = None
            if items is None:
                read = await self.devices.outbox.outbox_due_rows(self.options.batch_size)
                items = read.items
            live = [item for item in items if not await self._expired(item)]
            results = await asyncio.gather(
                *(self._publish(item) for item in live), return_exceptions=True
            )
            acked: list[RelayItem] = []
            failure: tuple[RelayItem, PublishError] | None = None
            for item, result in zip(live, results, strict=True):
                if isinstance(result, PublishError):
                    failure = (item, result)
                    break
                if isinstance(result, BaseException):
                    raise result
                acked.append(item)
            if acked:
                self._backoff.reset()
                for item in acked:
                    self.metrics.published[item.kind] += 1
                if self.connection.shared:
                    # Responses are dealt to every instance of the group: most would be
                    # stored elsewhere, before a mark waiting here (no `CommandSent`).
                    await self.devices.outbox_published_many(acked)
                else:
                    await self.devices.outbox.outbox_published_soon(
                        acked, self.options.sent_mark_window
                    )
            if failure is not None:
                await self._failed(*failure)
                return True
            self.handover.handled(items, read)
            return len(items) >= self.options.batch_size
        finally:
            self._draining = None

    async def _expired(self, item: RelayItem) -> bool:
        """A command past its `expires_at` is never published: `CommandExpired` instead."""
        now = self.devices.now
        if item.kind != "command" or item.expires_at is None:
            return False
        # Under MQTT 5 the broker must be able to expire it in time (whole seconds).
        margin = timedelta(seconds=MIN_SECONDS_LEFT if self.connection.v5 else 0)
        if now < item.expires_at - margin:
            return False
        await self.devices.outbox_expired(item)
        self.metrics.commands["expired_unsent"] += 1
        log.info("command %s expired before it could be sent", item.transaction_id)
        return True

    async def _publish(self, item: RelayItem) -> None:
        """Publish one row; returns after its PUBACK (PublishError if that cannot happen)."""
        if item.kind == "provisioning_reply" and item.bank_uuid and self.service.accounts.active:
            await self._account_first(item)
        now = self.devices.now
        properties = expiry_properties(item.expires_at, now) if self.connection.v5 else None
        await self.connection.publish(
            item.topic,
            item.payload,
            qos=item.qos,
            retain=item.retain,
            properties=properties,
            timeout=self.options.publish_timeout,
        )

    async def _account_first(self, item: RelayItem) -> None:
        """dynsec: the bank's broker account with this password exists before the device
        reads it (the row holds the password until sent, so a crash in between repeats
        this on the next start). A failure keeps the row pending, retried with backoff."""
        try:
            password = json.loads(item.payload)["data"]["mqtt_password"]
            client_id = item.topic.rsplit("/", 1)[1]
        except (ValueError, KeyError, TypeError, IndexError):
            return  # not a success reply: no credentials to install
        assert item.bank_uuid is not None
        try:
            await self.service.accounts.provisioned(item.bank_uuid, client_id, str(password))
        except Exception as exc:
            raise PublishError(f"broker account of {item.bank_uuid} not created: {exc}") from None

    async def _failed(self, item: RelayItem, exc: PublishError) -> None:
        self.metrics.publish_failures += 1
        delay = self._backoff.next()
        retry_at = self.devices.now + timedelta(seconds=delay)
        log.warning("publishing outbox row %d failed (%s); retry in %.1f s", item.id, exc, delay)
        await self.devices.outbox_failed(item, str(exc), retry_at)
        # Wait until the row is due again, so it goes out before anything queued after it.
        await asyncio.sleep(max(0.0, (retry_at - self.devices.now).total_seconds()) + 0.002)
