"""SQLite's share of pipelines: each sink's stored position and state (mixed into `SQLiteStore`)."""

from __future__ import annotations

import sqlite3

from receiver.store.base import SinkRow
from receiver.store.parts import SQLitePart
from receiver.store.rows import SINK_COLUMNS, new_epoch, sink_from_row


class SQLiteSinks(SQLitePart):
    """Methods of `SQLiteStore` (see `receiver.store.base.Store`)."""

    async def sink_rows(self, names: list[str]) -> dict[str, SinkRow]:
        if not names:
            return {}
        marks = ",".join("?" * len(names))
        rows = await self._fetch(f"SELECT {SINK_COLUMNS} FROM sinks WHERE name IN ({marks})", tuple(names))
        if len(rows) < len(names):
            await self._batch(
                lambda db: db.executemany(
                    "INSERT INTO sinks (name) VALUES (?) ON CONFLICT (name) DO NOTHING", [(n,) for n in names]
                )
            )
            rows = await self._fetch(f"SELECT {SINK_COLUMNS} FROM sinks WHERE name IN ({marks})", tuple(names))
        return {str(r[0]): sink_from_row(tuple(r)) for r in rows}

    async def advance_sink(self, name: str, *, epoch: int, position: int) -> bool:
        now = self.clock()
        changed = await self._batch(
            lambda db: (
                db.execute(
                    "UPDATE sinks SET position = ?, last_error = NULL, last_published_at = ? "
                    "WHERE name = ? AND epoch = ? AND position < ?",
                    (position, now, name, epoch, position),
                ).rowcount
            )
        )
        return bool(changed)

    async def set_sink_error(self, name: str, *, epoch: int, error: str | None) -> None:
        await self._batch(
            lambda db: db.execute(
                "UPDATE sinks SET last_error = ? WHERE name = ? AND epoch = ?",
                (None if error is None else error[:1000], name, epoch),
            )
        )

    async def change_sink(self, name: str, *, paused: bool | None = None, position: int | None = None) -> SinkRow:
        def change(db: sqlite3.Connection) -> SinkRow:
            db.execute("INSERT INTO sinks (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (name,))
            db.execute(
                "UPDATE sinks SET epoch = epoch + ?, last_error = NULL, paused = COALESCE(?, paused), "
                "position = COALESCE(?, position) WHERE name = ?",
                (new_epoch(paused, position), None if paused is None else int(paused), position, name),
            )
            return sink_from_row(
                tuple(db.execute(f"SELECT {SINK_COLUMNS} FROM sinks WHERE name = ?", (name,)).fetchone())
            )

        return await self._batch(change)

    async def event_seq_before(self, since: float) -> int:
        rows = await self._fetch(
            "SELECT MIN(seq) FROM events WHERE job_id IN (SELECT id FROM jobs WHERE completed_at >= ?)", (since,)
        )
        if rows and rows[0][0] is not None:
            return int(rows[0][0]) - 1
        rows = await self._fetch("SELECT COALESCE(MAX(seq), 0) FROM events")
        return int(rows[0][0])
