"""Versioned schema. Each step runs once, in order; the version is kept in `meta`.

The SQL is kept portable (no SQLite-only types in the logic) so a PostgreSQL store can share it,
swapping `INTEGER PRIMARY KEY AUTOINCREMENT` for `BIGSERIAL` and BLOB for BYTEA.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        provider TEXT NOT NULL,
        provider_job_id TEXT NOT NULL,
        status TEXT NOT NULL,
        outputs TEXT NOT NULL DEFAULT '[]',
        error TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        callback_url TEXT,
        registered INTEGER NOT NULL DEFAULT 0,
        expected_outputs INTEGER,
        delivery_status TEXT NOT NULL DEFAULT 'none',
        created_at REAL NOT NULL,
        completed_at REAL,
        next_poll_at REAL,
        poll_count INTEGER NOT NULL DEFAULT 0,
        UNIQUE (provider, provider_job_id)
    );
    CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
    CREATE INDEX IF NOT EXISTS jobs_by_provider ON jobs (provider, status, seq);
    CREATE INDEX IF NOT EXISTS jobs_to_poll ON jobs (next_poll_at) WHERE status = 'pending';

    CREATE TABLE IF NOT EXISTS receipts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        provider TEXT NOT NULL,
        source TEXT NOT NULL,
        outcome TEXT NOT NULL,
        provider_job_ids TEXT NOT NULL DEFAULT '[]',
        error TEXT,
        headers TEXT NOT NULL DEFAULT '{}',
        body BLOB NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS receipts_by_provider ON receipts (provider, id);
    CREATE INDEX IF NOT EXISTS receipts_by_outcome ON receipts (outcome, id);

    CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at REAL NOT NULL
    );

    CREATE TABLE IF NOT EXISTS messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL,
        url TEXT NOT NULL,
        body BLOB NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_until REAL,
        created_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS messages_due ON messages (next_attempt_at) WHERE status = 'pending';
    CREATE INDEX IF NOT EXISTS messages_by_job ON messages (job_id, seq);

    CREATE TABLE IF NOT EXISTS attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT NOT NULL,
        job_id TEXT NOT NULL,
        url TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        status_code INTEGER,
        error TEXT,
        at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS attempts_by_job ON attempts (job_id, id);
    """,
]

# 2: several replicas (leases, heartbeats, owned calls), receipts know their jobs.
MIGRATIONS.append(
    """
    ALTER TABLE jobs ADD COLUMN owner TEXT;
    CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
    CREATE INDEX IF NOT EXISTS jobs_by_provider_job_id ON jobs (provider_job_id);
    CREATE INDEX IF NOT EXISTS jobs_by_delivery ON jobs (delivery_status, seq);
    ALTER TABLE receipts ADD COLUMN job_ids TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE IF NOT EXISTS receipt_jobs (
        job_id TEXT NOT NULL,
        receipt_id INTEGER NOT NULL,
        PRIMARY KEY (job_id, receipt_id)
    );
    ALTER TABLE messages ADD COLUMN lease_owner TEXT;
    CREATE INDEX IF NOT EXISTS attempts_by_message ON attempts (message_id, id);
    CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        term INTEGER NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS replicas (
        id TEXT PRIMARY KEY,
        heartbeat_at REAL NOT NULL
    )
    """
)

# PostgreSQL: the same tables and columns, in its own types; applied under an advisory lock.
POSTGRES_MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS jobs (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        provider TEXT NOT NULL,
        provider_job_id TEXT NOT NULL,
        status TEXT NOT NULL,
        outputs TEXT NOT NULL DEFAULT '[]',
        error TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        callback_url TEXT,
        registered BOOLEAN NOT NULL DEFAULT FALSE,
        expected_outputs INTEGER,
        delivery_status TEXT NOT NULL DEFAULT 'none',
        created_at DOUBLE PRECISION NOT NULL,
        completed_at DOUBLE PRECISION,
        next_poll_at DOUBLE PRECISION,
        poll_count INTEGER NOT NULL DEFAULT 0,
        owner TEXT,
        UNIQUE (provider, provider_job_id)
    );
    CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
    CREATE INDEX IF NOT EXISTS jobs_by_provider ON jobs (provider, status, seq);
    CREATE INDEX IF NOT EXISTS jobs_to_poll ON jobs (next_poll_at) WHERE status = 'pending';
    CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
    CREATE INDEX IF NOT EXISTS jobs_by_provider_job_id ON jobs (provider_job_id);
    CREATE INDEX IF NOT EXISTS jobs_by_delivery ON jobs (delivery_status, seq);

    CREATE TABLE IF NOT EXISTS receipts (
        id BIGSERIAL PRIMARY KEY,
        provider TEXT NOT NULL,
        source TEXT NOT NULL,
        outcome TEXT NOT NULL,
        provider_job_ids TEXT NOT NULL DEFAULT '[]',
        job_ids TEXT NOT NULL DEFAULT '[]',
        error TEXT,
        headers TEXT NOT NULL DEFAULT '{}',
        body BYTEA NOT NULL,
        received_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS receipts_by_provider ON receipts (provider, id);
    CREATE INDEX IF NOT EXISTS receipts_by_outcome ON receipts (outcome, id);
    CREATE TABLE IF NOT EXISTS receipt_jobs (
        job_id TEXT NOT NULL,
        receipt_id BIGINT NOT NULL,
        PRIMARY KEY (job_id, receipt_id)
    );

    CREATE TABLE IF NOT EXISTS events (
        seq BIGSERIAL PRIMARY KEY,
        job_id TEXT NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );

    CREATE TABLE IF NOT EXISTS messages (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL,
        url TEXT NOT NULL,
        body BYTEA NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        lease_until DOUBLE PRECISION,
        lease_owner TEXT,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS messages_due ON messages (next_attempt_at) WHERE status = 'pending';
    CREATE INDEX IF NOT EXISTS messages_by_job ON messages (job_id, seq);

    CREATE TABLE IF NOT EXISTS attempts (
        id BIGSERIAL PRIMARY KEY,
        message_id TEXT NOT NULL,
        job_id TEXT NOT NULL,
        url TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        status_code INTEGER,
        error TEXT,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS attempts_by_job ON attempts (job_id, id);

    CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        term BIGINT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE IF NOT EXISTS replicas (
        id TEXT PRIMARY KEY,
        heartbeat_at DOUBLE PRECISION NOT NULL
    )
    """,
]

# 3: media mirroring: pending mirror tasks (leased) and the mirrored objects (for serving and retention).
MIGRATIONS.append(
    """
    CREATE TABLE IF NOT EXISTS mirror_tasks (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        output_index INTEGER NOT NULL,
        url TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        next_attempt_at REAL NOT NULL,
        lease_until REAL,
        lease_owner TEXT,
        created_at REAL NOT NULL,
        UNIQUE (job_id, output_index)
    );
    CREATE INDEX IF NOT EXISTS mirror_tasks_due ON mirror_tasks (next_attempt_at);
    CREATE TABLE IF NOT EXISTS media (
        sha256 TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        created_at REAL NOT NULL,
        deleted_at REAL
    );
    CREATE INDEX IF NOT EXISTS media_by_created ON media (created_at) WHERE deleted_at IS NULL
    """
)

POSTGRES_MIGRATIONS.append(
    """
    CREATE TABLE IF NOT EXISTS mirror_tasks (
        seq BIGSERIAL PRIMARY KEY,
        job_id TEXT NOT NULL,
        output_index INTEGER NOT NULL,
        url TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        lease_until DOUBLE PRECISION,
        lease_owner TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        UNIQUE (job_id, output_index)
    );
    CREATE INDEX IF NOT EXISTS mirror_tasks_due ON mirror_tasks (next_attempt_at);
    CREATE TABLE IF NOT EXISTS media (
        sha256 TEXT PRIMARY KEY,
        size BIGINT NOT NULL,
        content_type TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        deleted_at DOUBLE PRECISION
    );
    CREATE INDEX IF NOT EXISTS media_by_created ON media (created_at) WHERE deleted_at IS NULL
    """
)

# v0.2 jobs API: Idempotency-Key claims of `POST /v1/generations`, and redeliveries by completion time.
MIGRATIONS.append(
    """
    CREATE TABLE IF NOT EXISTS idempotency_keys (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        job_ids TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS jobs_by_completed ON jobs (completed_at);
    CREATE INDEX IF NOT EXISTS jobs_pending_by_created ON jobs (created_at) WHERE status = 'pending'
    """
)
POSTGRES_MIGRATIONS.append(
    """
    CREATE TABLE IF NOT EXISTS idempotency_keys (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        job_ids TEXT,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS jobs_by_completed ON jobs (completed_at);
    CREATE INDEX IF NOT EXISTS jobs_pending_by_created ON jobs (created_at) WHERE status = 'pending'
    """
)

# v0.2 throughput: a lookup by provider_job_id alone searches the unique (provider, provider_job_id)
# index with `provider IN (every provider)` (rows.job_filter_sql), so its own index goes: one index
# entry fewer per job, and with providers' random ids a random page fewer written per insert.
MIGRATIONS.append("DROP INDEX IF EXISTS jobs_by_provider_job_id")
POSTGRES_MIGRATIONS.append("DROP INDEX IF EXISTS jobs_by_provider_job_id")

# Pipelines (receiver.sinks): each sink's position (the last event id its broker acknowledged), bumped
# `epoch` on rewind/resume (a publisher's advance of an older epoch is ignored), pause and last error.
MIGRATIONS.append(
    """
    CREATE TABLE IF NOT EXISTS sinks (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL DEFAULT 0,
        epoch INTEGER NOT NULL DEFAULT 0,
        paused INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_published_at REAL
    )
    """
)
POSTGRES_MIGRATIONS.append(
    """
    CREATE TABLE IF NOT EXISTS sinks (
        name TEXT PRIMARY KEY,
        position BIGINT NOT NULL DEFAULT 0,
        epoch BIGINT NOT NULL DEFAULT 0,
        paused INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_published_at DOUBLE PRECISION
    )
    """
)
