"""Pinned MQTT identities (DESIGN section 4, "Identities are pinned"): which client id a
CONNECT may use. Pure: the caller supplies what it knows (the user's kind, the bank's
pinned id, whether the bank holding an id is online).

* A bank's *pinned client id* is the client id it registered with. A device may connect
  only with its pinned id or with its UUID.
* The backend's client ids (`MQTT_CLIENT_ID` and every id that starts with it, the
  per-instance suffixes) are reserved to the backend user.
* The provisioning account may not use a reserved id, nor the pinned id of a bank that is
  currently online (that would knock the bank off the broker).

A refusal carries a short `code` for metrics and logs (`REFUSAL_CODES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from backend.domain.acl import UserKind

__all__ = [
    "REFUSAL_CODES",
    "IdentityCheck",
    "check_client_id",
    "is_reserved_client_id",
]

RESERVED_ID: Final = "reserved_client_id"
NOT_PINNED: Final = "client_id_not_pinned"
PINNED_ONLINE: Final = "pinned_id_of_online_bank"
BAD_CREDENTIALS: Final = "bad_credentials"
INVALID: Final = "invalid_identity"
REFUSAL_CODES: Final = (BAD_CREDENTIALS, INVALID, RESERVED_ID, NOT_PINNED, PINNED_ONLINE)
"""Every reason a CONNECT can be refused for, as counted in /metrics."""


@dataclass(frozen=True, slots=True)
class IdentityCheck:
    """The answer for one CONNECT's client id: `code` is empty when allowed."""

    code: str
    reason: str

    @property
    def allowed(self) -> bool:
        return not self.code


_OK: Final = IdentityCheck("", "client id allowed")


def is_reserved_client_id(client_id: str, backend_client_id: str) -> bool:
    """True if `client_id` is the backend's id or one of its per-instance suffixes."""
    return bool(backend_client_id) and client_id.startswith(backend_client_id)


def check_client_id(
    kind: UserKind,
    username: str,
    client_id: str,
    *,
    backend_client_id: str,
    pinned_client_id: str | None = None,
    online_bank_with_pinned_id: str | None = None,
) -> IdentityCheck:
    """May an authenticated user of `kind` connect with `client_id`?

    `pinned_client_id` is the device's own pinned id (devices only);
    `online_bank_with_pinned_id` is the UUID of an online bank whose pinned id is
    `client_id`, if there is one (what the provisioning account must not take over).
    """
    if kind is UserKind.BACKEND:
        return _OK
    if is_reserved_client_id(client_id, backend_client_id):
        return IdentityCheck(RESERVED_ID, "client id reserved to the backend")
    if kind is UserKind.DEVICE:
        if client_id == username or (pinned_client_id and client_id == pinned_client_id):
            return _OK
        return IdentityCheck(NOT_PINNED, "a bank connects only with its pinned client id or UUID")
    if kind is UserKind.PROVISIONING:
        if online_bank_with_pinned_id is not None:
            return IdentityCheck(PINNED_ONLINE, "client id belongs to a bank that is online")
        return _OK
    return _OK  # superusers: everything but the reserved ids
