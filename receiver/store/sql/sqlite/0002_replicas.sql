-- Several replicas: leases, heartbeats, owned calls; receipts know their jobs.

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
);
