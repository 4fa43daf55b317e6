"""What the backend publishes because of an event: commands and provisioning replies."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backend.domain.contract import (
    INVALID_TOKEN_MESSAGE,
    ApplyConfigData,
    Command,
    CompartmentMapping,
    Credentials,
    OpenCompartmentData,
    ProvisioningReply,
)
from backend.domain.dialect import uses_message_ids
from backend.domain.events import (
    CompartmentOpeningRequested,
    ConfigApplyRequested,
    DomainEvent,
)
from backend.domain.topics import command_topic, reply_topic


@dataclass(frozen=True)
class OutboundMessage:
    """One MQTT message to publish later through the outbox."""

    kind: str
    topic: str
    payload: bytes
    bank_uuid: str | None = None
    transaction_id: str | None = None
    expires_at: datetime | None = None
    qos: int = 1
    retain: bool = False


def new_message_id() -> str:
    """A fresh `message_id`: unique per publish (the upstream client drops a repeated one)."""
    return str(uuid.uuid4())


def command_message(
    bank_uuid: str, event: DomainEvent, dialect: str | None = "seed"
) -> OutboundMessage | None:
    """The command an event asks to send, in the bank's dialect, or None if it asks for none."""
    openlocker = dialect == "openlocker"
    data: dict[str, Any]
    if isinstance(event, CompartmentOpeningRequested):
        data = OpenCompartmentData(compartment_number=event.compartment_number).model_dump()
        action = "open_compartment"
    elif isinstance(event, ConfigApplyRequested):
        if openlocker:
            # upstream schema: exactly these keys per compartment, no `id`
            mapping: list[dict[str, Any]] = [
                {"compartment_number": c.number, "slaveId": c.slave_id, "address": c.address}
                for c in sorted(event.compartments, key=lambda c: c.number)
            ]
            data = {
                "config_hash": event.config_hash,
                "heartbeat_interval_seconds": event.heartbeat_interval_seconds,
                "compartments": mapping,
            }
        else:
            data = ApplyConfigData(
                config_hash=event.config_hash,
                heartbeat_interval_seconds=event.heartbeat_interval_seconds,
                compartments=[
                    CompartmentMapping(id=c.number, slaveId=c.slave_id, address=c.address)
                    for c in event.compartments
                ],
            ).model_dump()
        action = "apply_config"
    else:
        return None
    command = Command(
        message_id=new_message_id() if uses_message_ids(dialect) else None,
        action=action,  # type: ignore[arg-type]  # one of the Action literals, set above
        transaction_id=event.transaction_id,
        timestamp=event.occurred_at,
        expires_at=event.expires_at,
        data=data,
    )
    return OutboundMessage(
        kind="command",
        topic=command_topic(bank_uuid),
        payload=command.to_bytes(),
        bank_uuid=bank_uuid,
        transaction_id=event.transaction_id,
        expires_at=event.expires_at,
    )


def restamp(payload: bytes) -> bytes:
    """The same command with a new `message_id` (a re-ask is a new publish), if it has one."""
    try:
        data = json.loads(payload)
    except ValueError:
        return payload
    if not isinstance(data, dict) or "message_id" not in data:
        return payload
    data["message_id"] = new_message_id()
    return json.dumps(data, separators=(",", ":")).encode()


def provisioning_success(
    client_id: str, bank_uuid: str, password: str, now: datetime
) -> OutboundMessage:
    # Always with message_id and timestamp: the upstream client refuses a reply without
    # them, and a seed device ignores fields it does not know.
    reply = ProvisioningReply(
        message_id=new_message_id(),
        timestamp=now,
        status="success",
        data=Credentials(mqtt_user=bank_uuid, mqtt_password=password),
    )
    return OutboundMessage(
        kind="provisioning_reply",
        topic=reply_topic(client_id),
        payload=reply.to_bytes(),
        bank_uuid=bank_uuid,
    )


def provisioning_error(client_id: str, now: datetime) -> OutboundMessage:
    reply = ProvisioningReply(
        message_id=new_message_id(), timestamp=now, status="error", message=INVALID_TOKEN_MESSAGE
    )
    return OutboundMessage(
        kind="provisioning_reply", topic=reply_topic(client_id), payload=reply.to_bytes()
    )
