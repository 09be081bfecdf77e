-- A claim of due callbacks, and when the first message it leaves is due, as one call. Its reads of the
-- pending messages are plain index scans, never bitmap scans. Each message is written three times
-- (queued, claimed, attempted), and `messages_due` keeps an entry for each old version until a vacuum:
-- 9,700 of them after 45 s at 200 webhooks/s, none pending. A bitmap scan, which the planner chose on
-- stale statistics, visited every one of their heap pages on every claim (595 pages, 3.7 ms, growing
-- until autovacuum came); a plain index scan marks the entries of dead rows as it passes, and later
-- scans step over them without the heap. The claim's transaction does not wait for its WAL flush: a
-- claim lost in a crash of the server only sends that callback again, under the same webhook-id.
CREATE OR REPLACE FUNCTION receiver_claim(now_at FLOAT8, lease_end FLOAT8, replica TEXT, max_rows INTEGER)
RETURNS TABLE (seq BIGINT, id TEXT, job_id TEXT, url TEXT, body BYTEA, attempts INTEGER, status TEXT,
               next_attempt_at FLOAT8, due FLOAT8)
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_custom_plan SET enable_bitmapscan = off AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH claimed AS (
        UPDATE messages m SET lease_until = lease_end, lease_owner = replica
        WHERE m.seq IN (SELECT d.seq FROM messages d
                        WHERE d.status = 'pending' AND d.next_attempt_at <= now_at
                          AND (d.lease_until IS NULL OR d.lease_until <= now_at)
                        ORDER BY d.next_attempt_at LIMIT max_rows FOR UPDATE SKIP LOCKED)
        RETURNING m.seq, m.id, m.job_id, m.url, m.body, m.attempts, m.status, m.next_attempt_at
    )
    SELECT claimed.*, due.at
    FROM (SELECT LEAST(
        (SELECT min(x.next_attempt_at) FROM messages x
         WHERE x.status = 'pending' AND x.lease_until IS NULL AND x.seq NOT IN (SELECT c.seq FROM claimed c)),
        (SELECT min(GREATEST(x.next_attempt_at, x.lease_until)) FROM messages x
         WHERE x.status = 'pending' AND x.lease_until IS NOT NULL AND x.seq NOT IN (SELECT c.seq FROM claimed c))
    )) AS due(at)
    LEFT JOIN claimed ON true;
END
$$;
