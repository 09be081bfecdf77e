-- PostgreSQL's group commit in two calls (its functions have no SQLite counterpart); both dialects keep
-- the leased pending messages apart, so the next due message is two index probes.
CREATE INDEX IF NOT EXISTS messages_leased ON messages (lease_until) WHERE status = 'pending' AND lease_until IS NOT NULL;
