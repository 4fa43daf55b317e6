"""A config push that fails, times out or expires leaves `pending`, and the bank gets its
mapping again -- as a new transaction -- when it next comes online (issue 13: the real
client ignores a repeated transaction_id, so a re-push under the old one would be lost)."""

from __future__ import annotations

import pytest

from backend.device_service import HeartbeatIn
from backend.domain.contract import CommandResponse, Heartbeat, HeartbeatData
from backend.domain.timeutil import FrozenClock
from backend.service import LockerService
from tests.support.http_api import provision


async def _beat(service: LockerService, clock: FrozenClock, bank: str) -> None:
    now = clock.now()
    beat = Heartbeat(data=HeartbeatData(timestamp=now, uptime_seconds=5))
    await service.devices.record_heartbeats([HeartbeatIn(bank, beat, now)])


async def _config_txns(service: LockerService, bank: str) -> list[tuple[str, str]]:
    txns = await service.list_transactions(bank, 50)
    return sorted(
        ((t.transaction_id, t.status) for t in txns if t.action == "apply_config"),
        key=lambda t: t[0],
    )


async def _end_push(how: str, service: LockerService, clock: FrozenClock, bank: str) -> None:
    """Let the bank's pending config push end the way `how` says."""
    (item,) = [i for i in await service.devices.outbox_due(100) if i.bank_uuid == bank]
    if how == "expired":  # the relay found it past expires_at before it could publish
        clock.advance(service.settings.config_ttl_seconds + 1)
        await service.devices.outbox_expired(item)
        return
    await service.devices.outbox_published_many([item])
    if how == "failed":
        assert item.transaction_id is not None
        await service.devices.record_response(
            bank,
            CommandResponse(
                action="apply_config",
                result="error",
                transaction_id=item.transaction_id,
                timestamp=clock.now(),
                error_code="INVALID_CONFIG",
                message="config_hash does not match the provided compartments mapping",
            ),
        )
    else:
        clock.advance(service.settings.command_timeout + 1)
        await service.devices.sweep()


@pytest.mark.parametrize("how", ["failed", "timed_out", "expired"])
async def test_a_push_that_did_not_land_is_pushed_again_as_a_new_transaction(
    service: LockerService, clock: FrozenClock, how: str
) -> None:
    bank = (await provision(service)).uuid
    await service.devices.outbox_published_many(
        [i for i in await service.devices.outbox_due(100) if i.kind == "provisioning_reply"]
    )
    await _beat(service, clock, bank)  # online: the mapping is pushed
    (first,) = await _config_txns(service, bank)
    assert (await service.get_bank(bank)).config_state == "pending"

    await _end_push(how, service, clock, bank)
    state = (await service.get_bank(bank)).config_state
    assert state != "pending", f"a {how} push must not stay pending"
    assert state in ("unknown", "drifted")

    await service.devices.record_last_will(bank)
    clock.advance(1)
    await _beat(service, clock, bank)  # back online: pushed again
    txns = await _config_txns(service, bank)
    assert len(txns) == 2, txns
    again = next(t for t in txns if t[0] != first[0])
    assert again[1] == "pending" and again[0] != first[0], "a new transaction"
    assert (await service.get_bank(bank)).config_state == "pending"
