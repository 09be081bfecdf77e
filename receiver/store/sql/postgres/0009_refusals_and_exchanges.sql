-- The inspector: refused inbound requests (the newest are kept, see receiver/refusals.py), and delivery
-- attempts that keep what was sent and what came back.
-- A job found by the start of its id or provider job id is a range in code-point order: PostgreSQL's
-- indexes follow the database's collation, so "C"-collated ones serve the range.

CREATE INDEX IF NOT EXISTS jobs_by_id_prefix ON jobs (id COLLATE "C");

CREATE INDEX IF NOT EXISTS jobs_by_provider_job_id_prefix ON jobs (provider_job_id COLLATE "C");

CREATE TABLE IF NOT EXISTS refusals (
    id BIGSERIAL PRIMARY KEY,
    provider TEXT NOT NULL,
    reason TEXT NOT NULL,
    status INTEGER NOT NULL,
    detail TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    headers TEXT NOT NULL DEFAULT '{}',
    body BYTEA NOT NULL,
    body_bytes BIGINT NOT NULL,
    receipt_id BIGINT,
    received_at DOUBLE PRECISION NOT NULL
);

ALTER TABLE attempts ADD COLUMN IF NOT EXISTS request_headers TEXT;

ALTER TABLE attempts ADD COLUMN IF NOT EXISTS response_headers TEXT;

ALTER TABLE attempts ADD COLUMN IF NOT EXISTS response_body BYTEA;
