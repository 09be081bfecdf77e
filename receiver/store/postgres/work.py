"""The PostgreSQL store's claimed work: callback messages (outbox, SKIP LOCKED, leases renewed while held),
due polls, the lease rows of single-consumer work, and replica heartbeats. A mixin of `PostgresStore`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from receiver.errors import StoreError
from receiver.models import Job
from receiver.store.base import Attempt, Claim, Message
from receiver.store.parts import Conn, PostgresPart
from receiver.store.queries import (
    BACKLOG,
    DELIVERIES,
    HEARTBEAT,
    ORPHANED_JOBS,
    PENDING_JOBS,
    RELEASE_LEASE,
    SCHEDULE_POLL,
    WAITING_MESSAGES,
)
from receiver.store.rows import (
    JOB_COLUMNS,
    MESSAGE_COLUMNS,
    attempt_from_row,
    backlog_from_rows,
    job_from_row,
    message_from_row,
)
from receiver.tuning import REPLICAS

MESSAGE_LEASE_S = 30.0  # a claimed message's lease, renewed every MESSAGE_LEASE_S / 3 while held
# A claim does not wait for its WAL flush (synchronous_commit off for its own transaction, set inside it):
# it is on the way from a webhook to its callback, and what a lost claim costs is one callback sent twice,
# should PostgreSQL itself crash in the fraction of a second before the flush. Other sessions see it at
# once either way. Callbacks are at least once already (docs/store.md).
# The claim also answers when the next message is due, those it claims left out: one row per message
# claimed, or one with no message when none is. Two index probes (messages_due, messages_leased), not a read
# of every pending message; plain index scans, which step over the entries of old row versions once they
# have seen them dead, where a bitmap scan visited their heap pages on every claim (`receiver_claim`,
# schema 0015).
CLAIM_SQL = "SELECT * FROM receiver_claim($1, $2, $3, $4)"
# Listed messages (those this replica postponed), claimed as the due ones are, whether due or not.
CLAIM_LISTED_SQL = (
    "WITH no_flush_wait AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true)) "
    "UPDATE messages SET lease_until = $2, lease_owner = $3 WHERE seq IN ("
    "SELECT seq FROM messages, no_flush_wait WHERE seq = ANY($4) AND status = 'pending' "
    "AND (lease_until IS NULL OR lease_until <= $1) FOR UPDATE OF messages SKIP LOCKED) "
    f"RETURNING {MESSAGE_COLUMNS}"
)
log = logging.getLogger("receiver.store")


class PostgresWork(PostgresPart):
    """See `receiver.store.base.Store` for the contract of each method."""

    _held: dict[int, float]  # claimed message seq → when its claim ends (claim + lease_s)

    # -- outbox ----------------------------------------------------------------------------------

    async def release_leases(self) -> None:
        """Nothing to forget: each run is a new replica, and other replicas' leases expire by themselves."""

    async def claim_listed(self, seqs: list[int], *, lease_s: float) -> list[Message]:
        if not seqs:
            return []
        now = self.clock()
        rows = await self._tx(
            lambda conn: conn.fetch(CLAIM_LISTED_SQL, now, now + min(lease_s, MESSAGE_LEASE_S), self.replica_id, seqs),
            single=True,
        )
        order = {seq: i for i, seq in enumerate(seqs)}
        return sorted(self._hold(rows, until=now + lease_s), key=lambda m: order[m.seq])

    async def claim_due(self, *, limit: int, lease_s: float) -> Claim:
        now = self.clock()
        rows = await self._tx(
            lambda conn: conn.fetch(CLAIM_SQL, now, now + min(lease_s, MESSAGE_LEASE_S), self.replica_id, limit),
            single=True,
        )
        due = rows[0][-1] if rows else None
        return Claim(
            sorted(
                self._hold([r for r in rows if r[0] is not None], until=now + lease_s), key=lambda m: m.next_attempt_at
            ),
            float(due) if due is not None else None,
        )

    def _hold(self, rows: list[Any], *, until: float) -> list[Message]:
        """The claimed messages, kept leased (`_renew_claims`) until `until` while this replica holds them."""
        for r in rows:
            self._held[r[0]] = until
        return [message_from_row(r) for r in rows]

    async def _renew_claims(self) -> None:
        """Keep this replica's held messages leased (up to each claim's own end); a dead replica stops."""
        while True:
            await asyncio.sleep(MESSAGE_LEASE_S / 3)
            now = self.clock()
            for seq in [s for s, end in self._held.items() if end <= now]:
                del self._held[seq]
            if not self._held:
                continue
            try:
                await self._renew(list(self._held), until=now + MESSAGE_LEASE_S)
            except StoreError as exc:
                log.warning("could not renew message leases: %s", exc)

    async def _renew(self, seqs: list[int], *, until: float) -> None:
        """Lease these messages until `until`, those still this replica's: not one whose lease was cleared
        while the renewal was on its way (its attempt recorded, or handed back at shutdown)."""
        await self._tx(
            lambda conn: conn.execute(
                "UPDATE messages SET lease_until = $1 WHERE seq = ANY($2) AND lease_owner = $3 "
                "AND status = 'pending' AND lease_until IS NOT NULL",
                until,
                seqs,
                self.replica_id,
            )
        )

    def _let_go(self, seq: int) -> None:
        self._held.pop(seq, None)

    async def postpone_messages(self, seqs: list[int], *, until: float) -> None:
        for seq in seqs:
            self._let_go(seq)
        if seqs:
            await self._tx(
                lambda conn: conn.execute(
                    "UPDATE messages SET next_attempt_at = $1, lease_until = NULL WHERE status = 'pending' "
                    "AND seq = ANY($2) AND (lease_until IS NULL OR lease_owner = $3)",
                    until,
                    seqs,
                    self.replica_id,
                )
            )

    async def hand_back_messages(self, seqs: list[int]) -> None:
        """Clear this replica's leases on them and wake the other replicas: one of them sends them now,
        not once the leases run out."""
        for seq in seqs:
            self._let_go(seq)
        if not seqs:
            return

        async def hand_back(conn: Conn) -> None:
            status = await conn.execute(
                "UPDATE messages SET next_attempt_at = LEAST(next_attempt_at, $1), lease_until = NULL "
                "WHERE status = 'pending' AND seq = ANY($2) AND lease_owner = $3 AND lease_until IS NOT NULL",
                self.clock(),
                seqs,
                self.replica_id,
            )
            if status != "UPDATE 0":
                await self._wake_outbox(conn)

        await self._tx(hand_back)

    async def waiting_messages(self, job_id: str) -> list[Message]:
        rows = await self._fetch(WAITING_MESSAGES.postgres, job_id)
        return [message_from_row(r) for r in rows]

    async def list_deliveries(self, job_id: str) -> list[Attempt]:
        rows = await self._fetch(DELIVERIES.postgres, job_id)
        return [attempt_from_row(r) for r in rows]

    async def delivery_backlog(self) -> tuple[int, float | None]:
        return backlog_from_rows(await self._fetch(BACKLOG.postgres))

    # -- reconciling -----------------------------------------------------------------------------

    async def pending_jobs(self, provider: str) -> list[Job]:
        rows = await self._fetch(PENDING_JOBS.postgres, provider)
        return [job_from_row(r) for r in rows]

    async def claim_due_polls(self, *, providers: list[str], limit: int, lease_s: float) -> list[Job]:
        if not providers:
            return []
        now = self.clock()
        rows = await self._tx(
            lambda conn: conn.fetch(
                f"UPDATE jobs SET next_poll_at = $2 WHERE seq IN (SELECT seq FROM jobs WHERE status = 'pending' "
                "AND next_poll_at <= $1 AND provider = ANY($3) ORDER BY next_poll_at LIMIT $4 FOR UPDATE SKIP LOCKED) "
                f"RETURNING {JOB_COLUMNS}",
                now,
                now + lease_s,
                providers,
                limit,
            )
        )
        return [job_from_row(r) for r in rows]

    async def schedule_poll(self, job_id: str, *, next_poll_at: float) -> None:
        await self._tx(lambda conn: conn.execute(SCHEDULE_POLL.postgres, next_poll_at, job_id))

    # -- replicas --------------------------------------------------------------------------------

    async def acquire_lease(self, name: str, *, ttl_s: float) -> int | None:
        now = self.clock()
        term = await self._tx(
            lambda conn: conn.fetchval(
                "INSERT INTO leases AS l (name, owner, term, expires_at) VALUES ($1, $2, 1, $3) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at, "
                "term = l.term + CASE WHEN l.owner = excluded.owner THEN 0 ELSE 1 END "
                "WHERE l.owner = excluded.owner OR l.expires_at <= $4 RETURNING term",
                name,
                self.replica_id,
                now + ttl_s,
                now,
            )
        )
        return int(term) if term is not None else None

    async def release_lease(self, name: str) -> None:
        await self._tx(lambda conn: conn.execute(RELEASE_LEASE.postgres, name, self.replica_id))

    async def heartbeat(self) -> None:
        await self._tx(lambda conn: conn.execute(HEARTBEAT.postgres, self.replica_id, self.clock()))

    async def orphaned_jobs(self, provider: str) -> list[Job]:
        rows = await self._fetch(ORPHANED_JOBS.postgres, provider, self.clock() - REPLICAS.ttl_s)
        return [job_from_row(r) for r in rows]
