"""PostgreSQL's share of media mirroring: mirror tasks and media objects (mixed into `PostgresStore`).

Tasks are claimed with `FOR UPDATE SKIP LOCKED` and an expiring lease, so with several replicas one
at a time mirrors an output, and the tasks of a replica that died are taken over once its lease ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver.store.base import MediaObject, MirrorTask
from receiver.store.mirror_fair import POSTGRES_ORIGIN, SCAN, full_origins, pick
from receiver.store.parts import Conn, PostgresPart
from receiver.store.queries import (
    DROP_MEDIA_UPLOAD,
    JOB_KEY_BY_ID,
    KEEP_MEDIA,
    MEDIA_CHUNK,
    MEDIA_NAMED,
    MEDIA_OBJECT,
    PUT_MEDIA_CHUNK,
    RETRY_MIRROR_TASK,
)
from receiver.store.rows import MEDIA_COLUMNS, TASK_COLUMNS, media_from_row, task_from_row
from receiver.store.rules import MirrorResult, UnitOfWork, Writes


async def insert_mirror_tasks(conn: Conn, w: Writes) -> None:
    """Part of `_flush`: the mirror tasks a unit queued."""
    if w.mirror_tasks:
        await conn.executemany(
            "INSERT INTO mirror_tasks (job_id, output_index, url, next_attempt_at, created_at) "
            "VALUES ($1, $2, $3, $4, $4) ON CONFLICT (job_id, output_index) DO NOTHING",
            [(t.job_id, t.index, t.url, t.created_at) for t in w.mirror_tasks],
        )


class PostgresMirror(PostgresPart):
    """Methods of `PostgresStore` (see `receiver.store.base.Store`)."""

    async def claim_mirror_tasks(
        self, *, limit: int, lease_s: float, room: Mapping[str, int] | None = None, per_origin: int | None = None
    ) -> list[MirrorTask]:
        now = self.clock()
        if per_origin is not None or room:
            return await self._claim_fairly(now, limit, lease_s, room, per_origin)
        rows = await self._tx(
            lambda conn: conn.fetch(
                "UPDATE mirror_tasks SET lease_until = $2, lease_owner = $3, attempts = attempts + 1 WHERE seq IN ("
                "SELECT seq FROM mirror_tasks WHERE next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until <= $1) "
                f"ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING {TASK_COLUMNS}",
                now,
                now + lease_s,
                self.replica_id,
                limit,
            )
        )
        return [task_from_row(r) for r in rows]

    async def _claim_fairly(
        self, now: float, limit: int, lease_s: float, room: Mapping[str, int] | None, per_origin: int | None
    ) -> list[MirrorTask]:
        """Due tasks read first (origins with no room left out), chosen within each origin's room, then
        leased unless another replica took them meanwhile."""

        async def claim(conn: Conn) -> list[Any]:
            due = await conn.fetch(
                "SELECT seq, url FROM mirror_tasks WHERE next_attempt_at <= $1 AND (lease_until IS NULL OR "
                f"lease_until <= $1) AND NOT ({POSTGRES_ORIGIN} = ANY($2::text[])) ORDER BY next_attempt_at LIMIT $3",
                now,
                full_origins(room),
                max(limit, SCAN),
            )
            chosen = [r[0] for r in pick(due, limit=limit, room=room, per_origin=per_origin, url_at=1)]
            if not chosen:
                return []
            return await conn.fetch(
                "UPDATE mirror_tasks SET lease_until = $2, lease_owner = $3, attempts = attempts + 1 WHERE seq IN ("
                "SELECT seq FROM mirror_tasks WHERE seq = ANY($4::bigint[]) AND next_attempt_at <= $1 AND "
                f"(lease_until IS NULL OR lease_until <= $1) FOR UPDATE SKIP LOCKED) RETURNING {TASK_COLUMNS}",
                now,
                now + lease_s,
                self.replica_id,
                chosen,
            )

        rows = await self._tx(claim)
        rows.sort(key=lambda r: r[0])
        return [task_from_row(r) for r in rows]

    async def retry_mirror_task(
        self, task: MirrorTask, *, next_attempt_at: float, error: str, shown: str | None = None
    ) -> None:
        if shown is None:
            await self._tx(
                lambda conn: conn.execute(RETRY_MIRROR_TASK.postgres, next_attempt_at, error[:1000], task.seq)
            )
            return

        async def retry(conn: Conn, unit: UnitOfWork) -> None:
            key = await conn.fetchrow(JOB_KEY_BY_ID.postgres, task.job_id)
            if key is not None:
                await self._load(conn, unit, {(key[0], key[1])})  # the job's key lock first, as every writer
            await conn.execute(RETRY_MIRROR_TASK.postgres, next_attempt_at, error[:1000], task.seq)
            job = unit.job(key[0], key[1]) if key is not None else None
            if job is not None:
                unit.mirror_retrying(job, task.index, shown[:1000])
                await self._flush(conn, unit)

        await self._in_unit(retry)

    async def finish_mirror_task(self, task: MirrorTask, result: MirrorResult) -> None:
        now = self.clock()

        async def finish(conn: Conn, unit: UnitOfWork) -> None:
            key = await conn.fetchrow(JOB_KEY_BY_ID.postgres, task.job_id)
            if key is not None:
                await self._load(conn, unit, {(key[0], key[1])})  # the job's key lock first, as every writer
            if await conn.fetchval("DELETE FROM mirror_tasks WHERE seq = $1 RETURNING seq", task.seq) is None:
                return  # finished already (a replica whose lease had run out)
            if result.sha256 is not None:
                await conn.execute(
                    KEEP_MEDIA.postgres,
                    result.sha256,
                    result.size or 0,
                    result.content_type or "application/octet-stream",
                    now,
                )
            job = unit.job(key[0], key[1]) if key is not None else None
            if job is not None:
                unit.mirrored(job, task.index, result)
                await self._flush(conn, unit)

        await self._in_unit(finish)

    async def media_object(self, sha256: str) -> MediaObject | None:
        rows = await self._fetch(MEDIA_OBJECT.postgres, sha256)
        return media_from_row(rows[0]) if rows else None

    async def put_media_chunk(self, upload: str, seq: int, data: bytes) -> None:
        await self._tx(lambda conn: conn.execute(PUT_MEDIA_CHUNK.postgres, upload, seq, data, self.clock()))

    async def has_media_object(self, key: str) -> bool:
        return bool(await self._fetch(MEDIA_NAMED.postgres, key))

    async def media_chunk(self, key: str, seq: int) -> bytes | None:
        rows = await self._fetch(MEDIA_CHUNK.postgres, key, seq)
        return bytes(rows[0][0]) if rows else None

    async def name_media_upload(self, upload: str, key: str) -> None:
        async def name(conn: Conn) -> None:
            named = await conn.fetchval(
                "INSERT INTO media_names (key, upload) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING RETURNING upload",
                key,
                upload,
            )
            if named is None:  # the same bytes are stored already (perhaps by another replica just now)
                await conn.execute(DROP_MEDIA_UPLOAD.postgres, upload)

        await self._tx(name)

    async def drop_media_upload(self, upload: str) -> None:
        await self._tx(lambda conn: conn.execute(DROP_MEDIA_UPLOAD.postgres, upload))

    async def delete_media_object(self, key: str) -> None:
        async def delete(conn: Conn) -> None:
            upload = await conn.fetchval("DELETE FROM media_names WHERE key = $1 RETURNING upload", key)
            if upload is not None:
                await conn.execute(DROP_MEDIA_UPLOAD.postgres, upload)

        await self._tx(delete)

    async def forget_media_uploads(self, *, older_than: float) -> int:
        status = await self._tx(
            lambda conn: conn.execute(
                "DELETE FROM media_chunks c WHERE c.created_at < $1 AND NOT EXISTS "
                "(SELECT 1 FROM media_names n WHERE n.upload = c.upload)",
                older_than,
            )
        )
        return int(status.rsplit(" ", 1)[-1])

    async def expire_media(self, *, before: float, limit: int) -> list[MediaObject]:
        rows = await self._tx(
            lambda conn: conn.fetch(
                "UPDATE media SET deleted_at = $2 WHERE sha256 IN (SELECT sha256 FROM media WHERE deleted_at IS NULL "
                "AND created_at < $1 ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED) "
                f"RETURNING {MEDIA_COLUMNS}",
                before,
                self.clock(),
                limit,
            )
        )
        return [media_from_row(r) for r in rows]
