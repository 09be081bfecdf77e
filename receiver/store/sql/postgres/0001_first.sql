-- The first schema: jobs, receipts, events, callback messages and their attempts, with what
-- several replicas need (leases, heartbeats, owned calls, receipts' jobs): on PostgreSQL they came together.

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
);
