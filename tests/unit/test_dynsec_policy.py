"""AUTH_MODE=dynsec without a broker: section 4 as plugin roles, the plugin's password
format, the backend's unguessable client id, and the deploy files."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from backend.config import Settings, load_settings
from backend.domain.acl import UserKind, permissions
from backend.dynsec.policy import (
    PROVISIONING_ACL_FILE,
    account_acls,
    hash_password,
    initial_config,
    with_admin,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BANK = "0b5a5e1e-aaaa-4aaa-8aaa-00000000000a"


@pytest.mark.parametrize("legacy", [True, False])
def test_a_bank_role_is_exactly_its_section_4_topics(legacy: bool) -> None:
    perms = permissions(UserKind.DEVICE, BANK, "any", legacy_status=legacy)
    acls = account_acls(UserKind.DEVICE, BANK, legacy_status=legacy)
    assert {t for kind, t in acls if kind == "publishClientSend"} == set(perms.publish)
    assert {t for kind, t in acls if kind == "subscribePattern"} == set(perms.read)
    assert {t for kind, t in acls if kind == "publishClientReceive"} == set(perms.read)
    assert (f"locker/{BANK}/status" in perms.publish) is legacy
    assert all(BANK in t or t == "server/status" for _kind, t in acls)


def test_the_backend_role_covers_its_shared_subscriptions() -> None:
    acls = account_acls(UserKind.BACKEND, "locker_backend")
    perms = permissions(UserKind.BACKEND, "locker_backend", "x")
    for topic in perms.read:
        assert ("subscribePattern", f"$share/+/{topic}") in acls
        assert ("publishClientReceive", topic) in acls
    assert {t for kind, t in acls if kind == "publishClientSend"} == set(perms.publish)


def test_the_provisioning_account_reads_replies_only_through_the_acl_file() -> None:
    acls = account_acls(UserKind.PROVISIONING, "provisioning_client")
    assert ("publishClientSend", "locker/register/+") in acls
    assert not [a for a in acls if a[0] == "publishClientReceive"]
    assert PROVISIONING_ACL_FILE.strip() == "pattern read locker/provisioning/reply/%c"
    shipped = [
        line.strip()
        for line in (DEPLOY / "mosquitto-dynsec.acl").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert shipped == [PROVISIONING_ACL_FILE.strip()]


def test_password_hash_is_what_mosquitto_ctrl_writes() -> None:
    # `mosquitto_ctrl dynsec init f admin adminpw` (Mosquitto 2.0.11) wrote this entry.
    salt = base64.b64decode("lNAWapC01/cElSyZ")
    stored = hash_password("adminpw", salt=salt)
    assert stored == {
        "password": "pY9cFVc3vLUf7+TCnzYhOxe42j8TBgLLr/C4dRuVFHbJTqgzOH/OUNQvWtRlqrDNkzRNQwVc"
        "7hM+sR1upyNdSA==",
        "salt": "lNAWapC01/cElSyZ",
        "iterations": 101,
    }


def test_the_admin_account_is_replaced_not_duplicated() -> None:
    first = initial_config("admin", "one")
    first["clients"].append({"username": "bank", "roles": []})
    second = with_admin(first, "admin", "two")
    assert [c["username"] for c in second["clients"]] == ["admin", "bank"]
    assert second["clients"][0]["password"] != first["clients"][0]["password"]
    assert len(second["roles"]) == 1


def test_reserved_backend_client_id_is_unguessable_only_under_dynsec(tmp_path: Path) -> None:
    base = {"locker_data_dir": tmp_path, "_env_file": None, "mqtt_password": "backend-pw"}
    hook = load_settings(**base)
    assert hook.backend_client_id == "locker-backend"
    external = {"auth_mode": "dynsec", "mqtt_host": "127.0.0.1"}
    dynsec = load_settings(**base, **external)
    again = load_settings(**base, **external)
    other = load_settings(**{**base, "mqtt_password": "other-pw"}, **external)
    assert dynsec.backend_client_id.startswith("locker-backend-")
    assert len(dynsec.backend_client_id) == len("locker-backend-") + 20
    assert dynsec.backend_client_id == again.backend_client_id  # stable: persistent session
    assert dynsec.backend_client_id != other.backend_client_id
    embedded = load_settings(locker_data_dir=tmp_path, _env_file=None, locker_broker="mosquitto")
    assert embedded.dynsec and embedded.backend_client_id != "locker-backend"


def test_deploy_files_name_only_real_settings_and_the_plugin() -> None:
    known = {name.upper() for name in Settings.model_fields}
    env = (DEPLOY / "systemd" / "locker-console-dynsec.env").read_text().splitlines()
    names = {line.split("=", 1)[0] for line in env if "=" in line and not line.startswith("#")}
    assert names <= known, names - known
    assert {"AUTH_MODE", "DYNSEC_ADMIN_PASSWORD", "MQTT_HOST"} <= names
    conf = {
        line.split(" ", 1)[0]: line.split(" ", 1)[1]
        for line in (DEPLOY / "mosquitto-dynsec.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert conf["allow_anonymous"] == "false"
    assert conf["plugin"].endswith("mosquitto_dynamic_security.so")
    assert conf["acl_file"] == "/etc/mosquitto/locker-provisioning.acl"
    assert "auth_plugin" not in conf  # no go-auth


def test_dynsec_with_the_amqtt_broker_is_refused_at_start(tmp_path: Path) -> None:
    from backend.config import SettingsError

    with pytest.raises(SettingsError, match="AUTH_MODE=dynsec needs Mosquitto"):
        load_settings(locker_data_dir=tmp_path, _env_file=None, auth_mode="dynsec")
    assert load_settings(
        locker_data_dir=tmp_path, _env_file=None, auth_mode="dynsec", locker_broker="mosquitto"
    ).dynsec
