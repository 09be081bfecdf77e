"""The embedded store: SQLite in WAL mode, owned by one process.

Writes go through one plain sqlite3 connection, group-committed (`batching.GroupCommit`) and run on
the event loop: a transaction is a millisecond or so of CPU the process spends either way, where a
thread hop per statement costs more (docs/benchmarks.md). The connection never waits for a lock
(`busy_timeout=0`): a lock held by another process is retried with `asyncio.sleep`, so the loop
keeps serving, and past `BUSY_WAIT_S` the write fails as unavailable (503). With `?synchronous=full`
every COMMIT waits for an fsync, so transactions then run on a thread of their own.

Reads run on aiosqlite connections (their own threads), each statement read to the end at once, so
no half-read statement pins an old snapshot: a read sees every write acknowledged before it began.
A checkpointer keeps the WAL bounded (PASSIVE while busy, TRUNCATE when it grows or the store idles).

A file lock (`<file>.lock`, taken before anything reads the data) keeps a second `receiver serve`
off the same file; `receiver info` reads without it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiosqlite

from receiver.errors import StoreError, StoreUnavailable
from receiver.models import Job, Outcome, StoredReceipt
from receiver.store.base import COUNT_CAP, Changes, Clock, Event, JobFilter, Page
from receiver.store.batching import GroupCommit, Item
from receiver.store.queries import (
    CREATE_META,
    EVENTS_AFTER,
    EVENTS_AFTER_COMPLETED_FROM,
    FIRST_EVENT_SEQ,
    JOB_BY_ID,
    JOB_COUNTS,
    KEEP_META_VALUE,
    LAST_EVENT_SEQ,
    META_VALUE,
    SCHEMA_VERSION,
    SET_SCHEMA_VERSION,
)
from receiver.store.rows import (
    JOB_COLUMNS,
    RECEIPT_COLUMNS,
    budget_events,
    budget_page,
    job_filter_sql,
    job_from_row,
    receipt_from_row,
)
from receiver.store.schema import SQLITE
from receiver.store.sqlite.file import (
    BUSY_WAIT_S,
    CHECKPOINT_BUSY_MS,
    FileLock,
    connect_writer,
    is_busy,
    keep_wal_bounded,
    transact,
)
from receiver.store.sqlite.jobs import SQLiteJobActions
from receiver.store.sqlite.mirror import SQLiteMirror
from receiver.store.sqlite.refusals import SQLiteRefusals
from receiver.store.sqlite.sinks import SQLiteSinks
from receiver.store.sqlite.work import SQLiteWork
from receiver.store.sqlite.writes import commit_batch, flush, load_jobs

log = logging.getLogger("receiver.store")

T = TypeVar("T")


class SQLiteStore(SQLiteWork, SQLiteMirror, SQLiteJobActions, SQLiteRefusals, SQLiteSinks):
    """See `receiver.store.base.Store` for the contract of each method."""

    backstop_s: float | None = None  # every commit happens here and wakes its waiters

    def __init__(
        self,
        path: str,
        *,
        default_callback_url: str | None = None,
        reconcile_after_s: float = 300.0,
        synchronous: str = "NORMAL",
        clock: Clock = time.time,
        exclusive: bool = False,
        create: bool = True,
        mirroring: bool = False,
    ) -> None:
        super().__init__(
            replica_id=f"sqlite-{uuid.uuid4().hex[:12]}",
            default_callback_url=default_callback_url,
            reconcile_after_s=reconcile_after_s,
            clock=clock,
            create=create,
            mirroring=mirroring,
        )
        self.path = path
        self.synchronous = synchronous
        self._exclusive = exclusive
        self._lock = FileLock(path) if exclusive else None
        self._reader: aiosqlite.Connection | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self._db: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._written = asyncio.Event()
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._inode: int | None = None
        self._fsync_thread: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-fsync")
            if synchronous.upper() in ("FULL", "EXTRA")
            else None
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> SQLiteStore:
        if not self._create and not os.path.exists(self.path):  # noqa: ASYNC240 (once, at start)
            raise StoreError(f"no store at {os.path.abspath(self.path)!r}")  # noqa: ASYNC240
        if self._lock is not None:
            self._lock.acquire()  # before anything reads or writes the data
        try:
            self._db = connect_writer(self.path, self.synchronous)
            self._inode = os.stat(self.path).st_ino
            await self._batch(self._migrate)
            if self._exclusive:  # nobody else runs on this file: claims and calls of earlier runs are dead
                await self._batch(lambda db: db.execute("DELETE FROM replicas"))
            self._reader = await self._connect()
            self._checkpointer = await self._connect()
            # It may hold the writes while it waits for readers (keep_wal_bounded): briefly, then it gives up.
            await self._checkpointer.execute(f"PRAGMA busy_timeout={CHECKPOINT_BUSY_MS}")
        except BaseException as exc:
            await self.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        self._commits = GroupCommit(self._commit_batch, name="sqlite-group-commit")
        self._checkpoint_task = asyncio.create_task(self._checkpoints(), name="sqlite-checkpoints")
        return self

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", f"synchronous={self.synchronous}", "busy_timeout=5000"):
            await conn.execute(f"PRAGMA {pragma}")
        return conn

    async def _checkpoints(self) -> None:
        if self._checkpointer is not None:
            await keep_wal_bounded(self.path, self._checkpointer, self._written, self._write_lock)

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        db.execute(CREATE_META.sqlite)
        row = db.execute(SCHEMA_VERSION.sqlite).fetchone()
        version = int(row[0]) if row else 0
        for migration in SQLITE[version:]:
            for statement in migration.statements():
                db.execute(statement)
            db.execute(SET_SCHEMA_VERSION.sqlite, (str(migration.number),))

    async def close(self) -> None:
        """Finish the writes already queued, then close the connections."""
        if self._commits is not None:
            await self._commits.close()
            self._commits = None
        if self._checkpoint_task is not None:
            self._checkpoint_task.cancel()
            await asyncio.gather(self._checkpoint_task, return_exceptions=True)
            self._checkpoint_task = None
        if self._db is not None:
            self._db.close()
            self._db = None
        for conn in (self._checkpointer, self._reader):
            if conn is not None:
                try:
                    await conn.close()
                except (sqlite3.Error, ValueError):  # closing is best effort
                    pass
        self._checkpointer = self._reader = None
        if self._fsync_thread is not None:
            self._fsync_thread.shutdown(wait=True)
        if self._lock is not None:
            self._lock.release()

    # -- transactions ----------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """One read, every row fetched at once (so its snapshot ends with it)."""
        if self._reader is None:
            raise StoreError("store is closed")
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite read failed: {exc}") from exc

    async def _batch(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction: on the loop, or on the fsync thread with synchronous=FULL.
        A lock held by another process is waited out with asyncio.sleep, never by blocking the loop."""
        deadline = time.monotonic() + BUSY_WAIT_S
        delay = 0.002
        async with self._write_lock:
            while True:
                try:
                    if self._fsync_thread is not None:
                        loop = asyncio.get_running_loop()
                        result = await loop.run_in_executor(self._fsync_thread, self._transact, work)
                    else:
                        result = self._transact(work)
                    break
                except sqlite3.OperationalError as exc:
                    if not is_busy(exc):
                        raise
                    if time.monotonic() > deadline:
                        raise StoreUnavailable("the SQLite file is locked by another process") from None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.1)
        self._written.set()
        return result

    def _transact(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            raise StoreError("store is closed")
        return transact(self._db, work)

    async def ping(self) -> None:
        """The file must still be the one opened, and writable (a deleted or read-only file is not ok)."""
        try:
            st = os.stat(self.path)
        except OSError:
            raise StoreUnavailable(f"the database file {self.path!r} is gone") from None
        if st.st_ino != self._inode:
            raise StoreUnavailable(f"the database file {self.path!r} was replaced")
        if not os.access(self.path, os.W_OK):
            raise StoreUnavailable(f"the database file {self.path!r} is not writable")
        await self._fetch("SELECT 1")

    # -- secrets ---------------------------------------------------------------------------------

    async def secret(self, name: str, generate: Callable[[], str]) -> str:
        key, value = f"secret:{name}", generate()

        def read_or_keep(db: sqlite3.Connection) -> str:
            db.execute(KEEP_META_VALUE.sqlite, (key, value))
            return str(db.execute(META_VALUE.sqlite, (key,)).fetchone()[0])

        if not self._create:  # `receiver info`: read only
            rows = await self._fetch(META_VALUE.sqlite, (key,))
            if not rows:
                raise StoreError(f"the store at {self.path!r} has no {name} yet: start `receiver serve` once")
            return str(rows[0][0])
        return await self._batch(read_or_keep)

    # -- inbound (group commit) ------------------------------------------------------------------

    async def _commit_batch(self, batch: list[Item]) -> list[Any]:
        unit = self._unit()
        results = await self._batch(lambda db: commit_batch(db, unit, batch))
        self._notify(Changes(tuple(unit.terminal_job_ids), unit.queued_messages))
        return results

    _load = staticmethod(load_jobs)
    _flush = staticmethod(flush)

    # -- jobs ------------------------------------------------------------------------------------

    async def register_job(
        self,
        *,
        provider: str,
        provider_job_id: str,
        callback_url: str | None,
        metadata: dict[str, object],
        expected_outputs: int | None,
        owner: str | None = None,
    ) -> tuple[Job, bool]:
        unit = self._unit()

        def register(db: sqlite3.Connection) -> tuple[Job, bool]:
            self._load(db, unit, {(provider, provider_job_id)})
            registered = unit.register(
                provider,
                provider_job_id,
                callback_url=callback_url,
                metadata=metadata,
                expected_outputs=expected_outputs,
                owner=owner,
            )
            self._flush(db, unit)
            return registered

        job, created = await self._batch(register)
        self._notify(Changes(tuple(unit.terminal_job_ids), unit.queued_messages))
        return job, created

    async def get_job(self, job_id: str) -> Job | None:
        rows = await self._fetch(JOB_BY_ID.sqlite, (job_id,))
        return job_from_row(rows[0]) if rows else None

    async def _page(
        self,
        table: str,
        key: str,
        size: str,
        where: list[str],
        params: list[Any],
        limit: int,
        cursor: str | None,
    ) -> tuple[list[int], bool]:
        """Keys of one page, newest first, cut at `limit` rows or PAGE_BUDGET_BYTES of `size`; (keys, more)."""
        if cursor:
            where = [*where, f"{key} < ?"]
            params = [*params, int(cursor)]
        rows = await self._fetch(
            f"SELECT {key}, {size} FROM {table} WHERE {' AND '.join(where) or '1 = 1'} ORDER BY {key} DESC LIMIT ?",
            (*params, limit + 1),
        )
        return budget_page([(int(r[0]), int(r[1] or 0)) for r in rows], limit)

    async def _count(self, table: str, where: list[str], params: list[Any]) -> tuple[int, bool]:
        """How many rows match, exact up to COUNT_CAP: (count, exact)."""
        rows = await self._fetch(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE {' AND '.join(where) or '1 = 1'} LIMIT ?)",
            (*params, COUNT_CAP + 1),
        )
        found = int(rows[0][0])
        return min(found, COUNT_CAP), found <= COUNT_CAP

    async def list_jobs(self, *, filters: JobFilter, limit: int, cursor: str | None, count: bool = False) -> Page[Job]:
        where, params = job_filter_sql(filters, "?")
        total, exact = await self._count("jobs", where, params) if count else (None, True)
        keys, more = await self._page("jobs", "seq", "length(outputs) + length(metadata)", where, params, limit, cursor)
        if not keys:
            return Page([], None, total, exact)
        rows = await self._fetch(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE seq IN ({','.join('?' * len(keys))}) ORDER BY seq DESC", tuple(keys)
        )
        jobs = [job_from_row(r) for r in rows]
        return Page(jobs, str(keys[-1]) if more else None, total, exact)

    async def list_receipts(
        self,
        *,
        provider: str | None,
        outcome: Outcome | None,
        limit: int,
        cursor: str | None,
        job_id: str | None = None,
        count: bool = False,
    ) -> Page[StoredReceipt]:
        where, params = [], []
        for column, value in (("provider", provider), ("outcome", outcome.value if outcome else None)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if job_id is not None:
            where.append("id IN (SELECT receipt_id FROM receipt_jobs WHERE job_id = ?)")
            params.append(job_id)
        total, exact = await self._count("receipts", where, params) if count else (None, True)
        keys, more = await self._page("receipts", "id", "length(body)", where, params, limit, cursor)
        if not keys:
            return Page([], None, total, exact)
        rows = await self._fetch(
            f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE id IN ({','.join('?' * len(keys))}) ORDER BY id DESC",
            tuple(keys),
        )
        return Page([receipt_from_row(r) for r in rows], str(keys[-1]) if more else None, total, exact)

    async def job_counts(self) -> dict[str, int]:
        rows = await self._fetch(JOB_COUNTS.sqlite)
        return {str(r[0]): int(r[1]) for r in rows}

    # -- events ----------------------------------------------------------------------------------

    async def events_after(self, seq: int, limit: int, *, completed_from: float | None = None) -> list[Event]:
        if completed_from is None:
            rows = await self._fetch(EVENTS_AFTER.sqlite, (seq, limit))
        else:
            rows = await self._fetch(EVENTS_AFTER_COMPLETED_FROM.sqlite, (seq, completed_from, limit))
        return budget_events([Event(r[0], r[1], r[2], r[3]) for r in rows])

    async def first_event_seq(self, created_from: float) -> int | None:
        rows = await self._fetch(FIRST_EVENT_SEQ.sqlite, (created_from,))
        return None if rows[0][0] is None else int(rows[0][0])

    async def last_event_seq(self) -> int:
        rows = await self._fetch(LAST_EVENT_SEQ.sqlite)
        return int(rows[0][0])
