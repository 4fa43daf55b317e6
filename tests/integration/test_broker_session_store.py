"""The embedded broker's session store under concurrent events (RELIABILITY.md F8 notes).

amqtt fires every plugin event as its own task; with upstream's pooled SQLite engine,
concurrent connects and retained messages failed with "database is locked" and were not
stored. A real `SessionStore` over a real SQLite file here, events fired all at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from amqtt.broker import BrokerContext, RetainedApplicationMessage
from amqtt.session import Session

from backend.broker.config import sqlite_url
from backend.broker.persistence import SessionStore

CLIENTS = 60


async def _store(db_file: Path) -> SessionStore:
    context = BrokerContext(broker=None)  # the store never uses the broker
    context.config = SessionStore.Config(connection=sqlite_url(db_file), clear_on_shutdown=False)
    store = SessionStore(context)
    await store.on_broker_pre_start()
    return store


def _retained_rows(db_file: Path) -> dict[str, bytes]:
    with sqlite3.connect(db_file) as db:
        return dict(db.execute("SELECT topic, data FROM stored_messages").fetchall())


async def test_concurrent_connects_and_retained_messages_are_all_stored(tmp_path: Path) -> None:
    db_file = tmp_path / "broker.sqlite3"
    store = await _store(db_file)

    async def client(n: int) -> None:
        session = Session()
        session.client_id, session.clean_session, session.username = f"bank-{n}", False, "u"
        await store.on_broker_client_connected(client_id=session.client_id, client_session=session)
        for beat in range(3):
            state = RetainedApplicationMessage(None, f"locker/{n}/state", b"%d" % beat, 1)
            await store.on_broker_retained_message(client_id=None, retained_message=state)
            queued = RetainedApplicationMessage(None, f"locker/{n}/command", b"open", 1)
            await store.on_broker_retained_message(
                client_id=session.client_id, retained_message=queued
            )

    try:
        results = await asyncio.gather(*(client(n) for n in range(CLIENTS)), return_exceptions=True)
    finally:
        await store.on_broker_post_shutdown()  # as the broker's stop: pending writes, then close
    assert [r for r in results if isinstance(r, BaseException)] == []
    with sqlite3.connect(db_file) as db:
        sessions = db.execute("SELECT count(*) FROM stored_sessions").fetchone()[0]
    assert sessions == CLIENTS
    assert _retained_rows(db_file) == {f"locker/{n}/state": b"2" for n in range(CLIENTS)}


async def test_retained_messages_are_written_together_latest_per_topic(tmp_path: Path) -> None:
    """A retained heartbeat is not a transaction each: the latest per topic is written a
    moment later (or at the stop), and an empty one clears its topic."""
    db_file = tmp_path / "broker.sqlite3"
    store = await _store(db_file)

    async def retain(topic: str, data: bytes) -> None:
        message = RetainedApplicationMessage(None, topic, data, 1)
        await store.on_broker_retained_message(client_id=None, retained_message=message)

    try:
        await retain("locker/a/state", b"1")
        await retain("locker/gone/state", b"x")
        await store.flush_retained()
        assert _retained_rows(db_file) == {"locker/a/state": b"1", "locker/gone/state": b"x"}
        for beat in range(2, 50):
            await retain("locker/a/state", b"%d" % beat)
        await retain("locker/b/state", b"b")
        await retain("locker/gone/state", b"")
    finally:
        await store.on_broker_post_shutdown()
    assert _retained_rows(db_file) == {"locker/a/state": b"49", "locker/b/state": b"b"}
