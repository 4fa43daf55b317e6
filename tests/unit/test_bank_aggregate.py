"""The LockerBank aggregate without any I/O: rules, folding, late answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backend.domain.bank import LockerBank, default_compartments
from backend.domain.errors import InvalidInput, NotFound, RuleViolation
from backend.domain.events import (
    AlertAcknowledged,
    CommandExpired,
    CommandFailed,
    CommandTimedOut,
    CompartmentOpened,
    CompartmentSpec,
    ConfigApplied,
    DomainEvent,
    LockerBankProvisioned,
    ProvisioningRejected,
)

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TTL = timedelta(minutes=5)
UUID = "00000000-0000-4000-8000-000000000001"


def fold(bank: LockerBank, events: list[DomainEvent]) -> list[DomainEvent]:
    for event in events:
        bank.apply(event)
    return events


def new_bank(compartments: int = 4) -> LockerBank:
    bank = LockerBank(UUID)
    fold(
        bank,
        LockerBank.create(
            UUID,
            name="Hall",
            location="Berlin",
            compartments=default_compartments(compartments),
            heartbeat_interval_seconds=5,
            now=NOW,
        ),
    )
    return bank


def provisioned_bank() -> LockerBank:
    bank = new_bank()
    fold(bank, bank.issue_token("h", now=NOW, ttl=timedelta(days=7)))
    fold(bank, bank.provision("h", client_id="c", password_sha256="p", now=NOW))
    return bank


def open_sent(bank: LockerBank, number: int = 1, txn: str = "t1") -> None:
    fold(bank, bank.request_open(number, transaction_id=txn, requested_by="op", now=NOW, ttl=TTL))
    fold(bank, bank.mark_sent(txn, now=NOW))


@pytest.mark.parametrize(
    ("name", "numbers", "interval", "message"),
    [
        ("", [1], 5, "name must not be empty"),
        ("   ", [1], 5, "name must not be empty"),
        ("x" * 101, [1], 5, "longer than 100"),
        ("a\x00b", [1], 5, "control characters"),
        ("a\tb", [1], 5, "control characters"),
        ("ok", [], 5, "1 to 1000 compartments"),
        ("ok", [0, 1], 5, "start at 1"),
        ("ok", [1], 0, "heartbeat interval"),
    ],
)
def test_create_rejects_bad_input(
    name: str, numbers: list[int], interval: int, message: str
) -> None:
    specs = [CompartmentSpec(number=n, slave_id=1, address=n) for n in numbers]
    with pytest.raises(InvalidInput, match=message):
        LockerBank.create(
            UUID,
            name=name,
            location="",
            compartments=specs,
            heartbeat_interval_seconds=interval,
            now=NOW,
        )


def test_duplicate_numbers_conflict() -> None:
    """A rule between entries (409 at the API), not a malformed value."""
    specs = [CompartmentSpec(number=1, slave_id=1, address=n) for n in (0, 1)]
    with pytest.raises(RuleViolation, match="unique"):
        LockerBank.create(
            UUID, name="ok", location="", compartments=specs, heartbeat_interval_seconds=5, now=NOW
        )


def test_control_characters_in_location_and_nul_in_a_revoke_reason_are_refused() -> None:
    with pytest.raises(InvalidInput, match="control characters"):
        LockerBank.create(
            UUID,
            name="ok",
            location="Hall\x00",
            compartments=[CompartmentSpec(number=1, slave_id=1, address=1)],
            heartbeat_interval_seconds=5,
            now=NOW,
        )
    with pytest.raises(InvalidInput, match="NUL"):
        provisioned_bank().revoke(now=NOW, reason="a\x00b")


def test_created_bank_has_its_compartments_and_a_desired_hash() -> None:
    bank = new_bank(3)
    assert bank.exists and bank.version == 1
    assert sorted(bank.compartments) == [1, 2, 3]
    assert len(bank.desired_config_hash) == 64
    assert bank.status == "unprovisioned"


def test_no_command_to_an_unprovisioned_or_revoked_bank() -> None:
    bank = new_bank()
    with pytest.raises(RuleViolation, match="unprovisioned"):
        bank.request_open(1, transaction_id="t", requested_by="op", now=NOW, ttl=TTL)
    bank = provisioned_bank()
    fold(bank, bank.revoke(now=NOW, reason="stolen"))
    assert bank.status == "revoked"
    with pytest.raises(RuleViolation, match="revoked"):
        bank.request_config(transaction_id="t", requested_by="op", now=NOW, ttl=TTL)


def test_unknown_compartment_is_refused_with_the_valid_range() -> None:
    bank = provisioned_bank()
    with pytest.raises(NotFound, match=r"no compartment 9 \(1-4\)"):
        bank.request_open(9, transaction_id="t", requested_by="op", now=NOW, ttl=TTL)


def test_one_open_request_per_compartment_in_flight() -> None:
    bank = provisioned_bank()
    open_sent(bank, 1, "t1")
    with pytest.raises(RuleViolation, match="in flight"):
        bank.request_open(1, transaction_id="t2", requested_by="op", now=NOW, ttl=TTL)
    # Another compartment is fine, and after the answer the first is free again.
    assert bank.request_open(2, transaction_id="t3", requested_by="op", now=NOW, ttl=TTL)
    fold(bank, bank.record_response("t1", result="success", now=NOW))
    assert bank.request_open(1, transaction_id="t4", requested_by="op", now=NOW, ttl=TTL)


def test_first_response_decides_and_a_second_changes_nothing() -> None:
    bank = provisioned_bank()
    open_sent(bank)
    events = fold(bank, bank.record_response("t1", result="success", now=NOW))
    assert [type(e) for e in events] == [CompartmentOpened]
    assert bank.compartments[1].door_state == "open"
    with pytest.raises(NotFound):
        bank.record_response("t1", result="success", now=NOW)


def test_error_response_is_command_failed_with_its_code() -> None:
    bank = provisioned_bank()
    open_sent(bank)
    (event,) = bank.record_response("t1", result="error", error_code="DOOR_JAMMED", now=NOW)
    assert isinstance(event, CommandFailed)
    assert event.error_code == "DOOR_JAMMED" and not event.late


def test_an_open_never_times_out_it_expires() -> None:
    bank = provisioned_bank()
    open_sent(bank)
    assert bank.time_out("t1", now=NOW) == []  # one terminal event for opens: CommandExpired
    (expired,) = fold(bank, bank.expire("t1", now=NOW))
    assert isinstance(expired, CommandExpired) and not expired.outcome_unknown
    assert bank.compartments[1].open_transaction is None


def test_answer_after_expiry_is_a_late_execution_never_a_success() -> None:
    bank = provisioned_bank()
    open_sent(bank)
    fold(bank, bank.expire("t1", now=NOW))
    (event,) = fold(bank, bank.record_response("t1", result="success", now=NOW))
    assert isinstance(event, CompartmentOpened) and event.late and event.after_expiry
    assert "t1" not in bank.commands  # `late` is terminal


def test_device_refusing_an_expired_command_leaves_it_expired() -> None:
    bank = provisioned_bank()
    open_sent(bank)
    fold(bank, bank.expire("t1", now=NOW))
    refused = bank.record_response("t1", result="error", error_code="COMMAND_EXPIRED", now=NOW)
    assert refused == []


def test_outcome_unknown_only_for_a_command_that_was_sent() -> None:
    bank = provisioned_bank()
    open_sent(bank)
    (event,) = fold(bank, bank.expire("t1", now=NOW, outcome_unknown=True))
    assert isinstance(event, CommandExpired) and event.outcome_unknown
    # an answer may still come: then it is a late execution
    (late,) = bank.record_response("t1", result="success", now=NOW)
    assert isinstance(late, CompartmentOpened) and late.after_expiry
    fold(bank, bank.request_open(2, transaction_id="t2", requested_by="op", now=NOW, ttl=TTL))
    (never_sent,) = bank.expire("t2", now=NOW, outcome_unknown=True)
    assert isinstance(never_sent, CommandExpired) and not never_sent.outcome_unknown


def test_config_still_times_out_and_a_late_answer_counts() -> None:
    bank = provisioned_bank()
    fold(bank, bank.request_config(transaction_id="c1", requested_by="op", now=NOW, ttl=TTL))
    fold(bank, bank.mark_sent("c1", now=NOW))
    (timed_out,) = fold(bank, bank.time_out("c1", now=NOW))
    assert isinstance(timed_out, CommandTimedOut)
    (applied,) = bank.record_response(
        "c1", result="success", applied_config_hash=bank.desired_config_hash, now=NOW
    )
    assert isinstance(applied, ConfigApplied) and applied.late and not applied.after_expiry


def test_acknowledging_an_alert_checks_the_note() -> None:
    bank = provisioned_bank()
    (ack,) = bank.acknowledge_alert(7, "  door checked  ", now=NOW)
    assert isinstance(ack, AlertAcknowledged) and ack.alert_id == 7
    assert ack.note == "door checked"
    with pytest.raises(InvalidInput):
        bank.acknowledge_alert(7, "x" * 501, now=NOW)
    with pytest.raises(InvalidInput):
        bank.acknowledge_alert(7, "bell\x07", now=NOW)


def test_expire_only_open_commands() -> None:
    bank = provisioned_bank()
    open_sent(bank)
    assert bank.expire("t1", now=NOW)
    assert bank.expire("unknown", now=NOW) == []


def test_sent_is_recorded_once() -> None:
    bank = provisioned_bank()
    open_sent(bank)
    assert bank.mark_sent("t1", now=NOW) == []


def test_config_applied_flags_drift() -> None:
    bank = provisioned_bank()
    fold(bank, bank.request_config(transaction_id="c1", requested_by="op", now=NOW, ttl=TTL))
    fold(bank, bank.request_config(transaction_id="c2", requested_by="op", now=NOW, ttl=TTL))
    (ok,) = fold(
        bank,
        bank.record_response(
            "c1", result="success", applied_config_hash=bank.desired_config_hash, now=NOW
        ),
    )
    (bad,) = bank.record_response("c2", result="success", applied_config_hash="0" * 64, now=NOW)
    assert isinstance(ok, ConfigApplied) and ok.in_sync
    assert isinstance(bad, ConfigApplied) and not bad.in_sync


def test_provisioning_token_rules() -> None:
    bank = new_bank()
    fold(bank, bank.issue_token("h1", now=NOW, ttl=timedelta(hours=1)))
    fold(bank, bank.issue_token("h2", now=NOW, ttl=timedelta(hours=1)))  # voids h1
    (old,) = bank.provision("h1", client_id="c", password_sha256="p", now=NOW)
    assert isinstance(old, ProvisioningRejected)
    late = NOW + timedelta(hours=2)
    (expired,) = bank.provision("h2", client_id="c", password_sha256="p", now=late)
    assert isinstance(expired, ProvisioningRejected) and "expired" in expired.reason
    (ok,) = fold(bank, bank.provision("h2", client_id="c", password_sha256="p", now=NOW))
    assert isinstance(ok, LockerBankProvisioned)
    assert bank.status == "provisioned"
    (reused,) = bank.provision("h2", client_id="c", password_sha256="p", now=NOW)
    assert isinstance(reused, ProvisioningRejected)


def test_liveness_transitions_only() -> None:
    bank = provisioned_bank()
    assert bank.went_offline("last_will", now=NOW) == []  # not online yet
    fold(bank, bank.came_online(now=NOW))
    assert bank.came_online(now=NOW) == []
    fold(bank, bank.went_offline("heartbeat_timeout", now=NOW))
    assert bank.status == "offline"
    assert bank.came_online(now=NOW)


def test_door_state_only_on_change() -> None:
    bank = provisioned_bank()
    fold(bank, bank.door_state_changed(2, "closed", now=NOW))
    assert bank.door_state_changed(2, "closed", now=NOW) == []
    assert bank.door_state_changed(2, "open", now=NOW)
    with pytest.raises(NotFound):
        bank.door_state_changed(99, "open", now=NOW)


def test_unknown_bank_refuses_everything() -> None:
    bank = LockerBank(UUID)
    with pytest.raises(NotFound, match="no locker bank"):
        bank.issue_token("h", now=NOW, ttl=TTL)


def test_clock_offset_estimate_takes_the_least_delayed_sample_and_decays_slowly() -> None:
    from backend.domain.clock_offset import next_offset, skewed

    estimate = None
    for sample in (-0.5, -0.1, -0.9):  # offset 0, transit 0.5/0.1/0.9 s
        estimate = next_offset(estimate, sample)
    assert estimate is not None and -0.2 <= estimate <= -0.1
    assert next_offset(-0.1, 30.0) == 30.0  # a clock set forward: at once
    assert 25 < next_offset(30.0, -0.1) < 30.0  # set back: slowly
    assert skewed(5.1) and skewed(-6) and not skewed(4.9) and not skewed(None)
