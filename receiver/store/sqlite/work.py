"""The SQLite store's claimed work: callback messages (outbox), due polls, leases and heartbeats.
A mixin of `SQLiteStore`, kept apart so each file stays one concern."""

from __future__ import annotations

import sqlite3
from typing import Any

from receiver.models import Job
from receiver.store.base import Attempt, Claim, Message
from receiver.store.parts import SQLitePart
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

# Two index probes (messages_due, messages_leased), as on PostgreSQL: the first unleased pending message, and
# the leased ones but those just claimed (in flight, few), each due once its lease ends.
# (An aggregate MIN, unlike min(a, b), passes over NULL.)
NEXT_DUE_SQL = (
    "SELECT MIN(due) FROM (SELECT MIN(next_attempt_at) AS due FROM messages WHERE status = 'pending' "
    "AND lease_until IS NULL UNION ALL SELECT MIN(MAX(next_attempt_at, lease_until)) FROM messages "
    "WHERE status = 'pending' AND lease_until IS NOT NULL AND seq NOT IN ({claimed}))"
)


class SQLiteWork(SQLitePart):
    """See `receiver.store.base.Store` for the contract of each method."""

    # -- outbox ----------------------------------------------------------------------------------

    async def release_leases(self) -> None:
        """Forget claims made by a previous run: the file lock says no other process is using them."""

        def release(db: sqlite3.Connection) -> None:
            db.execute("UPDATE messages SET lease_until = NULL WHERE status = 'pending'")
            db.execute("UPDATE mirror_tasks SET lease_until = NULL")  # a fetch cut short resumes at once

        await self._batch(release)

    async def claim_listed(self, seqs: list[int], *, lease_s: float) -> list[Message]:
        if not seqs:
            return []
        now = self.clock()
        marks = ",".join("?" * len(seqs))

        def claim(db: sqlite3.Connection) -> list[Any]:
            rows = db.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE seq IN ({marks}) AND status = 'pending' "
                "AND (lease_until IS NULL OR lease_until <= ?)",
                (*seqs, now),
            ).fetchall()
            self._lease(db, [r[0] for r in rows], until=now + lease_s)
            return rows

        order = {seq: i for i, seq in enumerate(seqs)}
        return sorted((message_from_row(r) for r in await self._batch(claim)), key=lambda m: order[m.seq])

    async def claim_due(self, *, limit: int, lease_s: float) -> Claim:
        now = self.clock()

        def claim(db: sqlite3.Connection) -> tuple[list[Any], float | None]:
            rows = db.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE status = 'pending' AND next_attempt_at <= ? "
                "AND (lease_until IS NULL OR lease_until <= ?) ORDER BY next_attempt_at LIMIT ?",
                (now, now, limit),
            ).fetchall()
            claimed = [r[0] for r in rows]
            self._lease(db, claimed, until=now + lease_s)
            # SQLite takes an empty `NOT IN ()`.
            due = db.execute(NEXT_DUE_SQL.format(claimed=",".join("?" * len(claimed))), claimed).fetchone()
            return rows, due[0]

        rows, due = await self._batch(claim)
        return Claim([message_from_row(r) for r in rows], float(due) if due is not None else None)

    def _lease(self, db: sqlite3.Connection, seqs: list[int], *, until: float) -> None:
        if seqs:
            db.execute(
                f"UPDATE messages SET lease_until = ?, lease_owner = ? WHERE seq IN ({','.join('?' * len(seqs))})",
                (until, self.replica_id, *seqs),
            )

    async def postpone_messages(self, seqs: list[int], *, until: float) -> None:
        if not seqs:
            return
        await self._batch(
            lambda db: db.execute(
                f"UPDATE messages SET next_attempt_at = ?, lease_until = NULL WHERE status = 'pending' "
                f"AND seq IN ({','.join('?' * len(seqs))}) AND (lease_until IS NULL OR lease_owner = ?)",
                (until, *seqs, self.replica_id),
            )
        )

    async def hand_back_messages(self, seqs: list[int]) -> None:
        if not seqs:
            return
        now = self.clock()
        await self._batch(
            lambda db: db.execute(
                "UPDATE messages SET next_attempt_at = MIN(next_attempt_at, ?), lease_until = NULL WHERE status = 'pending' "
                f"AND lease_until IS NOT NULL AND seq IN ({','.join('?' * len(seqs))})",
                (now, *seqs),
            )
        )

    async def waiting_messages(self, job_id: str) -> list[Message]:
        rows = await self._fetch(WAITING_MESSAGES.sqlite, (job_id,))
        return [message_from_row(r) for r in rows]

    async def list_deliveries(self, job_id: str) -> list[Attempt]:
        rows = await self._fetch(DELIVERIES.sqlite, (job_id,))
        return [attempt_from_row(r) for r in rows]

    async def delivery_backlog(self) -> tuple[int, float | None]:
        return backlog_from_rows(await self._fetch(BACKLOG.sqlite))

    # -- reconciling -----------------------------------------------------------------------------

    async def pending_jobs(self, provider: str) -> list[Job]:
        rows = await self._fetch(PENDING_JOBS.sqlite, (provider,))
        return [job_from_row(r) for r in rows]

    async def claim_due_polls(self, *, providers: list[str], limit: int, lease_s: float) -> list[Job]:
        if not providers:
            return []
        now = self.clock()

        def claim(db: sqlite3.Connection) -> list[Any]:
            rows = db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'pending' AND next_poll_at <= ? "
                f"AND provider IN ({','.join('?' * len(providers))}) ORDER BY next_poll_at LIMIT ?",
                (now, *providers, limit),
            ).fetchall()
            if rows:
                db.execute(
                    f"UPDATE jobs SET next_poll_at = ? WHERE seq IN ({','.join('?' * len(rows))})",
                    (now + lease_s, *[r["seq"] for r in rows]),
                )
            return rows

        return [job_from_row(r) for r in await self._batch(claim)]

    async def schedule_poll(self, job_id: str, *, next_poll_at: float) -> None:
        await self._batch(lambda db: db.execute(SCHEDULE_POLL.sqlite, (next_poll_at, job_id)))

    # -- replicas (one, here: the same interface as PostgreSQL's) --------------------------------

    async def acquire_lease(self, name: str, *, ttl_s: float) -> int | None:
        now = self.clock()

        def take(db: sqlite3.Connection) -> int | None:
            row = db.execute("SELECT owner, term, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO leases (name, owner, term, expires_at) VALUES (?, ?, 1, ?)",
                    (name, self.replica_id, now + ttl_s),
                )
                return 1
            if row["owner"] != self.replica_id and row["expires_at"] > now:
                return None
            term = int(row["term"]) + (0 if row["owner"] == self.replica_id else 1)
            db.execute(
                "UPDATE leases SET owner = ?, term = ?, expires_at = ? WHERE name = ?",
                (self.replica_id, term, now + ttl_s, name),
            )
            return term

        return await self._batch(take)

    async def release_lease(self, name: str) -> None:
        await self._batch(lambda db: db.execute(RELEASE_LEASE.sqlite, (name, self.replica_id)))

    async def heartbeat(self) -> None:
        now = self.clock()
        await self._batch(lambda db: db.execute(HEARTBEAT.sqlite, (self.replica_id, now)))

    async def orphaned_jobs(self, provider: str) -> list[Job]:
        rows = await self._fetch(ORPHANED_JOBS.sqlite, (provider, self.clock() - REPLICAS.ttl_s))
        return [job_from_row(r) for r in rows]
