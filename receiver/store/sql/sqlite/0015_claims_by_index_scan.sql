-- PostgreSQL's claim as one function that reads by plain index scans (no SQLite counterpart: SQLite keeps
-- no old row versions in its indexes). Nothing changes.
SELECT 1;
