-- The inspector: refused inbound requests (the newest are kept, see receiver/refusals.py), and delivery
-- attempts that keep what was sent and what came back.
-- A job found by the start of its id or provider job id is a range in code-point order, which SQLite's
-- (BINARY) indexes serve already.

CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    provider TEXT NOT NULL,
    reason TEXT NOT NULL,
    status INTEGER NOT NULL,
    detail TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    headers TEXT NOT NULL DEFAULT '{}',
    body BLOB NOT NULL,
    body_bytes INTEGER NOT NULL,
    receipt_id INTEGER,
    received_at REAL NOT NULL
);

ALTER TABLE attempts ADD COLUMN request_headers TEXT;

ALTER TABLE attempts ADD COLUMN response_headers TEXT;

ALTER TABLE attempts ADD COLUMN response_body BLOB;
