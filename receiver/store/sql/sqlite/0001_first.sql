-- The first schema: jobs, receipts, events, callback messages and their attempts.

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
