"""The statements both stores run, each written once: in SQLite's `?` style, translated for PostgreSQL
(`$1, $2, …` in order) when this module is imported, so each call runs a constant text (SQLite's
statement cache and asyncpg's prepared statements both key on it).

Only what is really one dialect's stays in its backend: claims (`BEGIN IMMEDIATE` against `FOR UPDATE
SKIP LOCKED`), bulk inserts (multi-row `VALUES` against `unnest` over arrays), advisory locks and NOTIFY,
`MIN`/`LEAST`, and the statements whose `IN (…)` lists are arrays on PostgreSQL.

A statement here uses only what both dialects read the same way: `ON CONFLICT … DO UPDATE SET … =
excluded.…`, `COALESCE`, subqueries named with `AS`. Its parameters bind in the order of its `?` marks,
on both backends: a value used twice is passed twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from receiver.store.rows import ATTEMPT_COLUMNS, JOB_COLUMNS, MEDIA_COLUMNS, MESSAGE_COLUMNS


def to_postgres(sql: str) -> str:
    """`sql` with its `?` placeholders numbered `$1, $2, …` in order. A `?` inside a string literal
    ('…', with '' for a quote), a quoted identifier ("…") or a comment (-- … or /* … */) is text and
    stays; so does a `::type` cast. A `$n` placeholder outside them means the statement mixes styles,
    and an unterminated literal or comment is a typo: both raise ValueError."""
    out: list[str] = []
    n = 0
    i, end = 0, len(sql)
    while i < end:
        c = sql[i]
        if c in "'\"":
            close = sql.find(c, i + 1)
            while close != -1 and sql.startswith(c, close + 1):  # '' (or "") stands for one quote
                close = sql.find(c, close + 2)
            if close == -1:
                what = "string" if c == "'" else "quoted identifier"
                raise ValueError(f"unterminated {what} in {sql!r}")
            out.append(sql[i : close + 1])
            i = close + 1
        elif sql.startswith("--", i):
            close = sql.find("\n", i)
            close = end if close == -1 else close
            out.append(sql[i:close])
            i = close
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            if close == -1:
                raise ValueError(f"unterminated comment in {sql!r}")
            out.append(sql[i : close + 2])
            i = close + 2
        elif c == "?":
            n += 1
            out.append(f"${n}")
            i += 1
        elif c == "$" and sql[i + 1 : i + 2].isdigit() and not (i and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            # (after a letter, digit or `_` it is part of a name: PostgreSQL allows `$` inside identifiers)
            raise ValueError(f"a $n placeholder in a statement written with ? marks: {sql!r}")
        else:
            out.append(c)
            i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement in each dialect's placeholders."""

    sqlite: str
    postgres: str


def shared(sql: str) -> Statement:
    """A statement written once with `?` marks."""
    return Statement(sql, to_postgres(sql))


# -- schema version and secrets (meta) -----------------------------------------------------------
CREATE_META = shared("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
SCHEMA_VERSION = shared("SELECT value FROM meta WHERE key = 'schema_version'")
SET_SCHEMA_VERSION = shared(
    "INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
META_VALUE = shared("SELECT value FROM meta WHERE key = ?")
KEEP_META_VALUE = shared("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")

# -- jobs ----------------------------------------------------------------------------------------
JOB_BY_ID = shared(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?")
JOB_KEY_BY_ID = shared("SELECT provider, provider_job_id FROM jobs WHERE id = ?")
JOB_COUNTS = shared("SELECT status, COUNT(*) FROM jobs GROUP BY status")
PENDING_JOBS = shared(f"SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'pending' AND provider = ? ORDER BY seq")
ORPHANED_JOBS = shared(
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'pending' AND provider = ? AND (owner IS NULL OR owner "
    "NOT IN (SELECT id FROM replicas WHERE heartbeat_at > ?)) ORDER BY seq"
)
SCHEDULE_POLL = shared(
    "UPDATE jobs SET next_poll_at = ?, poll_count = poll_count + 1 WHERE id = ? AND status = 'pending'"
)
# Parameters: the job id, twice.
DISCARD_JOB = shared(
    "DELETE FROM jobs WHERE id = ? AND status = 'pending' AND outputs = '[]' "
    "AND NOT EXISTS (SELECT 1 FROM receipt_jobs WHERE job_id = ?)"
)

# -- events --------------------------------------------------------------------------------------
EVENTS_AFTER = shared("SELECT seq, job_id, type, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?")
EVENTS_AFTER_COMPLETED_FROM = shared(
    "SELECT e.seq, e.job_id, e.type, e.data FROM events e JOIN jobs j ON j.id = e.job_id "
    "WHERE e.seq > ? AND j.completed_at >= ? ORDER BY e.seq LIMIT ?"
)
FIRST_EVENT_SEQ = shared("SELECT MIN(seq) FROM events WHERE created_at >= ?")
LAST_EVENT_SEQ = shared("SELECT COALESCE(MAX(seq), 0) FROM events")

# -- callback messages and attempts --------------------------------------------------------------
MESSAGE_BY_ID = shared(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?")
WAITING_MESSAGES = shared(
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE job_id = ? AND status = 'pending' ORDER BY seq"
)
DELIVERIES = shared(f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE job_id = ? ORDER BY id")
BACKLOG = shared("SELECT COUNT(*), MIN(created_at) FROM messages WHERE status = 'pending'")

# -- Idempotency-Key claims ----------------------------------------------------------------------
FINISH_IDEMPOTENCY_KEY = shared("UPDATE idempotency_keys SET job_ids = ?, outcome_unknown = ? WHERE key = ?")
RELEASE_IDEMPOTENCY_KEY = shared("DELETE FROM idempotency_keys WHERE key = ? AND job_ids IS NULL")
PRUNE_IDEMPOTENCY_KEYS = shared("DELETE FROM idempotency_keys WHERE created_at < ?")

# -- replicas and leases -------------------------------------------------------------------------
HEARTBEAT = shared(
    "INSERT INTO replicas (id, heartbeat_at) VALUES (?, ?) "
    "ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
)
RELEASE_LEASE = shared("UPDATE leases SET expires_at = 0 WHERE name = ? AND owner = ?")

# -- media ---------------------------------------------------------------------------------------
RETRY_MIRROR_TASK = shared(
    "UPDATE mirror_tasks SET next_attempt_at = ?, lease_until = NULL, last_error = ? WHERE seq = ?"
)
KEEP_MEDIA = shared(
    "INSERT INTO media (sha256, size, content_type, created_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (sha256) DO UPDATE SET created_at = excluded.created_at, deleted_at = NULL"
)
MEDIA_OBJECT = shared(f"SELECT {MEDIA_COLUMNS} FROM media WHERE sha256 = ?")
MEDIA_NAMED = shared("SELECT 1 FROM media_names WHERE key = ?")
MEDIA_CHUNK = shared(
    "SELECT c.data FROM media_names n JOIN media_chunks c ON c.upload = n.upload WHERE n.key = ? AND c.seq = ?"
)
# A chunk written again (a retried write) keeps its row and created_at, on both.
PUT_MEDIA_CHUNK = shared(
    "INSERT INTO media_chunks (upload, seq, data, created_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (upload, seq) DO UPDATE SET data = excluded.data"
)
DROP_MEDIA_UPLOAD = shared("DELETE FROM media_chunks WHERE upload = ?")


# -- refused requests ----------------------------------------------------------------------------
# The bound holds after every batch: one reverse index walk of `keep` ids finds the oldest kept.
TRIM_REFUSALS = shared(
    "DELETE FROM refusals WHERE id < (SELECT MIN(id) FROM (SELECT id FROM refusals ORDER BY id DESC LIMIT ?) AS kept)"
)
