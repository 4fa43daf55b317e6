"""Actions on a bank shared by several screens: view, open a compartment, push config,
issue a new provisioning token, revoke. Each asks for confirmation where it matters and
runs through `LiveScreen.submit` (a worker; refused in read-only mode).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Generic, TypeVar

from textual.message import Message

from backend.views import BankView, IssuedToken, TransactionView
from console.modals.confirm import BankRequest, OpenRequest, confirm_bank, confirm_open
from console.modals.revoke import RevokeModal, RevokeRequest
from console.modals.token import TokenModal
from console.palette import PaletteCommand
from console.screens.base import LiveScreen

D = TypeVar("D")


@dataclass
class ShowBank(Message):
    """Ask the app to show the bank screen of `bank_uuid`."""

    bank_uuid: str


class BankActionScreen(LiveScreen[D], Generic[D]):
    """A `LiveScreen` that acts on banks."""

    def view_bank(self, bank_uuid: str) -> None:
        self.post_message(ShowBank(bank_uuid))

    # ----- open a compartment ------------------------------------------------------------

    def ask_open(self, request: OpenRequest) -> None:
        """Confirm, then open exactly the compartment captured in `request` (saying so when
        the bank is not online: the open then waits for it, and expires)."""
        if self.may_act():
            bank = next((b for b in self.ctx.banks if b.uuid == request.bank_uuid), None)
            request = replace(
                request,
                status=bank.status if bank is not None else request.status,
                ttl_seconds=self.ctx.open_ttl,
            )
            self.app.push_screen(confirm_open(request), self._open_confirmed)

    def _open_confirmed(self, request: OpenRequest | None) -> None:
        if request is None:
            return
        gateway = self.ctx.gateway
        what = f"Compartment {request.number} of {request.bank_name}"
        self.submit(
            f"Open compartment {request.number}",
            lambda: gateway.request_open(request.bank_uuid, request.number),
            lambda txn: self._requested(txn, what),
        )

    def _requested(self, txn: TransactionView, what: str) -> None:
        self.ctx.mine.add(txn.transaction_id)
        self.notify(f"{what}: {txn.status}.", title="Requested", markup=False)

    # ----- configuration -----------------------------------------------------------------

    def push_config(self, request: BankRequest) -> None:
        """Send the bank its compartment mapping (no confirmation: it changes no door)."""
        gateway = self.ctx.gateway
        self.submit(
            "Config push",
            lambda: gateway.request_config_push(request.bank_uuid),
            lambda txn: self._requested(txn, f"Config push to {request.bank_name}"),
        )

    # ----- credentials -------------------------------------------------------------------

    def ask_new_token(self, request: BankRequest) -> None:
        if self.may_act():
            modal = confirm_bank(
                request,
                title="Issue a new provisioning token?",
                consequence="The bank's previous token stops working.",
                confirm="Issue",
            )
            self.app.push_screen(modal, self._new_token_confirmed)

    def _new_token_confirmed(self, request: BankRequest | None) -> None:
        if request is None:
            return
        gateway = self.ctx.gateway
        self.submit(
            "New token",
            lambda: gateway.issue_token(request.bank_uuid),
            lambda issued: self._show_token(issued, request.bank_name),
        )

    def _show_token(self, issued: IssuedToken, bank_name: str) -> None:
        self.app.push_screen(
            TokenModal(
                bank_uuid=issued.uuid,
                bank_name=bank_name,
                token=issued.token,
                expires_at=issued.token_expires_at,
                reissued=True,
            )
        )

    def ask_revoke(self, request: BankRequest) -> None:
        """Ask for the reason (required), then revoke exactly the bank captured."""
        if self.may_act():
            self.app.push_screen(RevokeModal(request), self._revoke_confirmed)

    def _revoke_confirmed(self, answer: RevokeRequest | None) -> None:
        if answer is None:
            return
        gateway = self.ctx.gateway
        request = answer.bank
        self.submit(
            "Revoke",
            lambda: gateway.revoke(request.bank_uuid, answer.reason),
            lambda _none: self.notify(
                f"{request.bank_name} revoked.", title="Revoked", markup=False
            ),
        )

    # ----- palette -----------------------------------------------------------------------

    def bank_commands(self, bank: BankView, *, discover: bool) -> Iterable[PaletteCommand]:
        """The state-changing palette commands for one bank."""
        request = BankRequest.of(bank)
        for name, help_text, act in (
            ("Push config", "Send the bank its compartment mapping", self.push_config),
            (
                "New provisioning token",
                "Issue a token (the old one stops working)",
                self.ask_new_token,
            ),
            ("Revoke", "Revoke the bank's MQTT credentials", self.ask_revoke),
        ):
            yield PaletteCommand(
                f"{name}: {bank.name}",
                help_text,
                partial(act, request),
                changes_state=True,
                discover=discover,
            )
        for compartment in bank.compartments:
            open_request = OpenRequest(bank.uuid, bank.name, bank.location, compartment.number)
            yield PaletteCommand(
                f"Open compartment {compartment.number}: {bank.name}",
                f"Open door {compartment.number} (asks first)",
                lambda r=open_request: self.ask_open(r),  # type: ignore[misc]  # lambda default capture
                changes_state=True,
                app_allowed=True,
                discover=False,
            )
