"""The receive side: classify each message, queue it on its bank's lane, apply it.

`on_message()` is what the connection calls for every message; it only reads the
topic and queues, so it stays fast however slow the store is. The lanes
(`Dispatcher`), the handlers and the two batchers (heartbeats, responses) live here.

Heartbeats and command responses take a shorter way (issue 19: most of the messages,
and their lane task, handler calls and batch futures cost more CPU than the store
write): a valid heartbeat or response of a known bank whose lane is idle is parsed once
here and added to its batcher directly. Order per bank still holds: heartbeats and
responses each keep their order in their batcher (the two kinds do not depend on each
other), and a later message of that bank goes to its lane, whose worker first waits
for the bank's heartbeats and responses in flight to be committed. One whose batch
fails goes back to the front of its lane and takes the ordinary way (store retries
with backoff, then given up). A message of the short way is acknowledged once its
batch is committed (a refused response once it is stored as rejected), or, after a
failure, once its lane has handled it, like every other message.

A heartbeat of a bank that is not online is written with the others, and its bank is
then brought online (event, re-asks, config push: a hundred times the cost of a
heartbeat) by a third batcher, `arrivals`, in small transactions of their own: a fleet
coming online at once, as after a restart, no longer holds up the heartbeats of the
banks already online (which would fall silent and flap). The heartbeat is acknowledged
once its bank is online, and a later message of the bank waits for that too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiomqtt

from backend.device_service import HeartbeatIn
from backend.domain.contract import ContractError
from backend.domain.outcomes import Outcome
from backend.domain.timeutil import truncate_ms
from backend.domain.topics import TopicKind
from backend.mqtt.acks import NO_ACK, Ack
from backend.mqtt.batcher import Batcher
from backend.mqtt.dispatcher import Dispatcher
from backend.mqtt.handlers import Arrival, Beat, InboundHandlers, Response, validate_inbound
from backend.mqtt.heard import HeardFrom
from backend.mqtt.inbound import Inbound, classify
from backend.mqtt.known_banks import KnownBanks
from backend.mqtt.metrics import Metrics
from backend.mqtt.rejects import Rejector
from backend.service import LockerService
from backend.store.event_store import RecordedEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListenerOptions:
    """Tuning of the receive side."""

    heartbeat_linger: float = 0.1
    """While heartbeats keep coming, collect them this long (seconds) before one
    `record_heartbeats` call; the first one after a quiet spell is recorded at once."""
    response_linger: float = 0.0
    """Responses flush as soon as the store is free (batches form under load)."""
    max_batch: int = 500
    max_arrivals: int = 50
    """Banks brought online per transaction (each costs a few ms of store work; the
    heartbeats of the banks already online wait at most one such transaction)."""
    max_pending: int = 10_000
    """Received but unhandled messages beyond which the receive loop waits."""
    store_retries: int = 5


_SHORT_KINDS = frozenset(
    {TopicKind.STATE, TopicKind.STATE_HEARTBEAT, TopicKind.RESPONSE, TopicKind.LEGACY_STATUS}
)


class Listener:
    """Everything between a received message and the store."""

    def __init__(
        self,
        service: LockerService,
        metrics: Metrics,
        options: ListenerOptions | None = None,
        *,
        on_outbox_work: Callable[[], None] = lambda: None,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.options = options or ListenerOptions()
        devices = service.devices
        self.banks = KnownBanks(devices)
        self.heard = HeardFrom()
        self.arrivals: Batcher[str, bool] = Batcher(
            "arrivals",
            self._bring_online,
            max_items=self.options.max_arrivals,
            metrics=metrics,
        )
        self.heartbeats: Batcher[HeartbeatIn, Arrival] = Batcher(
            "heartbeats",
            self._record_heartbeats,
            linger=self.options.heartbeat_linger,
            max_items=self.options.max_batch,
            metrics=metrics,
        )
        self.responses = Batcher(
            "responses",
            devices.record_responses,
            linger=self.options.response_linger,
            max_items=self.options.max_batch,
            metrics=metrics,
        )
        self.handlers = InboundHandlers(
            devices,
            metrics,
            Rejector(devices, metrics),
            self.banks,
            heartbeats=self.heartbeats,
            arrivals=self.arrivals,
            responses=self.responses,
            on_outbox_work=on_outbox_work,
            store_retries=self.options.store_retries,
        )
        self._beats_in_flight: dict[str, asyncio.Future[Arrival]] = {}
        """Per bank, the newest heartbeat that took the short way and is not committed."""
        self._arriving: dict[str, asyncio.Future[bool]] = {}
        """Per bank, its `bring_online` not yet committed."""
        self._responses_in_flight: dict[str, asyncio.Future[Outcome]] = {}
        """Per bank, the newest response that took the short way and is not committed."""
        self._short_failed: dict[str, list[Inbound]] = {}
        """Per bank, short-way messages whose batch failed while its lane waited."""
        self._lanes_waiting: set[str] = set()
        self._rejecting: set[asyncio.Task[None]] = set()
        self.short_way = 0
        """Heartbeats and responses that took the short way (the rest: their lanes)."""
        self.dispatcher: Dispatcher[Inbound] = Dispatcher(
            self._handle_lane,
            max_pending=self.options.max_pending,
            max_group=self.options.max_batch,
            on_handled=_acknowledge,
        )

    async def on_message(self, message: aiomqtt.Message, ack: Ack = NO_ACK) -> None:
        """Queue a received message on its lane; `ack` is called once it is finished
        (stored, refused and stored as rejected, or given up after the store retries)."""
        item = classify(
            message,
            truncate_ms(self.service.clock.now()),
            accept_legacy_status=self.service.settings.mqtt_accept_legacy_status,
            ack=ack,
        )
        self.metrics.messages[item.label] += 1
        if item.kind in _SHORT_KINDS and self._short_way(item):
            return
        self.heard.observe(item)
        await self.dispatcher.put(item.lane, item)

    @property
    def beats_in_flight(self) -> int:
        """Banks with a heartbeat or response of the short way not yet committed."""
        return (
            len(self._beats_in_flight)
            + len(self._responses_in_flight)
            + len(self._arriving)
            + len(self._rejecting)
        )

    def _short_way(self, item: Inbound) -> bool:
        """Add a heartbeat or response to its batch here; False if it must take its lane."""
        key = item.key
        if (
            item.problem is not None
            or self.dispatcher.busy(key)
            or not self.banks.known_now(key)
            or not self.heartbeats.running
            or not self.responses.running
            # past this the lanes' bound applies: the receive loop waits (back-pressure)
            or not self.arrivals.running
            or self.heartbeats.waiting + self.responses.waiting + self.arrivals.waiting
            >= self.options.max_pending
        ):
            return False
        try:
            work = validate_inbound(item)
        except ContractError:
            return False  # refused on the ordinary way, with its reason
        if isinstance(work, Beat):
            if not item.retained:
                self.heard.heartbeat(key, item.received_at)
            beat = self.heartbeats.add(work.heartbeat)
            self._beats_in_flight[key] = beat
            beat.add_done_callback(partial(self._beat_done, item))
        elif isinstance(work, Response):
            answer = self.responses.add((key, work.response, item.payload))
            self._responses_in_flight[key] = answer
            answer.add_done_callback(partial(self._response_done, work))
        else:
            return False  # a last will on the state topic
        self.short_way += 1
        return True

    def _beat_done(self, item: Inbound, future: asyncio.Future[Arrival]) -> None:
        if self._beats_in_flight.get(item.key) is future:
            del self._beats_in_flight[item.key]
        if future.cancelled():
            return  # dropped (abort): not acknowledged, the broker sends it again
        if future.exception() is not None:
            self._back_to_lane(item)
            return
        arrival = future.result()
        if arrival is None:
            item.ack()  # committed
            return
        arrival.add_done_callback(partial(self._arrived, item))

    def _arrived(self, item: Inbound, future: asyncio.Future[bool]) -> None:
        if future.cancelled():
            return
        if future.exception() is None:
            item.ack()  # its bank is online
            return
        self._back_to_lane(item)

    def _response_done(self, work: Response, future: asyncio.Future[Outcome]) -> None:
        item = work.item
        if self._responses_in_flight.get(item.key) is future:
            del self._responses_in_flight[item.key]
        if future.cancelled():
            return
        if future.exception() is not None:
            self._back_to_lane(item)
            return
        refused = self.handlers.counted(work, future.result())
        if refused is None:
            item.ack()
            return
        task = asyncio.create_task(self._refuse(item, refused))
        self._rejecting.add(task)
        task.add_done_callback(self._rejecting.discard)

    async def _refuse(self, item: Inbound, reason: str) -> None:
        await self.handlers.reject(item, reason)
        item.ack()

    def _back_to_lane(self, item: Inbound) -> None:
        """The store failed: the ordinary way retries with backoff (then gives up), ahead
        of anything the bank sent since."""
        key = item.key
        if key in self._lanes_waiting:
            self._short_failed.setdefault(key, []).append(item)
        else:
            self.dispatcher.put_nowait(key, item)

    def _in_flight(self, key: str) -> list[asyncio.Future[Any]]:
        """The bank's short-way work and its coming online, not yet committed."""
        futures = (
            self._beats_in_flight.get(key),
            self._responses_in_flight.get(key),
            self._arriving.get(key),
        )
        return [
            f for f in futures if f is not None
        ]  # done ones too: their callbacks may not have run

    async def _handle_lane(self, key: str, items: list[Inbound]) -> None:
        in_flight = self._in_flight(key)
        if in_flight:
            self._lanes_waiting.add(key)
            try:
                while in_flight:  # a committed heartbeat may leave its bank's arrival
                    await asyncio.wait(in_flight)
                    await asyncio.sleep(0)  # let done-callbacks run
                    in_flight = self._in_flight(key)
            finally:
                self._lanes_waiting.discard(key)
            failed = self._short_failed.pop(key, None)
            if failed:
                try:
                    await self.handlers.handle_lane(key, [*failed, *items])
                except asyncio.CancelledError:
                    raise
                except Exception:
                    _acknowledge(failed)  # as the dispatcher does with the lane's own items
                    raise
                _acknowledge(failed)
                return
        await self.handlers.handle_lane(key, items)

    def observe(self, events: list[RecordedEvent]) -> None:
        """Service listener: learn banks created in this process."""
        self.banks.observe(events)

    async def _record_heartbeats(self, items: Sequence[HeartbeatIn]) -> list[Arrival]:
        """Write the batch's liveness; each heartbeat of a bank not online gets the future
        of its bank's coming online (the `arrivals` batcher)."""
        devices = self.service.devices
        recorded = await devices.record_liveness(items)
        self.metrics.heartbeats_taken += recorded.taken
        self.metrics.heartbeats_ignored += len(items) - recorded.taken
        if not recorded.arriving:
            return [None] * len(items)
        if not self.arrivals.running:  # stopping: bring them online here
            await devices.bring_online(sorted(recorded.arriving))
            return [None] * len(items)
        for bank in recorded.arriving:
            if bank not in self._arriving:
                arrival = self._arriving[bank] = self.arrivals.add(bank)
                arrival.add_done_callback(partial(self._arrival_done, bank))
        return [self._arriving.get(i.bank_uuid) for i in items]

    async def _bring_online(self, banks: Sequence[str]) -> list[bool]:
        return await self.service.devices.bring_online(banks)

    def _arrival_done(self, bank: str, future: asyncio.Future[bool]) -> None:
        if self._arriving.get(bank) is future:
            del self._arriving[bank]

    def start(self) -> None:
        self.arrivals.start()
        self.heartbeats.start()
        self.responses.start()

    async def stop(self, timeout: float = 10.0) -> None:
        """Handle what was already received, then stop the batchers. (Acknowledgements
        of a connection that has closed are not sent: the broker sends those again.)"""
        try:
            await self.dispatcher.drain(timeout)
        except TimeoutError:
            log.warning("%d received messages not handled at stop", self.dispatcher.pending)
            await self.dispatcher.abort()
        await self.heartbeats.stop()
        await self.arrivals.stop()
        await self.responses.stop()
        await asyncio.gather(*self._rejecting, return_exceptions=True)
        self.handlers.flush_logs()

    async def abort(self) -> None:
        """Drop everything in flight, unacknowledged (for crash tests)."""
        await self.dispatcher.abort()
        self.heartbeats.abort()
        self.arrivals.abort()
        self.responses.abort()
        for task in list(self._rejecting):
            task.cancel()


def _acknowledge(items: list[Inbound]) -> None:
    for item in items:
        item.ack()
