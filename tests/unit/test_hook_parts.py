"""Pure parts of the separate hook (issue 16): URL conversion, the credential sync's
newest-wins rule, the latency histogram's exposition, directory misses, instance ids."""

from __future__ import annotations

import pytest

from backend.config import Settings, default_instance_id
from backend.domain.digests import secret_digest
from backend.http.credential_sync import CREDENTIAL_EVENT_TYPES, CredentialChange, CredentialSync
from backend.http.hook import LATENCY_BUCKETS, HookMetrics
from backend.http.users import UserDirectory
from backend.store import change_feed
from backend.store.change_feed import libpq_url

UUID = "0a0a0a0a-0000-4000-8000-00000000000a"


def test_libpq_url_accepts_every_postgres_spelling() -> None:
    for url in (
        "postgresql+psycopg://u:p@h:5432/db",
        "postgresql://u:p@h:5432/db",
        "postgres://u:p@h:5432/db",
    ):
        assert libpq_url(url) == "postgresql://u:p@h:5432/db"
    with pytest.raises(ValueError):
        libpq_url("sqlite:///x.db")


def test_the_event_store_notifies_for_exactly_the_events_the_hook_applies() -> None:
    assert change_feed.CREDENTIAL_EVENT_TYPES == CREDENTIAL_EVENT_TYPES


def test_newest_change_per_bank_wins_whatever_the_order() -> None:
    directory = UserDirectory("backend", "pw", "prov", "pw2")
    sync = CredentialSync(directory)
    digest = secret_digest("secret")
    assert sync.apply_changes([CredentialChange(5, UUID, None)]) == 1
    # An older provisioning read late (the tail, a miss look-up) never undoes it.
    assert sync.apply_changes([CredentialChange(3, UUID, digest)]) == 0
    assert not directory.is_active_device(UUID)
    assert sync.apply_changes([CredentialChange(9, UUID, digest), CredentialChange(7, UUID, None)])
    assert directory.is_active_device(UUID)


def test_latency_histogram_exposition_is_cumulative() -> None:
    metrics = HookMetrics()
    for seconds in (0.0001, 0.0004, 0.003, 0.2, 30.0):
        metrics.observe("acl", seconds)
    lines = metrics.exposition()
    assert "# TYPE locker_hook_latency_seconds histogram" in lines
    buckets = [
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith('locker_hook_latency_seconds_bucket{endpoint="acl"')
    ]
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    assert buckets == sorted(buckets)
    assert buckets[0] == 2 and buckets[-1] == 5  # +Inf == count
    assert 'locker_hook_latency_seconds_count{endpoint="acl"} 5' in lines
    assert 'locker_hook_latency_seconds_count{endpoint="auth"} 0' in lines


def test_only_bank_uuids_are_looked_up_in_the_store() -> None:
    directory = UserDirectory("backend", "pw", "prov", "pw2")
    assert directory.needs_lookup(UUID)
    assert not directory.needs_lookup("backend")
    assert not directory.needs_lookup("not-a-uuid")
    assert not directory.needs_lookup(UUID.upper())
    directory.device_revoked(UUID)
    assert not directory.needs_lookup(UUID)
    assert directory.needs_lookup(UUID, revoked_too=True)
    directory.device_provisioned(UUID, secret_digest("x"))
    assert not directory.needs_lookup(UUID, revoked_too=True)


def test_instance_id_is_one_topic_level() -> None:
    assert "/" not in default_instance_id() and default_instance_id()
    assert Settings(_env_file=None, mqtt_instance_id="site-a-1").mqtt_instance_id == "site-a-1"
    assert Settings(_env_file=None, mqtt_instance_id=" ").mqtt_instance_id  # blank: default
    for bad in ("a/b", "a+", "#", "x\x00"):
        with pytest.raises(ValueError):
            Settings(_env_file=None, mqtt_instance_id=bad)


def test_the_hook_starts_without_the_orm() -> None:
    """A hook restart costs the fleet the hook's start time: the path `locker-console hook`
    takes imports neither SQLAlchemy, SQLModel nor the backend service (bench/hook_start.py
    measures the time). A top-level import in console/cli.py once tripled it."""
    import subprocess
    import sys

    code = (
        "import sys, console.cli, console.run_modes, backend.hook_process\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'sqlalchemy', 'sqlmodel', 'textual', 'amqtt', 'aiomqtt'})\n"
        "heavy += [m for m in ('backend.service', 'backend.runner') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""
