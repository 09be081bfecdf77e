-- Pipelines (receiver.sinks): each sink's position (the last event id its broker acknowledged), an epoch
-- bumped by rewind and resume (a publisher's advance read under an older epoch is ignored), pause and the
-- last error.

CREATE TABLE IF NOT EXISTS sinks (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL DEFAULT 0,
    epoch INTEGER NOT NULL DEFAULT 0,
    paused INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_published_at REAL
);
