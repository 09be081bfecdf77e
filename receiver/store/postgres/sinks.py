"""PostgreSQL's share of pipelines: each sink's stored position and state (mixed into `PostgresStore`)."""

from __future__ import annotations

from receiver.store.base import SinkRow
from receiver.store.parts import Conn, PostgresPart
from receiver.store.rows import SINK_COLUMNS, new_epoch, sink_from_row


class PostgresSinks(PostgresPart):
    """Methods of `PostgresStore` (see `receiver.store.base.Store`)."""

    async def sink_rows(self, names: list[str]) -> dict[str, SinkRow]:
        if not names:
            return {}
        rows = await self._fetch(f"SELECT {SINK_COLUMNS} FROM sinks WHERE name = ANY($1)", names)
        if len(rows) < len(names):
            await self._tx(
                lambda conn: conn.execute(
                    "INSERT INTO sinks (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING", names
                )
            )
            rows = await self._fetch(f"SELECT {SINK_COLUMNS} FROM sinks WHERE name = ANY($1)", names)
        return {str(r[0]): sink_from_row(tuple(r)) for r in rows}

    async def advance_sink(self, name: str, *, epoch: int, position: int) -> bool:
        status = await self._tx(
            lambda conn: conn.execute(
                "UPDATE sinks SET position = $1, last_error = NULL, last_published_at = $2 "
                "WHERE name = $3 AND epoch = $4 AND position < $1",
                position,
                self.clock(),
                name,
                epoch,
            )
        )
        return str(status).rsplit(" ", 1)[-1] != "0"

    async def set_sink_error(self, name: str, *, epoch: int, error: str | None) -> None:
        await self._tx(
            lambda conn: conn.execute(
                "UPDATE sinks SET last_error = $1 WHERE name = $2 AND epoch = $3",
                None if error is None else error[:1000],
                name,
                epoch,
            )
        )

    async def change_sink(self, name: str, *, paused: bool | None = None, position: int | None = None) -> SinkRow:
        async def change(conn: Conn) -> SinkRow:
            await conn.execute("INSERT INTO sinks (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", name)
            row = await conn.fetchrow(
                "UPDATE sinks SET epoch = epoch + $4, last_error = NULL, paused = COALESCE($1, paused), "
                f"position = COALESCE($2, position) WHERE name = $3 RETURNING {SINK_COLUMNS}",
                None if paused is None else int(paused),
                position,
                name,
                new_epoch(paused, position),
            )
            assert row is not None  # the row was just made if missing
            return sink_from_row(tuple(row))

        return await self._tx(change)

    async def event_seq_before(self, since: float) -> int:
        rows = await self._fetch(
            "SELECT MIN(seq) FROM events WHERE job_id IN (SELECT id FROM jobs WHERE completed_at >= $1)", since
        )
        if rows and rows[0][0] is not None:
            return int(rows[0][0]) - 1
        return int((await self._fetch("SELECT COALESCE(MAX(seq), 0) FROM events"))[0][0])
