"""Hostile device behaviour for security tests: spoofing, garbage, oversized payloads.

A provisioned device that misbehaves with its own, valid credentials: it
publishes on another bank's topics, subscribes to filters it must not have,
sends malformed and oversized payloads, guesses provisioning tokens. Whether
the broker (ACL) and the backend (validation) stop it is for the tests to
check; these helpers only do what they say and report what they sent.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime

import aiomqtt

from backend.domain import topics
from backend.domain.contract import ContractError, ProvisioningReply, parse
from backend.domain.timeutil import iso
from simulator.connection import SOCKET_OPTIONS
from simulator.device import SimulatedDevice

MALFORMED_PAYLOADS: dict[str, bytes] = {
    "empty": b"",
    "not_json": b"{not json",
    "not_utf8": b"\xff\xfe\xfd",
    "json_array": b"[1, 2, 3]",
    "json_string": b'"open"',
    "nan": b'{"type":"state","state":"heartbeat","data":{"timestamp":"2026-01-01T00:00:00Z",'
    b'"uptime_seconds":NaN}}',
    "wrong_types": b'{"type":"command_response","action":"open_compartment","result":"success",'
    b'"transaction_id":123,"timestamp":"yesterday"}',
    "unknown_action": b'{"type":"command_response","action":"self_destruct","result":"success",'
    b'"transaction_id":"t-1","timestamp":"2026-01-01T00:00:00Z"}',
    "unknown_event": b'{"type":"event","event":"door_exploded","timestamp":"2026-01-01T00:00:00Z",'
    b'"data":{}}',
    "hostile_strings": json.dumps(
        {
            "type": "event",
            "event": "qr_scanned",
            "event_id": "'; DROP TABLE stored_events; --",
            "timestamp": "2026-01-01T00:00:00Z",
            "data": {"qr_payload": "\u0000\u202e<script>alert(1)</script>\x1b[2J", "scanner": "x"},
        }
    ).encode(),
    "deep_nesting": b"[" * 100_000 + b"]" * 100_000,
}
"""Named payloads the backend must reject (or accept harmlessly) without falling over."""


def oversized_payload(size: int = 1024 * 1024) -> bytes:
    """A well-formed command response padded to `size` bytes (over the 64 KiB limit)."""
    head = {
        "type": "command_response",
        "action": "open_compartment",
        "result": "success",
        "transaction_id": "oversized",
        "timestamp": iso(datetime.now(UTC)),
        "message": "",
    }
    base = len(json.dumps(head).encode())
    head["message"] = "x" * max(0, size - base)
    return json.dumps(head).encode()


def forged_messages(victim_bank_uuid: str) -> dict[str, bytes]:
    """Valid-looking messages for another bank's topics, keyed by topic."""
    now = iso(datetime.now(UTC))
    return {
        topics.device_topic(victim_bank_uuid, "response"): json.dumps(
            {
                "type": "command_response",
                "action": "open_compartment",
                "result": "success",
                "transaction_id": "forged-" + secrets.token_hex(4),
                "timestamp": now,
            }
        ).encode(),
        topics.device_topic(victim_bank_uuid, "event"): json.dumps(
            {
                "type": "event",
                "event": "door_state_changed",
                "event_id": "forged-" + secrets.token_hex(4),
                "timestamp": now,
                "data": {"compartment_number": 1, "state": "open"},
            }
        ).encode(),
        topics.device_topic(victim_bank_uuid, "state"): json.dumps(
            {
                "type": "state",
                "state": "connection_lost",
                "status": "offline",
                "timestamp": now,
                "reason": "forged",
            }
        ).encode(),
        topics.command_topic(victim_bank_uuid): json.dumps(
            {
                "action": "open_compartment",
                "transaction_id": "forged-" + secrets.token_hex(4),
                "timestamp": now,
                "expires_at": now,
                "data": {"compartment_number": 1},
            }
        ).encode(),
    }


async def spoof_other_bank(device: SimulatedDevice, victim_bank_uuid: str) -> list[str]:
    """Publish forged responses, events, a fake last will and a command for another bank.

    Returns the topics published to (the broker may silently drop them all).
    """
    sent = []
    for topic, payload in forged_messages(victim_bank_uuid).items():
        await device.publish_raw(topic, payload)
        sent.append(topic)
    return sent


async def send_malformed(device: SimulatedDevice, suffix: str = "response") -> list[str]:
    """Publish every payload of MALFORMED_PAYLOADS on the device's own `suffix` topic."""
    bank = device.bank_uuid
    if bank is None:
        raise RuntimeError(f"{device.name}: not provisioned")
    topic = topics.device_topic(bank, suffix)
    for payload in MALFORMED_PAYLOADS.values():
        await device.publish_raw(topic, payload)
    return list(MALFORMED_PAYLOADS)


async def send_oversized(
    device: SimulatedDevice, size: int = 1024 * 1024, suffix: str = "response"
) -> int:
    """Publish one oversized payload on the device's own topic; returns its size."""
    bank = device.bank_uuid
    if bank is None:
        raise RuntimeError(f"{device.name}: not provisioned")
    payload = oversized_payload(size)
    await device.publish_raw(topics.device_topic(bank, suffix), payload)
    return len(payload)


async def try_subscribe(device: SimulatedDevice, topic_filter: str) -> list[int]:
    """Ask for a subscription the device should not get; the granted codes (128 = refused)."""
    return await device.subscribe_raw(topic_filter)


async def register_with_token(
    host: str,
    port: int,
    *,
    token: str,
    username: str,
    password: str | None,
    client_id: str | None = None,
    timeout: float = 5.0,
) -> ProvisioningReply | None:
    """One raw registration attempt (e.g. a guessed token); the reply or None on timeout."""
    client_id = client_id or "guess-" + secrets.token_hex(6)
    reply_topic = topics.reply_topic(client_id)
    async with aiomqtt.Client(
        host,
        port,
        username=username,
        password=password,
        identifier=client_id,
        socket_options=SOCKET_OPTIONS,
    ) as client:
        await client.subscribe(reply_topic, qos=1)
        payload = json.dumps({"client_id": client_id}).encode()
        await client.publish(topics.register_topic(token), payload, qos=1)
        try:
            async with asyncio.timeout(timeout):
                async for message in client.messages:
                    if message.topic.value == reply_topic and isinstance(message.payload, bytes):
                        try:
                            return parse(ProvisioningReply, message.payload)
                        except ContractError:
                            return None
        except TimeoutError:
            return None
    return None


def guessed_token() -> str:
    """A random token of the real tokens' shape (32 random bytes, URL-safe)."""
    return secrets.token_urlsafe(32)
