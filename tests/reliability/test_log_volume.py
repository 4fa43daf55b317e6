"""Issue 8: the log of the `--headless` process stays bounded under a flood of hostile MQTT.

A real `locker-console --headless` process (MQTT_HOST set, a private Mosquitto, SQLite in
tmp, logging to stderr as in production) has one provisioned bank and one unprovisioned
one. A raw MQTT client then publishes thousands of messages the backend must refuse, in a
fixed mix: registrations with wrong tokens from one client id (rate limited after 5),
registrations carrying the real provisioning token of the unprovisioned bank with broken
payloads, bad JSON and wrong types on the provisioned bank's response/event/heartbeat
topics, responses for unknown transactions, messages for unknown banks, refused topics,
and a few 256 kB payloads. The flood is published in chunks; each chunk is handled (the
backend's /metrics count every message) before the next is sent.

Then the backend is stopped with SIGTERM (it flushes its log summaries) and its stderr is
read. Asserted:
- every flood message was handled (rejected, or a refused / rate-limited registration);
- the log is bounded: per throttled kind at most `burst` lines per window (20 per 10 s),
  the rest counted in "suppressed N similar log lines (...)" summaries, at most a handful
  of other lines (start/stop), no line over 600 bytes; and the lines logged plus the
  suppressed counts add up exactly to the messages refused (nothing is silently dropped
  from the accounting). So the bytes logged per flood message tend to 0 as the flood
  grows (figure: `bytes_per_flood_message`);
- no secret appears in the log: MQTT passwords, MOSQ_SECRET, SECRET_KEY, the API token,
  provisioning tokens (also the one in flooded topics) and the bank's MQTT password;
- the process stayed healthy and exits 0.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from backend.domain.topics import device_topic, register_topic
from backend.log_throttle import LOG_BURST, LOG_WINDOW
from tests.support.headless_instances import HeadlessInstance, headless_instance
from tests.support.mosquitto import MosquittoBroker
from tests.support.mqtt_device import provision
from tests.support.reliability_tools import operator_service, size
from tests.support.service_process import Metrics
from tests.support.waiting import until

FLOOD = size("log_flood_messages", 5_000, 50_000)
CHUNK = 250
BIG = 256 * 1024
SECRETS = {
    "MQTT_PASSWORD": "backend-pw-3f9c2a",
    "MQTT_PROVISIONING_PASSWORD": "provisioning-pw-81d0e4",
    "MOSQ_SECRET": "mosq-secret-5b7e19",
    "SECRET_KEY": "secret-key-c4a6d2",
}
REJECTED_LINE = re.compile(r"rejected \S+ message on ")
RATE_LIMITED_LINE = re.compile(r"registration attempts rate limited for client id ")
SUMMARY_LINE = re.compile(r"suppressed (\d+) similar log lines \((.+?)\)")

pytestmark = [pytest.mark.reliability, pytest.mark.mosquitto, pytest.mark.timeout(900)]


def flood_messages(
    count: int, bank: str, unprovisioned_token: str, seed: int = 11
) -> list[tuple[str, bytes]]:
    """`count` (topic, payload) pairs the backend must refuse, in a shuffled fixed mix."""
    rng = random.Random(seed)
    kinds = [
        lambda i: (register_topic(uuid.uuid4().hex * 2), b'{"client_id": "flood-attacker"}'),
        lambda i: (register_topic(unprovisioned_token), b'{"client_id": '),
        lambda i: (device_topic(bank, "response"), b'{"transaction_id": '),
        lambda i: (
            device_topic(bank, "response"),
            json.dumps(
                {"transaction_id": f"unknown-{i}", "result": "success", "timestamp": i}
            ).encode(),
        ),
        lambda i: (
            device_topic(bank, "response"),
            json.dumps(
                {
                    "transaction_id": f"unknown-{i}",
                    "result": "success",
                    "timestamp": "2026-01-01T00:00:00Z",
                }
            ).encode(),
        ),
        lambda i: (device_topic(bank, "event"), b'{"event": "door_state_changed", "data": 7}'),
        lambda i: (device_topic(bank, "state/heartbeat"), b'{"status": 12, "data": []}'),
        lambda i: (device_topic(str(uuid.uuid4()), "response"), b"{}"),
        lambda i: (f"locker/not-a-uuid-{i}/response", b"{}"),
        lambda i: (device_topic(bank, "state/unknown/deeper"), b"\xff\xfe\x00"),
    ]
    messages = [kinds[i % len(kinds)](i) for i in range(count)]
    for i in range(0, count, 1000):  # a few oversized payloads
        messages[i] = (device_topic(bank, "event"), b"x" * BIG)
    rng.shuffle(messages)
    return messages


def counts(metrics: Metrics) -> Counter[str]:
    """Refused messages by how: `rejected`, and registrations `error` / `rate_limited`."""
    found: Counter[str] = Counter()
    for (name, labels), value in metrics.samples.items():
        if name == "locker_mqtt_rejected_total":
            found["rejected"] += int(value)
        elif name == "locker_mqtt_registrations_total":
            found.update({dict(labels).get("result", "?"): int(value)})
    return found


def refused(metrics: Metrics) -> int:
    """Messages the backend refused: rejected ones plus refused registrations."""
    found = counts(metrics)
    return found["rejected"] + found["error"] + found["rate_limited"]


async def test_log_of_a_flood_of_rejected_messages_is_bounded_and_has_no_secrets(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    db_url = f"sqlite:///{tmp_path / 'locker.db'}"
    backend: HeadlessInstance = headless_instance(
        "logflood",
        tmp_path / "backend",
        {
            "DATABASE_URL": db_url,
            "MQTT_HOST": mosquitto.host,
            "MQTT_PORT": str(mosquitto.port),
            **SECRETS,
        },
    )
    service = operator_service(tmp_path, db_url, mosquitto, secret_key=SECRETS["SECRET_KEY"])
    await service.migrate()
    figures: dict[str, Any] = {"flood_messages": FLOOD}
    session = aiohttp.ClientSession()
    try:
        await backend.start()
        await backend.wait_healthy(session, 60)
        ready = await service.create_bank("Flooded", "Lab", 2)
        waiting = await service.create_bank("Unprovisioned", "Lab", 2)
        api_token = await service.create_api_token("flood-operator", "operator")
        reply = await provision(mosquitto.host, mosquitto.port, ready.token)
        assert reply.status == "success" and reply.data is not None
        secrets = {
            **SECRETS,
            "api token": api_token,
            "provisioning token (used)": ready.token,
            "provisioning token (flooded topic)": waiting.token,
            "bank MQTT password": reply.data.mqtt_password,
        }
        async with session.get(
            f"{backend.url}/api/whoami", headers={"Authorization": f"Bearer {api_token}"}
        ) as resp:
            assert resp.status == 200  # the token is in use, so it could be logged

        initial = counts(await backend.metrics(session))
        before = refused(await backend.metrics(session))
        log_start = backend.log_path.stat().st_size
        messages = flood_messages(FLOOD, ready.uuid, waiting.token)
        started = time.monotonic()
        async with aiomqtt.Client(
            mosquitto.host, mosquitto.port, identifier=f"flooder-{uuid.uuid4().hex[:8]}"
        ) as client:
            for start in range(0, FLOOD, CHUNK):
                for topic, payload in messages[start : start + CHUNK]:
                    await client.publish(topic, payload, qos=1)
                sent = min(start + CHUNK, FLOOD)

                async def handled() -> int:
                    return refused(await backend.metrics(session)) - before

                await until(handled, lambda n, sent=sent: n >= sent, f"{sent} handled", 120, 0.1)
        flood_seconds = time.monotonic() - started
        final = counts(await backend.metrics(session))
        final.subtract(initial)
        figures["refused"] = dict(final)
        assert refused(await backend.metrics(session)) - before == FLOOD
        async with session.get(f"{backend.url}/healthz") as resp:
            assert resp.status == 200
        exit_code = await backend.stop()
        assert exit_code == 0, backend.log_tail()

        raw = backend.log_path.read_bytes()
        flood_log = raw[log_start:].decode("utf-8", "replace")
        lines = flood_log.splitlines()
        rejected_lines = sum(1 for line in lines if REJECTED_LINE.search(line))
        rate_limited_lines = sum(1 for line in lines if RATE_LIMITED_LINE.search(line))
        suppressed: Counter[str] = Counter()
        for line in lines:
            match = SUMMARY_LINE.search(line)
            if match:
                suppressed[match.group(2)] += int(match.group(1))
        summary_lines = sum(1 for line in lines if SUMMARY_LINE.search(line))
        other_lines = len(lines) - rejected_lines - rate_limited_lines - summary_lines
        kinds_by_line = Counter(
            re.sub(r"^\S+ \S+ ", "", line).split(":")[0] for line in lines if line.strip()
        )
        figures.update(
            {
                "flood_seconds": round(flood_seconds, 1),
                "log_bytes_during_flood_and_stop": len(flood_log.encode()),
                "log_lines": len(lines),
                "bytes_per_flood_message": round(len(flood_log.encode()) / FLOOD, 3),
                "rejected_lines": rejected_lines,
                "rate_limited_lines": rate_limited_lines,
                "summary_lines": summary_lines,
                "other_lines": other_lines,
                "suppressed": dict(suppressed),
                "lines_by_logger": dict(kinds_by_line.most_common(8)),
            }
        )
        # Every rejection and rate-limited registration is either logged or counted in a
        # summary, exactly once (refused registrations before the limit get a reply instead).
        assert rejected_lines + suppressed["rejected messages"] == final["rejected"], figures
        assert (
            rate_limited_lines + suppressed["rate-limited registrations"] == final["rate_limited"]
        ), figures
        assert final["rate_limited"] > 0 and final["rejected"] > 0, figures
        # Bounded: per throttled kind at most `burst` lines per window, one summary per
        # window, and nothing else that grows with the number of messages.
        windows = math.ceil(flood_seconds / LOG_WINDOW) + 1
        assert rejected_lines <= LOG_BURST * windows, figures
        assert rate_limited_lines <= LOG_BURST * windows, figures
        assert summary_lines <= 2 * windows, figures
        assert other_lines <= 10, figures
        assert max(len(line.encode()) for line in lines) <= 600, figures
        leaked = {name for name, value in secrets.items() if value in raw.decode(errors="replace")}
        assert not leaked, f"secrets in the log: {sorted(leaked)}"
    finally:
        print("figures:", json.dumps(figures))
        await backend.stop()
        await session.close()
        service.close()
