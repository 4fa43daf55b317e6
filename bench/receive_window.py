"""Receive window: does the broker keep to the backend's Receive Maximum once PUBACKs flow?

The backend acknowledges a message only once it is handled (RELIABILITY F6) and asks the
broker (MQTT 5 CONNECT, Receive Maximum) for at most `RECEIVE_MAXIMUM` unacknowledged
messages at a time, so that a backlog waits in the broker's queue for our session, not in
our memory. This script checks that against a private Mosquitto, with a client set up as
the backend's is (MQTT 5, persistent session, manual acks, the same Receive Maximum):

* `idle`: nothing is acknowledged; the broker must stop at the window.
* `batches`: what arrives is acknowledged in batches of 500, each after 0.2 s (a writer
  committing batches, as the backend does when it is behind).

Reported: the most messages received and not yet acknowledged at any moment, against the
window. Found on Mosquitto 2.0.11 (session 6): `idle` stops at the window, `batches` goes
far past it (about 20,000 of 30,000 in flight against 2,000), so a backend that is behind
holds its backlog on its heap (bench/BENCHMARKS.md, "fleet: memory and the start-up
backlog"); eclipse-mosquitto/mosquitto#2301 describes the same overshoot on 2.0.11.

    .venv/bin/python bench/receive_window.py [--quick] [--messages N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiomqtt
from aiomqtt import ProtocolVersion

from backend.mqtt.acks import RECEIVE_MAXIMUM
from backend.mqtt.connection import connect_properties
from bench.common import emit, log, mosquitto, result

BATCH = 500
BATCH_PAUSE_S = 0.2


async def fill(port: int, messages: int) -> None:
    """Publish `messages` QoS 1 heartbeats-sized messages as fast as the broker takes them."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="window-publisher") as publisher:
        body = b"x" * 200
        for index in range(messages):
            await publisher.publish(f"locker/b{index % 500}/state", body, qos=1)


async def most_in_flight(port: int, mode: str, messages: int, seconds: float) -> dict[str, Any]:
    """Receive as the backend does; the most received-and-unacknowledged at any moment."""
    client = aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=f"window-{mode}",
        protocol=ProtocolVersion.V5,
        clean_start=False,
        properties=connect_properties(persistent=True),
    )
    client._client.manual_ack_set(True)
    received = acked = most = 0
    pending: list[aiomqtt.Message] = []
    async with client:
        await client.subscribe("locker/+/state/#", qos=1)
        publishing = asyncio.create_task(fill(port, messages))
        queue = client._client._queue if hasattr(client._client, "_queue") else client._queue
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(0.05):
                    pending.append(await queue.get())
                    received += 1
            except TimeoutError:
                pass
            if mode == "batches" and len(pending) >= BATCH:
                await asyncio.sleep(BATCH_PAUSE_S)  # the batch's commit
                for message in pending[:BATCH]:
                    client._client.ack(message.mid, message.qos)
                    acked += 1
                del pending[:BATCH]
            most = max(most, received + queue.qsize() - acked)
        publishing.cancel()
        await asyncio.gather(publishing, return_exceptions=True)
    return {"mode": mode, "received": received, "acked": acked, "most_unacknowledged": most}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    seconds = 3.0 if args.quick else 8.0
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-window-") as tmp, mosquitto(Path(tmp)) as broker:
        for mode in ("idle", "batches"):
            found = await most_in_flight(broker.port, mode, args.messages, seconds)
            log(f"{mode}: {found}")
            runs.append(found)
    worst = max(r["most_unacknowledged"] for r in runs)
    return result(
        "receive_window",
        figure=worst,
        unit="most messages received and not yet acknowledged (Mosquitto, MQTT 5)",
        baseline=RECEIVE_MAXIMUM,
        baseline_unit="Receive Maximum the client asked for",
        ratio=worst / RECEIVE_MAXIMUM,
        target="<= Receive Maximum in both modes",
        passed=worst <= RECEIVE_MAXIMUM,
        params={"messages": args.messages, "seconds": seconds, "quick": args.quick},
        runs=runs,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--quick", action="store_true", help="tiny size (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = min(args.messages, 6_000)
    emit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
