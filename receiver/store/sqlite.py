"""The embedded store: SQLite in WAL mode through aiosqlite.

One connection writes (serialised by a lock, explicit `BEGIN IMMEDIATE … COMMIT`), another reads,
so reads never wait behind a write. A write is acknowledged only after its COMMIT; with WAL and
`synchronous=NORMAL` a committed transaction survives the process being killed (a power cut can
lose the last few; set `synchronous=FULL` through `?synchronous=full` in the URL if that matters).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import aiosqlite

from receiver.errors import StoreError
from receiver.models import (
    ApplyResult,
    Completion,
    DeliveryStatus,
    Job,
    JobStatus,
    Outcome,
    Output,
    Receipt,
    StoredReceipt,
    callback_body,
    dumps,
    event_type,
    iso_time,
)
from receiver.store.base import Attempt, ChangeListener, Changes, Clock, Event, Message, Page
from receiver.store.schema import MIGRATIONS

_JOB_COLUMNS = (
    "seq, id, provider, provider_job_id, status, outputs, error, metadata, callback_url, registered, "
    "expected_outputs, delivery_status, created_at, completed_at"
)
_SECRET_HEADERS = frozenset({"authorization", "cookie", "x-api-key", "ocp-apim-subscription-key"})


def _job_from_row(row: aiosqlite.Row | tuple[Any, ...]) -> Job:
    outputs = [Output(o["url"], o.get("media_type"), o.get("key")) for o in json.loads(row[5])]
    return Job(
        seq=row[0], id=row[1], provider=row[2], provider_job_id=row[3], status=JobStatus(row[4]),
        outputs=outputs, error=row[6], metadata=json.loads(row[7]), callback_url=row[8],
        registered=bool(row[9]), expected_outputs=row[10], delivery_status=DeliveryStatus(row[11]),
        created_at=iso_time(row[12]), completed_at=iso_time(row[13]) if row[13] is not None else None,
    )


def _outputs_json(outputs: list[Output]) -> str:
    return dumps([{"url": o.url, "media_type": o.media_type, "key": o.key} for o in outputs])


def _merge_outputs(existing: list[Output], new: tuple[Output, ...]) -> list[Output]:
    seen = {o.identity for o in existing}
    merged = list(existing)
    for output in new:
        if output.identity not in seen:
            seen.add(output.identity)
            merged.append(output)
    return merged


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
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> "SQLiteStore":
        try:
            self._writer = await self._connect()
            await self._migrate()
            self._reader = await self._connect()
        except Exception as exc:
            await self.close()
            raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        return self

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(f"PRAGMA synchronous={self.synchronous}")
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.execute("PRAGMA foreign_keys=ON")
        return conn

    async def _migrate(self) -> None:
        async with self._transaction() as db:
            await db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = await (await db.execute("SELECT value FROM meta WHERE key = 'schema_version'")).fetchone()
            version = int(row[0]) if row else 0
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(number),),
                )

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                try:
                    await conn.close()
                except Exception:  # closing is best effort
                    pass
        self._reader = self._writer = None

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

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._writer is None:
            raise StoreError("store is closed")
        db = self._writer
        async with self._write_lock:
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    async def ping(self) -> None:
        await (await self._read.execute("SELECT 1")).fetchone()

    # -- secrets ---------------------------------------------------------------------------------

    async def secret(self, name: str, generate: Callable[[], str]) -> str:
        key = f"secret:{name}"
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, generate())
            )
            row = await (await db.execute("SELECT value FROM meta WHERE key = ?", (key,))).fetchone()
        return str(row[0])

    # -- inbound ---------------------------------------------------------------------------------

    async def _insert_receipt(
        self, db: aiosqlite.Connection, receipt: Receipt, outcome: Outcome, job_ids: list[str], error: str | None
    ) -> int:
        headers = {k: v for k, v in receipt.headers.items() if k.lower() not in _SECRET_HEADERS}
        cursor = await db.execute(
            "INSERT INTO receipts (provider, source, outcome, provider_job_ids, error, headers, body, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (receipt.provider, receipt.source, outcome.value, dumps(job_ids), error, dumps(headers),
             receipt.body, self.clock()),
        )
        return int(cursor.lastrowid or 0)

    async def record_invalid(self, receipt: Receipt, error: str) -> int:
        async with self._transaction() as db:
            return await self._insert_receipt(db, receipt, Outcome.INVALID, [], error)

    async def apply(self, receipt: Receipt, completions: list[Completion]) -> ApplyResult:
        now = self.clock()
        job_ids: list[str] = []
        terminal: list[str] = []
        applied = duplicate = False
        new_messages = False
        async with self._transaction() as db:
            for completion in completions:
                result = await self._apply_one(db, completion, now)
                if result is None:
                    continue
                job, changed, became_terminal, queued = result
                job_ids.append(job.id)
                applied |= changed
                duplicate |= not changed
                new_messages |= queued
                if became_terminal:
                    terminal.append(job.id)
            outcome = Outcome.APPLIED if applied else Outcome.DUPLICATE if duplicate else Outcome.IGNORED
            receipt_id = await self._insert_receipt(
                db, receipt, outcome, sorted({c.provider_job_id for c in completions}), None
            )
        self._notify(Changes(tuple(terminal), new_messages))
        return ApplyResult(receipt_id, outcome, job_ids, terminal)

    async def _job_by_provider_id(self, db: aiosqlite.Connection, provider: str, provider_job_id: str) -> Job | None:
        row = await (
            await db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE provider = ? AND provider_job_id = ?",
                (provider, provider_job_id),
            )
        ).fetchone()
        return _job_from_row(row) if row else None

    async def _create_job(
        self, db: aiosqlite.Connection, *, provider: str, provider_job_id: str, now: float,
        registered: bool, callback_url: str | None = None, metadata: dict[str, Any] | None = None,
        expected_outputs: int | None = None,
    ) -> Job:
        job_id = f"job_{uuid.uuid4().hex}"
        await db.execute(
            "INSERT INTO jobs (id, provider, provider_job_id, status, metadata, callback_url, registered, "
            "expected_outputs, created_at, next_poll_at) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)",
            (job_id, provider, provider_job_id, dumps(metadata or {}), callback_url, int(registered),
             expected_outputs, now, now + self.reconcile_after_s),
        )
        job = await self._job_by_provider_id(db, provider, provider_job_id)
        assert job is not None
        return job

    async def _apply_one(
        self, db: aiosqlite.Connection, completion: Completion, now: float
    ) -> tuple[Job, bool, bool, bool] | None:
        """Returns (job, changed, became_terminal, queued_message), or None for progress."""
        if completion.status is JobStatus.PENDING:
            return None  # progress: recorded as a receipt, changes no job
        job = await self._job_by_provider_id(db, completion.provider, completion.provider_job_id)
        if job is None:
            job = await self._create_job(
                db, provider=completion.provider, provider_job_id=completion.provider_job_id,
                now=now, registered=False,
            )
        if job.status.terminal:
            # A terminal job never changes state. Late extra images of a Runware task (say the job
            # completed at 1 image before registration told us to expect 4) are still kept.
            if completion.partial and job.status is JobStatus.SUCCEEDED:
                merged = _merge_outputs(job.outputs, completion.outputs)
                if len(merged) > len(job.outputs):
                    await db.execute("UPDATE jobs SET outputs = ? WHERE seq = ?", (_outputs_json(merged), job.seq))
                    return job, True, False, False
            return job, False, False, False
        outputs = _merge_outputs(job.outputs, completion.outputs)
        if completion.partial and completion.status is JobStatus.SUCCEEDED:
            if len(outputs) == len(job.outputs):
                return job, False, False, False
            if len(outputs) < (job.expected_outputs or 1):
                await db.execute("UPDATE jobs SET outputs = ? WHERE seq = ?", (_outputs_json(outputs), job.seq))
                return job, True, False, False
        job.outputs = outputs
        job.status = completion.status
        job.error = completion.error
        queued = await self._finish(db, job, now)
        return job, True, True, queued

    async def _finish(self, db: aiosqlite.Connection, job: Job, now: float) -> bool:
        """Make `job` terminal: write it, its event and (if it has a destination) its outbox message."""
        job.completed_at = iso_time(now)
        url = job.callback_url or self.default_callback_url
        if url:
            job.delivery_status = DeliveryStatus.PENDING
        await db.execute(
            "UPDATE jobs SET status = ?, outputs = ?, error = ?, completed_at = ?, delivery_status = ?, "
            "next_poll_at = NULL WHERE seq = ?",
            (job.status.value, _outputs_json(job.outputs), job.error, now, job.delivery_status.value, job.seq),
        )
        await db.execute(
            "INSERT INTO events (job_id, type, data, created_at) VALUES (?, ?, ?, ?)",
            (job.id, event_type(job.status), dumps(job.to_json()), now),
        )
        if url:
            await self._enqueue(db, job, url, now)
        return bool(url)

    async def _enqueue(self, db: aiosqlite.Connection, job: Job, url: str, now: float) -> None:
        await db.execute(
            "INSERT INTO messages (id, job_id, url, body, status, next_attempt_at, created_at) "
            "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
            (f"msg_{uuid.uuid4().hex}", job.id, url, callback_body(job, now), now, now),
        )

    # -- jobs ------------------------------------------------------------------------------------

    async def register_job(
        self, *, provider: str, provider_job_id: str, callback_url: str | None,
        metadata: dict[str, Any], expected_outputs: int | None,
    ) -> tuple[Job, bool]:
        now = self.clock()
        terminal: tuple[str, ...] = ()
        queued = False
        async with self._transaction() as db:
            job = await self._job_by_provider_id(db, provider, provider_job_id)
            if job is None:
                job = await self._create_job(
                    db, provider=provider, provider_job_id=provider_job_id, now=now, registered=True,
                    callback_url=callback_url, metadata=metadata, expected_outputs=expected_outputs,
                )
                return job, True
            if job.registered:
                return job, False
            # Claim a job whose completion arrived first.
            job.registered, job.callback_url, job.metadata = True, callback_url, metadata
            job.expected_outputs = expected_outputs
            await db.execute(
                "UPDATE jobs SET registered = 1, callback_url = ?, metadata = ?, expected_outputs = ? WHERE seq = ?",
                (callback_url, dumps(metadata), expected_outputs, job.seq),
            )
            if job.status.terminal:
                queued = await self._deliver_claimed(db, job, now)
            elif job.outputs and len(job.outputs) >= (expected_outputs or 1):
                job.status = JobStatus.SUCCEEDED  # Runware images that were waiting for their count
                queued = await self._finish(db, job, now)
                terminal = (job.id,)
            job = await self._job_by_provider_id(db, provider, provider_job_id)
            assert job is not None
        self._notify(Changes(terminal, queued))
        return job, False

    async def _deliver_claimed(self, db: aiosqlite.Connection, job: Job, now: float) -> bool:
        """Registering a job whose result already arrived delivers it at once (unless already sent there)."""
        url = job.callback_url or self.default_callback_url
        if not url:
            return False
        row = await (
            await db.execute("SELECT 1 FROM messages WHERE job_id = ? AND url = ? LIMIT 1", (job.id, url))
        ).fetchone()
        if row:
            return False
        job.delivery_status = DeliveryStatus.PENDING
        await db.execute("UPDATE jobs SET delivery_status = 'pending' WHERE seq = ?", (job.seq,))
        await self._enqueue(db, job, url, now)
        return True

    async def get_job(self, job_id: str) -> Job | None:
        row = await (await self._read.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))).fetchone()
        return _job_from_row(row) if row else None

    async def list_jobs(self, *, provider: str | None, status: str | None, limit: int, cursor: str | None) -> Page:
        where, params = ["1 = 1"], []
        if provider:
            where.append("provider = ?")
            params.append(provider)
        if status:
            where.append("status = ?")
            params.append(status)
        if cursor:
            where.append("seq < ?")
            params.append(int(cursor))
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
        rows = await (await self._read.execute(sql, (*params, limit + 1))).fetchall()
        jobs = [_job_from_row(r) for r in rows[:limit]]
        return Page(jobs, str(jobs[-1].seq) if len(rows) > limit else None)

    async def list_receipts(self, *, provider: str | None, outcome: Outcome | None, limit: int, cursor: str | None) -> Page:
        where, params = ["1 = 1"], []
        if provider:
            where.append("provider = ?")
            params.append(provider)
        if outcome:
            where.append("outcome = ?")
            params.append(outcome.value)
        if cursor:
            where.append("id < ?")
            params.append(int(cursor))
        sql = (
            "SELECT id, provider, source, outcome, provider_job_ids, error, body, received_at FROM receipts "
            f"WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?"
        )
        rows = await (await self._read.execute(sql, (*params, limit + 1))).fetchall()
        receipts = [
            StoredReceipt(r[0], r[1], r[2], Outcome(r[3]), json.loads(r[4]), r[5], bytes(r[6]), iso_time(r[7]))
            for r in rows[:limit]
        ]
        return Page(receipts, str(receipts[-1].id) if len(rows) > limit else None)

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
        async with self._transaction() as db:
            await db.execute("UPDATE messages SET lease_until = NULL WHERE status = 'pending'")

    async def claim_due_messages(self, *, limit: int, lease_s: float) -> list[Message]:
        now = self.clock()
        async with self._transaction() as db:
            rows = await (
                await db.execute(
                    "SELECT seq, id, job_id, url, body, attempts, status, next_attempt_at FROM messages "
                    "WHERE status = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?) "
                    "ORDER BY next_attempt_at LIMIT ?",
                    (now, now, limit),
                )
            ).fetchall()
            if rows:
                marks = ",".join("?" * len(rows))
                await db.execute(
                    f"UPDATE messages SET lease_until = ? WHERE seq IN ({marks})", (now + lease_s, *[r[0] for r in rows])
                )
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
        async with self._transaction() as db:
            row = await (await db.execute("SELECT attempts, status FROM messages WHERE seq = ?", (message.seq,))).fetchone()
            if row is None or row[1] != "pending":
                return
            attempt = int(row[0]) + 1
            await db.execute(
                "INSERT INTO attempts (message_id, job_id, url, attempt, status_code, error, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (message.id, message.job_id, message.url, attempt, status_code, error, now),
            )
            await db.execute(
                "UPDATE messages SET attempts = ?, status = ?, next_attempt_at = ?, lease_until = NULL WHERE seq = ?",
                (attempt, status, next_attempt_at if next_attempt_at is not None else now, message.seq),
            )
            await self._refresh_delivery_status(db, message.job_id)

    async def _refresh_delivery_status(self, db: aiosqlite.Connection, job_id: str) -> None:
        """A job's delivery_status is that of its latest message."""
        await db.execute(
            "UPDATE jobs SET delivery_status = COALESCE("
            "(SELECT status FROM messages WHERE job_id = ? ORDER BY seq DESC LIMIT 1), 'none') WHERE id = ?",
            (job_id, job_id),
        )

    async def redeliver(self, job_id: str) -> Message | None:
        now = self.clock()
        async with self._transaction() as db:
            row = await (await db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))).fetchone()
            if row is None:
                return None
            job = _job_from_row(row)
            url = job.callback_url or self.default_callback_url
            if not job.status.terminal or not url:
                return None
            job.delivery_status = DeliveryStatus.PENDING
            await self._enqueue(db, job, url, now)
            await self._refresh_delivery_status(db, job.id)
            row = await (
                await db.execute(
                    "SELECT seq, id, job_id, url, body, attempts, status, next_attempt_at FROM messages "
                    "WHERE job_id = ? ORDER BY seq DESC LIMIT 1", (job.id,),
                )
            ).fetchone()
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
        async with self._transaction() as db:
            await db.execute(
                "UPDATE jobs SET next_poll_at = ?, poll_count = poll_count + 1 WHERE id = ? AND status = 'pending'",
                (next_poll_at, job_id),
            )

    async def poll_count(self, job_id: str) -> int:
        row = await (await self._read.execute("SELECT poll_count FROM jobs WHERE id = ?", (job_id,))).fetchone()
        return int(row[0]) if row else 0
