-- The jobs API: Idempotency-Key claims of POST /v1/generations, and redeliveries by completion time.

CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    job_ids TEXT,
    created_at DOUBLE PRECISION NOT NULL
);

CREATE INDEX IF NOT EXISTS jobs_by_completed ON jobs (completed_at);

CREATE INDEX IF NOT EXISTS jobs_pending_by_created ON jobs (created_at) WHERE status = 'pending';
