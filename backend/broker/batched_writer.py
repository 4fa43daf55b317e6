"""A connection's packets written together: one `send` per event-loop pass, not per packet.

amqtt 0.12.1 writes every packet with `writer.write(packet)` then `await writer.drain()`,
and asyncio's transport sends each `write` at once (one `send` system call per packet). The
backend's own subscription gets every message the fleet publishes (a PUBLISH per
heartbeat, the broadcast loop sending a batch of them in one pass), so each was its own
system call; on loopback the kernel's TCP work for the receiver is charged to that call
too. Here the packets written to one connection during a pass of the event loop are kept
and sent together by a callback scheduled for the same pass (`call_soon`), in the order
they were written.

`drain()` keeps the transport's back-pressure: past the transport's high-water mark it
sends what is kept and waits like asyncio's `drain()`; a closing transport is drained at
once, so a lost connection still raises where amqtt expects it. `close()` sends what is
kept first.
"""

from __future__ import annotations

import asyncio

from amqtt.adapters import StreamWriterAdapter

__all__ = ["BatchedWriter"]


class BatchedWriter(StreamWriterAdapter):
    """amqtt's writer adapter, sending the packets of one loop pass in one `write`."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__(writer)
        self._transport = writer.transport
        self._kept: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if self.is_closed:
            return
        if not self._kept:
            self._loop.call_soon(self._send_kept)
        self._kept.append(bytes(data))

    def _send_kept(self) -> None:
        kept, self._kept = self._kept, []
        if kept and not self._transport.is_closing():
            self._writer.write(kept[0] if len(kept) == 1 else b"".join(kept))

    async def drain(self) -> None:
        if self.is_closed:
            return
        transport = self._transport
        if transport.is_closing():
            self._send_kept()
            await self._writer.drain()  # raises for a lost connection, as upstream expects
            return
        _, high = transport.get_write_buffer_limits()
        if transport.get_write_buffer_size() > high:
            self._send_kept()
            await self._writer.drain()

    async def close(self) -> None:
        if not self.is_closed:
            self._send_kept()
        await super().close()
