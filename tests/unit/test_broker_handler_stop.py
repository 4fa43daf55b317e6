"""RELIABILITY.md F8: stopping a broker connection's handler always ends its reader loop.

amqtt 0.12.1 reads each packet through `asyncio.wait_for`; on Python 3.11 a cancellation
that arrives in the same loop iteration as the read's result is swallowed (python/cpython
#86296), and upstream's `stop()`, which cancels the reader once and then waits for it
without a deadline, hangs while the peer stays connected. A take-over of a client id stops
the old handler before it answers the new CONNECT, so that CONNECT got no CONNACK.

The race is made deterministic here with amqtt's own reader loop over a real
`asyncio.StreamReader`: a packet is fed and the stop is scheduled in the same loop
iteration, so the reader's read has its result when the cancellation lands.
"""

from __future__ import annotations

import asyncio

import pytest
from amqtt.adapters import BufferWriter, StreamReaderAdapter
from amqtt.contexts import BaseContext
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.manager import PluginManager
from amqtt.session import Session

from backend.broker.patient_handler import PatientBrokerProtocolHandler

PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"


class RecordingWriter(BufferWriter):
    """amqtt's in-memory writer, keeping what was written after it is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data
        super().write(data)


async def _running(
    handler_class: type[BrokerProtocolHandler],
) -> tuple[BrokerProtocolHandler, asyncio.StreamReader]:
    context = BaseContext()
    context.config = {"plugins": {}}  # no plugins: only the handler runs
    plugins: PluginManager[BaseContext] = PluginManager("amqtt.broker.plugins", context)
    session = Session()
    session.client_id = "locker-backend-x"
    session.keep_alive = 60
    handler = handler_class(plugins)
    stream = asyncio.StreamReader()
    handler.attach(session, StreamReaderAdapter(stream), RecordingWriter())
    await handler.start()
    return handler, stream


async def _stop_as_a_packet_arrives(
    handler: BrokerProtocolHandler, stream: asyncio.StreamReader
) -> asyncio.Task[None]:
    stream.feed_data(PINGREQ)  # the read completes in the next iteration ...
    stopping = asyncio.ensure_future(handler.stop())  # ... and the stop cancels right after it
    await asyncio.wait([stopping], timeout=2.0)
    return stopping


async def test_upstream_handler_stop_hangs_when_the_cancel_meets_a_packet() -> None:
    """The cause, shown on upstream's handler (Python 3.11): the stop does not return."""
    handler, stream = await _running(BrokerProtocolHandler)
    stopping = await _stop_as_a_packet_arrives(handler, stream)
    try:
        if not stopping.done():
            assert handler._reader_task is not None and not handler._reader_task.done()
        else:  # pragma: no cover - a Python whose wait_for delivers the cancellation
            pytest.skip("this Python's asyncio.wait_for does not swallow the cancellation")
    finally:
        stream.feed_eof()  # let upstream's reader end, so its stop returns
        await asyncio.wait_for(stopping, 5)


async def test_our_handler_stop_ends_the_reader_even_when_the_cancel_meets_a_packet() -> None:
    handler, stream = await _running(PatientBrokerProtocolHandler)
    stopping = await _stop_as_a_packet_arrives(handler, stream)
    assert stopping.done() and stopping.exception() is None
    assert handler._reader_task is not None and handler._reader_task.done()
    assert isinstance(handler.writer, RecordingWriter)
    assert handler.writer.written == PINGRESP  # the packet read as the stop began was served


async def test_our_handler_stop_is_unchanged_on_a_quiet_connection() -> None:
    handler, _stream = await _running(PatientBrokerProtocolHandler)
    await asyncio.wait_for(handler.stop(), 2.0)
    assert handler._reader_task is not None and handler._reader_task.done()
