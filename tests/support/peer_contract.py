"""The contracts we did not write: the upstream Open-Locker AsyncAPI (JSON schemas,
examples, channels) and the JSON examples of the seed plan's section 4.

Everything is read from the shared folder next to the repository (`../shared`, read
only); nothing here is derived from the backend's models.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
PEER = SHARED / "peer"
ASYNCAPI = PEER / "upstream-docs" / "asyncapi"
SCHEMAS = ASYNCAPI / "schemas"
EXAMPLES = ASYNCAPI / "examples"
SEED_TEXT = SHARED / "seed" / "000_ae20b9a7d506875c.txt"

BACKEND_SENDS = ("backendSendLockerCommand",)
DEVICE_SENDS = (
    "lockerClientSendLockerResponse",
    "lockerClientSendLockerEvent",
    "lockerClientSendLockerHeartbeat",
    "lockerClientSendLockerCompartments",
    "lockerClientSendLockerConnection",
    "provisioningClientSendRegisterRequest",
)
# The provisioning reply is sent by the backend (the AsyncAPI lists only the receiving side)
BACKEND_RECEIVED_BY = ("provisioningClientReceiveReply",)


def _retrieve(uri: str) -> Resource[Any]:
    path = Path(uri.removeprefix("file://"))
    return Resource.from_contents(json.loads(path.read_text()), default_specification=DRAFT202012)


@cache
def _registry() -> Registry[Any]:
    return Registry(retrieve=_retrieve)  # type: ignore[call-arg]  # referencing's Registry takes it


def schema_validator(schema_file: Path) -> Draft202012Validator:
    """A validator for one upstream schema file, its relative `$ref`s resolved from disk,
    formats (`date-time`) checked."""
    return Draft202012Validator(
        {"$ref": schema_file.resolve().as_uri()},
        registry=_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def schema_errors(schema_file: Path, payload: Any) -> list[str]:
    """Every violation of `payload` against an upstream schema (empty: valid)."""
    errors: list[ValidationError] = list(schema_validator(schema_file).iter_errors(payload))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


@dataclass(frozen=True)
class ChannelMessage:
    """One message of the AsyncAPI: its name, channel address and payload schema."""

    name: str
    operation: str
    address: str
    schema: Path


@cache
def asyncapi() -> dict[str, Any]:
    return yaml.safe_load((ASYNCAPI / "mqtt.yaml").read_text())


def _resolve(ref: str) -> Any:
    node: Any = asyncapi()
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def channel_messages(operations: tuple[str, ...]) -> list[ChannelMessage]:
    """The messages of the named operations, with their channel address and schema file."""
    doc = asyncapi()
    found: list[ChannelMessage] = []
    for op_name in operations:
        operation = doc["operations"][op_name]
        channel = _resolve(operation["channel"]["$ref"])
        for ref in operation["messages"]:
            message = _resolve(_resolve(ref["$ref"])["$ref"])
            schema = (ASYNCAPI / message["payload"]["$ref"]).resolve()
            found.append(ChannelMessage(message["name"], op_name, channel["address"], schema))
    return found


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


def matching_messages(payload: Any, operations: tuple[str, ...]) -> list[ChannelMessage]:
    """The AsyncAPI messages (of these operations) whose schema the payload satisfies."""
    return [m for m in channel_messages(operations) if not schema_errors(m.schema, payload)]


def topic_for(address: str, bank_uuid: str, token: str = "tok", client_id: str = "cid") -> str:
    return (
        address.replace("{locker_uuid}", bank_uuid)
        .replace("{provisioning_token}", token)
        .replace("{client_id}", client_id)
    )


# --- the seed's section 4 -------------------------------------------------------------------


@dataclass(frozen=True)
class SeedExample:
    """A JSON example of the seed text: its heading, the topic named with it, the payload."""

    heading: str
    topic: str | None
    payload: dict[str, Any]


def seed_examples() -> list[SeedExample]:
    """The ```json blocks of the seed's section 4, each with the `Topic:` named before it
    (the `uuid-123` / `{uuid}` / `{locker_uuid}` placeholders kept as written)."""
    text = SEED_TEXT.read_text()
    start = text.index("## 4. Kommunikationsprotokoll")
    end = text.index("## 5.", start)
    section = text[start:end]
    found: list[SeedExample] = []
    heading = ""
    topic: str | None = None
    for block in re.finditer(r"(?ms)^(.*?)```json\n(.*?)```", section):
        before, body = block.group(1), block.group(2)
        for line in before.splitlines():
            if line.lstrip().startswith("#"):
                heading = line.strip("# ").strip()
                topic = None
            found_topic = re.search(r"\*\*Topic\*\*: `([^`]+)`|Topic: `([^`]+)`", line)
            if found_topic:
                topic = found_topic.group(1) or found_topic.group(2)
        try:
            payload = json.loads(body)
        except json.JSONDecodeError:
            continue  # a block with "..." placeholders for a value is not JSON
        found.append(SeedExample(heading, topic, payload))
    return found


def seed_inline_payloads() -> list[dict[str, Any]]:
    """Inline JSON payloads of section 4 (`Payload: `{...}``), e.g. the provisioning reply."""
    text = SEED_TEXT.read_text()
    section = text[text.index("## 4. Kommunikationsprotokoll") : text.index("## 5.")]
    payloads: list[dict[str, Any]] = []
    for match in re.finditer(r"Payload:\s*\n?\s*`(\{.*?\})`", section, re.S):
        try:
            payloads.append(json.loads(match.group(1)))
        except json.JSONDecodeError:
            continue
    return payloads
