"""PostgreSQL's share of refused requests: kept newest first, trimmed to the bound (mixed into `PostgresStore`)."""

from __future__ import annotations

from typing import Any

from receiver.store.base import Page
from receiver.store.parts import Conn, PostgresPart
from receiver.store.queries import TRIM_REFUSALS
from receiver.store.refusal_rows import (
    REFUSAL_COLUMNS,
    REFUSAL_INSERT_COLUMNS,
    REFUSALS_KEPT,
    Refusal,
    refusal_from_row,
    refusal_where,
)
from receiver.store.rows import columns


class PostgresRefusals(PostgresPart):
    async def record_refusals(self, refusals: list[Refusal], *, keep: int = REFUSALS_KEPT) -> None:
        async def insert(conn: Conn) -> None:
            await conn.execute(
                f"INSERT INTO refusals ({REFUSAL_INSERT_COLUMNS}) SELECT * FROM unnest($1::text[], $2::text[], "
                "$3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[], $10::bigint[], "
                "$11::bigint[], $12::float8[])",
                *columns([r.row() for r in refusals], 12),
            )
            await conn.execute(TRIM_REFUSALS.postgres, keep)

        await self._tx(insert)

    async def list_refusals(
        self, *, provider: str | None, reason: str | None, limit: int, cursor: str | None, count: bool = False
    ) -> Page[Refusal]:
        where, params = refusal_where(provider, reason, "$")
        total = None
        if count:
            counted = await self._fetch(f"SELECT COUNT(*) FROM refusals WHERE {' AND '.join(where) or 'TRUE'}", *params)
            total = int(counted[0][0])
        if cursor:
            params = [*params, int(cursor)]
            where = [*where, f"id < ${len(params)}"]
        rows: list[Any] = await self._fetch(
            f"SELECT {REFUSAL_COLUMNS} FROM refusals WHERE {' AND '.join(where) or 'TRUE'} "
            f"ORDER BY id DESC LIMIT ${len(params) + 1}",
            *params,
            limit + 1,
        )
        items = [refusal_from_row(r) for r in rows[:limit]]
        return Page(items, str(items[-1].id) if len(rows) > limit else None, total)
