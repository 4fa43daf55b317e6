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
"""

from __future__ import annotations

from amqtt.contrib.persistence import SessionDBPlugin, StoredSession
from amqtt.session import Session
from sqlalchemy import delete, select


class SessionStore(SessionDBPlugin):
    """amqtt's SQLite session store without stale queue replay and without subscription rows."""

    async def on_broker_client_connected(self, client_id: str, client_session: Session) -> None:
        await super().on_broker_client_connected(client_id, client_session)
        async with self._db_session_maker() as db_session, db_session.begin():
            if client_session.clean_session in (None, True) or client_session.is_anonymous:
                await db_session.execute(
                    delete(StoredSession).where(StoredSession.client_id == client_id)
                )
                return
            stored = await db_session.scalar(
                select(StoredSession).where(StoredSession.client_id == client_id)
            )
            if stored is not None and stored.retained:
                stored.retained = []

    async def on_broker_client_subscribed(self, client_id: str, topic: str, qos: int) -> None:
        """Subscriptions are not persisted (see the module docstring)."""
