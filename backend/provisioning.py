"""Device registration (`locker/register/{token}`): the token check, the new
device password, the reply, and the failure limiters (DESIGN section 16, issue 14).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from backend.domain.digests import secret_digest
from backend.domain.messages import provisioning_error, provisioning_success
from backend.domain.outcomes import RegistrationResult
from backend.domain.ratelimit import FailureLimiter
from backend.store.provisioning_reads import bank_for_token
from backend.store.unit_of_work import UnitOfWork
from backend.write_path import DEVICE, WritePart, WritePath

log = logging.getLogger(__name__)
_ALL = "*"  # the global limiter's one key


class Provisioning(WritePart):
    """Registrations on the shared write path."""

    def __init__(self, path: WritePath) -> None:
        super().__init__(path)
        self.limiter = FailureLimiter()
        """Failed registrations per client id (DESIGN section 16)."""
        self.global_limiter = FailureLimiter(
            limit=self.settings.provisioning_failures_per_minute, window=timedelta(minutes=1)
        )
        """Failed registrations of all clients together: past this budget an unknown token
        costs one indexed read, no transaction, no outbox row, no reply (issue 14)."""

    async def register(
        self, token: str, client_id: str, *, dialect: str | None = None
    ) -> RegistrationResult:
        """Handle `locker/register/{token}`; the result says whether a reply is on its way.
        `dialect` is what the registration's form suggests; it decides an `auto` bank's
        dialect, an explicit one wins (DESIGN section 3.1)."""
        if self.limiter.blocked(client_id, self.now):
            return RegistrationResult.RATE_LIMITED
        counted = False
        digest = self.path.token_digest(token)
        if self.global_limiter.blocked(_ALL, self.now):
            if not await self._token_exists(digest):
                return RegistrationResult.RATE_LIMITED
        else:
            # counted before the work (no await in between: registrations handled at the
            # same time cannot all pass the check), taken back on success
            self.global_limiter.failed(_ALL, self.now)
            counted = True
        password = self.path.new_secret()
        password_hash = secret_digest(password)

        def work(uow: UnitOfWork) -> RegistrationResult:
            bank_uuid = bank_for_token(uow.session, digest)
            if bank_uuid is None:
                uow.enqueue(provisioning_error(client_id, uow.now))
                return RegistrationResult.ERROR
            recorded = uow.execute(
                bank_uuid,
                lambda b: b.provision(
                    digest,
                    client_id=client_id,
                    password_sha256=password_hash,
                    now=uow.now,
                    dialect=dialect,
                ),
                DEVICE,
            )
            if recorded and recorded[0].event_type == "LockerBankProvisioned":
                bank = uow.bank(bank_uuid)
                if dialect and bank.dialect_choice not in ("auto", dialect):
                    log.info(
                        "bank %s registered in the %s form; its explicit dialect %s stays",
                        bank_uuid,
                        dialect,
                        bank.dialect_choice,
                    )
                uow.enqueue(provisioning_success(client_id, bank_uuid, password, uow.now))
                return RegistrationResult.SUCCESS
            uow.enqueue(provisioning_error(client_id, uow.now))
            return RegistrationResult.ERROR

        result = await self.path.transact(work)
        if result is not RegistrationResult.SUCCESS:
            self.limiter.failed(client_id, self.now)
        elif counted:
            self.global_limiter.forgive(_ALL)
        return result

    async def _token_exists(self, digest: str) -> bool:
        def read() -> bool:
            with self.path.db.read_session() as session:
                return bank_for_token(session, digest) is not None

        return await self.path.db.read(read)
