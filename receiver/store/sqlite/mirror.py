"""SQLite's share of media mirroring: mirror tasks and media objects (mixed into `SQLiteStore`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from receiver.store.base import Changes, MediaObject, MirrorTask
from receiver.store.mirror_fair import SCAN, SQLITE_ORIGIN, full_origins, pick
from receiver.store.parts import SQLitePart
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
from receiver.store.rules import MirrorResult


class SQLiteMirror(SQLitePart):
    """Methods of `SQLiteStore` (see `receiver.store.base.Store`)."""

    async def claim_mirror_tasks(
        self, *, limit: int, lease_s: float, room: Mapping[str, int] | None = None, per_origin: int | None = None
    ) -> list[MirrorTask]:
        now = self.clock()
        fair = per_origin is not None or bool(room)
        full = full_origins(room)
        leave_out = f" AND {SQLITE_ORIGIN} NOT IN ({','.join('?' * len(full))})" if full else ""

        def claim(db: sqlite3.Connection) -> list[Any]:
            rows = db.execute(
                f"SELECT {TASK_COLUMNS} FROM mirror_tasks WHERE next_attempt_at <= ? "
                f"AND (lease_until IS NULL OR lease_until <= ?){leave_out} ORDER BY next_attempt_at LIMIT ?",
                (now, now, *full, max(limit, SCAN) if fair else limit),
            ).fetchall()
            if fair:
                rows = pick(rows, limit=limit, room=room, per_origin=per_origin, url_at=3)
            if rows:
                db.execute(
                    f"UPDATE mirror_tasks SET lease_until = ?, lease_owner = ?, attempts = attempts + 1 "
                    f"WHERE seq IN ({','.join('?' * len(rows))})",
                    (now + lease_s, self.replica_id, *[r[0] for r in rows]),
                )
            return rows

        return [task_from_row(r, claimed=1) for r in await self._batch(claim)]

    async def retry_mirror_task(
        self, task: MirrorTask, *, next_attempt_at: float, error: str, shown: str | None = None
    ) -> None:
        unit = self._unit()

        def retry(db: sqlite3.Connection) -> None:
            db.execute(RETRY_MIRROR_TASK.sqlite, (next_attempt_at, error[:1000], task.seq))
            if shown is None:
                return
            key = db.execute(JOB_KEY_BY_ID.sqlite, (task.job_id,)).fetchone()
            if key is None:
                return
            self._load(db, unit, {(key[0], key[1])})
            job = unit.job(key[0], key[1])
            if job is not None:
                unit.mirror_retrying(job, task.index, shown[:1000])
            self._flush(db, unit)

        await self._batch(retry)

    async def finish_mirror_task(self, task: MirrorTask, result: MirrorResult) -> None:
        unit = self._unit()
        now = self.clock()

        def finish(db: sqlite3.Connection) -> None:
            pending = db.execute("SELECT 1 FROM mirror_tasks WHERE seq = ?", (task.seq,)).fetchone()
            key = db.execute(JOB_KEY_BY_ID.sqlite, (task.job_id,)).fetchone()
            if pending is None:
                return  # finished already (a replica whose lease had run out)
            db.execute("DELETE FROM mirror_tasks WHERE seq = ?", (task.seq,))
            if result.sha256 is not None:
                db.execute(
                    KEEP_MEDIA.sqlite,
                    (result.sha256, result.size or 0, result.content_type or "application/octet-stream", now),
                )
            if key is None:
                return
            self._load(db, unit, {(key[0], key[1])})
            job = unit.job(key[0], key[1])
            if job is not None:
                unit.mirrored(job, task.index, result)
            self._flush(db, unit)

        await self._batch(finish)
        self._notify(Changes(tuple(unit.terminal_job_ids), unit.queued_messages))

    async def media_object(self, sha256: str) -> MediaObject | None:
        rows = await self._fetch(MEDIA_OBJECT.sqlite, (sha256,))
        return media_from_row(rows[0]) if rows else None

    async def put_media_chunk(self, upload: str, seq: int, data: bytes) -> None:
        now = self.clock()
        await self._batch(lambda db: db.execute(PUT_MEDIA_CHUNK.sqlite, (upload, seq, data, now)))

    async def has_media_object(self, key: str) -> bool:
        return bool(await self._fetch(MEDIA_NAMED.sqlite, (key,)))

    async def media_chunk(self, key: str, seq: int) -> bytes | None:
        rows = await self._fetch(MEDIA_CHUNK.sqlite, (key, seq))
        return bytes(rows[0][0]) if rows else None

    async def name_media_upload(self, upload: str, key: str) -> None:
        def name(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM media_names WHERE key = ?", (key,)).fetchone():
                db.execute(DROP_MEDIA_UPLOAD.sqlite, (upload,))
            else:
                db.execute("INSERT INTO media_names (key, upload) VALUES (?, ?)", (key, upload))

        await self._batch(name)

    async def drop_media_upload(self, upload: str) -> None:
        await self._batch(lambda db: db.execute(DROP_MEDIA_UPLOAD.sqlite, (upload,)))

    async def delete_media_object(self, key: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM media_chunks WHERE upload = (SELECT upload FROM media_names WHERE key = ?)", (key,))
            db.execute("DELETE FROM media_names WHERE key = ?", (key,))

        await self._batch(delete)

    async def forget_media_uploads(self, *, older_than: float) -> int:
        def forget(db: sqlite3.Connection) -> int:
            return db.execute(
                "DELETE FROM media_chunks WHERE created_at < ? AND upload NOT IN (SELECT upload FROM media_names)",
                (older_than,),
            ).rowcount

        return int(await self._batch(forget))

    async def expire_media(self, *, before: float, limit: int) -> list[MediaObject]:
        now = self.clock()

        def expire(db: sqlite3.Connection) -> list[Any]:
            rows = db.execute(
                f"SELECT {MEDIA_COLUMNS} FROM media WHERE deleted_at IS NULL AND created_at < ? "
                "ORDER BY created_at LIMIT ?",
                (before, limit),
            ).fetchall()
            if rows:
                db.execute(
                    f"UPDATE media SET deleted_at = ? WHERE sha256 IN ({','.join('?' * len(rows))})",
                    (now, *[r[0] for r in rows]),
                )
            return rows

        return [media_from_row(r) for r in await self._batch(expire)]
