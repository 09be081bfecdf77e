"""The embedded store: SQLite in WAL mode. Every write goes through one plain sqlite3 connection;
reads and WAL checkpoints go through aiosqlite, so they never wait behind a write or block the loop.

A write is acknowledged only after its COMMIT; with WAL and `synchronous=NORMAL` a committed
transaction survives the process being killed (a power cut can lose the last few; set
`?synchronous=full` in the URL if that matters).

Inbound messages and delivery attempts are group-committed: while one transaction runs, the next
ones queue, and the writer applies them all in one transaction (`UnitOfWork`), so a burst costs a
few statements in all instead of a few per webhook. Each caller still gets its answer only after
that COMMIT.

Write transactions (`_batch`) run synchronously on the event loop: a whole transaction is a
millisecond or so of CPU that the process spends either way (one GIL), while through a thread every
statement costs a thread wake-up, a loop wake-up and GIL hand-offs (measured in docs/benchmarks.md:
a third fewer webhooks per second, and a slower stream). The write connection never checkpoints:
`_checkpoints` does, on a connection (and thread) of its own. The store has one process (no other
one takes the write lock), so `BEGIN IMMEDIATE` does not wait. With `?synchronous=full` every COMMIT
waits for an fsync, so the transactions then run on a thread of their own (`_fsync_thread`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import aiosqlite

from receiver.errors import StoreError
from receiver.models import ApplyResult, Completion, Job, Outcome, Receipt, StoredReceipt, iso_time
from receiver.store.base import Attempt, ChangeListener, Changes, Clock, Event, Message, Page
from receiver.store.schema import MIGRATIONS
from receiver.store.unit import JOB_COLUMNS as _JOB_COLUMNS, UnitOfWork, job_from_row as _job_from_row

log = logging.getLogger("receiver.store")

_MAX_BATCH = 256
CHECKPOINT_EVERY_S = 0.5  # after writes, the WAL is checkpointed this often at most
T = TypeVar("T")
# A job's delivery_status is that of its latest message.
_REFRESH_DELIVERY_STATUS = (
    "UPDATE jobs SET delivery_status = COALESCE("
    "(SELECT status FROM messages WHERE job_id = ? ORDER BY seq DESC LIMIT 1), 'none') WHERE id = ?"
)


def _future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


@dataclass
class _Write:
    """One inbound message waiting for the group commit."""

    receipt: Receipt
    completions: list[Completion] | None  # None: an invalid receipt, kept with `error`
    error: str | None
    done: asyncio.Future[Any] = field(default_factory=_future)


@dataclass
class _Attempt:
    """One delivery attempt waiting for the group commit."""

    message: Message
    status_code: int | None
    error: str | None
    status: str  # the message's status after it: pending | delivered | failed
    next_attempt_at: float
    at: float
    done: asyncio.Future[Any] = field(default_factory=_future)


class SQLiteStore:
    """See `receiver.store.base.Store` for the contract of each method."""

    def __init__(
        self,
        path: str,
        *,
        default_callback_url: str | None = None,
        reconcile_after_s: float = 300.0,
        synchronous: str = "NORMAL",
        clock: Clock = time.time,
    ) -> None:
        self.path = path
        self.default_callback_url = default_callback_url
        self.reconcile_after_s = reconcile_after_s
        self.synchronous = synchronous
        self.clock = clock
        self._listeners: list[ChangeListener] = []
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._queue: asyncio.Queue[_Write | _Attempt | None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._batch_db: sqlite3.Connection | None = None  # group commits and claims, on the event loop
        self._written = asyncio.Event()  # a batch committed since the last checkpoint
        self._checkpointer: aiosqlite.Connection | None = None
        self._fsync_thread: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-fsync")
            if synchronous.upper() in ("FULL", "EXTRA") else None
        )
        self._checkpoint_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> "SQLiteStore":
        try:
            self._batch_db = self._connect_now()
            await self._batch(self._migrate)
            self._reader = await self._connect()
            self._checkpointer = await self._connect()
        except Exception as exc:
            await self.close()
            raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        self._queue = asyncio.Queue()
        self._writer_task = asyncio.create_task(self._run_writer(), name="sqlite-group-commit")
        self._checkpoint_task = asyncio.create_task(self._checkpoints(), name="sqlite-checkpoints")
        return self

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(f"PRAGMA synchronous={self.synchronous}")
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _connect_now(self) -> sqlite3.Connection:
        """The batch connection: used on the event loop, and never checkpointing (`_checkpoints` does)."""
        # check_same_thread off: with synchronous=FULL it is used from `_fsync_thread` (always under the write lock).
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", f"synchronous={self.synchronous}", "busy_timeout=5000", "foreign_keys=ON",
                       "wal_autocheckpoint=0"):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    async def _checkpoints(self) -> None:
        """Checkpoint the WAL off the event loop, at most every CHECKPOINT_EVERY_S while batches commit.

        PASSIVE: it copies what no reader still needs and never blocks a writer; a later write then
        starts the WAL over.
        """
        while True:
            await self._written.wait()
            await asyncio.sleep(CHECKPOINT_EVERY_S)
            self._written.clear()
            try:
                if self._checkpointer is not None:
                    await self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception as exc:  # a busy or closing store: the next round tries again
                log.warning("WAL checkpoint failed: %s", exc)

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in filter(str.strip, script.split(";")):
                db.execute(statement)
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(number),),
            )

    async def close(self) -> None:
        """Finish the writes already queued, then close the connections."""
        if self._queue is not None and self._writer_task is not None:
            self._queue.put_nowait(None)
            await asyncio.gather(self._writer_task, return_exceptions=True)
        self._queue = self._writer_task = None
        if self._checkpoint_task is not None:
            self._checkpoint_task.cancel()
            await asyncio.gather(self._checkpoint_task, return_exceptions=True)
            self._checkpoint_task = None
        if self._batch_db is not None:
            try:
                self._batch_db.close()
            except Exception:  # closing is best effort
                pass
            self._batch_db = None
        for conn in (self._checkpointer, self._reader):
            if conn is not None:
                try:
                    await conn.close()
                except Exception:  # closing is best effort
                    pass
        self._checkpointer = self._reader = None
        if self._fsync_thread is not None:
            self._fsync_thread.shutdown(wait=True)

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def _notify(self, changes: Changes) -> None:
        if changes.terminal_job_ids or changes.new_messages:
            for listener in self._listeners:
                listener(changes)

    @property
    def _read(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreError("store is closed")
        return self._reader

    async def _batch(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction on the batch connection: on the event loop, or on a
        thread of its own when every COMMIT waits for an fsync (`synchronous=FULL`), which the loop must not."""
        async with self._write_lock:
            if self._fsync_thread is not None:
                result = await asyncio.get_running_loop().run_in_executor(self._fsync_thread, self._transact, work)
            else:
                result = self._transact(work)
        self._written.set()
        return result

    def _transact(self, work: Callable[[sqlite3.Connection], T]) -> T:
        db = self._batch_db
        if db is None:
            raise StoreError("store is closed")
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result

    async def ping(self) -> None:
        await (await self._read.execute("SELECT 1")).fetchone()

    # -- secrets ---------------------------------------------------------------------------------

    async def secret(self, name: str, generate: Callable[[], str]) -> str:
        key = f"secret:{name}"
        value = generate()

        def read_or_keep(db: sqlite3.Connection) -> str:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value))
            return str(db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

        return await self._batch(read_or_keep)

    # -- inbound (group commit) ------------------------------------------------------------------

    def _unit(self) -> UnitOfWork:
        return UnitOfWork(now=self.clock(), reconcile_after_s=self.reconcile_after_s,
                          default_callback_url=self.default_callback_url)

    async def apply(self, receipt: Receipt, completions: list[Completion]) -> ApplyResult:
        return await self._submit(_Write(receipt, completions, None))

    async def record_invalid(self, receipt: Receipt, error: str) -> int:
        return (await self._submit(_Write(receipt, None, error))).receipt_id

    async def _submit(self, item: _Write | _Attempt) -> Any:
        if self._queue is None:
            raise StoreError("store is closed")
        self._queue.put_nowait(item)
        # A caller that goes away (its task cancelled, and `done` with it) does not undo the write: the
        # writer commits what is queued and only skips answering a future already done.
        return await item.done

    async def _run_writer(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < _MAX_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    self._queue.put_nowait(None)  # finish this batch, then stop
                    break
                batch.append(item)
            try:
                await self._commit_batch(batch)
            except Exception:
                # Find the culprit: each write alone, so one bad write cannot fail the others.
                for item in batch:
                    try:
                        await self._commit_batch([item])
                    except Exception as exc:
                        log.exception("store write failed")
                        if not item.done.done():
                            item.done.set_exception(StoreError(f"store write failed: {exc}"))

    async def _commit_batch(self, batch: list[_Write | _Attempt]) -> None:
        unit = self._unit()
        results = await self._batch(lambda db: self._commit_now(db, unit, batch))
        for item, result in zip(batch, results):
            if not item.done.done():
                item.done.set_result(result)
        self._notify(Changes(tuple(unit.terminal_job_ids), unit.queued_messages))

    def _commit_now(self, db: sqlite3.Connection, unit: UnitOfWork, batch: list[_Write | _Attempt]) -> list[Any]:
        """The batch's writes, on the batch thread inside its transaction; each caller's result, in order.

        Attempts go first, so the unit loads jobs with the delivery status they leave.
        """
        results: list[Any] = [None] * len(batch)
        writes: list[tuple[int, _Write]] = []
        for position, item in enumerate(batch):
            if isinstance(item, _Attempt):
                self._record_attempt_now(db, item)
            else:
                writes.append((position, item))
        unit.load(db, {(c.provider, c.provider_job_id) for _, w in writes for c in w.completions or ()})
        outcomes: list[tuple[int, int, Outcome, list[str], list[str]]] = []
        for position, write in writes:
            if write.completions is None:
                index = unit.add_receipt(write.receipt, Outcome.INVALID, [], write.error)
                outcomes.append((position, index, Outcome.INVALID, [], []))
                continue
            job_ids: list[str] = []
            terminal: list[str] = []
            applied = duplicate = False
            for completion in write.completions:
                result = unit.apply(completion)
                if result is None:
                    continue
                job_ids.append(result.job.id)
                applied |= result.changed
                duplicate |= not result.changed
                if result.became_terminal:
                    terminal.append(result.job.id)
            outcome = Outcome.APPLIED if applied else Outcome.DUPLICATE if duplicate else Outcome.IGNORED
            pids = sorted({c.provider_job_id for c in write.completions})
            outcomes.append((position, unit.add_receipt(write.receipt, outcome, pids, None), outcome, job_ids, terminal))
        unit.flush(db)
        for position, index, outcome, job_ids, terminal in outcomes:
            results[position] = ApplyResult(unit.receipt_ids[index], outcome, job_ids, terminal,
                                            error=batch[position].error)  # type: ignore[union-attr]
        return results

    # -- jobs ------------------------------------------------------------------------------------

    async def register_job(
        self, *, provider: str, provider_job_id: str, callback_url: str | None,
        metadata: dict[str, object], expected_outputs: int | None,
    ) -> tuple[Job, bool]:
        unit = self._unit()

        def register(db: sqlite3.Connection) -> tuple[Job, bool]:
            unit.load(db, {(provider, provider_job_id)})
            registered = unit.register(
                provider, provider_job_id, callback_url=callback_url, metadata=metadata,
                expected_outputs=expected_outputs,
            )
            unit.flush(db)
            return registered

        job, created = await self._batch(register)
        self._notify(Changes(tuple(unit.terminal_job_ids), unit.queued_messages))
        return job, created

    async def get_job(self, job_id: str) -> Job | None:
        rows = list(await self._read.execute_fetchall(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)))
        return _job_from_row(rows[0]) if rows else None

    async def _newest_first(
        self, table: str, columns: str, key: str, filters: dict[str, str | None], limit: int, cursor: str | None
    ) -> tuple[list[Any], bool]:
        """One page of `table`, newest first by `key`, AND-ing the filters that are set; (rows, more)."""
        where = [f"{column} = ?" for column, value in filters.items() if value is not None]
        params: list[object] = [value for value in filters.values() if value is not None]
        if cursor:
            where.append(f"{key} < ?")
            params.append(int(cursor))
        sql = f"SELECT {columns} FROM {table} WHERE {' AND '.join(where) or '1 = 1'} ORDER BY {key} DESC LIMIT ?"
        rows = list(await self._read.execute_fetchall(sql, (*params, limit + 1)))
        return rows[:limit], len(rows) > limit

    async def list_jobs(self, *, provider: str | None, status: str | None, limit: int, cursor: str | None) -> Page:
        rows, more = await self._newest_first(
            "jobs", _JOB_COLUMNS, "seq", {"provider": provider, "status": status}, limit, cursor
        )
        jobs = [_job_from_row(r) for r in rows]
        return Page(jobs, str(jobs[-1].seq) if more else None)

    async def list_receipts(self, *, provider: str | None, outcome: Outcome | None, limit: int, cursor: str | None) -> Page:
        rows, more = await self._newest_first(
            "receipts", "id, provider, source, outcome, provider_job_ids, error, body, received_at", "id",
            {"provider": provider, "outcome": outcome.value if outcome else None}, limit, cursor,
        )
        receipts = [
            StoredReceipt(r[0], r[1], r[2], Outcome(r[3]), json.loads(r[4]), r[5], bytes(r[6]), iso_time(r[7]))
            for r in rows
        ]
        return Page(receipts, str(receipts[-1].id) if more else None)

    async def job_counts(self) -> dict[str, int]:
        rows = await (await self._read.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    # -- events ----------------------------------------------------------------------------------

    async def events_after(self, seq: int, limit: int) -> list[Event]:
        rows = await (
            await self._read.execute(
                "SELECT seq, job_id, type, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            )
        ).fetchall()
        return [Event(r[0], r[1], r[2], r[3]) for r in rows]

    async def last_event_seq(self) -> int:
        row = await (await self._read.execute("SELECT COALESCE(MAX(seq), 0) FROM events")).fetchone()
        return int(row[0]) if row else 0

    # -- outbox ----------------------------------------------------------------------------------

    async def release_leases(self) -> None:
        """Forget claims made by a previous run (this store has one process: see module doc)."""
        await self._batch(lambda db: db.execute("UPDATE messages SET lease_until = NULL WHERE status = 'pending'"))

    async def claim_due_messages(self, *, limit: int, lease_s: float) -> list[Message]:
        now = self.clock()

        def claim(db: sqlite3.Connection) -> list[Any]:
            rows = db.execute(
                "SELECT seq, id, job_id, url, body, attempts, status, next_attempt_at FROM messages "
                "WHERE status = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?) "
                "ORDER BY next_attempt_at LIMIT ?",
                (now, now, limit),
            ).fetchall()
            if rows:
                marks = ",".join("?" * len(rows))
                db.execute(f"UPDATE messages SET lease_until = ? WHERE seq IN ({marks})", (now + lease_s, *[r[0] for r in rows]))
            return rows

        rows = await self._batch(claim)
        return [Message(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6], r[7]) for r in rows]

    async def next_message_due_at(self) -> float | None:
        row = await (
            await self._read.execute(
                "SELECT MIN(COALESCE(CASE WHEN lease_until > next_attempt_at THEN lease_until END, next_attempt_at)) "
                "FROM messages WHERE status = 'pending'"
            )
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    async def record_attempt(
        self, message: Message, *, status_code: int | None, error: str | None,
        outcome: str, next_attempt_at: float | None,
    ) -> None:
        now = self.clock()
        status = {"delivered": "delivered", "failed": "failed", "retry": "pending"}[outcome]
        # Group-committed with the inbound writes: a busy outbox costs one transaction per batch.
        await self._submit(_Attempt(message, status_code, error, status,
                                    next_attempt_at if next_attempt_at is not None else now, now))

    def _record_attempt_now(self, db: sqlite3.Connection, item: _Attempt) -> None:
        message = item.message
        row = db.execute("SELECT attempts, status FROM messages WHERE seq = ?", (message.seq,)).fetchone()
        if row is None or row[1] != "pending":
            return
        attempt = int(row[0]) + 1
        db.execute(
            "INSERT INTO attempts (message_id, job_id, url, attempt, status_code, error, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (message.id, message.job_id, message.url, attempt, item.status_code, item.error, item.at),
        )
        db.execute(
            "UPDATE messages SET attempts = ?, status = ?, next_attempt_at = ?, lease_until = NULL WHERE seq = ?",
            (attempt, item.status, item.next_attempt_at, message.seq),
        )
        db.execute(_REFRESH_DELIVERY_STATUS, (message.job_id, message.job_id))

    async def redeliver(self, job_id: str) -> Message | None:
        unit = self._unit()

        def enqueue_again(db: sqlite3.Connection) -> Any:
            job = unit.load_id(db, job_id)
            url = job and (job.callback_url or self.default_callback_url)
            if job is None or not job.status.terminal or not url:
                return None
            message_id = unit.enqueue(job, url)
            unit.flush(db)
            return db.execute(
                "SELECT seq, id, job_id, url, body, attempts, status, next_attempt_at FROM messages WHERE id = ?",
                (message_id,),
            ).fetchone()

        row = await self._batch(enqueue_again)
        if row is None:
            return None
        self._notify(Changes((), True))
        return Message(row[0], row[1], row[2], row[3], bytes(row[4]), row[5], row[6], row[7])

    async def list_deliveries(self, job_id: str) -> list[Attempt]:
        rows = await (
            await self._read.execute(
                "SELECT url, attempt, status_code, error, at FROM attempts WHERE job_id = ? ORDER BY id", (job_id,)
            )
        ).fetchall()
        return [Attempt(r[0], r[1], r[2], r[3], iso_time(r[4])) for r in rows]

    async def delivery_backlog(self) -> tuple[int, float | None]:
        row = await (
            await self._read.execute("SELECT COUNT(*), MIN(created_at) FROM messages WHERE status = 'pending'")
        ).fetchone()
        return (int(row[0]), float(row[1]) if row[1] is not None else None) if row else (0, None)

    # -- reconciling -----------------------------------------------------------------------------

    async def pending_jobs(self, provider: str) -> list[Job]:
        rows = await (
            await self._read.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = 'pending' AND provider = ? ORDER BY seq", (provider,)
            )
        ).fetchall()
        return [_job_from_row(r) for r in rows]

    async def jobs_due_for_poll(self, *, providers: list[str], limit: int) -> list[Job]:
        if not providers:
            return []
        marks = ",".join("?" * len(providers))
        rows = await (
            await self._read.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = 'pending' AND next_poll_at <= ? "
                f"AND provider IN ({marks}) ORDER BY next_poll_at LIMIT ?",
                (self.clock(), *providers, limit),
            )
        ).fetchall()
        return [_job_from_row(r) for r in rows]

    async def schedule_poll(self, job_id: str, *, next_poll_at: float) -> None:
        await self._batch(lambda db: db.execute(
            "UPDATE jobs SET next_poll_at = ?, poll_count = poll_count + 1 WHERE id = ? AND status = 'pending'",
            (next_poll_at, job_id),
        ))

    # -- outbox (delivery worker) ----------------------------------------------------------------

    async def postpone_messages(self, seqs: list[int], *, until: float) -> None:
        """Hand claimed messages back without an attempt, due again at `until` (their destination is busy)."""
        if not seqs:
            return
        marks = ",".join("?" * len(seqs))
        await self._batch(lambda db: db.execute(
            f"UPDATE messages SET next_attempt_at = ?, lease_until = NULL WHERE status = 'pending' AND seq IN ({marks})",
            (until, *seqs),
        ))
