"""The PostgreSQL store's claimed work: callback messages (outbox, SKIP LOCKED, leases renewed while held),
due polls, the lease rows of single-consumer work, and replica heartbeats. A mixin of `PostgresStore`."""

from __future__ import annotations

import asyncio
import logging

from receiver.errors import StoreError
from receiver.models import Job
from receiver.store.base import REPLICA_TTL_S, Attempt, Message
from receiver.store.batching import AttemptRecord
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
    columns,
    job_from_row,
    message_from_row,
)

MESSAGE_LEASE_S = 30.0  # a claimed message's lease, renewed every MESSAGE_LEASE_S / 3 while held
_REFRESH_DELIVERY_STATUS = (
    "UPDATE jobs SET delivery_status = COALESCE("
    "(SELECT status FROM messages WHERE messages.job_id = jobs.id ORDER BY seq DESC LIMIT 1), 'none') "
    "WHERE id = ANY($1::text[])"
)
log = logging.getLogger("receiver.store")


class PostgresWork(PostgresPart):
    """See `receiver.store.base.Store` for the contract of each method."""

    _held: dict[int, float]  # claimed message seq → when its claim ends (claim + lease_s)

    # -- outbox ----------------------------------------------------------------------------------

    async def release_leases(self) -> None:
        """Nothing to forget: each run is a new replica, and other replicas' leases expire by themselves."""

    async def claim_due_messages(self, *, limit: int, lease_s: float) -> list[Message]:
        now = self.clock()
        rows = await self._tx(
            lambda conn: conn.fetch(
                f"UPDATE messages SET lease_until = $2, lease_owner = $3 WHERE seq IN ("
                "SELECT seq FROM messages WHERE status = 'pending' AND next_attempt_at <= $1 "
                "AND (lease_until IS NULL OR lease_until <= $1) ORDER BY next_attempt_at LIMIT $4 "
                f"FOR UPDATE SKIP LOCKED) RETURNING {MESSAGE_COLUMNS}",
                now,
                now + min(lease_s, MESSAGE_LEASE_S),
                self.replica_id,
                limit,
            )
        )
        for r in rows:
            self._held[r[0]] = now + lease_s
        return sorted((message_from_row(r) for r in rows), key=lambda m: m.next_attempt_at)

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

    async def next_message_due_at(self) -> float | None:
        rows = await self._fetch(
            "SELECT MIN(GREATEST(next_attempt_at, COALESCE(lease_until, 0))) FROM messages WHERE status = 'pending'"
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def _let_go(self, seq: int) -> None:
        self._held.pop(seq, None)

    @staticmethod
    async def _record_attempts_now(conn: Conn, items: list[AttemptRecord]) -> None:
        """A batch's delivery attempts in two statements, whatever their number: each pending message
        counts its attempt and takes its new status, the attempt is logged, then each job's
        delivery_status follows its latest message (a second statement: a data-modifying CTE's changes
        are not visible to its own statement).

        The attempt is logged with the URL it was sent to. A message re-pointed while its attempt was
        under way (a PATCH of callback_url) stays pending and is due at once: its result goes to the new URL,
        whatever the old one answered."""
        if not items:
            return
        items = sorted(items, key=lambda i: i.message.seq)
        job_ids = await conn.fetch(
            "WITH given AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::integer[], "
            "$5::text[], $6::float8[], $7::text[], $8::text[], $9::text[], $10::bytea[]) "
            "AS g(seq, status, next_attempt_at, status_code, error, at, url, request_headers, response_headers, "
            "response_body)), "
            "counted AS (UPDATE messages m SET attempts = m.attempts + 1, "
            "status = CASE WHEN m.url = g.url THEN g.status ELSE 'pending' END, "
            "next_attempt_at = CASE WHEN m.url = g.url THEN g.next_attempt_at ELSE g.at END, lease_until = NULL "
            "FROM given g WHERE m.seq = g.seq AND m.status = 'pending' "
            "RETURNING m.id, m.job_id, g.url, m.attempts, g.status_code, g.error, g.at, g.request_headers, "
            "g.response_headers, g.response_body) "
            "INSERT INTO attempts (message_id, job_id, url, attempt, status_code, error, at, request_headers, "
            "response_headers, response_body) "
            "SELECT * FROM counted RETURNING job_id",
            *columns(
                [
                    (
                        i.message.seq,
                        i.status,
                        i.next_attempt_at,
                        i.status_code,
                        i.error,
                        i.at,
                        i.message.url,
                        *i.exchange_columns(),
                    )
                    for i in items
                ],
                10,
            ),
        )
        if job_ids:
            await conn.execute(_REFRESH_DELIVERY_STATUS, sorted({r["job_id"] for r in job_ids}))

    async def postpone_messages(self, seqs: list[int], *, until: float) -> None:
        for seq in seqs:
            self._let_go(seq)
        if seqs:
            await self._tx(
                lambda conn: conn.execute(
                    "UPDATE messages SET next_attempt_at = $1, lease_until = NULL WHERE status = 'pending' "
                    "AND seq = ANY($2)",
                    until,
                    seqs,
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
        rows = await self._fetch(ORPHANED_JOBS.postgres, provider, self.clock() - REPLICA_TTL_S)
        return [job_from_row(r) for r in rows]
