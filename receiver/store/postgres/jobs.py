"""The PostgreSQL store's part of the jobs API (patch, cancel, timeouts, redeliveries, Idempotency-Key
claims): a mixin of `PostgresStore`, kept apart so each file stays one concern. Every change that touches a
job locks its (provider, provider_job_id) key first and re-reads it (`_load`), as every other write does."""

from __future__ import annotations

from typing import Any, Literal

import orjson

from receiver.models import Job, JobStatus, dumps
from receiver.store.base import Changes, FinishedFilter, KeyClaim
from receiver.store.parts import Conn, PostgresPart
from receiver.store.queries import (
    DISCARD_JOB,
    FINISH_IDEMPOTENCY_KEY,
    JOB_KEY_BY_ID,
    MESSAGE_BY_ID,
    PRUNE_IDEMPOTENCY_KEYS,
    RELEASE_IDEMPOTENCY_KEY,
)
from receiver.store.rows import MESSAGE_COLUMNS, columns, finished_filter_sql
from receiver.store.rules import UnitOfWork


class PostgresJobActions(PostgresPart):
    """See `receiver.store.base.Store` (the jobs API block) for the contract of each method."""

    async def _load_id(self, conn: Conn, unit: UnitOfWork, job_id: str) -> Job | None:
        """The job with this id, its key locked first and then read as committed."""
        row = await conn.fetchrow(JOB_KEY_BY_ID.postgres, job_id)
        if row is None:
            return None
        await self._load(conn, unit, {(row[0], row[1])})
        return unit.job(row[0], row[1])

    async def update_job(self, job_id: str, changes: dict[str, Any]) -> Job | None:
        async def patch(conn: Conn, unit: UnitOfWork) -> Job | None:
            job = await self._load_id(conn, unit, job_id)
            if job is None:
                return None
            before, after = unit.patch(job, changes)
            await self._flush(conn, unit)
            repointed[:] = [False]
            if before and after and before != after:
                status = await conn.execute(
                    "UPDATE messages SET url = $1, next_attempt_at = LEAST(next_attempt_at, $4) WHERE job_id = $2 "
                    "AND status = 'pending' AND url = $3",
                    after,
                    job_id,
                    before,
                    unit.now,
                )
                if status != "UPDATE 0":
                    repointed[:] = [True]
                    await self._wake_outbox(conn)
            return job

        repointed: list[bool] = []
        job = await self._in_unit(patch)
        if any(repointed):
            self._notify(Changes((), True))
        return job

    async def end_job(self, job_id: str, *, status: JobStatus, error: str | None) -> tuple[Job | None, bool]:
        async def end(conn: Conn, unit: UnitOfWork) -> tuple[Job | None, bool]:
            job = await self._load_id(conn, unit, job_id)
            if job is None or not unit.end(job, status, error):
                return job, False
            await self._flush(conn, unit)
            return job, True

        return await self._in_unit(end)

    async def expire_jobs(self, *, created_before: float, error: str, limit: int) -> list[str]:
        async def expire(conn: Conn, unit: UnitOfWork) -> list[str]:
            # SKIP LOCKED for keys: a job whose key another transaction holds (a webhook, another replica's
            # sweep) is left to the next sweep; those taken are re-read by `_load` once locked.
            # The LIMIT inside: only the batch's candidates are try-locked, never every old job.
            rows = await conn.fetch(
                "SELECT provider, provider_job_id FROM (SELECT provider, provider_job_id FROM jobs "
                "WHERE status = 'pending' AND created_at < $1 ORDER BY created_at LIMIT $2) AS due "
                "WHERE pg_try_advisory_xact_lock(hashtextextended(provider || ':' || provider_job_id, 0))",
                created_before,
                limit,
            )
            await self._load(conn, unit, {(r[0], r[1]) for r in rows})
            for r in rows:
                job = unit.job(r[0], r[1])
                if job is not None:
                    unit.end(job, JobStatus.FAILED, error)
            await self._flush(conn, unit)
            return list(unit.terminal_job_ids)

        return await self._in_unit(expire)

    async def _redeliver(self, job_id: str, url: str | None) -> tuple[Any, bool] | None:
        """The message row and whether it was one already waiting (see `Store.redeliver`); with `url`,
        always a new message."""

        async def enqueue_again(conn: Conn, unit: UnitOfWork) -> tuple[Any, bool] | None:
            job = await self._load_id(conn, unit, job_id)
            if job is None:
                return None
            destination = job.callback_url or self.default_callback_url
            if url is None and job.status.terminal and destination:
                waiting = await conn.fetchrow(
                    "UPDATE messages SET next_attempt_at = LEAST(next_attempt_at, $3) WHERE seq = ("
                    "SELECT seq FROM messages WHERE job_id = $1 AND status = 'pending' AND url = $2 "
                    "AND (lease_until IS NULL OR lease_until <= $3) "
                    f"ORDER BY seq DESC LIMIT 1) RETURNING {MESSAGE_COLUMNS}",
                    job_id,
                    destination,
                    unit.now,
                )
                if waiting is not None:
                    await self._wake_outbox(conn)
                    return waiting, True
            message_id = unit.redeliver(job, url)
            if message_id is None:
                return None
            await self._flush(conn, unit)
            return await conn.fetchrow(MESSAGE_BY_ID.postgres, message_id), False

        found = await self._in_unit(enqueue_again)
        if found is not None and found[1]:
            self._notify(Changes((), True))
        return found

    async def redeliver_finished(
        self, filters: FinishedFilter, *, after_seq: int, limit: int
    ) -> tuple[int, int | None]:
        where, params = finished_filter_sql(filters, "$", has_default=self.default_callback_url is not None)
        n = len(params)

        async def enqueue_all(conn: Conn, unit: UnitOfWork) -> tuple[int, int | None]:
            rows = await conn.fetch(
                f"SELECT seq, provider, provider_job_id FROM jobs WHERE {' AND '.join(where)} AND seq > ${n + 1} "
                f"ORDER BY seq LIMIT ${n + 2}",
                *params,
                after_seq,
                limit,
            )
            await self._load(conn, unit, {(r[1], r[2]) for r in rows})
            jobs = [job for r in rows if (job := unit.job(r[1], r[2])) is not None]
            # As `redeliver`: a message still waiting to go to the job's destination is made due now, not doubled.
            destinations = [(job.id, url) for job in jobs if (url := job.callback_url or self.default_callback_url)]
            retried = (
                {
                    r[0]
                    for r in await conn.fetch(
                        "UPDATE messages SET next_attempt_at = LEAST(next_attempt_at, $3) WHERE seq IN ("
                        "SELECT DISTINCT ON (m.job_id) m.seq FROM messages m JOIN unnest($1::text[], $2::text[]) AS d(job_id, url) "
                        "ON m.job_id = d.job_id AND m.url = d.url WHERE m.status = 'pending' "
                        "AND (m.lease_until IS NULL OR m.lease_until <= $3) ORDER BY m.job_id, m.seq DESC) "
                        "RETURNING job_id",
                        *columns(destinations, 2),
                        unit.now,
                    )
                }
                if destinations
                else set()
            )
            queued = len(retried)
            for job in jobs:
                if job.id not in retried and unit.redeliver(job) is not None:
                    queued += 1
            if retried:
                await self._wake_outbox(conn)
                woke[:] = [True]
            await self._flush(conn, unit)
            return queued, (int(rows[-1][0]) if len(rows) == limit else None)

        woke: list[bool] = []
        result = await self._in_unit(enqueue_all)
        if woke:
            self._notify(Changes((), True))
        return result

    async def discard_job(self, job_id: str) -> bool:
        async def discard(conn: Conn, unit: UnitOfWork) -> bool:
            if await self._load_id(conn, unit, job_id) is None:
                return False
            status = await conn.execute(DISCARD_JOB.postgres, job_id, job_id)
            return status != "DELETE 0"

        return await self._in_unit(discard)

    async def claim_idempotency_key(self, key: str, *, fingerprint: str, ttl_s: float, stale_s: float) -> KeyClaim:
        now = self.clock()

        async def claim(conn: Conn) -> KeyClaim:
            # Two replicas inserting one key: the second waits on the first's row, then finds it.
            taken = await conn.fetchval(
                "INSERT INTO idempotency_keys AS k (key, fingerprint, job_ids, created_at) VALUES ($1, $2, NULL, $3) "
                "ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, job_ids = NULL, "
                "created_at = excluded.created_at, outcome_unknown = false WHERE k.created_at <= $3::float8 - "
                "CASE WHEN k.job_ids IS NULL THEN $4::float8 ELSE $5::float8 END RETURNING true",
                key,
                fingerprint,
                now,
                stale_s,
                ttl_s,
            )
            if taken:
                return KeyClaim("new", fingerprint)
            row = await conn.fetchrow(
                "SELECT fingerprint, job_ids, outcome_unknown FROM idempotency_keys WHERE key = $1", key
            )
            assert row is not None  # the INSERT found it taken, and this transaction holds its row
            if row["job_ids"] is None:
                return KeyClaim("pending", row["fingerprint"])
            state: Literal["done", "unknown"] = "unknown" if row["outcome_unknown"] else "done"
            return KeyClaim(state, row["fingerprint"], tuple(orjson.loads(row["job_ids"])))

        return await self._tx(claim)

    async def finish_idempotency_key(self, key: str, job_ids: list[str], *, outcome_unknown: bool = False) -> None:
        await self._tx(lambda conn: conn.execute(FINISH_IDEMPOTENCY_KEY.postgres, dumps(job_ids), outcome_unknown, key))

    async def release_idempotency_key(self, key: str) -> None:
        await self._tx(lambda conn: conn.execute(RELEASE_IDEMPOTENCY_KEY.postgres, key))

    async def prune_idempotency_keys(self, *, older_than: float) -> None:
        await self._tx(lambda conn: conn.execute(PRUNE_IDEMPOTENCY_KEYS.postgres, older_than))
