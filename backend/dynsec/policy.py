"""DESIGN section 4 as Mosquitto dynamic-security roles, and the control commands that
create them. Pure: no I/O. Derived from `backend.domain.acl.permissions`, so the table has
one source.

How the section 4 table maps onto the plugin of Mosquitto 2.0 (which has no `%u`/`%c`):

* one role per bank (`locker-bank-{uuid}`) with its own topics written out, one client
  per bank (username = the bank's UUID) pinned to the client id it registered with;
* publish patterns -> `publishClientSend`; read patterns -> `subscribePattern` and
  `publishClientReceive` (the plugin's default for both is set to deny);
* the backend's read patterns also as `$share/+/...` (Mosquitto hands the whole shared
  subscription to the plugin);
* the provisioning account may subscribe to `locker/provisioning/reply/+`, but receives
  nothing through the plugin: the reply is delivered only through the broker's
  `acl_file` pattern `read locker/provisioning/reply/%c` (PROVISIONING_ACL_FILE), so it
  reaches only the connection whose client id is in the topic (see deploy/README.md,
  "Mosquitto without go-auth").
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any, Final

from backend.domain.acl import UserKind, permissions
from backend.domain.topics import ANY_PROVISIONING_REPLY

__all__ = [
    "ADMIN_ROLE",
    "BACKEND_ROLE",
    "CONTROL_TOPIC",
    "DEFAULT_ACCESS",
    "PROVISIONING_ACL_FILE",
    "PROVISIONING_ROLE",
    "RESPONSE_TOPIC",
    "Acl",
    "account_acls",
    "bank_role",
    "hash_password",
    "initial_config",
]

CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC: Final = "$CONTROL/dynamic-security/v1/response"
BANK_ROLE_PREFIX: Final = "locker-bank-"
BACKEND_ROLE: Final = "locker-backend"
PROVISIONING_ROLE: Final = "locker-provisioning"
ADMIN_ROLE: Final = "locker-dynsec-admin"
PROVISIONING_ACL_FILE: Final = "pattern read locker/provisioning/reply/%c\n"
"""The broker's `acl_file`: the only way a provisioning reply is delivered (`%c`)."""

DEFAULT_ACCESS: Final = (
    {"acltype": "publishClientSend", "allow": False},
    {"acltype": "publishClientReceive", "allow": False},
    {"acltype": "subscribe", "allow": False},
    {"acltype": "unsubscribe", "allow": True},
)
"""Anything a role does not grant is denied (the plugin's own default lets clients receive
everything they subscribed to)."""

PBKDF2_ITERATIONS: Final = 101
"""What `mosquitto_ctrl` and the plugin use for the accounts they create."""

Acl = tuple[str, str]  # (acltype, topic), always "allow"


def bank_role(bank_uuid: str) -> str:
    return f"{BANK_ROLE_PREFIX}{bank_uuid}"


def account_acls(kind: UserKind, username: str, *, legacy_status: bool = True) -> list[Acl]:
    """The exact ACL list of the role for one account of the section 4 table."""
    perms = permissions(kind, username, "client", legacy_status=legacy_status)
    acls: list[Acl] = [("publishClientSend", topic) for topic in perms.publish]
    if kind is UserKind.PROVISIONING:
        # Subscribing is allowed; delivery only through the acl_file's %c pattern.
        acls.append(("subscribePattern", ANY_PROVISIONING_REPLY))
        return acls
    for topic in perms.read:
        acls.append(("subscribePattern", topic))
        acls.append(("publishClientReceive", topic))
        if kind is UserKind.BACKEND:
            acls.append(("subscribePattern", f"$share/+/{topic}"))
    return acls


def acl_json(acls: list[Acl]) -> list[dict[str, Any]]:
    return [{"acltype": t, "topic": topic, "allow": True} for t, topic in acls]


def hash_password(password: str, *, salt: bytes | None = None) -> dict[str, Any]:
    """The plugin's stored form of a password (PBKDF2-SHA512, base64), for its JSON file."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": PBKDF2_ITERATIONS,
    }


ADMIN_ACLS: Final[list[Acl]] = [
    ("publishClientSend", "$CONTROL/dynamic-security/#"),
    ("publishClientReceive", "$CONTROL/dynamic-security/#"),
    ("subscribePattern", "$CONTROL/dynamic-security/#"),
]


def initial_config(admin_user: str, admin_password: str) -> dict[str, Any]:
    """A fresh plugin file holding only the admin account (what `mosquitto_ctrl dynsec
    init` writes, with an admin that can administer the plugin and nothing else)."""
    return {
        "clients": [admin_client(admin_user, admin_password)],
        "roles": [{"rolename": ADMIN_ROLE, "acls": acl_json(ADMIN_ACLS)}],
        "defaultACLAccess": {a["acltype"]: a["allow"] for a in DEFAULT_ACCESS},
    }


def admin_client(admin_user: str, admin_password: str) -> dict[str, Any]:
    return {
        "username": admin_user,
        "textName": "locker-console dynsec admin",
        **hash_password(admin_password),
        "roles": [{"rolename": ADMIN_ROLE}],
    }


def with_admin(config: dict[str, Any], admin_user: str, admin_password: str) -> dict[str, Any]:
    """`config` with the admin account (and its role) set to these credentials."""
    clients = [c for c in config.get("clients", []) if c.get("username") != admin_user]
    roles = [r for r in config.get("roles", []) if r.get("rolename") != ADMIN_ROLE]
    return {
        **config,
        "clients": [admin_client(admin_user, admin_password), *clients],
        "roles": [{"rolename": ADMIN_ROLE, "acls": acl_json(ADMIN_ACLS)}, *roles],
    }
