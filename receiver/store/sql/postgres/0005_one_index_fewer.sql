-- A lookup by provider_job_id alone searches the unique (provider, provider_job_id) index with
-- `provider IN (every provider)`, so its own index goes: one index entry fewer per job.

DROP INDEX IF EXISTS jobs_by_provider_job_id;
