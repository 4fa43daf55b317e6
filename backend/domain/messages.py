"""What the backend publishes because of an event: commands and provisioning replies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from backend.domain.contract import (
    INVALID_TOKEN_MESSAGE,
    ApplyConfigData,
    Command,
    CompartmentMapping,
    Credentials,
    OpenCompartmentData,
    ProvisioningReply,
)
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


def command_message(bank_uuid: str, event: DomainEvent) -> OutboundMessage | None:
    """The command an event asks to send, or None if it asks for none."""
    if isinstance(event, CompartmentOpeningRequested):
        data = OpenCompartmentData(compartment_number=event.compartment_number).model_dump()
        action = "open_compartment"
    elif isinstance(event, ConfigApplyRequested):
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
        action=action,  # type: ignore[arg-type]
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


def provisioning_success(client_id: str, bank_uuid: str, password: str) -> OutboundMessage:
    reply = ProvisioningReply(
        status="success", data=Credentials(mqtt_user=bank_uuid, mqtt_password=password)
    )
    return OutboundMessage(
        kind="provisioning_reply",
        topic=reply_topic(client_id),
        payload=reply.to_bytes(),
        bank_uuid=bank_uuid,
    )


def provisioning_error(client_id: str) -> OutboundMessage:
    reply = ProvisioningReply(status="error", message=INVALID_TOKEN_MESSAGE)
    return OutboundMessage(
        kind="provisioning_reply", topic=reply_topic(client_id), payload=reply.to_bytes()
    )
