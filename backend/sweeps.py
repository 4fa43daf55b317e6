"""The periodic sweeps: silent banks offline, command timeouts, expiry and re-asks;
the re-ask of everything unanswered at start; the pruning of dedup keys and rejects.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

from backend.domain.bank import LockerBank
from backend.domain.command_status import CommandStatus
from backend.domain.events import EventMetadata
from backend.outbox_marks import drop_pending, reask
from backend.store import command_reads, pruning
from backend.store.batch_reads import due_commands, latest_outbox, replays_unavailable, silent_banks
from backend.store.unit_of_work import UnitOfWork
from backend.write_path import SYSTEM, WritePart

DEDUP_TTL = timedelta(days=7)
HeardAt = Callable[[str], datetime | None]  # bank uuid -> receive time of its last heartbeat


class Sweeps(WritePart):
    """Sweeps and housekeeping on the shared write path."""

    async def sweep(
        self,
        heard: HeardAt | None = None,
        *,
        settled: bool = True,
        backlog: timedelta = timedelta(0),
    ) -> dict[str, int]:
        """Silent banks offline, timeouts, expiries and re-asks; returns counts. `heard`
        tells when the receive side last got a heartbeat of a bank that the store may not
        show yet (it is still queued): such a bank is not silent. Not `settled` (the
        runtime is away from the broker, or still handling what the broker queued for it
        meanwhile): nobody is called silent and no sent command is judged, since its
        answer may be in that backlog; commands never sent still time out and expire.
        `backlog`: how far behind the broker the receive side is (the self-probe's round
        trip); a bank is silent only if it sent nothing for 3 intervals before that, and a
        sent command times out (or is asked again) only if unanswered that much longer.
        Expiry does not wait: it is the command's promise to the operator."""
        return await self.path.transact(lambda uow: self._sweep(uow, heard, settled, backlog))

    def _sweep(
        self,
        uow: UnitOfWork,
        heard: HeardAt | None = None,
        settled: bool = True,
        backlog: timedelta = timedelta(0),
    ) -> dict[str, int]:
        now = uow.now
        seen_up_to = now - backlog  # what the fleet sent after this may not have reached us
        counts = {"offline": 0, "timeout": 0, "expired": 0, "reasked": 0}
        for uuid, interval in silent_banks(uow.session, seen_up_to) if settled else ():
            at = heard(uuid) if heard is not None else None
            if at is not None and seen_up_to - at <= timedelta(seconds=3 * interval):
                continue
            if uow.execute(uuid, lambda b: b.went_offline("heartbeat_timeout", now=now), SYSTEM):
                counts["offline"] += 1
        timeout = timedelta(seconds=self.settings.command_timeout)
        retry = timedelta(seconds=self.settings.command_retry_after)
        candidates = due_commands(uow.session, now, now - min(timeout, retry))
        unanswered = [
            (t.locker_uuid, t.transaction_id)
            for t in candidates
            if t.status == CommandStatus.SENT and t.first_seen_at is None
        ]
        latest = latest_outbox(uow.session, unanswered)
        for txn in candidates:
            if not settled and txn.status == CommandStatus.SENT:
                continue
            bank, tid = txn.locker_uuid, txn.transaction_id
            meta = EventMetadata(actor="system", correlation_id=tid)
            if now >= txn.expires_at:
                doubt = bool(txn.in_doubt)
                if uow.execute(
                    bank,
                    partial(LockerBank.expire, transaction_id=tid, now=now, outcome_unknown=doubt),
                    meta,
                ):
                    counts["expired"] += 1
                    drop_pending(uow, bank, tid, "expired")
            elif (
                txn.status == CommandStatus.SENT
                and txn.sent_at
                and seen_up_to - txn.sent_at >= timeout  # its answer may be in the backlog
            ):
                if uow.execute(
                    bank, partial(LockerBank.time_out, transaction_id=tid, now=now), meta
                ):
                    counts["timeout"] += 1
                    drop_pending(uow, bank, tid, "timeout")
            elif txn.status == CommandStatus.SENT and txn.first_seen_at is None:
                last = latest.get((bank, tid))
                if last is not None and last.status == "sent" and last.at <= seen_up_to - retry:
                    counts["reasked"] += reask(uow, txn)
        return counts

    async def recover_after_restart(self) -> dict[str, int]:
        """At start: every sent, unanswered, unexpired command may have been answered while
        no one listened (aiomqtt acks before the handler runs; a crash loses the answer).
        Ask each again at once (a seed device replays its stored answer without acting
        twice); a bank whose dialect never replays answers (openlocker) cannot tell us, so
        its command is marked in doubt: unanswered at expiry it ends `unknown`, not
        `expired` ("outcome unknown - check the door")."""
        return await self.path.transact(self._recover)

    def _recover(self, uow: UnitOfWork) -> dict[str, int]:
        with uow.locked():  # the command rows read next may be changed by another instance
            return self._recover_locked(uow)

    def _recover_locked(self, uow: UnitOfWork) -> dict[str, int]:
        counts = {"reasked": 0, "in_doubt": 0}
        rows = command_reads.unanswered(uow.session, uow.now)
        if not rows:
            return counts
        silent = replays_unavailable(uow.session, {r.locker_uuid for r in rows})
        for txn in rows:
            if txn.locker_uuid in silent:
                txn.in_doubt = True
                counts["in_doubt"] += 1
            else:
                counts["reasked"] += reask(uow, txn)
        return counts

    async def prune(self, rejected_ttl: timedelta = timedelta(days=30)) -> None:
        """Drop dedup keys past their TTL and old rejected messages."""

        def work(uow: UnitOfWork) -> None:
            pruning.prune(
                uow.session,
                processed_before=uow.now - DEDUP_TTL,
                rejected_before=uow.now - rejected_ttl,
            )

        await self.path.transact(work)
