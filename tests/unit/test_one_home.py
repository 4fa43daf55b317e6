"""One home per concept (issue 20): one identity rule, one redactor, one secret digest,
one topic grammar and one command-status vocabulary, each checked where two
implementations used to disagree."""

from __future__ import annotations

import ast
import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backend.domain import topics
from backend.domain.acl import UserKind, permissions, valid_identity
from backend.domain.command_status import (
    AFTER_EXPIRY_STATUSES,
    LATE_ANSWER_STATUSES,
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    CommandStatus,
)
from backend.domain.contract import ContractError
from backend.domain.digests import secret_digest
from backend.domain.topics import TopicKind
from backend.mqtt.handlers import validate_inbound
from backend.mqtt.inbound import Inbound
from backend.redaction import REDACTED, SecretRedactingFilter, redact

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
BANK = "0b8a3f4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


# ----- identities: the hook's and the listener's rules used to disagree -----------------


def _registration(client_id: str) -> Inbound:
    payload = json.dumps({"client_id": client_id}).encode()
    return Inbound("locker/register/tok", TopicKind.REGISTER, "tok", payload, False, NOW)


@pytest.mark.parametrize(
    "client_id",
    [
        pytest.param("dev\x85ice", id="C1-control-NEL"),  # the listener accepted it
        pytest.param(" dev", id="leading-space"),  # the hook accepted it
        pytest.param("dev\u00a0", id="trailing-nbsp"),  # the hook accepted it
        pytest.param("d" * 300, id="300-characters"),  # the listener accepted it
    ],
)
def test_identities_the_two_validators_disagreed_on_are_refused_by_both(client_id: str) -> None:
    assert not valid_identity(client_id)
    # the listener refuses such a registration before it reaches the store
    with pytest.raises(ContractError, match="client_id"):
        validate_inbound(_registration(client_id))
    # and the broker grants such an identity nothing
    assert permissions(UserKind.PROVISIONING, "provisioning_client", client_id).publish == ()


@pytest.mark.parametrize("client_id", ["dev-1", "d" * 128, "a b", "ümlaut"], ids=str.__len__)
def test_good_identities_pass_both(client_id: str) -> None:
    assert valid_identity(client_id)
    assert validate_inbound(_registration(client_id)).client_id == client_id  # type: ignore[union-attr]  # a Registration for this topic


def test_there_is_one_identity_validator() -> None:
    defined = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "backend").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name == "valid_identity"
    ]
    assert defined == ["backend/domain/acl.py"]


# ----- the redactor: three used to behave differently -----------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the domain's redactor kept later levels and missed a prefix not at the start
        ("locker/register/tok/extra", f"locker/register/{REDACTED}"),
        ("$share/g/locker/register/tok", f"$share/g/locker/register/{REDACTED}"),
        # the broker's redactor kept what followed a quote inside the secret
        ("GET /a?mosq_secret=ab'cd&x=1", f"GET /a?mosq_secret={REDACTED}&x=1"),
        # the hook's access log wrote REDACTED, the others <redacted>: one marker now
        ("/api/mosq/auth?mosq_secret=s3cr3t", f"/api/mosq/auth?mosq_secret={REDACTED}"),
        # in free text (a repr, an error) the token ends at a quote or whitespace
        ("topic='locker/register/tok' refused", f"topic='locker/register/{REDACTED}' refused"),
        ("locker/register/+", f"locker/register/{REDACTED}"),
        # nothing else is touched
        (f"locker/{BANK}/state", f"locker/{BANK}/state"),
        ("locker/register/", "locker/register/"),
        ("plain text", "plain text"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_the_log_filter_redacts_message_and_traceback() -> None:
    try:
        raise RuntimeError("connect http://h/api?mosq_secret=hunter2 failed")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "amqtt", logging.ERROR, __file__, 1, "on %s", ("locker/register/tok1",), sys.exc_info()
        )
    assert SecretRedactingFilter().filter(record)
    assert record.getMessage() == f"on locker/register/{REDACTED}"
    assert record.exc_text is not None
    assert "hunter2" not in record.exc_text and f"mosq_secret={REDACTED}" in record.exc_text


# ----- the secret digest: three spellings used to exist ---------------------------------


def test_secret_digest_is_sha256_hex_of_utf8() -> None:
    assert secret_digest("pässword") == hashlib.sha256("pässword".encode()).hexdigest()


def test_secret_digest_takes_a_lone_surrogate_without_raising() -> None:
    digest = secret_digest("bad\udc80")
    assert len(digest) == 64 and digest != secret_digest("bad")


# ----- topic grammar ---------------------------------------------------------------------


def _topic_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and node.value.startswith(("locker/", "server/"))
    ]


def test_topic_literals_live_only_in_the_topic_grammar() -> None:
    found = {
        path.relative_to(ROOT).as_posix(): literals
        for package in ("backend", "console", "widgets", "simulator")
        for path in (ROOT / package).rglob("*.py")
        if path != ROOT / "backend/domain/topics.py" and (literals := _topic_literals(path))
    }
    assert found == {}


def test_acl_patterns_are_built_from_the_grammar() -> None:
    backend = permissions(UserKind.BACKEND, "locker_backend", "c")
    assert topics.ALL_LOCKER_TOPICS in backend.read
    assert topics.ANY_COMMAND in backend.publish
    device = permissions(UserKind.DEVICE, BANK, "c", legacy_status=True)
    assert set(device.publish) == set(topics.device_publish_topics(BANK, True))
    assert topics.command_topic(BANK) in device.read
    assert topics.is_command_topic(topics.command_topic(BANK))
    assert not topics.is_command_topic(topics.device_topic(BANK, "response"))


# ----- command status --------------------------------------------------------------------


def test_command_status_sets_partition_the_vocabulary() -> None:
    assert set(CommandStatus) == OPEN_STATUSES | TERMINAL_STATUSES
    assert not OPEN_STATUSES & TERMINAL_STATUSES
    assert LATE_ANSWER_STATUSES <= TERMINAL_STATUSES
    assert AFTER_EXPIRY_STATUSES <= LATE_ANSWER_STATUSES
    assert CommandStatus("pending") is CommandStatus.PENDING
    assert f"{CommandStatus.LATE}" == "late"  # as stored, shown and sent over the API
