"""What the parts of each store (its mixins, one concern a file) use of the whole store: declared here,
defined in `sqlite.py` and `postgres.py`. A part inherits the declarations, so each file is checked
against the others (mypy) without importing the store it is mixed into."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from receiver.store.base import Changes
from receiver.store.batching import AttemptRecord, BatchedStore
from receiver.store.rules import UnitOfWork

if TYPE_CHECKING:
    from asyncpg import Record
    from asyncpg.pool import PoolConnectionProxy

T = TypeVar("T")
Keys = set[tuple[str, str]]
Conn: TypeAlias = "PoolConnectionProxy[Record]"  # a pooled PostgreSQL connection, what every transaction runs on


class SQLitePart(BatchedStore):
    """A part of `SQLiteStore`."""

    async def _batch(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction."""
        raise NotImplementedError

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """One read, every row fetched at once."""
        raise NotImplementedError

    @staticmethod
    def _load(db: sqlite3.Connection, unit: UnitOfWork, keys: Keys) -> None:
        """Read the jobs of `keys` into `unit`."""
        raise NotImplementedError

    @staticmethod
    def _flush(db: sqlite3.Connection, unit: UnitOfWork) -> list[int]:
        """Write everything `unit` changed; the new receipts' ids."""
        raise NotImplementedError


class PostgresPart(BatchedStore):
    """A part of `PostgresStore`."""

    async def _tx(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `work` in one transaction, retrying conflicts with other replicas."""
        raise NotImplementedError

    async def _fetch(self, sql: str, *params: Any) -> list[Any]:
        raise NotImplementedError

    @staticmethod
    async def _load(conn: Conn, unit: UnitOfWork, keys: Keys) -> None:
        """Lock the keys, then read their jobs into `unit` as committed."""
        raise NotImplementedError

    async def _flush(self, conn: Conn, unit: UnitOfWork, attempts: list[AttemptRecord] | None = None) -> list[int]:
        """Write everything `unit` changed (and `attempts`); the new receipts' ids."""
        raise NotImplementedError

    async def _wake_outbox(self, conn: Conn) -> None:
        """Tell the other replicas (at this transaction's COMMIT) that messages are due."""
        raise NotImplementedError

    async def _in_unit(self, work: Callable[[Conn, UnitOfWork], Awaitable[T]]) -> T:
        """`work` in one transaction with a fresh unit (anew on each retry), then the wake-ups it caused."""
        holder: list[UnitOfWork] = []

        async def run(conn: Conn) -> T:
            unit = self._unit()
            holder[:] = [unit]
            return await work(conn, unit)

        result = await self._tx(run)
        if holder:
            self._notify(Changes(tuple(holder[0].terminal_job_ids), holder[0].queued_messages))
        return result
