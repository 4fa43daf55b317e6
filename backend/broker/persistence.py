"""Session and retained-message persistence for the embedded broker (SQLite under data_dir).

Built on amqtt 0.12.1's `SessionDBPlugin`, which needs `aiosqlite` and SQLAlchemy's asyncio
support (`greenlet`). Two of its behaviours are changed here, each the smallest override:

* It appends every message queued for an offline persistent session to that session's stored
  row and never removes it, so after each broker restart every message ever queued would be
  delivered again. Here a session's stored queue is emptied when the client connects: by then
  the broker holds the queue in memory and hands it to the client (a crash mid-delivery loses
  it, which DESIGN section 9 recovers by asking the device again).
* It stores subscriptions and restores them at start through the broker's subscribe check,
  but without the username (the table has no such column), so our hook refuses every one of
  them, once per stored subscription. Subscriptions are therefore not stored: every client of
  ours subscribes again on each connect (DESIGN section 6, step 4).

Retained messages (`server/status`, devices' `.../state`) and queued messages survive a broker
restart, normal or not (`clear_on_shutdown` is off).

One more change, to the engine: upstream's `create_async_engine(url)` pools up to 15 SQLite
connections, and amqtt fires each plugin event as its own task, so under load (many clients
connecting, retained heartbeats, queued messages) several transactions run at once, each
reading and then writing. SQLite lets one of them write; the others wait out the busy timeout
or, when a reader must upgrade to a writer, fail at once: "database is locked", and that
session or retained message is not stored (200 clients connecting at once: 4-5 such
failures). Here the engine holds a single connection, so the store's transactions take turns
in the event loop instead of racing for SQLite's lock (they were serialized by SQLite anyway).

And retained messages are written together: upstream writes each retained PUBLISH at once
(a select, an update, a commit, through aiosqlite's thread), and every device's heartbeat is
a retained `.../state`, so the store cost a transaction per heartbeat (issue 19). Here the
latest retained message per topic is kept and written every `RETAIN_FLUSH_INTERVAL` seconds
in one transaction, and at a clean stop. A crash loses at most that interval of retained
updates (the devices publish their state again with their next heartbeat). Messages queued
for an offline session are still written one by one, at once, in order.
"""

from __future__ import annotations

import asyncio
import logging

from amqtt.broker import BrokerContext, RetainedApplicationMessage
from amqtt.contrib.persistence import SessionDBPlugin, StoredMessage, StoredSession
from amqtt.session import Session
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from backend.broker.session_fields import copy_connect_fields


def sqlite_url_of(config: SessionDBPlugin.Config) -> str:
    """The connection URL upstream builds from the plugin's config (`connection` or `file`)."""
    if config.connection:
        return config.connection
    return f"sqlite+aiosqlite:///{config.file or 'amqtt.db'}"


log = logging.getLogger(__name__)

RETAIN_FLUSH_INTERVAL = 1.0
"""Seconds between the writes of the retained messages received meanwhile."""
POOL_TIMEOUT = 300.0
"""Seconds a store write may wait for the one connection before it fails (a stuck disk)."""
BUSY_TIMEOUT = 30.0
"""SQLite's own wait for a lock held by another process (a second broker on the file)."""


class SessionStore(SessionDBPlugin):
    """amqtt's SQLite session store without stale queue replay and without subscription rows,
    on one connection."""

    def __init__(self, context: BrokerContext) -> None:
        super().__init__(context)
        url = sqlite_url_of(self.config)
        self._engine = create_async_engine(
            url,
            pool_size=1,
            max_overflow=0,
            pool_timeout=POOL_TIMEOUT,
            connect_args={"timeout": BUSY_TIMEOUT},
        )
        self._db_session_maker = async_sessionmaker(self._engine, expire_on_commit=False)
        self._pending_retained: dict[str, RetainedApplicationMessage] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._flushing: asyncio.Future[None] | None = None

    async def on_broker_retained_message(
        self, *, client_id: str | None, retained_message: RetainedApplicationMessage
    ) -> None:
        if client_id is not None:  # queued for an offline session: stored at once, in order
            await super().on_broker_retained_message(
                client_id=client_id, retained_message=retained_message
            )
            return
        self._pending_retained[retained_message.topic] = retained_message
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(RETAIN_FLUSH_INTERVAL)
        self._flushing = asyncio.ensure_future(self.flush_retained())
        try:
            await asyncio.shield(self._flushing)  # a stop waits for this write, never cuts it
        except Exception as exc:
            log.warning("could not store retained messages: %s", type(exc).__name__)

    async def flush_retained(self) -> None:
        """Write the retained messages received since the last write, in one transaction."""
        pending, self._pending_retained = self._pending_retained, {}
        if not pending:
            return
        async with self._db_session_maker() as db_session, db_session.begin():
            rows = await db_session.scalars(
                select(StoredMessage).where(StoredMessage.topic.in_(list(pending)))
            )
            stored = {row.topic: row for row in rows}
            for topic, message in pending.items():
                row = stored.get(topic)
                if not message.data:  # an empty retained message clears the topic
                    if row is not None:
                        await db_session.delete(row)
                    continue
                if row is None:
                    row = StoredMessage(topic=topic)
                    db_session.add(row)
                row.data = bytes(message.data)
                row.qos = message.qos or 0

    async def on_broker_post_shutdown(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        await self.flush_retained()
        await super().on_broker_post_shutdown()

    async def on_broker_client_connected(self, client_id: str, client_session: Session) -> None:
        """Upstream's update of the stored session and our emptying of its stored queue, in
        one transaction: as two, a message queued after the client's next disconnect could
        take the one connection between them and then be emptied by the second."""
        async with self._db_session_maker() as db_session, db_session.begin():
            if client_session.clean_session in (None, True) or client_session.is_anonymous:
                await db_session.execute(
                    delete(StoredSession).where(StoredSession.client_id == client_id)
                )
                return
            stored = await self._get_or_create_session(db_session, client_id)
            stored.clean_session = client_session.clean_session
            copy_connect_fields(client_session, stored)
            if stored.retained:
                stored.retained = []

    async def on_broker_client_subscribed(self, client_id: str, topic: str, qos: int) -> None:
        """Subscriptions are not persisted (see the module docstring)."""
