"""`AUTH_MODE=dynsec`: the fleet's accounts inside Mosquitto's dynamic-security plugin,
kept in step with the store (DESIGN 5.1).

* bootstrap: the plugin's default access set to deny; the backend account (`MQTT_USER`)
  and the provisioning account (`MQTT_PROVISIONING_USER`) with their section 4 roles and
  current passwords;
* `provisioned`: one client per bank (username = UUID, the new password, pinned to the
  client id it registered with, enabled) with a role holding exactly its topics;
* `revoked`: the client disabled (the plugin disconnects it; it cannot log in again);
* `deleted`: client and role removed;
* `reconcile` (every start, every reconnect of the admin connection): what the store says
  wins. Revoked banks disabled, banks unknown to the store removed, roles corrected; banks
  the store has provisioned but Mosquitto lacks are *reported* (the store keeps only a
  hash of the password: they need a new token).

Every operation is idempotent ("already exists" is followed by a modify), so a retried or
repeated call converges on the same state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backend.accounts import AccountsHealth
from backend.domain.acl import UserKind
from backend.domain.topics import is_bank_uuid
from backend.dynsec.admin import Command, DynsecAdmin, DynsecError, error_of
from backend.dynsec.policy import (
    BACKEND_ROLE,
    DEFAULT_ACCESS,
    PROVISIONING_ROLE,
    Acl,
    account_acls,
    acl_json,
    bank_role,
)

if TYPE_CHECKING:
    from backend.config import Settings
    from backend.service import LockerService

log = logging.getLogger(__name__)
EMBEDDED_HOST = "127.0.0.1"


@dataclass
class ReconcileReport:
    """What the last reconcile found and did."""

    missing: list[str] = field(default_factory=list)
    """Banks the store has provisioned but Mosquitto lacks: they need a new token."""
    disabled: list[str] = field(default_factory=list)
    enabled: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    roles_fixed: list[str] = field(default_factory=list)


class DynsecDirectory:
    """The account directory of `AUTH_MODE=dynsec`."""

    active = True

    def __init__(self, settings: Settings, *, admin: DynsecAdmin | None = None) -> None:
        self.settings = settings
        self.admin = admin or DynsecAdmin(
            settings.mqtt_host or EMBEDDED_HOST,
            settings.mqtt_port,
            settings.dynsec_admin_user,
            settings.secret("dynsec_admin_password"),
            on_connect=self._reconnected,
        )
        self._service: LockerService | None = None
        self._started = False
        self._synced = asyncio.Event()
        self._reconcile_lock = asyncio.Lock()
        self.report: ReconcileReport | None = None
        self.last_failure = ""

    # ----- lifecycle -----------------------------------------------------------------

    async def start(self, service: LockerService) -> None:
        """Connect; bootstrap and reconcile at every (re)connect of the admin connection.
        Waits for the first round; a failure is logged and shown by `/healthz`, never
        fatal (the broker may come later; the next connect repairs)."""
        self._service = service
        self._started = True
        self._synced = asyncio.Event()
        await self.admin.start()
        try:
            async with asyncio.timeout(self.admin.timeout * (self.admin.attempts + 1)):
                await self._synced.wait()
        except TimeoutError:
            self._failed("start", DynsecError(self.admin.last_error or "no answer"))

    async def close(self) -> None:
        self._started = False
        await self.admin.close()

    async def _reconnected(self) -> None:
        """The admin connection is (again) up: bootstrap and repair what was missed."""
        if not self._started or self._service is None:
            return
        try:
            await self.bootstrap()
            await self.reconcile()
        except Exception as exc:
            self._failed("bootstrap/reconcile", exc)
        finally:
            self._synced.set()

    async def _run(self, commands: Sequence[Command]) -> list[Command]:
        if self._started:
            return await self.admin.execute(commands)
        async with self.admin.session():  # one-shot (the CLI's own service)
            return await self.admin.execute(commands)

    def _failed(self, what: str, exc: BaseException) -> None:
        self.last_failure = f"{what}: {exc}"
        log.error("dynsec %s", self.last_failure)

    def health(self) -> AccountsHealth:
        if not self.admin.connected:
            return AccountsHealth(False, self.admin.last_error or "dynsec admin not connected")
        if self.last_failure:
            return AccountsHealth(False, self.last_failure)
        detail = "dynsec: admin connected"
        if self.report is not None and self.report.missing:
            detail += (
                f"; {len(self.report.missing)} provisioned bank(s) have no Mosquitto account "
                "and need a new token"
            )
        return AccountsHealth(True, detail)

    # ----- the section 4 accounts ----------------------------------------------------

    def _acls(self, kind: UserKind, username: str) -> list[Acl]:
        return account_acls(kind, username, legacy_status=self.settings.mqtt_accept_legacy_status)

    async def bootstrap(self) -> None:
        """Default access to deny; backend and provisioning accounts with their roles."""
        settings = self.settings
        await self._run(
            [{"command": "setDefaultACLAccess", "acls": [dict(a) for a in DEFAULT_ACCESS]}]
        )
        await self._ensure_role(BACKEND_ROLE, self._acls(UserKind.BACKEND, settings.mqtt_user))
        await self._ensure_client(
            settings.mqtt_user, settings.secret("mqtt_password"), BACKEND_ROLE, client_id=None
        )
        await self._ensure_role(
            PROVISIONING_ROLE,
            self._acls(UserKind.PROVISIONING, settings.mqtt_provisioning_user),
        )
        await self._ensure_client(
            settings.mqtt_provisioning_user,
            settings.secret("mqtt_provisioning_password"),
            PROVISIONING_ROLE,
            client_id=None,
        )
        self.last_failure = ""

    async def provisioned(self, bank_uuid: str, client_id: str, password: str) -> None:
        try:
            role = bank_role(bank_uuid)
            await self._ensure_role(role, self._acls(UserKind.DEVICE, bank_uuid))
            await self._ensure_client(bank_uuid, password, role, client_id=client_id)
        except DynsecError as exc:
            self._failed(f"account of bank {bank_uuid}", exc)
            raise
        self.last_failure = ""

    async def revoked(self, bank_uuid: str) -> None:
        responses = await self._run([{"command": "disableClient", "username": bank_uuid}])
        error = error_of(responses[0])
        if error and "not found" not in error.lower():
            raise DynsecError(f"disableClient {bank_uuid}: {error}")

    async def deleted(self, bank_uuid: str) -> None:
        responses = await self._run(
            [
                {"command": "deleteClient", "username": bank_uuid},
                {"command": "deleteRole", "rolename": bank_role(bank_uuid)},
            ]
        )
        for response in responses:
            error = error_of(response)
            if error and "not found" not in error.lower():
                raise DynsecError(f"{response.get('command')} {bank_uuid}: {error}")

    async def _ensure_role(self, rolename: str, acls: list[Acl]) -> None:
        """The role exists with exactly these ACLs (all allow, default priority)."""
        created = await self._run(
            [{"command": "createRole", "rolename": rolename, "acls": acl_json(acls)}]
        )
        error = error_of(created[0])
        if not error:
            return
        if "already exists" not in error.lower():
            raise DynsecError(f"createRole {rolename}: {error}")
        current = await self._run([{"command": "getRole", "rolename": rolename}])
        role = (current[0].get("data") or {}).get("role") or {}
        have = {
            (a.get("acltype"), a.get("topic"), bool(a.get("allow")), int(a.get("priority", 0)))
            for a in role.get("acls", [])
        }
        want = {(t, topic, True, 0) for t, topic in acls}
        fixes: list[Command] = [
            {"command": "removeRoleACL", "rolename": rolename, "acltype": t, "topic": topic}
            for t, topic, _allow, _prio in sorted(have - want)
        ]
        fixes += [
            {"command": "addRoleACL", "rolename": rolename, "acltype": t, "topic": topic}
            | {"allow": True}
            for t, topic, _allow, _prio in sorted(want - have)
        ]
        if fixes:
            for response in await self._run(fixes):
                if error_of(response):
                    raise DynsecError(f"{response.get('command')} {rolename}: {error_of(response)}")

    async def _ensure_client(
        self, username: str, password: str, rolename: str, *, client_id: str | None
    ) -> None:
        """The client exists, enabled, with this password, role and pinned client id."""
        command: Command = {
            "command": "createClient",
            "username": username,
            "password": password,
            "roles": [{"rolename": rolename}],
        }
        if client_id is not None:
            command["clientid"] = client_id
        created = await self._run([command])
        error = error_of(created[0])
        if not error:
            return
        if "already exists" not in error.lower():
            raise DynsecError(f"createClient {username}: {error}")
        modify: Command = {
            "command": "modifyClient",
            "username": username,
            "roles": [{"rolename": rolename}],
        }
        if client_id is not None:
            modify["clientid"] = client_id
        responses = await self._run(
            [
                {"command": "setClientPassword", "username": username, "password": password},
                modify,
                {"command": "enableClient", "username": username},
            ]
        )
        for response in responses:
            if error_of(response):
                raise DynsecError(f"{response.get('command')} {username}: {error_of(response)}")

    # ----- reconcile -----------------------------------------------------------------

    async def listed_clients(self) -> dict[str, dict[str, Any]]:
        """username -> the plugin's client record (verbose listing)."""
        responses = await self._run([{"command": "listClients", "verbose": True}])
        if error_of(responses[0]):
            raise DynsecError(f"listClients: {error_of(responses[0])}")
        clients = (responses[0].get("data") or {}).get("clients") or []
        return {str(c.get("username")): c for c in clients if isinstance(c, dict)}

    async def reconcile(self) -> ReconcileReport:
        """Bring the plugin in line with the store; report banks Mosquitto lacks."""
        if self._service is None:
            raise DynsecError("reconcile needs the service (call start)")
        async with self._reconcile_lock:
            report = await self._reconcile(self._service)
        self.report = report
        if report.missing:
            log.warning(
                "dynsec: %d provisioned bank(s) have no account in Mosquitto and need a new "
                "provisioning token: %s",
                len(report.missing),
                ", ".join(report.missing[:20]) + (" ..." if len(report.missing) > 20 else ""),
            )
        changed = report.disabled + report.enabled + report.removed + report.roles_fixed
        if changed:
            log.info(
                "dynsec reconcile: %d disabled, %d enabled, %d removed, %d roles corrected",
                len(report.disabled),
                len(report.enabled),
                len(report.removed),
                len(report.roles_fixed),
            )
        return report

    async def _reconcile(self, service: LockerService) -> ReconcileReport:
        report = ReconcileReport()
        banks = {b.uuid: b.status for b in await service.list_banks()}
        listed = await self.listed_clients()
        commands: list[Command] = []
        for uuid, status in banks.items():
            record = listed.get(uuid)
            if status in ("unprovisioned", "revoked"):
                if record is not None and not record.get("disabled"):
                    commands.append({"command": "disableClient", "username": uuid})
                    report.disabled.append(uuid)
                continue
            if record is None:
                report.missing.append(uuid)
                continue
            if record.get("disabled"):
                commands.append({"command": "enableClient", "username": uuid})
                report.enabled.append(uuid)
        for username in listed:
            if is_bank_uuid(username) and username not in banks:
                commands.append({"command": "deleteClient", "username": username})
                commands.append({"command": "deleteRole", "rolename": bank_role(username)})
                report.removed.append(username)
        for response in await self._run(commands) if commands else []:
            error = error_of(response)
            if error and "not found" not in error.lower():
                raise DynsecError(f"{response.get('command')}: {error}")
        report.roles_fixed = await self._fix_roles(
            [u for u, s in banks.items() if u in listed and s not in ("unprovisioned", "revoked")]
        )
        return report

    async def _fix_roles(self, banks: list[str]) -> list[str]:
        """Correct bank roles whose ACLs differ from section 4 (e.g. the legacy `status`
        topic switched off); a batch of `getRole`, then fixes only where needed."""
        fixed: list[str] = []
        responses = await self._run(
            [{"command": "getRole", "rolename": bank_role(u)} for u in banks]
        )
        for uuid, response in zip(banks, responses, strict=True):
            role = (response.get("data") or {}).get("role") or {}
            have = {(a.get("acltype"), a.get("topic")) for a in role.get("acls", [])}
            if error_of(response) or have != set(self._acls(UserKind.DEVICE, uuid)):
                await self._ensure_role(bank_role(uuid), self._acls(UserKind.DEVICE, uuid))
                if error_of(response):  # the role was gone: it left the client too
                    add = {"command": "addClientRole", "username": uuid}
                    await self._run([add | {"rolename": bank_role(uuid)}])
                fixed.append(uuid)
        return fixed
