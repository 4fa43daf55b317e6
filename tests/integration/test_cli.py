"""The admin CLI as an operator runs it: a real process on a real SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "DATABASE_", "LOCKER_"))
    }
    env["LOCKER_DATA_DIR"] = str(tmp_path / "data")
    return subprocess.run(
        [sys.executable, "-m", "console.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def events(tmp_path: Path) -> list[dict[str, object]]:
    out = run(tmp_path, "events", "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.fixture
def bank(tmp_path: Path) -> dict[str, object]:
    out = run(
        tmp_path,
        "bank",
        "create",
        "--name",
        "Hall A",
        "--location",
        "Berlin",
        "--compartments",
        "4",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_create_prints_uuid_and_token_once(tmp_path: Path, bank: dict[str, object]) -> None:
    assert set(bank) >= {"uuid", "name", "token", "token_expires_at"}
    assert bank["name"] == "Hall A" and bank["compartments"] == 4
    shown = run(tmp_path, "bank", "show", str(bank["uuid"]), "--json")
    assert shown.returncode == 0
    assert str(bank["token"]) not in shown.stdout
    data = json.loads(shown.stdout)
    assert data["status"] == "unprovisioned"
    assert [c["number"] for c in data["compartments"]] == [1, 2, 3, 4]
    assert {"door_state", "number"} <= set(data["compartments"][0])
    # Generated secrets live in the data dir, readable by the owner only.
    mode = (tmp_path / "data" / "secrets.json").stat().st_mode & 0o777
    assert mode == 0o600


def test_list_and_events_json(tmp_path: Path, bank: dict[str, object]) -> None:
    listed = json.loads(run(tmp_path, "bank", "list", "--json").stdout)
    assert [b["uuid"] for b in listed] == [bank["uuid"]]
    assert listed[0]["last_heartbeat_at"] is None
    evs = events(tmp_path)
    assert [e["event_type"] for e in evs] == ["LockerBankCreated", "ProvisioningTokenIssued"]
    assert all({"position", "aggregate_uuid", "payload", "metadata"} <= set(e) for e in evs)
    assert evs[0]["metadata"]["actor"]  # the OS user who asked


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("open", "00000000-0000-4000-8000-000000000000", "1"), "no locker bank"),
        (("open", "{uuid}", "0"), "no compartment 0"),
        (("open", "{uuid}", "99"), "no compartment 99"),
        (("open", "{uuid}", "1"), "unprovisioned"),
        (("bank", "create", "--name", ""), "name must not be empty"),
        (("bank", "create", "--name", "x", "--compartments", "0"), "1 to 1000 compartments"),
        (("bank", "show", "garbage"), "not a bank uuid"),
        (("bank", "revoke", "{uuid}", "--reason", " "), "a reason is required"),
        (("transactions", "--bank", "00000000-0000-4000-8000-000000000000"), "no locker bank"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line_and_changes_nothing(
    tmp_path: Path, bank: dict[str, object], args: tuple[str, ...], message: str
) -> None:
    before = events(tmp_path)
    out = run(tmp_path, *(a.format(uuid=bank["uuid"]) for a in args))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in out.stderr
    assert events(tmp_path) == before


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    out = run(tmp_path, "open", "x")
    assert out.returncode == 2
    assert "usage:" in out.stderr


def test_bad_setting_is_one_clear_line(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("COMMAND_TIMEOUT=soon\n")
    out = run(tmp_path, "bank", "list")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "error: COMMAND_TIMEOUT: Input should be a valid number, unable to parse string as a number"
    )


def test_external_broker_without_secret_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MQTT_HOST=broker.example\n")
    out = run(tmp_path, "bank", "create", "--name", "x")
    assert out.returncode == 1
    assert "SECRET_KEY is not set" in out.stderr


def test_token_reissue_rebuild_and_api_token(tmp_path: Path, bank: dict[str, object]) -> None:
    token = json.loads(run(tmp_path, "bank", "token", str(bank["uuid"]), "--json").stdout)
    assert token["token"] != bank["token"]
    out = run(tmp_path, "projections", "rebuild")
    assert out.returncode == 0 and "from 3 events" in out.stdout
    # not a terminal: plain progress lines on stderr, no escape sequences
    assert "rebuilding read models (events): done, 3/3 (100%) in " in out.stderr
    assert "\x1b" not in out.stderr
    api = run(tmp_path, "api-token", "create", "mobile", "--role", "app")
    assert api.returncode == 0 and len(api.stdout.strip()) >= 40
    again = run(tmp_path, "api-token", "create", "mobile", "--role", "app")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_db_upgrade_reports_each_migration_as_a_plain_line(tmp_path: Path) -> None:
    out = run(tmp_path, "db", "upgrade")
    assert out.returncode == 0 and "migration(s) applied" in out.stdout
    steps = [line for line in out.stderr.splitlines() if "upgrading the database schema" in line]
    assert steps and steps[-1].startswith("upgrading the database schema: done, ")
    again = run(tmp_path, "db", "upgrade")  # nothing to do: no progress at all
    assert again.returncode == 0 and "upgrading" not in again.stderr


def test_help_lists_the_whole_program(tmp_path: Path) -> None:
    out = run(tmp_path, "--help")
    for word in (
        "--headless",
        "--demo",
        "--readonly",
        "attach",
        "simulate",
        "bank",
        "open",
        "config",
        "transactions",
        "events",
        "projections",
        "db",
        "api-token",
    ):
        assert word in out.stdout


def test_open_on_a_bank_not_online_warns_and_wait_exits_4_without_an_outcome(
    tmp_path: Path, bank: dict[str, object]
) -> None:
    """Issue 15: the warning says what will happen; `--wait` exits 4 when the open ends
    without opening (expired, unknown, or nothing recorded by its expiry)."""
    import asyncio

    from backend.config import load_settings
    from backend.service import LockerService

    async def register() -> None:
        service = LockerService(load_settings(locker_data_dir=tmp_path / "data", _env_file=None))
        try:
            assert await service.devices.register(str(bank["token"]), "dev-1") == "success"
        finally:
            service.close()

    asyncio.run(register())
    out = run(tmp_path, "open", str(bank["uuid"]), "1")
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == (
        "warning: bank 'Hall A' is provisioned: the open waits up to 30 s for it, "
        "then expires and never executes"
    )
    waited = run(tmp_path, "open", str(bank["uuid"]), "2", "--wait", "--timeout", "0.5")
    assert waited.returncode == 4, (waited.stdout, waited.stderr)
    assert "no outcome recorded by its expiry" in waited.stdout


def test_alerts_list_and_acknowledge(tmp_path: Path, bank: dict[str, object]) -> None:
    import asyncio

    from backend.config import load_settings
    from backend.device_service import HeartbeatIn
    from backend.domain.contract import Heartbeat, HeartbeatData
    from backend.domain.timeutil import SystemClock
    from backend.service import LockerService

    async def flap() -> None:
        service = LockerService(load_settings(locker_data_dir=tmp_path / "data", _env_file=None))
        try:
            uuid = str(bank["uuid"])
            assert await service.devices.register(str(bank["token"]), "dev-1") == "success"
            now = SystemClock().now()
            beat = Heartbeat(data=HeartbeatData(timestamp=now, uptime_seconds=1))
            await service.devices.record_heartbeats([HeartbeatIn(uuid, beat, now)])
            assert await service.devices.record_last_will(uuid)
        finally:
            service.close()

    asyncio.run(flap())
    listed = run(tmp_path, "alerts", "--json")
    assert listed.returncode == 0, listed.stderr
    (alert,) = json.loads(listed.stdout)
    assert (alert["kind"], alert["bank_name"], alert["count"]) == ("bank_offline", "Hall A", 1)
    acked = run(tmp_path, "alerts", "ack", str(alert["id"]), "--note", "power cut, on it")
    assert acked.returncode == 0, acked.stderr
    assert f"alert {alert['id']} acknowledged" in acked.stdout
    again = run(tmp_path, "alerts", "ack", str(alert["id"]))
    assert again.returncode == 1 and "already acknowledged" in again.stderr
    after = json.loads(run(tmp_path, "alerts", "--json").stdout)
    assert after[0]["ack_note"] == "power cut, on it"  # still open: the bank is offline
    (event,) = [e for e in events(tmp_path) if e["event_type"] == "AlertAcknowledged"]
    assert event["metadata"]["origin"] in ("local",) or str(event["metadata"]["origin"]).startswith(
        "ssh from"
    )
