-- PostgreSQL's group commit keeps its plans (its functions have no SQLite counterpart). Both dialects drop
-- `jobs_by_provider` (provider, status, seq): listing by provider and status uses `jobs_by_status`, and
-- key lookups the unique (provider, provider_job_id) index.
DROP INDEX IF EXISTS jobs_by_provider;
