-- Media mirroring: pending mirror tasks (leased) and the mirrored objects (for serving and retention).

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

CREATE INDEX IF NOT EXISTS media_by_created ON media (created_at) WHERE deleted_at IS NULL;
