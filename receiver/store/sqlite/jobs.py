"""The SQLite store's part of the jobs API (patch, cancel, timeouts, redeliveries, Idempotency-Key
claims): a mixin of `SQLiteStore`, kept apart so each file stays one concern. Every change runs in one
write transaction (the store's `_batch`, one writer) through the rules (`UnitOfWork`)."""

from __future__ import annotations

import sqlite3
from typing import Any, Literal

import orjson

from receiver.models import Job, JobStatus, dumps
from receiver.store.base import Changes, FinishedFilter, KeyClaim
from receiver.store.parts import SQLitePart
from receiver.store.queries import (
    DISCARD_JOB,
    FINISH_IDEMPOTENCY_KEY,
    JOB_BY_ID,
    MESSAGE_BY_ID,
    PRUNE_IDEMPOTENCY_KEYS,
    RELEASE_IDEMPOTENCY_KEY,
)
from receiver.store.rows import JOB_COLUMNS, MESSAGE_COLUMNS, finished_filter_sql, job_from_row
from receiver.store.rules import UnitOfWork


class SQLiteJobActions(SQLitePart):
    """See `receiver.store.base.Store` (the jobs API block) for the contract of each method."""

    @staticmethod
    def _load_id(db: sqlite3.Connection, unit: UnitOfWork, job_id: str) -> Job | None:
        row = db.execute(JOB_BY_ID.sqlite, (job_id,)).fetchone()
        return unit.track(job_from_row(row)).job if row is not None else None

    async def update_job(self, job_id: str, changes: dict[str, Any]) -> Job | None:
        unit = self._unit()

        def patch(db: sqlite3.Connection) -> Job | None:
            job = self._load_id(db, unit, job_id)
            if job is None:
                return None
            before, after = unit.patch(job, changes)
            self._flush(db, unit)
            if before and after and before != after:
                repointed.append(
                    db.execute(
                        "UPDATE messages SET url = ?, next_attempt_at = MIN(next_attempt_at, ?) "
                        "WHERE job_id = ? AND status = 'pending' AND url = ?",
                        (after, unit.now, job_id, before),
                    ).rowcount
                )
            return job

        repointed: list[int] = []
        job = await self._batch(patch)
        if any(repointed):
            self._notify(Changes((), True))
        return job

    async def end_job(self, job_id: str, *, status: JobStatus, error: str | None) -> tuple[Job | None, bool]:
        unit = self._unit()

        def end(db: sqlite3.Connection) -> tuple[Job | None, bool]:
            job = self._load_id(db, unit, job_id)
            if job is None or not unit.end(job, status, error):
                return job, False
            self._flush(db, unit)
            return job, True

        result = await self._batch(end)
        self._notify(Changes(tuple(unit.terminal_job_ids), unit.queued_messages))
        return result

    async def expire_jobs(self, *, created_before: float, error: str, limit: int) -> list[str]:
        unit = self._unit()

        def expire(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'pending' AND created_at < ? "
                "ORDER BY created_at LIMIT ?",
                (created_before, limit),
            ).fetchall()
            for row in rows:
                unit.end(unit.track(job_from_row(row)).job, JobStatus.FAILED, error)
            self._flush(db, unit)
            return list(unit.terminal_job_ids)

        ids = await self._batch(expire)
        self._notify(Changes(tuple(ids), unit.queued_messages))
        return ids

    async def _redeliver(self, job_id: str, url: str | None) -> tuple[Any, bool] | None:
        """The message row and whether it was one already waiting (see `Store.redeliver`); with `url`,
        always a new message."""
        unit = self._unit()

        def enqueue_again(db: sqlite3.Connection) -> tuple[Any, bool] | None:
            job = self._load_id(db, unit, job_id)
            if job is None:
                return None
            destination = job.callback_url or self.default_callback_url
            if url is None and job.status.terminal and destination:
                waiting = db.execute(
                    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE job_id = ? AND status = 'pending' AND url = ? "
                    "AND (lease_until IS NULL OR lease_until <= ?) ORDER BY seq DESC LIMIT 1",
                    (job_id, destination, unit.now),
                ).fetchone()
                if waiting is not None:
                    db.execute(
                        "UPDATE messages SET next_attempt_at = MIN(next_attempt_at, ?) WHERE seq = ?",
                        (unit.now, waiting["seq"]),
                    )
                    return db.execute(
                        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE seq = ?", (waiting["seq"],)
                    ).fetchone(), True
            message_id = unit.redeliver(job, url)
            if message_id is None:
                return None
            self._flush(db, unit)
            return db.execute(MESSAGE_BY_ID.sqlite, (message_id,)).fetchone(), False

        found = await self._batch(enqueue_again)
        if found is not None:
            self._notify(Changes((), True))
        return found

    async def redeliver_finished(
        self, filters: FinishedFilter, *, after_seq: int, limit: int
    ) -> tuple[int, int | None]:
        unit = self._unit()
        where, params = finished_filter_sql(filters, "?", has_default=self.default_callback_url is not None)

        def enqueue_all(db: sqlite3.Connection) -> tuple[int, int | None]:
            rows = db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} AND seq > ? ORDER BY seq LIMIT ?",
                (*params, after_seq, limit),
            ).fetchall()
            for row in rows:
                job = unit.track(job_from_row(row)).job
                destination = job.callback_url or self.default_callback_url
                # As `redeliver`: a message still waiting to go there is made due now, not doubled.
                if (
                    destination
                    and db.execute(
                        "UPDATE messages SET next_attempt_at = MIN(next_attempt_at, ?) WHERE seq = (SELECT seq FROM "
                        "messages WHERE job_id = ? AND status = 'pending' AND url = ? AND (lease_until IS NULL OR lease_until <= ?) "
                        "ORDER BY seq DESC LIMIT 1)",
                        (unit.now, job.id, destination, unit.now),
                    ).rowcount
                ):
                    retried.append(job.id)
                    continue
                unit.redeliver(job)
            self._flush(db, unit)
            return len(rows), (int(rows[-1]["seq"]) if len(rows) == limit else None)

        retried: list[str] = []
        result = await self._batch(enqueue_all)
        self._notify(Changes((), unit.queued_messages or bool(retried)))
        return result

    async def discard_job(self, job_id: str) -> bool:
        def discard(db: sqlite3.Connection) -> bool:
            return db.execute(DISCARD_JOB.sqlite, (job_id, job_id)).rowcount > 0

        return await self._batch(discard)

    async def claim_idempotency_key(self, key: str, *, fingerprint: str, ttl_s: float, stale_s: float) -> KeyClaim:
        now = self.clock()

        def claim(db: sqlite3.Connection) -> KeyClaim:
            row = db.execute(
                "SELECT fingerprint, job_ids, created_at, outcome_unknown FROM idempotency_keys WHERE key = ?", (key,)
            ).fetchone()
            if row is not None:
                done = row["job_ids"] is not None
                if row["created_at"] > now - (ttl_s if done else stale_s):
                    ids = tuple(orjson.loads(row["job_ids"])) if done else ()
                    state: Literal["pending", "done", "unknown"] = (
                        ("unknown" if row["outcome_unknown"] else "done") if done else "pending"
                    )
                    return KeyClaim(state, row["fingerprint"], ids)
            db.execute(
                "INSERT INTO idempotency_keys (key, fingerprint, job_ids, created_at) VALUES (?, ?, NULL, ?) "
                "ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, job_ids = NULL, "
                "created_at = excluded.created_at, outcome_unknown = 0",
                (key, fingerprint, now),
            )
            return KeyClaim("new", fingerprint)

        return await self._batch(claim)

    async def finish_idempotency_key(self, key: str, job_ids: list[str], *, outcome_unknown: bool = False) -> None:
        await self._batch(
            lambda db: db.execute(FINISH_IDEMPOTENCY_KEY.sqlite, (dumps(job_ids), int(outcome_unknown), key))
        )

    async def release_idempotency_key(self, key: str) -> None:
        await self._batch(lambda db: db.execute(RELEASE_IDEMPOTENCY_KEY.sqlite, (key,)))

    async def prune_idempotency_keys(self, *, older_than: float) -> None:
        await self._batch(lambda db: db.execute(PRUNE_IDEMPOTENCY_KEYS.sqlite, (older_than,)))
