-- Planning every statement of the group commit on every call was a quarter of its backend's CPU per
-- webhook. Its statements now keep their plans for the session, except those that read a table other
-- than by its keys: a plan kept from a near-empty table, where every index and a whole scan cost the same,
-- may read a large one whole. A kept plan that reads `jobs` must find each job by its key whatever the
-- tables held when it was made: so these functions may not scan a table whole or join by hash or merge,
-- and no index of `jobs` begins with `provider` alone, other than the unique key: `jobs_by_provider`
-- (provider, status, seq), which a plan made on an empty table probed for the key and which then read
-- every job of the provider, goes. Listing by provider and status uses `jobs_by_status` instead.

DROP INDEX IF EXISTS jobs_by_provider;

-- The group commit's read: the jobs of these (distinct) keys as committed, each with its row version (xmin),
-- for the write to check. No lock, no transaction of its own.
CREATE OR REPLACE FUNCTION receiver_read_jobs(k_provider TEXT[], k_id TEXT[])
RETURNS TABLE (job jobs, row_version TEXT)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
BEGIN
    RETURN QUERY
        SELECT jobs, jobs.xmin::text
        FROM unnest(k_provider, k_id) AS k(provider, provider_job_id)
        JOIN jobs ON jobs.provider = k.provider AND jobs.provider_job_id = k.provider_job_id;
END
$$;

-- Whether the jobs of these (distinct) keys are still exactly those read before: as many, and each one
-- of those seen at the same row version (one not seen has no version to match). Its snapshot is its own,
-- taken when it runs: after the caller took the keys' locks.
CREATE OR REPLACE FUNCTION receiver_jobs_changed(k_provider TEXT[], k_id TEXT[], seen_id TEXT[], seen_version TEXT[])
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
BEGIN
    RETURN (SELECT count(*) <> cardinality(seen_id)
                   OR coalesce(bool_or(jobs.xmin::text IS DISTINCT FROM s.version), false)
            FROM unnest(k_provider, k_id) AS k(provider, provider_job_id)
            JOIN jobs ON jobs.provider = k.provider AND jobs.provider_job_id = k.provider_job_id
            LEFT JOIN unnest(seen_id, seen_version) AS s(id, version) ON s.id = jobs.id);
END
$$;

-- The changed jobs' new columns, one array per column; each job found by its id.
CREATE OR REPLACE FUNCTION receiver_update_jobs(
    cj_id TEXT[], cj_status TEXT[], cj_outputs TEXT[], cj_error TEXT[], cj_metadata TEXT[],
    cj_callback_url TEXT[], cj_registered BOOLEAN[], cj_expected_outputs INTEGER[], cj_delivery_status TEXT[],
    cj_completed_at FLOAT8[]
) RETURNS VOID
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
BEGIN
    UPDATE jobs SET status = c.status, outputs = c.outputs, error = c.error, metadata = c.metadata,
                    callback_url = c.callback_url, registered = c.registered,
                    expected_outputs = c.expected_outputs, delivery_status = c.delivery_status,
                    completed_at = COALESCE(c.completed_at, jobs.completed_at),
                    next_poll_at = CASE WHEN c.status = 'pending' THEN jobs.next_poll_at END
    FROM unnest(cj_id, cj_status, cj_outputs, cj_error, cj_metadata, cj_callback_url, cj_registered,
                cj_expected_outputs, cj_delivery_status, cj_completed_at)
         AS c(id, status, outputs, error, metadata, callback_url, registered, expected_outputs,
              delivery_status, completed_at)
    WHERE jobs.id = c.id;
END
$$;

-- Delivery attempts, one array per column: each pending message counts its attempt and takes its new
-- status (a message re-pointed while its attempt was under way stays pending, due at once), the attempt is
-- logged with the URL it went to, then each job's delivery_status follows its latest message. Planned on
-- every call: its pending messages match the predicate of two partial indexes, which a plan made on an
-- empty table may read whole, and each job's latest message is found by ordering.
CREATE OR REPLACE FUNCTION receiver_record_attempts(
    a_seq BIGINT[], a_status TEXT[], a_next_attempt_at FLOAT8[], a_status_code INTEGER[], a_error TEXT[],
    a_at FLOAT8[], a_url TEXT[], a_request_headers TEXT[], a_response_headers TEXT[], a_response_body BYTEA[]
) RETURNS VOID
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    attempted TEXT[];
BEGIN
    WITH given AS (
        SELECT * FROM unnest(a_seq, a_status, a_next_attempt_at, a_status_code, a_error, a_at, a_url,
                             a_request_headers, a_response_headers, a_response_body)
            AS g(seq, status, next_attempt_at, status_code, error, at, url, request_headers,
                 response_headers, response_body)
    ), counted AS (
        UPDATE messages m SET attempts = m.attempts + 1,
            status = CASE WHEN m.url = g.url THEN g.status ELSE 'pending' END,
            next_attempt_at = CASE WHEN m.url = g.url THEN g.next_attempt_at ELSE g.at END,
            lease_until = NULL
        FROM given g WHERE m.seq = g.seq AND m.status = 'pending'
        RETURNING m.id, m.job_id, g.url, m.attempts, g.status_code, g.error, g.at, g.request_headers,
                  g.response_headers, g.response_body
    ), logged AS (
        INSERT INTO attempts (message_id, job_id, url, attempt, status_code, error, at, request_headers,
                              response_headers, response_body)
        SELECT * FROM counted RETURNING job_id
    )
    SELECT array_agg(DISTINCT job_id ORDER BY job_id) INTO attempted FROM logged;
    IF attempted IS NOT NULL THEN
        UPDATE jobs SET delivery_status = COALESCE(
            (SELECT status FROM messages WHERE messages.job_id = jobs.id ORDER BY seq DESC LIMIT 1), 'none')
        WHERE id = ANY(attempted);
    END IF;
END
$$;

-- The group commit's one write call, as in 0013 but for its plans and the three calls above (none of its
-- own statements reads a table).
CREATE OR REPLACE FUNCTION receiver_write(
    nj_id TEXT[], nj_provider TEXT[], nj_provider_job_id TEXT[], nj_status TEXT[], nj_outputs TEXT[],
    nj_error TEXT[], nj_metadata TEXT[], nj_callback_url TEXT[], nj_registered BOOLEAN[],
    nj_expected_outputs INTEGER[], nj_delivery_status TEXT[], nj_created_at FLOAT8[], nj_completed_at FLOAT8[],
    nj_next_poll_at FLOAT8[], nj_owner TEXT[],
    cj_id TEXT[], cj_status TEXT[], cj_outputs TEXT[], cj_error TEXT[], cj_metadata TEXT[],
    cj_callback_url TEXT[], cj_registered BOOLEAN[], cj_expected_outputs INTEGER[], cj_delivery_status TEXT[],
    cj_completed_at FLOAT8[],
    m_id TEXT[], m_job_id TEXT[], m_url TEXT[], m_body BYTEA[], m_at FLOAT8[],
    r_provider TEXT[], r_source TEXT[], r_outcome TEXT[], r_provider_job_ids TEXT[], r_job_ids TEXT[],
    r_error TEXT[], r_headers TEXT[], r_body BYTEA[], r_received_at FLOAT8[],
    l_job_id TEXT[], l_receipt INTEGER[],
    t_job_id TEXT[], t_index INTEGER[], t_url TEXT[], t_at FLOAT8[],
    a_seq BIGINT[], a_status TEXT[], a_next_attempt_at FLOAT8[], a_status_code INTEGER[], a_error TEXT[],
    a_at FLOAT8[], a_url TEXT[], a_request_headers TEXT[], a_response_headers TEXT[], a_response_body BYTEA[],
    e_job_id TEXT[], e_type TEXT[], e_data TEXT[], e_at FLOAT8[],
    events_lock BIGINT, channel TEXT, payload TEXT,
    k_provider TEXT[], k_id TEXT[], seen_id TEXT[], seen_version TEXT[]
) RETURNS BIGINT[]
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    receipt_ids BIGINT[] := '{}';
BEGIN
    IF cardinality(k_id) > 0 THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(k, 0))
            FROM (SELECT p || ':' || i AS k FROM unnest(k_provider, k_id) AS t(p, i) ORDER BY 1) AS keys;
        -- Under the locks (and, this function being VOLATILE, with a snapshot taken after them): the jobs
        -- of these keys must be exactly those read before, each unchanged (same xmin, the row version).
        IF receiver_jobs_changed(k_provider, k_id, seen_id, seen_version) THEN
            RAISE EXCEPTION 'a job changed between its read and this write' USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;
    IF cardinality(nj_id) > 0 THEN
        INSERT INTO jobs (id, provider, provider_job_id, status, outputs, error, metadata, callback_url,
                          registered, expected_outputs, delivery_status, created_at, completed_at, next_poll_at,
                          owner)
        SELECT * FROM unnest(nj_id, nj_provider, nj_provider_job_id, nj_status, nj_outputs, nj_error,
                             nj_metadata, nj_callback_url, nj_registered, nj_expected_outputs,
                             nj_delivery_status, nj_created_at, nj_completed_at, nj_next_poll_at, nj_owner);
    END IF;
    IF cardinality(cj_id) > 0 THEN
        PERFORM receiver_update_jobs(cj_id, cj_status, cj_outputs, cj_error, cj_metadata, cj_callback_url,
                                     cj_registered, cj_expected_outputs, cj_delivery_status, cj_completed_at);
    END IF;
    IF cardinality(m_id) > 0 THEN
        INSERT INTO messages (id, job_id, url, body, status, next_attempt_at, created_at)
        SELECT i, j, u, b, 'pending', t, t FROM unnest(m_id, m_job_id, m_url, m_body, m_at) AS m(i, j, u, b, t);
    END IF;
    IF cardinality(r_provider) > 0 THEN
        receipt_ids := ARRAY(SELECT nextval(pg_get_serial_sequence('receipts', 'id'))
                             FROM generate_series(1, cardinality(r_provider)));
        INSERT INTO receipts (id, provider, source, outcome, provider_job_ids, job_ids, error, headers, body,
                              received_at)
        SELECT * FROM unnest(receipt_ids, r_provider, r_source, r_outcome, r_provider_job_ids, r_job_ids,
                             r_error, r_headers, r_body, r_received_at);
        INSERT INTO receipt_jobs (job_id, receipt_id)
        SELECT l.j, receipt_ids[l.n] FROM unnest(l_job_id, l_receipt) AS l(j, n) ON CONFLICT DO NOTHING;
    END IF;
    IF cardinality(t_job_id) > 0 THEN
        INSERT INTO mirror_tasks (job_id, output_index, url, next_attempt_at, created_at)
        SELECT j, i, u, at, at FROM unnest(t_job_id, t_index, t_url, t_at) AS mt(j, i, u, at)
        ON CONFLICT (job_id, output_index) DO NOTHING;
    END IF;
    IF cardinality(a_seq) > 0 THEN
        PERFORM receiver_record_attempts(a_seq, a_status, a_next_attempt_at, a_status_code, a_error, a_at, a_url,
                                         a_request_headers, a_response_headers, a_response_body);
    END IF;
    IF cardinality(e_job_id) > 0 THEN
        PERFORM pg_advisory_xact_lock(events_lock);
        INSERT INTO events (job_id, type, data, created_at) SELECT * FROM unnest(e_job_id, e_type, e_data, e_at);
    END IF;
    IF payload IS NOT NULL THEN
        PERFORM pg_notify(channel, payload);
    END IF;
    RETURN receipt_ids;
END
$$;
