"""SQLite's share of refused requests: kept newest first, trimmed to the bound (mixed into `SQLiteStore`)."""

from __future__ import annotations

import sqlite3

from receiver.store.base import Page
from receiver.store.parts import SQLitePart
from receiver.store.queries import TRIM_REFUSALS
from receiver.store.refusal_rows import (
    REFUSAL_COLUMNS,
    REFUSAL_INSERT_COLUMNS,
    REFUSALS_KEPT,
    Refusal,
    refusal_from_row,
    refusal_where,
)


class SQLiteRefusals(SQLitePart):
    async def record_refusals(self, refusals: list[Refusal], *, keep: int = REFUSALS_KEPT) -> None:
        def insert(db: sqlite3.Connection) -> None:
            db.executemany(
                f"INSERT INTO refusals ({REFUSAL_INSERT_COLUMNS}) VALUES ({','.join('?' * 12)})",
                [r.row() for r in refusals],
            )
            db.execute(TRIM_REFUSALS.sqlite, (keep,))

        await self._batch(insert)

    async def list_refusals(
        self, *, provider: str | None, reason: str | None, limit: int, cursor: str | None, count: bool = False
    ) -> Page[Refusal]:
        where, params = refusal_where(provider, reason, "?")
        total = None
        if count:
            rows = await self._fetch(
                f"SELECT COUNT(*) FROM refusals WHERE {' AND '.join(where) or '1 = 1'}", tuple(params)
            )
            total = int(rows[0][0])
        if cursor:
            where, params = [*where, "id < ?"], [*params, int(cursor)]
        rows = await self._fetch(
            f"SELECT {REFUSAL_COLUMNS} FROM refusals WHERE {' AND '.join(where) or '1 = 1'} ORDER BY id DESC LIMIT ?",
            (*params, limit + 1),
        )
        items = [refusal_from_row(r) for r in rows[:limit]]
        return Page(items, str(items[-1].id) if len(rows) > limit else None, total)
