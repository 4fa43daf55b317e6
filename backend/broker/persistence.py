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
"""

from __future__ import annotations

from amqtt.broker import BrokerContext
from amqtt.contrib.persistence import SessionDBPlugin, StoredSession
from amqtt.session import Session
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine


def sqlite_url_of(config: SessionDBPlugin.Config) -> str:
    """The connection URL upstream builds from the plugin's config (`connection` or `file`)."""
    if config.connection:
        return config.connection
    return f"sqlite+aiosqlite:///{config.file or 'amqtt.db'}"


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
            stored.will_flag = client_session.will_flag
            stored.will_message = client_session.will_message
            stored.will_qos = client_session.will_qos
            stored.will_retain = client_session.will_retain
            stored.will_topic = client_session.will_topic
            stored.keep_alive = client_session.keep_alive
            if stored.retained:
                stored.retained = []

    async def on_broker_client_subscribed(self, client_id: str, topic: str, qos: int) -> None:
        """Subscriptions are not persisted (see the module docstring)."""
