"""The shared store: PostgreSQL through asyncpg, for any number of replicas on one database.

The rules are the same pure `UnitOfWork` as SQLite's; this module owns only SQL and connections:
- Writes are group-committed per replica. A transaction first takes transaction-scoped advisory locks
  on the (provider, provider_job_id) keys it touches, in sorted order, so two replicas applying the
  same delivery serialize and the second sees the first's result (it changes the job once).
- Event ids: sequence values are not handed out in commit order, so the transactions that add events
  take one advisory lock just before they do, held to their COMMIT. Event ids then become visible in
  increasing order and a resumed stream can never skip one.
- Claims (callback messages, due polls) use `FOR UPDATE SKIP LOCKED` with leases that expire; claimed
  messages are renewed while this replica holds them, so a dead replica's are taken over in < 60 s.
- Wake-ups across replicas: at most one NOTIFY per group commit (ids only), on a LISTEN connection of
  its own; waiters also re-read every `backstop_s`, in case a notification was missed.
- Serialization failures and deadlocks are retried; a lost database is `StoreUnavailable` (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import orjson

from receiver.errors import StoreError, StoreUnavailable
from receiver.models import ApplyResult, Job, Outcome, StoredReceipt, dumps
from receiver.outage import Outage
from receiver.store.base import COUNT_CAP, Changes, Clock, Event, JobFilter, Page
from receiver.store.batching import AttemptRecord, GroupCommit, Item, Write
from receiver.store.parts import Conn
from receiver.store.postgres.jobs import PostgresJobActions
from receiver.store.postgres.mirror import PostgresMirror
from receiver.store.postgres.refusals import PostgresRefusals
from receiver.store.postgres.sinks import PostgresSinks
from receiver.store.postgres.work import PostgresWork
from receiver.store.queries import (
    CREATE_META,
    EVENTS_AFTER,
    EVENTS_AFTER_COMPLETED_FROM,
    FIRST_EVENT_SEQ,
    HEARTBEAT,
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
    columns,
    job_filter_sql,
    job_from_row,
    receipt_from_row,
    receipt_rows,
)
from receiver.store.rules import UnitOfWork, outputs_json
from receiver.store.schema import POSTGRES

log = logging.getLogger("receiver.store")
T = TypeVar("T")

CHANNEL = "receiver_changes"
MIGRATION_LOCK = 7_345_001  # advisory lock keys: one for migrations, one for event ids
EVENTS_LOCK = 7_345_002
NOTIFY_LIMIT = 7000  # bytes of a NOTIFY payload (PostgreSQL's limit is 8000)
ACQUIRE_TIMEOUT_S = 5.0
RETRIES = 5
# Every statement planned for its tables as they are now. asyncpg prepares each statement once per
# connection, and after five runs PostgreSQL may keep one generic plan: made while a fresh database's
# jobs table held a few rows, that plan scans the table whole and keeps scanning it as it grows, until
# autovacuum's ANALYZE throws the plan away (docs/benchmarks.md has the figures). Planning each run costs
# far less than one such scan. A SET once per new connection, not a startup parameter, which a PgBouncer
# in front would refuse.
# Then bounds on what one replica can make the others wait for. A replica that stops in the middle of a
# transaction (a paused VM, a long GC, a partition) keeps its locks, the event-id lock among them, and
# every other replica's writes queue behind it: the server ends such a session once it has sat idle in a
# transaction for IDLE_IN_TRANSACTION_S, which frees its locks (its transaction rolls back: it had
# acknowledged nothing). No wait for a lock outlasts LOCK_TIMEOUT_S (then 503, retried by the sender), no
# statement COMMAND_TIMEOUT_S, and keepalives find a peer that vanished from the network while its
# session holds no transaction (a session-level lock).
IDLE_IN_TRANSACTION_S = 5
LOCK_TIMEOUT_S = 8
COMMAND_TIMEOUT_S = 30.0  # no statement of ours takes long: past this the connection is taken for dead
SESSION_SETUP = (
    "SET plan_cache_mode = force_custom_plan; "
    f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_S}s'; "
    f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'; "
    f"SET statement_timeout = '{COMMAND_TIMEOUT_S:g}s'; "
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
)
# What `ping` (readyz) allows a write to take: a replica whose writes wait longer than this is not ready.
READY_TIMEOUT_S = 2
# Writers other than the group commit (actions, the mirror) lock their keys and read their jobs in one call
# inside their transaction (schema 0012); every writer writes every row in one call (0013).
LOCK_JOBS_SQL = "SELECT * FROM receiver_lock_jobs($1::text[], $2::text[])"
WRITE_SQL = f"SELECT receiver_write({', '.join(f'${n}' for n in range(1, 67))})"
# The group commit's read (schema 0013): no lock, no transaction; `receiver_write` checks the row versions.
# A function (0014) so that its plan is kept, whatever the session's `plan_cache_mode`.
READ_JOBS_SQL = "SELECT job, row_version FROM receiver_read_jobs($1::text[], $2::text[])"
_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.CannotConnectNowError,
)
# A connection in this state is unusable, whatever the query was (asyncpg reports a connection cut mid-
# operation as an internal client error at times).
_BROKEN = (
    *_UNAVAILABLE,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
)
# A bound ran out (see SESSION_SETUP): the transaction is rolled back, the connection is still good.
_TIMED_OUT = (asyncpg.exceptions.LockNotAvailableError, asyncpg.exceptions.QueryCanceledError)
_RETRY = (
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.UniqueViolationError,
)


def describe(url: str) -> str:
    """`host:port/db` of a database URL, for messages: never the password."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
    except ValueError:
        return "(unreadable URL)"


def _group(rows: list[tuple[Any, ...]], width: int) -> list[Any]:
    """`receiver_write`'s arrays for one table: NULLs when there are no rows (its `cardinality(…) > 0` is then
    not true either), which asyncpg sends as such instead of encoding and checking an empty array each."""
    return columns(rows, width) if rows else [None] * width


class PostgresStore(PostgresWork, PostgresMirror, PostgresJobActions, PostgresRefusals, PostgresSinks):
    """See `receiver.store.base.Store` for the contract of each method."""

    backstop_s: float | None = 1.0

    def __init__(
        self,
        url: str,
        *,
        default_callback_url: str | None = None,
        reconcile_after_s: float = 300.0,
        clock: Clock = time.time,
        create: bool = True,
        pool_size: int = 10,
        mirroring: bool = False,
    ) -> None:
        super().__init__(
            replica_id=f"pg-{uuid.uuid4().hex[:12]}",
            default_callback_url=default_callback_url,
            reconcile_after_s=reconcile_after_s,
            clock=clock,
            create=create,
            mirroring=mirroring,
        )
        self.url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._held = {}

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> PostgresStore:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                timeout=10,
                command_timeout=COMMAND_TIMEOUT_S,
                reset=_keep_session,
                init=_set_up_session,
            )
            async with self._pool.acquire() as conn:
                if self._create:
                    await self._migrate(conn)
                elif await conn.fetchval("SELECT to_regclass('meta')") is None:
                    raise StoreError(f"no receiver store in the database at {describe(self.url)}")
        except BaseException as exc:
            await self.close()
            if isinstance(exc, StoreError):
                raise
            if isinstance(exc, (asyncpg.PostgresError, *_UNAVAILABLE, ValueError)):
                raise StoreError(
                    f"cannot use PostgreSQL at {describe(self.url)}: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else 'no answer'}"
                ) from None
            raise
        self._commits = GroupCommit(self._commit_batch, name="postgres-group-commit")
        self._tasks = [
            asyncio.create_task(self._listen(), name="postgres-listen"),
            asyncio.create_task(self._renew_claims(), name="postgres-renew-claims"),
        ]
        return self

    @staticmethod
    async def _migrate(conn: Conn) -> None:
        """Create or upgrade the schema once, whichever replica comes first (the others wait on the lock).
        Neither that wait nor a migration's statements (an index built over a large table) are bounded."""
        await conn.execute("SET lock_timeout = 0; SET statement_timeout = 0")
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            await conn.execute(CREATE_META.postgres)
            version = int(await conn.fetchval(SCHEMA_VERSION.postgres) or 0)
            if version and await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_numbering'") is None:
                # Before the numbers were shared with SQLite, PostgreSQL counted its first two steps as one.
                version += 1
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', $1), ('schema_numbering', 'shared') "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    str(version),
                )
            for migration in POSTGRES[version:]:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(SET_SCHEMA_VERSION.postgres, str(migration.number))
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
            await conn.execute(SESSION_SETUP)  # the bounds again, for the pool's next user

    async def close(self) -> None:
        if self._commits is not None:
            await self._commits.close()
            self._commits = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 5)
            except (TimeoutError, *_UNAVAILABLE):
                self._pool.terminate()
            self._pool = None

    async def _listen(self) -> None:
        """LISTEN on a connection of its own, reconnecting forever; after a gap, wake every waiter."""
        delay = 0.5
        outage = Outage(log, "LISTEN connection")
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.url, timeout=10)
            except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
                outage.failed(StoreUnavailable(f"{type(exc).__name__}; retrying every {delay:.1f} s or more"))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            try:
                conn.add_termination_listener(lambda _, lost=lost: lost.set())  # this connection's event
                await conn.add_listener(CHANNEL, self._on_notification)
                delay = 0.5
                outage.ok()
                self._notify(Changes(everything=True))  # what committed while we were not listening
                await lost.wait()
            finally:
                await _quietly(conn.close())

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        try:
            data = orjson.loads(payload)  # type: ignore[arg-type]  # a NOTIFY payload is text
        except orjson.JSONDecodeError:
            return
        if data.get("r") == self.replica_id:
            return  # our own commit: its waiters were woken already
        if data.get("a"):
            self._notify(Changes(everything=True))
        else:
            self._notify(Changes(tuple(data.get("j") or ()), bool(data.get("m"))))

    # -- transactions ----------------------------------------------------------------------------

    async def _tx(self, work: Callable[[Conn], Awaitable[T]], *, single: bool = False) -> T:
        """Run `work` in one transaction, retrying conflicts with other replicas; a lost database is 503.
        `single`: `work` runs one statement, which PostgreSQL makes a transaction of its own: no BEGIN and
        COMMIT of ours (two round trips fewer)."""
        for attempt in range(RETRIES):
            try:
                async with self._connection() as conn:
                    if single:
                        return await work(conn)
                    async with conn.transaction():
                        return await work(conn)
            except _RETRY:
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        """A pooled connection; one that broke (the server went away, a backend was terminated) is thrown
        away rather than handed to the next caller, and the failure is `StoreUnavailable`."""
        if self._pool is None:
            raise StoreError("store is closed")
        try:
            conn = await self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
        except _BROKEN as exc:  # a new connection can also break during its set-up (SESSION_SETUP)
            raise StoreUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}") from None
        broken = False
        try:
            yield conn
        except _BROKEN as exc:
            broken = True
            raise StoreUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}") from None
        except _TIMED_OUT as exc:
            raise StoreUnavailable(f"PostgreSQL busy: {type(exc).__name__}") from None
        finally:
            try:
                if broken:
                    conn.terminate()
                await self._pool.release(conn)
            except _BROKEN:  # broke while being reset, or already handed back by the pool: it is replaced
                pass

    async def _fetch(self, sql: str, *params: Any) -> list[Any]:
        async with self._connection() as conn:
            return list(await conn.fetch(sql, *params))

    async def ping(self) -> None:
        """A write as the group commit makes them, within READY_TIMEOUT_S: this replica's heartbeat row, and
        the event-id lock (a read-only server, or a lock another replica does not let go, fail it)."""

        async def write(conn: Conn) -> None:
            await conn.execute(f"SET LOCAL statement_timeout = '{READY_TIMEOUT_S}s'")
            await conn.execute(HEARTBEAT.postgres, self.replica_id, self.clock())
            await conn.execute("SELECT pg_advisory_xact_lock($1)", EVENTS_LOCK)

        try:
            await self._tx(write)
        except asyncpg.PostgresError as exc:  # read-only (a standby), out of disk, …
            raise StoreUnavailable(f"PostgreSQL cannot take writes: {type(exc).__name__}") from None

    async def secret(self, name: str, generate: Callable[[], str]) -> str:
        key, value = f"secret:{name}", generate()
        if not self._create:
            rows = await self._fetch(META_VALUE.postgres, key)
            if not rows:
                raise StoreError(f"the store has no {name} yet: start `receiver serve` once")
            return str(rows[0][0])

        async def insert_then_read(conn: Conn) -> str:
            # Replicas starting at once all insert; one wins and every one reads the winner back.
            await conn.execute(KEEP_META_VALUE.postgres, key, value)
            return str(await conn.fetchval(META_VALUE.postgres, key))

        return await self._tx(insert_then_read)

    # -- inbound (group commit) ------------------------------------------------------------------

    async def _commit_batch(self, batch: list[Item]) -> list[Any]:
        holder: list[UnitOfWork] = []
        writes = [(i, item) for i, item in enumerate(batch) if isinstance(item, Write)]
        keys = sorted({(c.provider, c.provider_job_id) for _, w in writes for c in w.completions or ()})
        attempts = [b for b in batch if isinstance(b, AttemptRecord)]

        async def commit(conn: Conn) -> list[Any]:
            unit = self._unit()  # anew on each try: a retried commit starts from what is committed
            holder[:] = [unit]
            seen = await self._read(conn, unit, keys)
            ingested = [(i, unit.apply_receipt(w.receipt, w.completions, w.error)) for i, w in writes]
            receipt_ids = await self._flush(conn, unit, attempts, keys=keys, seen=seen)
            results: list[Any] = [None] * len(batch)
            for i, done in ingested:
                results[i] = ApplyResult(
                    receipt_ids[done.index], done.outcome, done.job_ids, done.terminal_job_ids, error=done.error
                )
            return results

        # Two statements, each its own transaction: the read, and `receiver_write`, which fails (and `_tx`
        # runs `commit` again) when a job read has changed since. No BEGIN or COMMIT round trips.
        results = await self._tx(commit, single=True)
        self._notify(Changes(tuple(holder[0].terminal_job_ids), holder[0].queued_messages))
        return results

    @staticmethod
    async def _read(conn: Conn, unit: UnitOfWork, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The jobs of these keys as committed, unlocked; (job id, row version) of each, for the write to check."""
        if not keys:
            return []
        seen = []
        for row in await conn.fetch(READ_JOBS_SQL, [p for p, _ in keys], [i for _, i in keys]):
            job = unit.track(job_from_row(row["job"])).job
            seen.append((job.id, str(row["row_version"])))
        return seen

    @staticmethod
    async def _load(conn: Conn, unit: UnitOfWork, keys: set[tuple[str, str]]) -> None:
        """Lock the keys (sorted: no deadlock between replicas), then read their jobs as committed: one call
        (`receiver_lock_jobs`, whose read takes its snapshot after the locks)."""
        missing = unit.missing(keys)
        providers = [p for p, ids in missing.items() for _ in ids]
        ids = [i for _, pids in missing.items() for i in pids]
        if not ids:
            return
        for row in await conn.fetch(LOCK_JOBS_SQL, providers, ids):
            unit.track(job_from_row(row))

    async def _flush(
        self,
        conn: Conn,
        unit: UnitOfWork,
        attempts: list[AttemptRecord] | None = None,
        *,
        keys: Sequence[tuple[str, str]] = (),
        seen: Sequence[tuple[str, str]] = (),
    ) -> list[int]:
        """Write everything the unit changed, and `attempts`, in one call (`receiver_write`: one array per
        column, one statement per table); returns the new receipts' ids. The event-id lock comes after every
        row the transaction writes: one that held it while waiting for a row another replica holds, which
        waits for the event-id lock in turn, would deadlock (PostgreSQL breaks it after a second, and the
        event ids of every replica wait that long). `keys` and `seen`: the group commit's optimistic check
        (schema 0013); the other writers hold their keys' locks already (`_load`) and pass none."""
        w = unit.writes()
        attempts = sorted(attempts or (), key=lambda i: i.message.seq)  # rows locked in one order
        if not (w.new_jobs or w.changed_jobs or w.messages or w.receipts or w.mirror_tasks or attempts or w.events):
            return []
        # The receipts numbered 1..n: their links name them by number, the ids are drawn by the function.
        receipts, links = receipt_rows(list(range(1, len(w.receipts) + 1)), w.receipts)
        ids = await conn.fetchval(
            WRITE_SQL,
            *_group(
                [
                    (
                        j.id,
                        j.provider,
                        j.provider_job_id,
                        j.status.value,
                        outputs_json(j.outputs),
                        j.error,
                        dumps(j.metadata),
                        j.callback_url,
                        j.registered,
                        j.expected_outputs,
                        j.delivery_status.value,
                        t.created_ts,
                        t.completed_ts,
                        t.next_poll_at,
                        t.owner,
                    )
                    for t in w.new_jobs
                    for j in (t.job,)
                ],
                15,
            ),
            *_group(
                [
                    (
                        j.id,
                        j.status.value,
                        outputs_json(j.outputs),
                        j.error,
                        dumps(j.metadata),
                        j.callback_url,
                        j.registered,
                        j.expected_outputs,
                        j.delivery_status.value,
                        t.completed_ts,
                    )
                    for t in w.changed_jobs
                    for j in (t.job,)
                ],
                10,
            ),
            *_group([(m.id, m.job_id, m.url, m.body, m.created_at) for m in w.messages], 5),
            *_group([r[1:] for r in receipts], 9),
            *_group(links, 2),
            *_group([(t.job_id, t.index, t.url, t.created_at) for t in w.mirror_tasks], 4),
            *_group(
                [
                    (
                        i.message.seq,
                        i.status,
                        i.next_attempt_at,
                        i.status_code,
                        i.error,
                        i.at,
                        i.message.url,
                        *i.exchange_columns(),
                    )
                    for i in attempts
                ],
                10,
            ),
            *_group([(e.job_id, e.type, e.data, e.created_at) for e in w.events], 4),
            EVENTS_LOCK,
            CHANNEL,
            self._payload(unit) if w.events or w.messages else None,
            *_group(list(keys), 2),
            *columns(list(seen), 2),
        )
        return list(ids)

    async def _wake_outbox(self, conn: Conn) -> None:
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, dumps({"r": self.replica_id, "j": [], "m": True}))

    def _payload(self, unit: UnitOfWork) -> str:
        payload = dumps({"r": self.replica_id, "j": unit.terminal_job_ids, "m": unit.queued_messages})
        if len(payload) > NOTIFY_LIMIT:
            payload = dumps({"r": self.replica_id, "a": True})
        return payload

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
        async def register(conn: Conn, unit: UnitOfWork) -> tuple[Job, bool]:
            await self._load(conn, unit, {(provider, provider_job_id)})
            registered = unit.register(
                provider,
                provider_job_id,
                callback_url=callback_url,
                metadata=metadata,
                expected_outputs=expected_outputs,
                owner=owner,
            )
            await self._flush(conn, unit)
            return registered

        return await self._in_unit(register)

    async def get_job(self, job_id: str) -> Job | None:
        rows = await self._fetch(JOB_BY_ID.postgres, job_id)
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
        if cursor:
            params = [*params, int(cursor)]
            where = [*where, f"{key} < ${len(params)}"]
        rows = await self._fetch(
            f"SELECT {key}, {size} FROM {table} WHERE {' AND '.join(where) or 'TRUE'} "
            f"ORDER BY {key} DESC LIMIT ${len(params) + 1}",
            *params,
            limit + 1,
        )
        return budget_page([(int(r[0]), int(r[1] or 0)) for r in rows], limit)

    async def _count(self, table: str, where: list[str], params: list[Any]) -> tuple[int, bool]:
        """How many rows match, exact up to COUNT_CAP: (count, exact)."""
        rows = await self._fetch(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE {' AND '.join(where) or 'TRUE'} "
            f"LIMIT ${len(params) + 1}) AS matching",
            *params,
            COUNT_CAP + 1,
        )
        found = int(rows[0][0])
        return min(found, COUNT_CAP), found <= COUNT_CAP

    async def list_jobs(self, *, filters: JobFilter, limit: int, cursor: str | None, count: bool = False) -> Page[Job]:
        # Prefix ranges compare in code-point order, which the "C"-collated indexes on id and provider_job_id serve.
        where, params = job_filter_sql(filters, "$", collate=' COLLATE "C"')
        total, exact = await self._count("jobs", where, params) if count else (None, True)
        keys, more = await self._page("jobs", "seq", "length(outputs) + length(metadata)", where, params, limit, cursor)
        rows = await self._fetch(f"SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ANY($1) ORDER BY seq DESC", keys)
        return Page([job_from_row(r) for r in rows], str(keys[-1]) if more else None, total, exact)

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
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("provider", provider), ("outcome", outcome.value if outcome else None)):
            if value is not None:
                params.append(value)
                where.append(f"{column} = ${len(params)}")
        if job_id is not None:
            params.append(job_id)
            where.append(f"id IN (SELECT receipt_id FROM receipt_jobs WHERE job_id = ${len(params)})")
        total, exact = await self._count("receipts", where, params) if count else (None, True)
        keys, more = await self._page("receipts", "id", "octet_length(body)", where, params, limit, cursor)
        rows = await self._fetch(f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE id = ANY($1) ORDER BY id DESC", keys)
        return Page([receipt_from_row(r) for r in rows], str(keys[-1]) if more else None, total, exact)

    async def job_counts(self) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in await self._fetch(JOB_COUNTS.postgres)}

    async def events_after(self, seq: int, limit: int, *, completed_from: float | None = None) -> list[Event]:
        if completed_from is None:
            rows = await self._fetch(EVENTS_AFTER.postgres, seq, limit)
        else:
            rows = await self._fetch(EVENTS_AFTER_COMPLETED_FROM.postgres, seq, completed_from, limit)
        return budget_events([Event(r[0], r[1], r[2], r[3]) for r in rows])

    async def first_event_seq(self, created_from: float) -> int | None:
        value = (await self._fetch(FIRST_EVENT_SEQ.postgres, created_from))[0][0]
        return None if value is None else int(value)

    async def last_event_seq(self) -> int:
        return int((await self._fetch(LAST_EVENT_SEQ.postgres))[0][0])


async def _set_up_session(conn: Any) -> None:
    """Each new pooled connection, once: see SESSION_SETUP."""
    await conn.execute(SESSION_SETUP)


async def _keep_session(conn: Any) -> None:
    """The pool's reset of a released connection: nothing to undo. Every lock taken on a pooled connection
    is transaction-scoped (the migration lock is released by hand), and none SETs anything but
    SESSION_SETUP (which must stay: the default reset's RESET ALL would undo it), LISTENs (the listener has
    its own connection) or keeps a cursor; asyncpg's default reset (unlock all, close all, unlisten, reset
    all) is one more round trip on every release, inside each group commit's turn."""


async def _quietly(work: Awaitable[Any]) -> None:
    try:
        await work
    except (*_UNAVAILABLE, asyncpg.PostgresError):
        pass
