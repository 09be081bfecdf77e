"""What a SQLite write transaction reads into a unit of work and writes back: plain SQL, no I/O of its own.

Rows go in as multi-row INSERTs, in chunks of fixed sizes (`CHUNKS`): one statement for many rows
runs SQLite's program once, where `executemany` runs it per row and, on an AUTOINCREMENT table,
reads and writes `sqlite_sequence` per row too; the fixed sizes keep the statements few, so they
stay prepared. Each is `INSERT OR ROLLBACK`: a statement that writes many rows and may fail halfway
otherwise keeps a statement journal to undo just itself (a temporary file once past 64 KiB), where
here any failure rolls the whole transaction back anyway (`SQLiteStore._transact`). A batch of 32
jobs costs a third less CPU that way (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from itertools import chain
from typing import Any

from receiver.models import ApplyResult, dumps
from receiver.store.batching import AttemptRecord, Item, Write
from receiver.store.rows import JOB_COLUMNS, RECEIPT_INSERT_COLUMNS, job_from_row, receipt_rows
from receiver.store.rules import UnitOfWork, Writes, outputs_json

CHUNKS = (32, 16, 8, 4, 2, 1)  # rows per statement: as many 32s as fit, then at most one of each smaller size
_LOOKUP_CHUNK = 400  # keys per IN (...) lookup, well under SQLite's bound-parameter limit

_JOB_INSERT = (
    "INSERT OR ROLLBACK INTO jobs (id, provider, provider_job_id, status, outputs, error, metadata, callback_url, "
    "registered, expected_outputs, delivery_status, created_at, completed_at, next_poll_at, owner)"
)
_JOB_UPDATE = (
    "UPDATE jobs SET status = ?, outputs = ?, error = ?, metadata = ?, callback_url = ?, registered = ?, "
    "expected_outputs = ?, delivery_status = ?, completed_at = COALESCE(?, completed_at), "
    "next_poll_at = CASE WHEN ? = 'pending' THEN next_poll_at END WHERE id = ?"
)
# A job's delivery_status is that of its latest message.
_REFRESH_DELIVERY_STATUS = (
    "UPDATE jobs SET delivery_status = COALESCE("
    "(SELECT status FROM messages WHERE job_id = ? ORDER BY seq DESC LIMIT 1), 'none') WHERE id = ?"
)


def commit_batch(db: sqlite3.Connection, unit: UnitOfWork, batch: list[Item]) -> list[Any]:
    """A group commit's writes, inside the caller's transaction; each caller's result, in order.
    Attempts go first, so the unit loads jobs with the delivery status they leave."""
    for item in batch:
        if isinstance(item, AttemptRecord):
            record_attempt(db, item)
    writes = [(i, item) for i, item in enumerate(batch) if isinstance(item, Write)]
    load_jobs(db, unit, {(c.provider, c.provider_job_id) for _, w in writes for c in w.completions or ()})
    ingested = [(i, unit.apply_receipt(w.receipt, w.completions, w.error)) for i, w in writes]
    receipt_ids = flush(db, unit)
    results: list[Any] = [None] * len(batch)
    for i, done in ingested:
        results[i] = ApplyResult(
            receipt_ids[done.index], done.outcome, done.job_ids, done.terminal_job_ids, error=done.error
        )
    return results


def record_attempt(db: sqlite3.Connection, item: AttemptRecord) -> None:
    """Log the attempt with the URL it was sent to; a message re-pointed meanwhile (a PATCH of
    callback_url) stays pending, due at once, so its result goes to the new URL."""
    message = item.message
    row = db.execute("SELECT attempts, status, url FROM messages WHERE seq = ?", (message.seq,)).fetchone()
    if row is None or row[1] != "pending":
        return
    attempt = int(row[0]) + 1
    db.execute(
        "INSERT INTO attempts (message_id, job_id, url, attempt, status_code, error, at, request_headers, "
        "response_headers, response_body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            message.id,
            message.job_id,
            message.url,
            attempt,
            item.status_code,
            item.error,
            item.at,
            *item.exchange_columns(),
        ),
    )
    status, due = (item.status, item.next_attempt_at) if row[2] == message.url else ("pending", item.at)
    db.execute(
        "UPDATE messages SET attempts = ?, status = ?, next_attempt_at = ?, lease_until = NULL WHERE seq = ?",
        (attempt, status, due, message.seq),
    )
    db.execute(_REFRESH_DELIVERY_STATUS, (message.job_id, message.job_id))


@functools.lru_cache(maxsize=128)
def _values_sql(head: str, width: int, count: int, tail: str) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"{head} VALUES {', '.join([row] * count)}{tail}"


def insert_rows(db: sqlite3.Connection, head: str, rows: Sequence[tuple[Any, ...]], tail: str = "") -> None:
    """`head VALUES (…), (…), … tail` for every row, in statements of CHUNKS rows each.
    All rows have the width of the first; `tail` (e.g. `ON CONFLICT … DO NOTHING`) ends each statement."""
    if not rows:
        return
    width, start = len(rows[0]), 0
    for size in CHUNKS:
        while len(rows) - start >= size:
            db.execute(_values_sql(head, width, size, tail), list(chain.from_iterable(rows[start : start + size])))
            start += size


def load_jobs(db: sqlite3.Connection, unit: UnitOfWork, keys: set[tuple[str, str]]) -> None:
    """Read the jobs of these (provider, provider_job_id) keys that `unit` does not hold yet."""
    # One `provider = ? AND provider_job_id IN (…)` per provider: it searches the unique index,
    # where a row-value IN over (provider, provider_job_id) would scan the whole table.
    for provider, ids in unit.missing(keys).items():
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            sql = (
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE provider = ? "
                f"AND provider_job_id IN ({','.join('?' * len(chunk))})"
            )
            for row in db.execute(sql, (provider, *chunk)).fetchall():
                unit.track(job_from_row(row))


def flush(db: sqlite3.Connection, unit: UnitOfWork) -> list[int]:
    """Write everything the unit changed, in bulk; returns the new receipts' ids."""
    w = unit.writes()
    insert_rows(
        db,
        _JOB_INSERT,
        [
            (
                j.id,
                j.provider,
                j.provider_job_id,
                j.status._value_,
                outputs_json(j.outputs),
                j.error,
                dumps(j.metadata) if j.metadata else "{}",
                j.callback_url,
                int(j.registered),
                j.expected_outputs,
                j.delivery_status._value_,
                t.created_ts,
                t.completed_ts,
                t.next_poll_at,
                t.owner,
            )
            for t in w.new_jobs
            for j in (t.job,)
        ],
    )
    if w.changed_jobs:
        db.executemany(
            _JOB_UPDATE,
            [
                (
                    j.status._value_,
                    outputs_json(j.outputs),
                    j.error,
                    dumps(j.metadata) if j.metadata else "{}",
                    j.callback_url,
                    int(j.registered),
                    j.expected_outputs,
                    j.delivery_status._value_,
                    t.completed_ts,
                    j.status._value_,
                    j.id,
                )
                for t in w.changed_jobs
                for j in (t.job,)
            ],
        )
    _insert_children(db, w)
    if not w.receipts:
        return []
    # This store has one writer, so receipt ids can be handed out here, known before the COMMIT.
    first = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM receipts").fetchone()[0]) + 1
    ids = list(range(first, first + len(w.receipts)))
    rows, links = receipt_rows(ids, w.receipts)
    insert_rows(db, f"INSERT OR ROLLBACK INTO receipts ({RECEIPT_INSERT_COLUMNS})", rows)
    insert_rows(db, "INSERT OR IGNORE INTO receipt_jobs (job_id, receipt_id)", links)
    return ids


def _insert_children(db: sqlite3.Connection, w: Writes) -> None:
    """The rows that hang off jobs: mirror tasks, events, outbox messages."""
    insert_rows(
        db,
        "INSERT OR ROLLBACK INTO mirror_tasks (job_id, output_index, url, next_attempt_at, created_at)",
        [(t.job_id, t.index, t.url, t.created_at, t.created_at) for t in w.mirror_tasks],
        " ON CONFLICT (job_id, output_index) DO NOTHING",
    )
    insert_rows(
        db,
        "INSERT OR ROLLBACK INTO events (job_id, type, data, created_at)",
        [(e.job_id, e.type, e.data, e.created_at) for e in w.events],
    )
    insert_rows(
        db,
        "INSERT OR ROLLBACK INTO messages (id, job_id, url, body, status, next_attempt_at, created_at)",
        [(m.id, m.job_id, m.url, m.body, "pending", m.created_at, m.created_at) for m in w.messages],
    )
